package projection

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/ebbsync/ebb/events"
)

// Doc is one document's state as a view holds it. Version 0 means it never
// existed; a deleted document is a tombstone (Deleted, no fields) that keeps
// its version, clocks and open conflicts.
type Doc struct {
	Tenant, Collection, ID string
	Version                uint64
	Deleted                bool
	Fields                 events.Fields
	HLC                    events.HLC                   // of the write that made this state
	Clocks                 map[string]events.FieldClock // per field, kept under every policy (merge needs them)
	Event, Client          string                       // the event that caused this state and its writer
	Device                 string                       // the writer's device (events.Event.Device); "" for a legacy log
	Seq                    uint64                       // its sequence in that device's log
	Conflicts              []events.Conflict            // open conflicts (manual)
	// AsWritten: this state is exactly what Event wrote onto the state its
	// writer saw (decided fresh, or a resolve), so an event built on Event
	// (events.Event.After) is fresh. False for every state a resolver made.
	AsWritten bool
	// Audience, for a collection the sync rules decide, is everyone who
	// may hold a copy of the document: every principal who was a reader
	// of any of its states so far (sorted, unique; nil: nobody, or a
	// collection no rule names, or a view written before it was kept). It
	// is bounded (MaxAudienceBytes): past the bound it is
	// [events.Everyone]. The projector keeps it (heldBy); the stores keep
	// it with the state; it is never part of the change on the wire.
	Audience []string
	// Kept, on a tombstone of a collection that sync rules make a parent
	// (one some collection follows), is what it keeps of its last live
	// state: the values of the fields the collection's write rules read
	// (rules.Set.Kept; non-nil, possibly empty), so that whoever could
	// write that state may still delete or move its followers and create
	// it again over them (audience.go, judgeWrite). nil on a live state,
	// on a tombstone nothing follows, and on one deleted before it was
	// kept. The stores keep it with the state; it is never on the wire.
	Kept events.Fields
}

// Address returns the document's address.
func (d *Doc) Address() events.DocAddress {
	return events.DocAddress{Tenant: d.Tenant, Collection: d.Collection, Doc: d.ID}
}

// Exists reports whether the document has a live (created, not deleted) state.
func (d *Doc) Exists() bool { return d.Version > 0 && !d.Deleted }

// DocFromChange returns the state a change carries. It shares nothing mutable
// with c.
func DocFromChange(c *events.Change) Doc {
	return Doc{
		Tenant: c.Tenant, Collection: c.Collection, ID: c.Doc,
		Version:   c.Version,
		Deleted:   c.Deleted,
		Fields:    cloneFields(c.Fields),
		HLC:       c.HLC,
		Clocks:    cloneClocks(c.Clocks),
		Event:     c.Event,
		Client:    c.Client,
		Device:    c.Device,
		Seq:       c.Seq,
		Conflicts: cloneConflicts(c.Conflicts),
		AsWritten: c.AsWritten,
	}
}

// Change returns d as the change the projector publishes, with settled as the
// conflict the change settled or recorded (nil for none). The change shares
// nothing mutable with d.
func (d *Doc) Change(settled *events.Conflict) *events.Change {
	c := &events.Change{
		Schema: events.SchemaVersion,
		Tenant: d.Tenant, Collection: d.Collection, Doc: d.ID,
		Version:   d.Version,
		Deleted:   d.Deleted,
		Fields:    cloneFields(d.Fields),
		HLC:       d.HLC,
		Clocks:    cloneClocks(d.Clocks),
		Event:     d.Event,
		Client:    d.Client,
		Device:    d.Device,
		Seq:       d.Seq,
		Conflicts: cloneConflicts(d.Conflicts),
		AsWritten: d.AsWritten,
	}
	if settled != nil {
		s := cloneConflict(*settled)
		c.Settled = &s
	}
	return c
}

// encoded returns the change of d for encoding only: like Change, but it
// shares d's maps and slices and settled, so it must be neither kept nor
// changed (onWire may set its own Clocks member to nil). It encodes to
// the same bytes as Change (empty maps and slices are omitted either way)
// without copying every field and clock of the document per encode.
func (d *Doc) encoded(settled *events.Conflict) *events.Change {
	return &events.Change{
		Schema: events.SchemaVersion,
		Tenant: d.Tenant, Collection: d.Collection, Doc: d.ID,
		Version: d.Version, Deleted: d.Deleted, Fields: d.Fields,
		HLC: d.HLC, Clocks: d.Clocks,
		Event: d.Event, Client: d.Client, Device: d.Device, Seq: d.Seq,
		Conflicts: d.Conflicts, Settled: settled, AsWritten: d.AsWritten,
	}
}

// Clone returns a deep copy of d (field values, which are immutable by
// convention, are shared).
func (d Doc) Clone() Doc {
	d.Fields = cloneFields(d.Fields)
	d.Clocks = cloneClocks(d.Clocks)
	d.Conflicts = cloneConflicts(d.Conflicts)
	d.Audience = slices.Clone(d.Audience)
	d.Kept = maps.Clone(d.Kept) // not cloneFields: an empty Kept is not nil
	return d
}

// Decision is what a policy decided about one event.
type Decision struct {
	Outcome events.Outcome // applied, merged, rejected or conflict (Decide itself never returns duplicate or invalid)
	Reason  string         // why, in words, for the receipt; empty when the event applied as written
	// Doc is the new state (Version = old+1), nil when the document does not change.
	Doc *Doc
	// Settled is the conflict record this event created or settled: what
	// lww/merge overwrote (status overwritten), a manual conflict opened
	// (open) or resolved (resolved). Nil when there was none.
	Settled *events.Conflict
}

// Resolver decides one stale event: one whose BaseVersion is behind the
// document's current version. It must be deterministic: the same cur and ev
// give the same Decision, with no clocks, randomness or I/O, because a
// rebuild of the view replays every event through it again. It must not
// modify cur or ev. Decide fixes the address, version (+1) and cause (event,
// client, device, seq) of a returned Doc, so a resolver need only compute fields.
type Resolver interface {
	Resolve(cur Doc, ev *events.Event) (Decision, error)
}

// ResolverFunc adapts a function to Resolver.
type ResolverFunc func(cur Doc, ev *events.Event) (Decision, error)

// Resolve calls f.
func (f ResolverFunc) Resolve(cur Doc, ev *events.Event) (Decision, error) { return f(cur, ev) }

// builtin is a named built-in resolver.
type builtin struct {
	name events.Policy
	fn   func(cur Doc, ev *events.Event) (Decision, error)
}

func (b builtin) Resolve(cur Doc, ev *events.Event) (Decision, error) { return b.fn(cur, ev) }

// The built-in resolvers (DESIGN.md, conflict policies). They are stateless
// values, safe for concurrent use; do not reassign them.
var (
	// LWW is whole-document last writer wins by events.CompareWrites (HLC,
	// then client id). A winning stale event applies as if it were fresh
	// (outcome applied) and the overwritten server state is recorded; a losing
	// one is rejected and its write recorded. Either way the record's Lost
	// names what lost ("*" for a whole document, field names for a patch).
	LWW Resolver = builtin{events.PolicyLWW, resolveLWW}
	// Merge is field-level: a field changed since the event's base version
	// (its FieldClock.Version > BaseVersion) and written by the event goes to
	// the later write by CompareWrites; every other field of either side
	// survives. Outcome merged, with a record of overwritten fields when some
	// field was written by both. Deletes, and writes to a deleted document,
	// have no fields to merge and fall back to LWW (record policy merge).
	Merge Resolver = builtin{events.PolicyMerge, resolveMerge}
	// Reject is optimistic concurrency: a stale event is rejected with a
	// reason naming the current version; the writer rebases.
	Reject Resolver = builtin{events.PolicyReject, resolveReject}
	// Manual keeps both sides: the document keeps its value, gains an open
	// events.Conflict whose ID is the incoming event's id (version +1 so
	// replicas see it), and the writer gets outcome conflict. A resolve event
	// naming the conflict settles it.
	Manual Resolver = builtin{events.PolicyManual, resolveManual}
)

// Policies chooses a resolver per collection, with a default.
type Policies struct {
	Default     Resolver            // nil means LWW
	Collections map[string]Resolver // by collection name; nil entries mean Default
}

// For returns the resolver for collection.
func (p Policies) For(collection string) Resolver {
	if r := p.Collections[collection]; r != nil {
		return r
	}
	if p.Default != nil {
		return p.Default
	}
	return LWW
}

// policyName returns the name conflict records use for r: the built-in
// name, the name r was registered under, or "custom".
func policyName(r Resolver) events.Policy {
	if b, ok := r.(builtin); ok {
		return b.name
	}
	if n, ok := r.(interface{ Policy() events.Policy }); ok {
		return n.Policy()
	}
	return "custom"
}

// wireClocks reports whether the changes of a collection under r carry
// their per-field clocks on CHANGES. A replica decides its pending writes
// on the state a change carries (the overlay), so the clocks go wherever
// a decision's state may depend on them: under Merge (a field's clock
// tells whether it changed concurrently) and under a custom resolver,
// which may read them. Under LWW, Reject and Manual the state never does;
// LWW reads them only for the Lost list of the record it keeps, and the
// server's record (the change's settled, the view's conflict history),
// decided on the view's clocks, is the one that counts. The view keeps
// every clock under every policy, so Verify, a reseed and a policy
// changed to merge later start from them.
func wireClocks(r Resolver) bool {
	switch policyName(r) {
	case events.PolicyLWW, events.PolicyReject, events.PolicyManual:
		_, ok := r.(builtin)
		return !ok
	}
	return true
}

// onWire returns c as it is published on CHANGES under p: without its
// per-field clocks unless its collection's policy needs them (wireClocks).
// c is changed in place: Doc.Change and Doc.encoded return a change of
// their own (whose maps onWire never writes).
func (p Policies) onWire(c *events.Change) *events.Change {
	if !wireClocks(p.For(c.Collection)) {
		c.Clocks = nil
	}
	return c
}

// EncodeChange returns the change of d, with settled as its record (nil
// for a copy outside the event that made the state: a re-emit, a reseed,
// a restore), encoded as CHANGES carries it under p (onWire). Every path
// that publishes a document's change encodes it here, so a copy is the
// size of the live change that MaxDocBytes bounded.
func (p Policies) EncodeChange(d *Doc, settled *events.Conflict) ([]byte, error) {
	return encodeChange(p.onWire(d.encoded(settled))) // events.EncodeChange's bytes (jsonenc.go)
}

// Registry names resolvers so configuration can pick them by name. A new
// Registry knows the built-ins ("lww", "merge", "reject", "manual"); the
// embedding program registers its own. It is not safe for concurrent
// Register; build it at start-up.
type Registry struct {
	m map[string]Resolver
}

// NewRegistry returns a registry holding the four built-in resolvers.
func NewRegistry() *Registry {
	return &Registry{m: map[string]Resolver{
		string(events.PolicyLWW):    LWW,
		string(events.PolicyMerge):  Merge,
		string(events.PolicyReject): Reject,
		string(events.PolicyManual): Manual,
	}}
}

// named wraps a registered custom resolver so its conflict records carry its name.
type named struct {
	Resolver
	name events.Policy
}

func (n named) Policy() events.Policy { return n.name }

// Register adds r under name. It fails with ErrPolicyExists if the name is
// taken (the built-in names included) and with ErrUnknownPolicy for a nil r
// or an empty name. Conflict records written by r carry name as their policy
// unless r sets one itself.
func (g *Registry) Register(name string, r Resolver) error {
	if name == "" || r == nil {
		return fmt.Errorf("register resolver %q: %w: empty name or nil resolver", name, ErrUnknownPolicy)
	}
	if _, ok := g.m[name]; ok {
		return fmt.Errorf("register resolver %q: %w", name, ErrPolicyExists)
	}
	g.m[name] = named{Resolver: r, name: events.Policy(name)}
	return nil
}

// Lookup returns the resolver registered under name, or an error wrapping
// ErrUnknownPolicy.
func (g *Registry) Lookup(name string) (Resolver, error) {
	r, ok := g.m[name]
	if !ok {
		return nil, fmt.Errorf("look up resolver %q: %w", name, ErrUnknownPolicy)
	}
	return r, nil
}

// Policies builds Policies from names: def for the default ("" means lww)
// and one name per collection. Every unknown name is reported, joined.
func (g *Registry) Policies(def string, collections map[string]string) (Policies, error) {
	var p Policies
	var err error
	if def != "" {
		p.Default, err = g.Lookup(def)
	}
	errs := []error{err}
	for _, c := range slices.Sorted(maps.Keys(collections)) {
		r, err := g.Lookup(collections[c])
		if err != nil {
			errs = append(errs, fmt.Errorf("collection %q: %w", c, err))
			continue
		}
		if p.Collections == nil {
			p.Collections = make(map[string]Resolver, len(collections))
		}
		p.Collections[c] = r
	}
	if err := errors.Join(errs...); err != nil {
		return Policies{}, err
	}
	return p, nil
}

// fresh reports whether ev was written against cur: its base version is
// cur's, or, for an event built on its writer's pending predecessor
// (ev.After), cur is the state that predecessor made exactly as written
// (cur.AsWritten): a predecessor that was merged, conflicted or decided
// over a concurrent write left fields its writer never saw, so ev is
// stale against them. Anything else is stale and goes to the collection's
// resolver.
func fresh(cur Doc, ev *events.Event) bool {
	if ev.After != "" {
		return cur.Event == ev.After && cur.AsWritten
	}
	return ev.BaseVersion == cur.Version
}

// Decide applies one validated event to cur, the document's current state
// (the zero Doc, or one with Version 0, when it never existed). It does not
// modify cur or ev. The rules common to every policy, in order:
//
//   - resolve: settles the open conflict ev.Resolves on the document with
//     ev.Fields as the new live state, whatever the base version; rejected
//     when no such open conflict exists.
//   - a base version ahead of the document: rejected.
//   - patch of a document that does not exist (never created, or deleted):
//     rejected, under every policy; a put creates or resurrects.
//   - delete of a deleted document: applied, nothing changes. Delete of a
//     document that never existed: rejected.
//   - fresh (base version equal to the current version, or, for an event
//     with After, the current state made by that predecessor exactly as
//     written, Doc.AsWritten): applied as written.
//   - otherwise (stale): the collection's resolver decides.
//
// Every new state has version = cur.Version+1, its cause set to ev,
// AsWritten true only for a fresh write or a resolve, and the clocks of the fields ev changed set to (new version, ev.HLC). An error means
// a custom resolver failed, panicked or broke its contract (it wraps
// ErrResolver); built-ins never fail.
func Decide(p Policies, cur Doc, ev *events.Event) (Decision, error) {
	if ev == nil {
		return Decision{}, fmt.Errorf("decide: %w: nil event", ErrResolver)
	}
	cur.Tenant, cur.Collection, cur.ID = ev.Tenant, ev.Collection, ev.Doc
	switch {
	case ev.Op == events.OpResolve:
		return decideResolve(cur, ev), nil
	case ev.BaseVersion > cur.Version:
		return rejected(fmt.Sprintf("base version %d is ahead of the current version %d", ev.BaseVersion, cur.Version)), nil
	case ev.Op == events.OpPatch && cur.Version == 0:
		return rejected("patch of a document that does not exist; use put to create it"), nil
	case ev.Op == events.OpPatch && cur.Deleted:
		return rejected(fmt.Sprintf("patch of a document deleted at version %d; use put to recreate it", cur.Version)), nil
	case ev.Op == events.OpDelete && cur.Version == 0:
		return rejected("delete of a document that does not exist"), nil
	case ev.Op == events.OpDelete && cur.Deleted:
		return Decision{Outcome: events.OutcomeApplied, Reason: fmt.Sprintf("already deleted at version %d", cur.Version)}, nil
	case fresh(cur, ev):
		n := apply(cur, ev)
		n.AsWritten = true
		return Decision{Outcome: events.OutcomeApplied, Doc: &n}, nil
	}
	r := p.For(ev.Collection)
	d, err := resolve(r, cur.Clone(), ev)
	if err != nil {
		return Decision{}, fmt.Errorf("resolve event %s with %s: %w", ev.ID, policyName(r), err)
	}
	return normalize(r, cur, ev, d)
}

// resolve calls r, turning a panic into an error wrapping ErrResolver that
// carries the panic's value: a buggy custom resolver refuses its event
// (the projector dead-letters it) instead of crashing the process on
// every redelivery. Deterministic for a deterministic resolver.
func resolve(r Resolver, cur Doc, ev *events.Event) (d Decision, err error) {
	defer func() {
		if p := recover(); p != nil {
			d, err = Decision{}, fmt.Errorf("%w: panic: %v", ErrResolver, p)
		}
	}()
	return r.Resolve(cur, ev)
}

// normalize enforces the Decision contract on what a resolver returned.
func normalize(r Resolver, cur Doc, ev *events.Event, d Decision) (Decision, error) {
	switch d.Outcome {
	case events.OutcomeApplied, events.OutcomeMerged, events.OutcomeConflict:
	case events.OutcomeRejected:
		if d.Doc != nil {
			return Decision{}, fmt.Errorf("resolve event %s with %s: %w: outcome rejected with a new state", ev.ID, policyName(r), ErrResolver)
		}
	default:
		return Decision{}, fmt.Errorf("resolve event %s with %s: %w: outcome %q", ev.ID, policyName(r), ErrResolver, d.Outcome)
	}
	if d.Doc != nil {
		n := d.Doc.Clone()
		n.Tenant, n.Collection, n.ID = cur.Tenant, cur.Collection, cur.ID
		n.Version = cur.Version + 1
		n.Event, n.Client, n.Device, n.Seq = ev.ID, ev.Client, ev.Device, ev.Seq
		n.AsWritten = false // shaped by a policy, whatever it says
		if n.Deleted {
			n.Fields = nil
		}
		n.Fields = normFields(n.Fields)
		d.Doc = &n
	}
	if d.Settled != nil {
		s := cloneConflict(*d.Settled)
		if s.ID == "" {
			s.ID = ev.ID
		}
		if s.Policy == "" {
			s.Policy = policyName(r)
		}
		if s.Status == "" {
			s.Status = events.ConflictOverwritten
		}
		d.Settled = &s
	}
	return d, nil
}

func rejected(reason string) Decision {
	return Decision{Outcome: events.OutcomeRejected, Reason: reason}
}

// decideResolve settles an open conflict.
func decideResolve(cur Doc, ev *events.Event) Decision {
	i := slices.IndexFunc(cur.Conflicts, func(c events.Conflict) bool {
		return c.ID == ev.Resolves && c.Status == events.ConflictOpen
	})
	if i < 0 {
		return rejected(fmt.Sprintf("no open conflict %s on this document", ev.Resolves))
	}
	settled := cloneConflict(cur.Conflicts[i])
	settled.Status = events.ConflictResolved
	settled.Resolution = ev.ID
	n := next(cur, ev)
	n.Conflicts = slices.Delete(n.Conflicts, i, i+1)
	if len(n.Conflicts) == 0 {
		n.Conflicts = nil
	}
	setAll(&n, cur, ev)
	n.AsWritten = true // the resolve's fields are the whole live state
	return Decision{Outcome: events.OutcomeApplied, Doc: &n, Settled: &settled}
}

// next returns the skeleton of the state after cur caused by ev: version +1,
// cause ev, HLC ev's, not AsWritten, everything else copied.
func next(cur Doc, ev *events.Event) Doc {
	n := cur.Clone()
	n.Version = cur.Version + 1
	n.HLC = ev.HLC
	n.Event, n.Client, n.Device, n.Seq = ev.ID, ev.Client, ev.Device, ev.Seq
	n.AsWritten = false
	return n
}

func clockOf(n *Doc, ev *events.Event) events.FieldClock {
	return events.FieldClock{Version: n.Version, HLC: ev.HLC, Client: ev.Client}
}

func setClock(n *Doc, f string, c events.FieldClock) {
	if n.Clocks == nil {
		n.Clocks = make(map[string]events.FieldClock)
	}
	n.Clocks[f] = c
}

// setAll makes ev.Fields the whole live state of n (put, resolve): every field
// written or removed gets ev's clock.
func setAll(n *Doc, cur Doc, ev *events.Event) {
	c := clockOf(n, ev)
	for f := range cur.Fields {
		if _, ok := ev.Fields[f]; !ok {
			setClock(n, f, c)
		}
	}
	for f := range ev.Fields {
		setClock(n, f, c)
	}
	n.Deleted = false
	n.Fields = normFields(cloneFields(ev.Fields))
}

// apply applies ev to cur as written (put, patch or delete).
func apply(cur Doc, ev *events.Event) Doc {
	n := next(cur, ev)
	switch ev.Op {
	case events.OpPut:
		setAll(&n, cur, ev)
	case events.OpPatch:
		c := clockOf(&n, ev)
		if n.Fields == nil {
			n.Fields = make(events.Fields, len(ev.Fields))
		}
		for f, v := range ev.Fields {
			if isNull(v) {
				delete(n.Fields, f)
			} else {
				n.Fields[f] = v
			}
			setClock(&n, f, c)
		}
		n.Fields = normFields(n.Fields)
	case events.OpDelete:
		c := clockOf(&n, ev)
		for f := range cur.Fields {
			setClock(&n, f, c)
		}
		n.Deleted = true
		n.Fields = nil
	}
	return n
}

func isNull(v []byte) bool { return bytes.Equal(bytes.TrimSpace(v), []byte("null")) }

// sideOf is the server's side of a conflict.
func sideOf(d Doc) events.Side {
	return events.Side{Event: d.Event, Client: d.Client, HLC: d.HLC, Version: d.Version, Deleted: d.Deleted, Fields: cloneFields(d.Fields)}
}

// sideOfEvent is the incoming side of a conflict.
func sideOfEvent(ev *events.Event) events.Side {
	return events.Side{Event: ev.ID, Client: ev.Client, HLC: ev.HLC, Deleted: ev.Op == events.OpDelete, Fields: cloneFields(ev.Fields)}
}

func record(ev *events.Event, p events.Policy, st events.ConflictStatus, cur Doc, lost []string) *events.Conflict {
	return &events.Conflict{
		ID: ev.ID, Policy: p, Status: st,
		Sides: []events.Side{sideOf(cur), sideOfEvent(ev)},
		Lost:  lost,
	}
}

// eventLost names what an event's write covers: "*" for a whole-document
// write, its field names for a patch.
func eventLost(ev *events.Event) []string {
	if ev.Op == events.OpPatch {
		return slices.Sorted(maps.Keys(ev.Fields))
	}
	return []string{"*"}
}

func resolveLWW(cur Doc, ev *events.Event) (Decision, error) {
	return lww(events.PolicyLWW, cur, ev), nil
}

func lww(p events.Policy, cur Doc, ev *events.Event) Decision {
	if events.CompareWrites(ev.HLC, ev.Client, cur.HLC, cur.Client) > 0 {
		n := apply(cur, ev)
		var lost []string
		if ev.Op == events.OpPatch {
			for _, f := range slices.Sorted(maps.Keys(ev.Fields)) {
				if cur.Clocks[f].Version > ev.BaseVersion {
					lost = append(lost, f)
				}
			}
		} else {
			lost = []string{"*"}
		}
		return Decision{
			Outcome: events.OutcomeApplied,
			Reason:  fmt.Sprintf("won %s over version %d (event %s)", p, cur.Version, cur.Event),
			Doc:     &n,
			Settled: record(ev, p, events.ConflictOverwritten, cur, lost),
		}
	}
	return Decision{
		Outcome: events.OutcomeRejected,
		Reason:  fmt.Sprintf("lost %s to version %d (event %s, hlc %s)", p, cur.Version, cur.Event, cur.HLC),
		Settled: record(ev, p, events.ConflictOverwritten, cur, eventLost(ev)),
	}
}

func resolveMerge(cur Doc, ev *events.Event) (Decision, error) {
	if ev.Op == events.OpDelete || !cur.Exists() {
		return lww(events.PolicyMerge, cur, ev), nil
	}
	// touched: what the event writes, nil meaning "remove".
	touched := make(map[string][]byte, len(ev.Fields))
	for f, v := range ev.Fields {
		if ev.Op == events.OpPatch && isNull(v) {
			touched[f] = nil
		} else {
			touched[f] = v
		}
	}
	if ev.Op == events.OpPut {
		// A put drops the fields it does not carry, but only those the writer
		// saw (unchanged since its base version); a field another writer
		// added or changed since is not the put's to drop.
		for f := range cur.Fields {
			if _, ok := touched[f]; !ok && cur.Clocks[f].Version <= ev.BaseVersion {
				touched[f] = nil
			}
		}
	}
	n := next(cur, ev)
	if n.Fields == nil {
		n.Fields = make(events.Fields, len(touched))
	}
	c := clockOf(&n, ev)
	var lost []string
	took := 0
	for _, f := range slices.Sorted(maps.Keys(touched)) {
		fc := cur.Clocks[f]
		if fc.Version > ev.BaseVersion {
			lost = append(lost, f)
			writer := fc.Client
			if writer == "" { // a clock recorded before fields kept their writer
				writer = cur.Client
			}
			if events.CompareWrites(ev.HLC, ev.Client, fc.HLC, writer) <= 0 {
				continue // the server's concurrent write is later: it stays
			}
		}
		if v := touched[f]; v == nil {
			delete(n.Fields, f)
		} else {
			n.Fields[f] = v
		}
		setClock(&n, f, c)
		took++
	}
	var rec *events.Conflict
	if len(lost) > 0 {
		rec = record(ev, events.PolicyMerge, events.ConflictOverwritten, cur, lost)
	}
	if took == 0 {
		return Decision{
			Outcome: events.OutcomeRejected,
			Reason:  fmt.Sprintf("every field lost merge to later writes up to version %d", cur.Version),
			Settled: rec,
		}, nil
	}
	if events.CompareWrites(cur.HLC, cur.Client, ev.HLC, ev.Client) > 0 {
		n.HLC = cur.HLC
	}
	n.Fields = normFields(n.Fields)
	return Decision{
		Outcome: events.OutcomeMerged,
		Reason:  fmt.Sprintf("merged with concurrent writes up to version %d", cur.Version),
		Doc:     &n,
		Settled: rec,
	}, nil
}

func resolveReject(cur Doc, ev *events.Event) (Decision, error) {
	return rejected(fmt.Sprintf("stale base version %d: current version is %d", ev.BaseVersion, cur.Version)), nil
}

func resolveManual(cur Doc, ev *events.Event) (Decision, error) {
	rec := record(ev, events.PolicyManual, events.ConflictOpen, cur, nil)
	n := next(cur, ev)
	n.HLC = cur.HLC // the value is unchanged, so is its clock
	n.Conflicts = append(n.Conflicts, cloneConflict(*rec))
	return Decision{
		Outcome: events.OutcomeConflict,
		Reason:  fmt.Sprintf("conflicts with version %d; kept as open conflict %s", cur.Version, rec.ID),
		Doc:     &n,
		Settled: rec,
	}, nil
}

func normFields(f events.Fields) events.Fields {
	if len(f) == 0 {
		return nil
	}
	return f
}

func cloneFields(f events.Fields) events.Fields {
	if len(f) == 0 {
		return nil
	}
	return maps.Clone(f)
}

func cloneClocks(c map[string]events.FieldClock) map[string]events.FieldClock {
	if len(c) == 0 {
		return nil
	}
	return maps.Clone(c)
}

func cloneConflict(c events.Conflict) events.Conflict {
	sides := make([]events.Side, len(c.Sides))
	for i, s := range c.Sides {
		s.Fields = cloneFields(s.Fields)
		sides[i] = s
	}
	if len(c.Sides) == 0 {
		sides = nil
	}
	c.Sides = sides
	c.Lost = slices.Clone(c.Lost)
	return c
}

func cloneConflicts(cs []events.Conflict) []events.Conflict {
	if len(cs) == 0 {
		return nil
	}
	out := make([]events.Conflict, len(cs))
	for i, c := range cs {
		out[i] = cloneConflict(c)
	}
	return out
}
