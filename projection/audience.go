package projection

import (
	"context"
	"fmt"
	"maps"
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
		if !d.Exists() {
			return d.Kept, false, nil // a deleted parent: what its tombstone kept for the write rules
		}
		return d.Fields, true, nil
	}
}

// keep sets what next, the state an event makes from cur, keeps for the
// write rules of its followers (Doc.Kept): a tombstone made from a live
// state keeps the fields its collection's write rules read
// (rules.Set.Kept), a tombstone made from a tombstone what that one kept,
// a live state nothing. Decided from the states alone, so a rebuild keeps
// the same.
func (a *applier) keep(cur Doc, next *Doc) {
	switch {
	case !next.Deleted:
		next.Kept = nil
	case cur.Exists():
		next.Kept = a.rules.Kept(next.Collection, cur.Fields)
	default:
		next.Kept = maps.Clone(cur.Kept)
	}
}

// judgeWrite refuses a decided event whose writer the rules do not let
// write the document: judged on the state before (when there is one) and
// on the state after (when it is live), so a writer can neither edit nor
// delete a document it may not write, nor create one, nor move one, where
// it could not write it; nor create one over a tombstone that live
// documents follow unless it could write the tombstone's last live state
// (what it kept, Doc.Kept), so that re-creating a deleted parent's id
// cannot take over its orphaned followers; nor make a state whose readers would not
// fit a header (MaxAudienceBytes). The writer is the event's client (the subject's,
// which auth confines to the user) with the groups the server stamped.
// Decided from the event and the view alone, so a rebuild decides the
// same. readers are the readers of d.Doc (the apply computed them once).
func (a *applier) judgeWrite(ctx context.Context, m rawMsg, ev *events.Event, cur Doc, d Decision, readers []string) (Decision, error) {
	if d.Doc == nil || !a.rules.Ruled(ev.Collection) {
		return d, nil
	}
	w := rules.Writer{Name: ev.Client, Groups: writerGroups(m.Header)}
	if cur.Deleted && cur.Version > 0 && d.Doc.Exists() {
		// A create over a tombstone hands the deleted document's live
		// followers to whoever the new state names: refused while any
		// lives, but to a writer of its last live state.
		orphans, err := a.liveFollowers(ctx, cur)
		if err != nil {
			return d, err
		}
		if orphans > 0 && cur.Kept != nil {
			// Whoever could write the last live state could have given
			// its followers to any readers it may write anyway: judged
			// on what the tombstone kept of it, and on the new state.
			why, err := a.rules.MayWrite(ctx, ev.Collection, cur.Kept, w, a.lookup(ev.Tenant))
			if err != nil {
				return d, err
			}
			if why == "" {
				orphans = 0
			}
		}
		if orphans > 0 {
			return rejected(fmt.Sprintf("sync rules: %s/%s: a deleted document with %d live followers cannot be created again", ev.Collection, ev.Doc, orphans)), nil
		}
	}
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
	if d.Doc.Exists() {
		// The readers header must fit a NATS message: a state whose
		// readers would not is refused, never applied and then lost on
		// the way to CHANGES. Followers take their parent's readers,
		// bounded here when the parent was written.
		if n := audienceBytes(readers); n > MaxAudienceBytes {
			return rejected(fmt.Sprintf("sync rules: %s/%s: the document's readers would take %d bytes, over the limit of %d (MaxAudienceBytes): name a group instead of so many users",
				ev.Collection, ev.Doc, n, MaxAudienceBytes)), nil
		}
	}
	return d, nil
}

// liveFollowers counts the live documents that follow doc (a tombstone)
// under the rules, in the view and in the batch.
func (a *applier) liveFollowers(ctx context.Context, doc Doc) (int, error) {
	n := 0
	for _, ch := range a.rules.Followers(doc.Collection) {
		found := map[events.DocAddress]bool{}
		stored, err := a.store.DocsWithField(ctx, doc.Tenant, ch.Collection, ch.Field, doc.ID)
		if err != nil {
			return 0, err
		}
		for _, d := range stored {
			if cur, ok := a.docs[d.Address()]; ok {
				d = cur // the batch's state is newer
			}
			if d.Exists() && fieldIs(d.Fields, ch.Field, doc.ID) {
				found[d.Address()] = true
			}
		}
		for addr, d := range a.docs {
			if addr.Tenant == doc.Tenant && addr.Collection == ch.Collection && d.Exists() && fieldIs(d.Fields, ch.Field, doc.ID) {
				found[addr] = true
			}
		}
		n += len(found)
	}
	return n, nil
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

// MaxAudienceBytes bounds a document's cumulative audience (Doc.Audience)
// as a header value (events.EncodeAudience), so that the readers header of
// a tombstone and every was-readers header fit in a NATS message with room
// to spare. A union that would pass it is [events.Everyone] instead, and
// stays so: the document's later changes then name every user of the
// tenant in WasReaders (a tombstone: in its readers). That is safe (every
// holder still learns its copy is gone) and costs some privacy: a user
// who never held the document gets a Left notice (or the tombstone), which
// tells it the document's id, version and last event exist. So does a
// document some of whose states every user could read ("*").
const MaxAudienceBytes = 16 << 10

// unionAudience returns the sorted, unique union of audiences, bounded by
// MaxAudienceBytes; [events.Everyone] when one holds it (it names every
// user already) or when the union passes the bound.
func unionAudience(audiences ...[]string) []string {
	var out []string
	for _, a := range audiences {
		out = append(out, a...)
	}
	if len(out) == 0 {
		return nil
	}
	slices.Sort(out)
	out = slices.Compact(out)
	if _, all := slices.BinarySearch(out, events.Everyone); all {
		return []string{events.Everyone}
	}
	size := len(out) - 1
	for _, p := range out {
		size += len(p)
	}
	if size > MaxAudienceBytes {
		return []string{events.Everyone}
	}
	return out
}

// holders returns who may hold a copy of the document whose current state
// is d, under set: its cumulative audience (d.Audience), the readers of d
// (a view written before Audience was kept has only those) and, for a
// follower, its parent's cumulative audience (a parent's change gives its
// followers to the parent's new readers without writing the followers,
// see reemitFollowers). get reads a document, the parent.
func holders(ctx context.Context, set *rules.Set, d Doc, get func(context.Context, events.DocAddress) (Doc, error)) ([]string, error) {
	if !d.Exists() {
		return unionAudience(d.Audience), nil
	}
	lookup := func(ctx context.Context, c, id string) (events.Fields, bool, error) {
		pd, err := get(ctx, events.DocAddress{Tenant: d.Tenant, Collection: c, Doc: id})
		return pd.Fields, pd.Exists(), err
	}
	readers, _, err := set.Audience(ctx, d.Collection, d.Fields, lookup)
	if err != nil {
		return nil, err
	}
	readers, _ = boundReaders(readers) // such a state's copies went out read by nobody
	var parent []string
	if pc, id, follows, ok := set.Parent(d.Collection, d.Fields); follows && ok {
		pd, err := get(ctx, events.DocAddress{Tenant: d.Tenant, Collection: pc, Doc: id})
		if err != nil {
			return nil, err
		}
		parent = pd.Audience
	}
	return unionAudience(d.Audience, readers, parent), nil
}

// audiences is what one change of a ruled collection says of its
// audience: its readers and its was-readers.
type audiences struct{ readers, was []string }

// heldBy computes the audience of the change from cur to next, a state of
// a collection the rules decide, and sets next.Audience, the cumulative
// audience: was-readers are everyone who may hold a copy of cur
// (holders), readers are the readers of next (given: the apply computed
// them; a tombstone's are its was-readers, so the delete reaches every
// holder), and next.Audience is their union. Decided from the batch and
// the view alone, so a rebuild computes the same.
func (a *applier) heldBy(ctx context.Context, cur Doc, next *Doc, readers []string) (aud audiences, err error) {
	if aud.was, err = holders(ctx, a.rules, cur, a.doc); err != nil {
		return audiences{}, err
	}
	aud.readers = aud.was
	if !next.Deleted {
		aud.readers = readers
	}
	next.Audience = unionAudience(aud.was, aud.readers)
	return aud, nil
}

// boundReaders returns the readers a copy of a state's change may carry:
// readers, or nobody (over true) when they would pass MaxAudienceBytes as
// a header value. A write never makes such a state (judgeWrite refuses
// it), but new rules may give one to a state written before them; its
// copies (a re-emission under the rules, a reseed) then go read by
// nobody rather than be refused by JetStream and dead-lettered, leaving
// CHANGES with the old readers: every holder gets its Left notice and
// the document stays in the view, unread until a write names fewer
// readers. The projector counts and logs each (Stats.OverAudience).
func boundReaders(readers []string) (bounded []string, over bool) {
	if audienceBytes(readers) > MaxAudienceBytes {
		return nil, true
	}
	return readers, false
}

// audienceBytes is the size of an audience as a header value
// (events.EncodeAudience), without encoding it.
func audienceBytes(aud []string) int {
	if len(aud) == 0 {
		return 0
	}
	n := len(aud) - 1
	for _, p := range aud {
		n += len(p)
	}
	return n
}

// changeHeader returns h (the trace headers of a change, may be nil) with
// the audience headers aud set when ruled (heldBy).
func changeHeader(h map[string][]string, aud audiences, ruled bool) map[string][]string {
	if !ruled {
		return h
	}
	return withAudience(h, aud.readers, aud.was)
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
// version, the new audience as readers, and as was-readers the old one
// with everyone who may hold a copy of the follower (holders, which reads
// next's cumulative audience from the batch), under
// Nats-Msg-Id "follow:<event id>:<subject>:<version>". The followers are
// the view's (Store.DocsWithField) and the batch's. after is the readers
// of next (nil for a tombstone), which the apply computed.
func (a *applier) reemitFollowers(ctx context.Context, ev *events.Event, cur Doc, next *Doc, after []string) error {
	children := a.rules.Followers(next.Collection)
	if len(children) == 0 {
		return nil
	}
	before, err := a.audience(ctx, cur)
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
			data, err := a.policies.EncodeChange(&d, nil)
			if err != nil {
				return fmt.Errorf("encode the change of follower %s/%s: %w", addr.Collection, addr.Doc, err)
			}
			held, err := holders(ctx, a.rules, d, a.doc)
			if err != nil {
				return err
			}
			subject := events.ChangeSubject(addr.Tenant, addr.Collection, addr.Doc)
			a.batch.Outbox = append(a.batch.Outbox, OutboxEntry{
				Subject: subject, MsgID: fmt.Sprintf("follow:%s:%s:%d", ev.ID, subject, d.Version),
				Header: withAudience(nil, after, unionAudience(held, before)), Data: data,
			})
		}
	}
	return nil
}

// hiddenFrom reports whether a refused event's receipt must not tell its
// writer about the document's state: the rules name its collection and
// the writer is not among the readers of the current state (of a
// tombstone: its cumulative Audience), so the receipt says nothing of it,
// whatever refused the event (the policy, the rules, the size bound): its
// Version is 0, its Reason hiddenReason's and it names no conflict record.
// Decided from the event and the view alone, like judgeWrite. aud is
// the audience of the new state's change (heldBy) when d makes one.
func (a *applier) hiddenFrom(ctx context.Context, m rawMsg, ev *events.Event, cur Doc, d Decision, aud audiences) (bool, error) {
	if !a.rules.Ruled(ev.Collection) {
		return false, nil
	}
	if d.Doc != nil {
		// Applied (or merged, or in conflict, or deleted): the writer is
		// told the new state's version only if the change reaches it
		// (a tombstone reaches every holder). Else the receipt carries
		// none, which also settles the write at once on its replica: the
		// change it would wait for never reaches it.
		return !events.InAudience(aud.readers, events.Principals(ev.Client, writerGroups(m.Header))), nil
	}
	if cur.Version == 0 {
		return false, nil
	}
	held := unionAudience(cur.Audience)
	if cur.Exists() {
		var err error
		if held, err = a.audience(ctx, cur); err != nil {
			return false, err
		}
	}
	return !events.InAudience(held, events.Principals(ev.Client, writerGroups(m.Header))), nil
}

// hiddenReason is the reason of a receipt hidden from its writer
// (hiddenFrom): the same for every refusal, so it tells nothing of the
// state.
func hiddenReason(collection, doc string) string {
	return fmt.Sprintf("sync rules: %s/%s: you may not write this document", collection, doc)
}
