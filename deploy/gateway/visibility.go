package gateway

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/ebbsync/ebb/deploy/auth"
	"github.com/ebbsync/ebb/events"
)

// Visibility decides who may read a document under sync rules; the rules
// set of projection/rules implements it. Audience returns the principals
// (events.Principals' kinds) who may read the document of tenant, collection and id whose
// fields are fields (in any order), and whether a rule names the collection at all (ruled
// false: every user of the tenant reads it). It may read other documents
// (a child that follows its parent). Its error fails the request.
type Visibility interface {
	Audience(ctx context.Context, tenant, collection, id string, fields events.Fields) (audience []string, ruled bool, err error)
}

// principals returns the principals a request's reads are filtered by, and
// whether they are filtered at all: only under sync rules, for a user of
// role client.
func (g *Gateway) principals(ctx context.Context) ([]string, bool) {
	if g.cfg.Visibility == nil {
		return nil, false
	}
	u, ok := userOf(ctx)
	if !ok || u.Role != auth.RoleClient {
		return nil, false
	}
	return events.Principals(u.Name, g.groups(u)), true
}

func (g *Gateway) groups(u auth.User) []string {
	if g.cfg.Groups == nil {
		return nil
	}
	return g.cfg.Groups(u)
}

// writerGroups is the events.HeaderWriterGroups value of an event the
// authenticated user writes: its groups, each EncodeToken'd, sorted,
// space-separated ("" for none).
func (g *Gateway) writerGroups(u auth.User) string {
	gs := g.groups(u)
	enc := make([]string, 0, len(gs))
	for _, name := range gs {
		enc = append(enc, events.EncodeToken(name))
	}
	slices.Sort(enc)
	return strings.Join(slices.Compact(enc), " ")
}

// visible reports whether the request's user may read c's document (always
// true without a filter: see principals).
func (g *Gateway) visible(ctx context.Context, principals []string, filtered bool, c *events.Change) (bool, error) {
	if !filtered {
		return true, nil
	}
	aud, ruled, err := g.cfg.Visibility.Audience(ctx, c.Tenant, c.Collection, c.Doc, c.Fields)
	if err != nil {
		return false, fmt.Errorf("audience of %s/%s: %w", c.Collection, c.Doc, err)
	}
	if !ruled {
		return true, nil
	}
	aud = slices.Clone(aud)
	slices.Sort(aud)
	return events.InAudience(aud, principals), nil
}
