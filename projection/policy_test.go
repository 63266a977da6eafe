package projection

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ebbsync/ebb/events"
)

// t0 is the wall clock of the test scenarios.
var t0 = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

func hlcAt(d time.Duration) events.HLC { return events.HLC{Wall: t0.Add(d).UnixMilli()} }

// testIDs hands out increasing ULIDs for test events.
var testIDs = events.NewIDSource(func() time.Time { return t0 })

// mkEvent builds a valid event on tenant t, collection c, doc d.
func mkEvent(op events.Op, base uint64, at time.Duration, client string, kv ...string) *events.Event {
	ev := &events.Event{
		Schema: events.SchemaVersion, ID: testIDs.New().String(),
		Tenant: "t", Collection: "c", Doc: "d",
		Op: op, BaseVersion: base, HLC: hlcAt(at), Client: client, Seq: 1,
	}
	for i := 0; i+1 < len(kv); i += 2 {
		if ev.Fields == nil {
			ev.Fields = events.Fields{}
		}
		ev.Fields[kv[i]] = json.RawMessage(kv[i+1])
	}
	return ev
}

// step applies events in order from the empty document, failing on errors,
// and returns the final state.
func steps(t *testing.T, p Policies, evs ...*events.Event) Doc {
	t.Helper()
	var cur Doc
	for _, ev := range evs {
		d, err := Decide(p, cur, ev)
		if err != nil {
			t.Fatalf("decide %s: %v", ev.Op, err)
		}
		if d.Doc != nil {
			if d.Doc.Version != cur.Version+1 {
				t.Fatalf("version %d after %d", d.Doc.Version, cur.Version)
			}
			cur = *d.Doc
		}
	}
	return cur
}

func fields(kv ...string) events.Fields {
	f := events.Fields{}
	for i := 0; i+1 < len(kv); i += 2 {
		f[kv[i]] = json.RawMessage(kv[i+1])
	}
	if len(f) == 0 {
		return nil
	}
	return f
}

func only(r Resolver) Policies { return Policies{Default: r} }

type decideCase struct {
	name        string
	policy      Resolver
	history     func() []*events.Event // applied first, in order
	ev          func() *events.Event   // decided against the result
	wantOutcome events.Outcome
	wantFields  events.Fields // nil with wantDeleted or unchanged checks
	wantVersion uint64        // 0: the document must not change
	wantDeleted bool
	wantLost    []string // nil: no record expected
	wantStatus  events.ConflictStatus
	wantReason  string // substring
}

func runDecide(t *testing.T, cases []decideCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := only(tc.policy)
			cur := steps(t, p, tc.history()...)
			ev := tc.ev()
			before := cur.Clone()
			d, err := Decide(p, cur, ev)
			if err != nil {
				t.Fatalf("Decide: %v", err)
			}
			if !reflect.DeepEqual(before, cur) {
				t.Fatalf("Decide modified its input")
			}
			if d.Outcome != tc.wantOutcome {
				t.Fatalf("outcome %s (%s), want %s", d.Outcome, d.Reason, tc.wantOutcome)
			}
			if !strings.Contains(d.Reason, tc.wantReason) {
				t.Errorf("reason %q, want it to contain %q", d.Reason, tc.wantReason)
			}
			if tc.wantVersion == 0 {
				if d.Doc != nil {
					t.Fatalf("document changed to version %d, want no change", d.Doc.Version)
				}
			} else {
				if d.Doc == nil {
					t.Fatalf("no new state, want version %d", tc.wantVersion)
				}
				if d.Doc.Version != tc.wantVersion || d.Doc.Deleted != tc.wantDeleted {
					t.Errorf("version %d deleted %v, want %d %v", d.Doc.Version, d.Doc.Deleted, tc.wantVersion, tc.wantDeleted)
				}
				if !reflect.DeepEqual(d.Doc.Fields, tc.wantFields) {
					t.Errorf("fields %s, want %s", js(d.Doc.Fields), js(tc.wantFields))
				}
				if d.Doc.Event != ev.ID {
					t.Errorf("cause %s, want %s", d.Doc.Event, ev.ID)
				}
			}
			switch {
			case tc.wantStatus == "" && d.Settled != nil:
				t.Errorf("settled %+v, want none", d.Settled)
			case tc.wantStatus != "" && d.Settled == nil:
				t.Errorf("no conflict record, want status %s lost %v", tc.wantStatus, tc.wantLost)
			case tc.wantStatus != "":
				if d.Settled.Status != tc.wantStatus || !reflect.DeepEqual(d.Settled.Lost, tc.wantLost) {
					t.Errorf("record status %s lost %v, want %s %v", d.Settled.Status, d.Settled.Lost, tc.wantStatus, tc.wantLost)
				}
			}
		})
	}
}

func js(v any) string { b, _ := json.Marshal(v); return string(b) }

// base history: A creates {title:"a", n:1} at +0 (v1).
func created() []*events.Event {
	return []*events.Event{mkEvent(events.OpPut, 0, 0, "A", "title", `"a"`, "n", `1`)}
}

// A and B both saw v1 and went offline; A's edit reached the server first (v2).
func aEdited(at time.Duration) func() []*events.Event {
	return func() []*events.Event {
		return append(created(), mkEvent(events.OpPatch, 1, at, "A", "title", `"from A"`))
	}
}

func TestDecide_TwoClientsEditOffline(t *testing.T) {
	bLater := func() *events.Event { return mkEvent(events.OpPatch, 1, 2*time.Minute, "B", "title", `"from B"`) }
	bEarlier := func() *events.Event { return mkEvent(events.OpPatch, 1, 30*time.Second, "B", "title", `"from B"`) }
	runDecide(t, []decideCase{
		{name: "lww later wins", policy: LWW, history: aEdited(time.Minute), ev: bLater,
			wantOutcome: events.OutcomeApplied, wantVersion: 3, wantFields: fields("title", `"from B"`, "n", `1`),
			wantStatus: events.ConflictOverwritten, wantLost: []string{"title"}, wantReason: "won lww"},
		{name: "lww earlier loses and is recorded", policy: LWW, history: aEdited(time.Minute), ev: bEarlier,
			wantOutcome: events.OutcomeRejected, wantStatus: events.ConflictOverwritten, wantLost: []string{"title"}, wantReason: "lost lww"},
		{name: "merge same field later wins", policy: Merge, history: aEdited(time.Minute), ev: bLater,
			wantOutcome: events.OutcomeMerged, wantVersion: 3, wantFields: fields("title", `"from B"`, "n", `1`),
			wantStatus: events.ConflictOverwritten, wantLost: []string{"title"}},
		{name: "merge same field earlier loses", policy: Merge, history: aEdited(time.Minute), ev: bEarlier,
			wantOutcome: events.OutcomeRejected, wantStatus: events.ConflictOverwritten, wantLost: []string{"title"}},
		{name: "reject names the current version", policy: Reject, history: aEdited(time.Minute), ev: bLater,
			wantOutcome: events.OutcomeRejected, wantReason: "current version is 2"},
		{name: "manual keeps the value and opens a conflict", policy: Manual, history: aEdited(time.Minute), ev: bLater,
			wantOutcome: events.OutcomeConflict, wantVersion: 3, wantFields: fields("title", `"from A"`, "n", `1`),
			wantStatus: events.ConflictOpen},
		{name: "fresh write applies whatever its clock", policy: Reject, history: aEdited(time.Minute),
			ev:          func() *events.Event { return mkEvent(events.OpPatch, 2, -time.Hour, "B", "n", `2`) },
			wantOutcome: events.OutcomeApplied, wantVersion: 3, wantFields: fields("title", `"from A"`, "n", `2`)},
	})
}

func TestDecide_MergeConcurrentFields(t *testing.T) {
	runDecide(t, []decideCase{
		{name: "different fields both survive", policy: Merge, history: aEdited(time.Minute),
			ev:          func() *events.Event { return mkEvent(events.OpPatch, 1, 30*time.Second, "B", "n", `2`, "body", `"x"`) },
			wantOutcome: events.OutcomeMerged, wantVersion: 3, wantFields: fields("title", `"from A"`, "n", `2`, "body", `"x"`)},
		{name: "removal of an untouched field applies", policy: Merge, history: aEdited(time.Minute),
			ev:          func() *events.Event { return mkEvent(events.OpPatch, 1, 30*time.Second, "B", "n", `null`) },
			wantOutcome: events.OutcomeMerged, wantVersion: 3, wantFields: fields("title", `"from A"`)},
		{name: "stale put keeps fields added concurrently", policy: Merge,
			history: func() []*events.Event {
				return append(created(), mkEvent(events.OpPatch, 1, time.Minute, "A", "tag", `"t"`))
			},
			ev:          func() *events.Event { return mkEvent(events.OpPut, 1, 30*time.Second, "B", "title", `"b"`) },
			wantOutcome: events.OutcomeMerged, wantVersion: 3, wantFields: fields("title", `"b"`, "tag", `"t"`)},
		{name: "lww with different fields: whole document goes to the later", policy: LWW, history: aEdited(time.Minute),
			ev:          func() *events.Event { return mkEvent(events.OpPatch, 1, 30*time.Second, "B", "n", `2`) },
			wantOutcome: events.OutcomeRejected, wantStatus: events.ConflictOverwritten, wantLost: []string{"n"}},
	})
}

func TestDecide_OneEditsOneDeletes(t *testing.T) {
	aDeleted := func(at time.Duration) func() []*events.Event {
		return func() []*events.Event { return append(created(), mkEvent(events.OpDelete, 1, at, "A")) }
	}
	bPut := func(at time.Duration) func() *events.Event {
		return func() *events.Event { return mkEvent(events.OpPut, 1, at, "B", "title", `"b"`) }
	}
	runDecide(t, []decideCase{
		{name: "lww later put resurrects", policy: LWW, history: aDeleted(time.Minute), ev: bPut(2 * time.Minute),
			wantOutcome: events.OutcomeApplied, wantVersion: 3, wantFields: fields("title", `"b"`),
			wantStatus: events.ConflictOverwritten, wantLost: []string{"*"}},
		{name: "lww earlier put loses to the delete", policy: LWW, history: aDeleted(time.Minute), ev: bPut(30 * time.Second),
			wantOutcome: events.OutcomeRejected, wantStatus: events.ConflictOverwritten, wantLost: []string{"*"}},
		{name: "merge falls back to lww", policy: Merge, history: aDeleted(time.Minute), ev: bPut(30 * time.Second),
			wantOutcome: events.OutcomeRejected, wantStatus: events.ConflictOverwritten, wantLost: []string{"*"}},
		{name: "patch of a deleted document is rejected under every policy", policy: LWW, history: aDeleted(time.Minute),
			ev:          func() *events.Event { return mkEvent(events.OpPatch, 1, time.Hour, "B", "n", `5`) },
			wantOutcome: events.OutcomeRejected, wantReason: "deleted at version 2"},
		{name: "later stale delete wins over an edit", policy: Merge, history: aEdited(time.Minute),
			ev:          func() *events.Event { return mkEvent(events.OpDelete, 1, 2*time.Minute, "B") },
			wantOutcome: events.OutcomeApplied, wantVersion: 3, wantDeleted: true,
			wantStatus: events.ConflictOverwritten, wantLost: []string{"*"}},
		{name: "manual keeps both", policy: Manual, history: aEdited(time.Minute),
			ev:          func() *events.Event { return mkEvent(events.OpDelete, 1, 2*time.Minute, "B") },
			wantOutcome: events.OutcomeConflict, wantVersion: 3, wantFields: fields("title", `"from A"`, "n", `1`),
			wantStatus: events.ConflictOpen},
		{name: "delete of a deleted document changes nothing", policy: Reject, history: aDeleted(time.Minute),
			ev:          func() *events.Event { return mkEvent(events.OpDelete, 1, 2*time.Minute, "B") },
			wantOutcome: events.OutcomeApplied, wantReason: "already deleted"},
	})
}

func TestDecide_BothCreateSameID(t *testing.T) {
	bCreate := func(at time.Duration) func() *events.Event {
		return func() *events.Event { return mkEvent(events.OpPut, 0, at, "B", "title", `"b"`, "b", `true`) }
	}
	runDecide(t, []decideCase{
		{name: "lww later create wins", policy: LWW, history: created, ev: bCreate(time.Second),
			wantOutcome: events.OutcomeApplied, wantVersion: 2, wantFields: fields("title", `"b"`, "b", `true`),
			wantStatus: events.ConflictOverwritten, wantLost: []string{"*"}},
		{name: "merge unions, shared field to the later", policy: Merge, history: created, ev: bCreate(time.Second),
			wantOutcome: events.OutcomeMerged, wantVersion: 2, wantFields: fields("title", `"b"`, "b", `true`, "n", `1`),
			wantStatus: events.ConflictOverwritten, wantLost: []string{"title"}},
		{name: "reject the second create", policy: Reject, history: created, ev: bCreate(time.Second),
			wantOutcome: events.OutcomeRejected, wantReason: "current version is 1"},
		{name: "manual", policy: Manual, history: created, ev: bCreate(time.Second),
			wantOutcome: events.OutcomeConflict, wantVersion: 2, wantFields: fields("title", `"a"`, "n", `1`), wantStatus: events.ConflictOpen},
		{name: "equal clocks tie-break by client id", policy: LWW, history: created, ev: bCreate(0),
			wantOutcome: events.OutcomeApplied, wantVersion: 2, wantFields: fields("title", `"b"`, "b", `true`),
			wantStatus: events.ConflictOverwritten, wantLost: []string{"*"}},
	})
}

func TestDecide_ClockHourBehind(t *testing.T) {
	// B's clock is an hour slow: its edit, made after A's in real time, carries
	// an earlier HLC and loses last-writer-wins, as the policy promises.
	behind := func() *events.Event {
		return mkEvent(events.OpPatch, 1, time.Minute-time.Hour, "B", "title", `"from B"`)
	}
	runDecide(t, []decideCase{
		{name: "lww", policy: LWW, history: aEdited(time.Minute), ev: behind,
			wantOutcome: events.OutcomeRejected, wantStatus: events.ConflictOverwritten, wantLost: []string{"title"}},
		{name: "merge", policy: Merge, history: aEdited(time.Minute), ev: behind,
			wantOutcome: events.OutcomeRejected, wantStatus: events.ConflictOverwritten, wantLost: []string{"title"}},
	})
}

func TestDecide_ManualResolved(t *testing.T) {
	p := only(Manual)
	cur := steps(t, p, aEdited(time.Minute)()...)
	b := mkEvent(events.OpPatch, 1, 2*time.Minute, "B", "title", `"from B"`)
	d, err := Decide(p, cur, b)
	if err != nil || d.Outcome != events.OutcomeConflict || d.Doc == nil {
		t.Fatalf("stale write: %+v, %v", d, err)
	}
	cur = *d.Doc
	if len(cur.Conflicts) != 1 || cur.Conflicts[0].ID != b.ID || cur.Conflicts[0].Status != events.ConflictOpen {
		t.Fatalf("open conflicts %+v", cur.Conflicts)
	}
	// A fresh write meanwhile applies and keeps the conflict open.
	d, err = Decide(p, cur, mkEvent(events.OpPatch, 3, 3*time.Minute, "C", "n", `7`))
	if err != nil || d.Outcome != events.OutcomeApplied || len(d.Doc.Conflicts) != 1 {
		t.Fatalf("fresh write during conflict: %+v, %v", d, err)
	}
	cur = *d.Doc
	res := mkEvent(events.OpResolve, cur.Version, 4*time.Minute, "A", "title", `"agreed"`, "n", `7`)
	res.Resolves = b.ID
	d, err = Decide(p, cur, res)
	if err != nil || d.Outcome != events.OutcomeApplied || d.Doc == nil {
		t.Fatalf("resolve: %+v, %v", d, err)
	}
	if len(d.Doc.Conflicts) != 0 || d.Settled == nil || d.Settled.Status != events.ConflictResolved || d.Settled.Resolution != res.ID {
		t.Fatalf("after resolve: conflicts %+v settled %+v", d.Doc.Conflicts, d.Settled)
	}
	if !reflect.DeepEqual(d.Doc.Fields, fields("title", `"agreed"`, "n", `7`)) || d.Doc.Version != 5 {
		t.Fatalf("resolved state v%d %s", d.Doc.Version, js(d.Doc.Fields))
	}
	again, err := Decide(p, *d.Doc, res)
	if err != nil || again.Outcome != events.OutcomeRejected || again.Doc != nil {
		t.Fatalf("second resolve: %+v, %v", again, err)
	}
}

func TestDecide_CommonRules(t *testing.T) {
	runDecide(t, []decideCase{
		{name: "patch of a missing document", policy: LWW, history: func() []*events.Event { return nil },
			ev:          func() *events.Event { return mkEvent(events.OpPatch, 0, 0, "A", "n", `1`) },
			wantOutcome: events.OutcomeRejected, wantReason: "does not exist"},
		{name: "delete of a missing document", policy: LWW, history: func() []*events.Event { return nil },
			ev:          func() *events.Event { return mkEvent(events.OpDelete, 0, 0, "A") },
			wantOutcome: events.OutcomeRejected, wantReason: "does not exist"},
		{name: "base version ahead", policy: LWW, history: created,
			ev:          func() *events.Event { return mkEvent(events.OpPut, 9, 0, "A", "n", `1`) },
			wantOutcome: events.OutcomeRejected, wantReason: "ahead"},
		{name: "resolve of no conflict", policy: Manual, history: created,
			ev: func() *events.Event {
				e := mkEvent(events.OpResolve, 1, 0, "A", "n", `1`)
				e.Resolves = e.ID
				return e
			},
			wantOutcome: events.OutcomeRejected, wantReason: "no open conflict"},
		{name: "put creates", policy: Reject, history: func() []*events.Event { return nil },
			ev:          func() *events.Event { return mkEvent(events.OpPut, 0, 0, "A", "n", `1`) },
			wantOutcome: events.OutcomeApplied, wantVersion: 1, wantFields: fields("n", `1`)},
	})
}

func TestDecide_FieldClocks(t *testing.T) {
	cur := steps(t, Policies{}, aEdited(time.Minute)()...)
	if c := cur.Clocks["title"]; c.Version != 2 || c.HLC != hlcAt(time.Minute) {
		t.Errorf("title clock %+v", c)
	}
	if c := cur.Clocks["n"]; c.Version != 1 {
		t.Errorf("n clock %+v", c)
	}
	del := steps(t, Policies{}, append(aEdited(time.Minute)(), mkEvent(events.OpDelete, 2, 2*time.Minute, "A"))...)
	if c := del.Clocks["n"]; c.Version != 3 || !del.Deleted || del.Fields != nil {
		t.Errorf("after delete: n clock %+v deleted %v fields %v", c, del.Deleted, del.Fields)
	}
}

func TestDecide_Custom(t *testing.T) {
	// A custom resolver: the longest title wins. Decide fixes version and cause.
	longest := ResolverFunc(func(cur Doc, ev *events.Event) (Decision, error) {
		if len(ev.Fields["title"]) <= len(cur.Fields["title"]) {
			return Decision{Outcome: events.OutcomeRejected, Reason: "shorter title"}, nil
		}
		n := cur.Clone()
		n.Fields["title"] = ev.Fields["title"]
		return Decision{Outcome: events.OutcomeMerged, Doc: &n, Settled: &events.Conflict{Lost: []string{"title"}}}, nil
	})
	reg := NewRegistry()
	if err := reg.Register("longest", longest); err != nil {
		t.Fatal(err)
	}
	if err := reg.Register("lww", longest); !errors.Is(err, ErrPolicyExists) {
		t.Fatalf("re-register lww: %v", err)
	}
	if _, err := reg.Policies("nope", map[string]string{"x": "also-nope"}); !errors.Is(err, ErrUnknownPolicy) {
		t.Fatalf("unknown names: %v", err)
	}
	p, err := reg.Policies("", map[string]string{"c": "longest"})
	if err != nil {
		t.Fatal(err)
	}
	cur := steps(t, p, aEdited(time.Minute)()...)
	ev := mkEvent(events.OpPatch, 1, 0, "B", "title", `"a much longer title"`)
	d, err := Decide(p, cur, ev)
	if err != nil {
		t.Fatal(err)
	}
	if d.Doc == nil || d.Doc.Version != 3 || d.Doc.Event != ev.ID || d.Settled.Policy != "longest" || d.Settled.ID != ev.ID {
		t.Fatalf("custom decision %+v settled %+v", d.Doc, d.Settled)
	}
	bad := Policies{Default: ResolverFunc(func(Doc, *events.Event) (Decision, error) {
		return Decision{Outcome: events.OutcomeDuplicate}, nil
	})}
	if _, err := Decide(bad, cur, ev); !errors.Is(err, ErrResolver) {
		t.Fatalf("contract breach: %v", err)
	}
}

func TestDocChangeRoundTrip(t *testing.T) {
	cur := steps(t, only(Manual), append(aEdited(time.Minute)(), mkEvent(events.OpPatch, 1, 0, "B", "n", `3`))...)
	c := cur.Change(nil)
	b, err := events.EncodeChange(c)
	if err != nil {
		t.Fatal(err)
	}
	c2, err := events.DecodeChange(b)
	if err != nil {
		t.Fatal(err)
	}
	if got := DocFromChange(c2); !reflect.DeepEqual(got, cur) {
		t.Fatalf("round trip\n got %+v\nwant %+v", got, cur)
	}
}

// Equal HLCs on one field are broken by that field's writer, not by whoever
// wrote the document last.
func TestDecide_MergeTieBreaksOnFieldWriter(t *testing.T) {
	p := Policies{Default: Merge}
	cur := steps(t, p,
		mkEvent(events.OpPut, 0, 0, "c", `x`, `"base"`, `y`, `"base"`),
		mkEvent(events.OpPatch, 1, time.Minute, "z", `x`, `"by z"`),
		mkEvent(events.OpPatch, 2, 2*time.Minute, "a", `y`, `"by a"`),
	)
	if cur.Clocks["x"].Client != "z" || cur.Client != "a" {
		t.Fatalf("setup: x written by %q, doc last by %q", cur.Clocks["x"].Client, cur.Client)
	}
	// "m" wrote x offline at the very HLC of z's write: "m" < "z", so z's value stays.
	d, err := Decide(p, cur, mkEvent(events.OpPatch, 1, time.Minute, "m", `x`, `"by m"`))
	if err != nil {
		t.Fatal(err)
	}
	if d.Doc != nil && string(d.Doc.Fields["x"]) != `"by z"` {
		t.Fatalf("x = %s, want z's value to win the tie", d.Doc.Fields["x"])
	}
}
