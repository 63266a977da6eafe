package projection

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/projection/rules"
)

// Sync rules in the applier (Config.Rules; see projection/rules and events/PROTOCOL.md, "Sync rules"): the
// write check of an event, the audience headers of its change, and the
// fresh copies of a parent's followers when its audience changes.

// writerGroups reads the groups the server stamped on an event
// (events.HeaderWriterGroups): space-separated EncodeToken names. A token
// that does not decode names no group.
func writerGroups(h map[string][]string) []string {
	v := ""
	if vs := h[events.HeaderWriterGroups]; len(vs) > 0 {
		v = vs[0]
	}
	var out []string
	for _, tok := range strings.Fields(v) {
		if g, err := events.DecodeToken(tok); err == nil {
			out = append(out, g)
		}
	}
	return out
}

// lookup is the rules' view of the tenant's documents: the batch's state,
// else the store's.
func (a *applier) lookup(tenant string) rules.Lookup {
	return func(ctx context.Context, collection, id string) (events.Fields, bool, error) {
		d, err := a.doc(ctx, events.DocAddress{Tenant: tenant, Collection: collection, Doc: id})
		if err != nil {
			return nil, false, err
		}
		return d.Fields, d.Exists(), nil
	}
}

// judgeWrite refuses a decided event whose writer the rules do not let
// write the document: judged on the state before (when there is one) and
// on the state after (when it is live), so a writer can neither edit nor
// delete a document it may not write, nor create one, nor move one, where
// it could not write it. The writer is the event's client (the subject's,
// which auth confines to the user) with the groups the server stamped.
// Decided from the event and the view alone, so a rebuild decides the
// same.
func (a *applier) judgeWrite(ctx context.Context, m rawMsg, ev *events.Event, cur Doc, d Decision) (Decision, error) {
	if d.Doc == nil || !a.rules.Ruled(ev.Collection) {
		return d, nil
	}
	w := rules.Writer{Name: ev.Client, Groups: writerGroups(m.Header)}
	for _, s := range []*Doc{&cur, d.Doc} {
		if !s.Exists() {
			continue
		}
		why, err := a.rules.MayWrite(ctx, ev.Collection, s.Fields, w, a.lookup(ev.Tenant))
		if err != nil {
			return d, err
		}
		if why != "" {
			return rejected(fmt.Sprintf("sync rules: %s/%s: %s", ev.Collection, ev.Doc, why)), nil
		}
	}
	return d, nil
}

// audience returns the readers of a document state: nil for nobody, and
// for a state that is not live (see changeAudience for a tombstone).
func (a *applier) audience(ctx context.Context, d Doc) ([]string, error) {
	if !d.Exists() {
		return nil, nil
	}
	aud, _, err := a.rules.Audience(ctx, d.Collection, d.Fields, a.lookup(d.Tenant))
	return aud, err
}

// changeHeader returns h (the trace headers of a change, may be nil) with
// the audience of the change from cur to next when the rules decide its
// collection: the readers of next (of cur for a tombstone, so that they
// learn of the delete) and the readers of cur.
func (a *applier) changeHeader(ctx context.Context, h map[string][]string, cur Doc, next *Doc) (map[string][]string, error) {
	if !a.rules.Ruled(next.Collection) {
		return h, nil
	}
	was, err := a.audience(ctx, cur)
	if err != nil {
		return nil, err
	}
	readers := was
	if !next.Deleted {
		if readers, err = a.audience(ctx, *next); err != nil {
			return nil, err
		}
	}
	return withAudience(h, readers, was), nil
}

// withAudience returns a copy of h with the audience headers set.
func withAudience(h map[string][]string, readers, was []string) map[string][]string {
	out := make(map[string][]string, len(h)+2)
	for k, v := range h {
		out[k] = v
	}
	out[events.HeaderReaders] = []string{events.EncodeAudience(readers)}
	out[events.HeaderWasReaders] = []string{events.EncodeAudience(was)}
	return out
}

// reemitFollowers queues a fresh copy of the change of each live follower
// of the document ev changed from cur to next, when the audience its
// followers inherit changed (a deleted parent gives them nobody): same
// version, the new audience as readers, the old as was-readers, under
// Nats-Msg-Id "follow:<event id>:<subject>:<version>". The followers are
// the view's (Store.DocsWithField) and the batch's.
func (a *applier) reemitFollowers(ctx context.Context, ev *events.Event, cur Doc, next *Doc) error {
	children := a.rules.Followers(next.Collection)
	if len(children) == 0 {
		return nil
	}
	before, err := a.audience(ctx, cur)
	if err != nil {
		return err
	}
	after, err := a.audience(ctx, *next)
	if err != nil {
		return err
	}
	if slices.Equal(before, after) {
		return nil
	}
	for _, ch := range children {
		found := map[events.DocAddress]bool{}
		stored, err := a.store.DocsWithField(ctx, next.Tenant, ch.Collection, ch.Field, next.ID)
		if err != nil {
			return err
		}
		for _, d := range stored {
			found[d.Address()] = true
		}
		for addr, d := range a.docs {
			if addr.Tenant == next.Tenant && addr.Collection == ch.Collection && d.Exists() && fieldIs(d.Fields, ch.Field, next.ID) {
				found[addr] = true
			}
		}
		addrs := make([]events.DocAddress, 0, len(found))
		for addr := range found {
			addrs = append(addrs, addr)
		}
		slices.SortFunc(addrs, func(x, y events.DocAddress) int { return strings.Compare(x.Doc, y.Doc) })
		for _, addr := range addrs {
			d, err := a.doc(ctx, addr) // the batch's state when it changed the follower
			if err != nil {
				return err
			}
			if !d.Exists() || !fieldIs(d.Fields, ch.Field, next.ID) {
				continue // moved to another parent or deleted in this batch
			}
			data, err := events.EncodeChange(d.Change(nil))
			if err != nil {
				return fmt.Errorf("encode the change of follower %s/%s: %w", addr.Collection, addr.Doc, err)
			}
			subject := events.ChangeSubject(addr.Tenant, addr.Collection, addr.Doc)
			a.batch.Outbox = append(a.batch.Outbox, OutboxEntry{
				Subject: subject, MsgID: fmt.Sprintf("follow:%s:%s:%d", ev.ID, subject, d.Version),
				Header: withAudience(nil, after, before), Data: data,
			})
		}
	}
	return nil
}

// hiddenFrom reports whether a refused event's receipt must not tell its
// writer about the document's state: the rules name its collection and
// the writer is not among the readers of the current state, so the
// receipt says neither its version (the receipt's Version is then 0) nor
// anything the projector read there. Decided from the event and the view
// alone, like judgeWrite.
func (a *applier) hiddenFrom(ctx context.Context, m rawMsg, ev *events.Event, cur Doc, d Decision) (bool, error) {
	if d.Outcome != events.OutcomeRejected || !cur.Exists() || !a.rules.Ruled(ev.Collection) {
		return false, nil
	}
	aud, err := a.audience(ctx, cur)
	if err != nil {
		return false, err
	}
	return !events.InAudience(aud, events.Principals(ev.Client, writerGroups(m.Header))), nil
}
