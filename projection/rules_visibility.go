package projection

import (
	"context"

	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/projection/rules"
)

// Visibility answers who may read a document of the view under sync
// rules, reading a follower's parent from Store: the HTTP gateway's
// Visibility (deploy/gateway), so that doc reads judge a document exactly
// as the projector's audience headers do. The zero Rules rules nothing.
type Visibility struct {
	Rules *rules.Set
	Store Store
}

// Audience returns the principals who may read the document of tenant,
// collection and id whose fields are fields, and whether the rules decide
// its collection at all (ruled false: every user of the tenant). Its only
// errors are the store's, reading a parent.
func (v Visibility) Audience(ctx context.Context, tenant, collection, id string, fields events.Fields) ([]string, bool, error) {
	return v.Rules.Audience(ctx, collection, fields, func(ctx context.Context, c, pid string) (events.Fields, bool, error) {
		d, err := v.Store.Get(ctx, events.DocAddress{Tenant: tenant, Collection: c, Doc: pid})
		if err != nil {
			return nil, false, err
		}
		return d.Fields, d.Exists(), nil
	})
}
