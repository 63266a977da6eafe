package projection_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/projection"
	"github.com/ebbsync/ebb/projection/rules"
)

const testRules = `
collections:
  lists:
    read:  [{user: owner}, {group: team}]
    write: [{user: owner}]
  todos:
    follow: {collection: lists, field: list}
`

func mustRules(tb testing.TB, src string) *rules.Set {
	tb.Helper()
	s, err := rules.Parse([]byte(src))
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// ruledMsg is ev as the server stores it under auth: with the writer's
// groups stamped in Ebb-Writer-Groups.
func ruledMsg(tb testing.TB, ev *events.Event, groups ...string) *nats.Msg {
	tb.Helper()
	m := eventMsg(tb, ev)
	if len(groups) > 0 {
		toks := make([]string, len(groups))
		for i, g := range groups {
			toks[i] = events.EncodeToken(g)
		}
		m.Header.Set(events.HeaderWriterGroups, strings.Join(toks, " "))
	}
	return m
}

// lastChangeMsg returns the last message of a document in CHANGES.
func lastChangeMsg(tb testing.TB, js jetstream.JetStream, tenant, coll, doc string) *jetstream.RawStreamMsg {
	tb.Helper()
	s, err := js.Stream(context.Background(), events.StreamChanges)
	if err != nil {
		tb.Fatal(err)
	}
	m, err := s.GetLastMsgForSubject(context.Background(), events.ChangeSubject(tenant, coll, doc))
	if err != nil {
		tb.Fatalf("last change of %s/%s: %v", coll, doc, err)
	}
	return m
}

// audienceOf returns a CHANGES message's readers and was-readers headers,
// and whether it has a readers header at all.
func audienceOf(m *jetstream.RawStreamMsg) (readers, was string, has bool) {
	_, has = m.Header[events.HeaderReaders]
	return m.Header.Get(events.HeaderReaders), m.Header.Get(events.HeaderWasReaders), has
}

// waitAudience waits until the last change of a document is at version
// with the given audience headers.
func waitAudience(tb testing.TB, js jetstream.JetStream, coll, doc string, version uint64, readers, was string) {
	tb.Helper()
	var got string
	defer func() {
		if tb.Failed() {
			tb.Logf("last change of %s/%s: %s", coll, doc, got)
		}
	}()
	waitFor(tb, 10*time.Second, fmt.Sprintf("%s/%s at v%d readers=%q was=%q", coll, doc, version, readers, was), func() bool {
		m := lastChangeMsg(tb, js, "acme", coll, doc)
		c, err := events.DecodeChange(m.Data)
		if err != nil {
			tb.Fatal(err)
		}
		r, w, has := audienceOf(m)
		got = fmt.Sprintf("v%d readers=%q (header %v) was=%q", c.Version, r, has, w)
		return has && c.Version == version && r == readers && w == was
	})
}

// streamMsgs returns every message a stream holds, read by sequence (no
// consumer, so a test may poll it).
func streamMsgs(tb testing.TB, js jetstream.JetStream, name string) []*jetstream.RawStreamMsg {
	tb.Helper()
	s, err := js.Stream(context.Background(), name)
	if err != nil {
		tb.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	var out []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(context.Background(), seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			tb.Fatal(err)
		}
		out = append(out, m)
	}
	return out
}

// receiptOf waits for the receipt of ev.
func receiptOf(tb testing.TB, js jetstream.JetStream, ev *events.Event) *events.Receipt {
	tb.Helper()
	var got *events.Receipt
	waitFor(tb, 10*time.Second, "receipt of "+ev.ID, func() bool {
		for _, m := range streamMsgs(tb, js, events.StreamReceipts) {
			r, err := events.DecodeReceipt(m.Data)
			if err == nil && r.Event == ev.ID {
				got = r
				return true
			}
		}
		return false
	})
	return got
}

// TestProjectorRules_AudienceOnApply: every change of a ruled collection
// carries the new state's readers and the previous state's; a move out of
// a group's view names it in WasReaders only; a tombstone keeps its
// readers; an unruled collection's changes carry no audience.
func TestProjectorRules_AudienceOnApply(t *testing.T) {
	e := newEnv(t)
	store := mustOpenBolt(t, "")
	p := startProjector(t, e.js, store, projection.Config{Rules: mustRules(t, testRules)})
	ann := newWriter("acme", "ann", 0)

	ev := ann.event("lists", "l1", events.OpPut, 0, map[string]any{"owner": "ann", "team": "red"})
	waitCheckpoint(t, p, publish(t, e.js, ruledMsg(t, ev), ev.ID))
	waitAudience(t, e.js, "lists", "l1", 1, "g:red u:ann", "")

	ev = ann.event("lists", "l1", events.OpPatch, 1, map[string]any{"team": "blue"})
	waitCheckpoint(t, p, publish(t, e.js, ruledMsg(t, ev), ev.ID))
	waitAudience(t, e.js, "lists", "l1", 2, "g:blue u:ann", "g:red u:ann")

	ev = ann.event("lists", "l1", events.OpDelete, 2, nil)
	waitCheckpoint(t, p, publish(t, e.js, ruledMsg(t, ev), ev.ID))
	// A tombstone goes to everyone who may hold a copy: every reader of
	// every state so far.
	waitAudience(t, e.js, "lists", "l1", 3, "g:blue g:red u:ann", "g:blue g:red u:ann")

	ev = ann.event("notes", "n1", events.OpPut, 0, map[string]any{"owner": "ann"})
	waitCheckpoint(t, p, publish(t, e.js, ruledMsg(t, ev), ev.ID))
	waitFor(t, 10*time.Second, "the note's change", func() bool { return msgCount(t, e.js, events.StreamChanges) == 2 })
	if _, _, has := audienceOf(lastChangeMsg(t, e.js, "acme", "notes", "n1")); has {
		t.Errorf("a change of a collection no rule names carries %s", events.HeaderReaders)
	}
}

// TestProjectorRules_ForbiddenWriteRejected: a write the rules refuse,
// judged on the state before and on the state after, is rejected with a
// receipt naming the rule, and the view is untouched.
func TestProjectorRules_ForbiddenWriteRejected(t *testing.T) {
	e := newEnv(t)
	store := mustOpenBolt(t, "")
	p := startProjector(t, e.js, store, projection.Config{Rules: mustRules(t, testRules)})
	ann, bob := newWriter("acme", "ann", 0), newWriter("acme", "bob", 0)

	ev := ann.event("lists", "l1", events.OpPut, 0, map[string]any{"owner": "ann", "team": "red"})
	waitCheckpoint(t, p, publish(t, e.js, ruledMsg(t, ev), ev.ID))

	refused := []struct {
		name   string
		ev     *events.Event
		groups []string
		reason string
	}{
		{"a team member edits the owner's list", bob.event("lists", "l1", events.OpPatch, 1, map[string]any{"title": "mine"}), []string{"red"},
			"sync rules: lists/l1: write needs you to be the user in field owner"},
		// bob reads no state of l1: the receipt is hidden from him (hiddenFrom), its reason generic.
		{"a writer takes the list over (the state before refuses)", bob.event("lists", "l1", events.OpPut, 1, map[string]any{"owner": "bob"}), nil,
			"sync rules: lists/l1: you may not write this document"},
		{"a writer creates a list for another user (the state after refuses)", bob.event("lists", "l2", events.OpPut, 0, map[string]any{"owner": "ann"}), nil,
			"sync rules: lists/l2: write needs you to be the user in field owner"},
		{"a writer deletes another's list", bob.event("lists", "l1", events.OpDelete, 1, nil), nil,
			"sync rules: lists/l1: you may not write this document"},
		{"a todo of another's list", bob.event("todos", "t1", events.OpPut, 0, map[string]any{"list": "l1"}), []string{"red"},
			"sync rules: todos/t1: write needs you to be the user in field owner"},
		{"a todo of a list that does not exist", ann.event("todos", "t2", events.OpPut, 0, map[string]any{"list": "nope"}), nil,
			"does not exist"},
	}
	for _, c := range refused {
		t.Run(c.name, func(t *testing.T) {
			waitCheckpoint(t, p, publish(t, e.js, ruledMsg(t, c.ev, c.groups...), c.ev.ID))
			r := receiptOf(t, e.js, c.ev)
			if r.Outcome != events.OutcomeRejected || !strings.Contains(r.Reason, c.reason) {
				t.Errorf("receipt %s %q, want rejected with %q", r.Outcome, r.Reason, c.reason)
			}
			d, err := store.Get(context.Background(), c.ev.Address())
			if err != nil {
				t.Fatal(err)
			}
			if want := map[bool]uint64{true: 1, false: 0}[c.ev.Doc == "l1"]; d.Version != want {
				t.Errorf("view of %s at v%d after a refused write, want v%d", c.ev.Doc, d.Version, want)
			}
		})
	}
	// The owner writes the list and its todos.
	ok := ann.event("todos", "t3", events.OpPut, 0, map[string]any{"list": "l1"})
	waitCheckpoint(t, p, publish(t, e.js, ruledMsg(t, ok), ok.ID))
	if r := receiptOf(t, e.js, ok); r.Outcome != events.OutcomeApplied {
		t.Errorf("owner's todo: %s %q", r.Outcome, r.Reason)
	}
	waitAudience(t, e.js, "todos", "t3", 1, "g:red u:ann", "")
}

// TestProjectorRules_ParentChangeReemitsChildren: when a list's audience
// changes, its todos are published again (same version) with the new
// audience, the old one as WasReaders.
func TestProjectorRules_ParentChangeReemitsChildren(t *testing.T) {
	e := newEnv(t)
	store := mustOpenBolt(t, "")
	p := startProjector(t, e.js, store, projection.Config{Rules: mustRules(t, testRules)})
	ann := newWriter("acme", "ann", 0)
	for _, ev := range []*events.Event{
		ann.event("lists", "l1", events.OpPut, 0, map[string]any{"owner": "ann", "team": "red"}),
		ann.event("todos", "t1", events.OpPut, 0, map[string]any{"list": "l1"}),
		ann.event("todos", "t2", events.OpPut, 0, map[string]any{"list": "l1"}),
		ann.event("lists", "l2", events.OpPut, 0, map[string]any{"owner": "ann", "team": "green"}),
		ann.event("todos", "other", events.OpPut, 0, map[string]any{"list": "l2"}),
	} {
		waitCheckpoint(t, p, publish(t, e.js, ruledMsg(t, ev), ev.ID))
	}
	waitAudience(t, e.js, "todos", "t2", 1, "g:red u:ann", "")
	waitAudience(t, e.js, "todos", "other", 1, "g:green u:ann", "")

	ev := ann.event("lists", "l1", events.OpPatch, 1, map[string]any{"team": "blue"})
	waitCheckpoint(t, p, publish(t, e.js, ruledMsg(t, ev), ev.ID))
	for _, id := range []string{"t1", "t2"} {
		// was-readers: everyone who may hold a copy (the parent's
		// readers so far, new ones included).
		waitAudience(t, e.js, "todos", id, 1, "g:blue u:ann", "g:blue g:red u:ann")
	}
	waitAudience(t, e.js, "todos", "other", 1, "g:green u:ann", "") // another list's: not re-emitted
	// A change that leaves the audience as it was re-emits nothing.
	before := lastSeq(t, e.js, events.StreamChanges)
	ev = ann.event("lists", "l1", events.OpPatch, 2, map[string]any{"title": "groceries"})
	waitCheckpoint(t, p, publish(t, e.js, ruledMsg(t, ev), ev.ID))
	waitAudience(t, e.js, "lists", "l1", 3, "g:blue u:ann", "g:blue g:red u:ann")
	if got := lastSeq(t, e.js, events.StreamChanges); got != before+1 {
		t.Errorf("a title change published %d changes, want 1 (the list's)", got-before)
	}
	// The parent deleted: its children are nobody's.
	ev = ann.event("lists", "l1", events.OpDelete, 3, nil)
	waitCheckpoint(t, p, publish(t, e.js, ruledMsg(t, ev), ev.ID))
	waitAudience(t, e.js, "todos", "t1", 1, "", "g:blue g:red u:ann")
}

// TestProjectorRules_ReseedAndRepublishCarryAudience: the changes the
// outbox publishes after a restart, and the copies a reseed publishes,
// carry their audience too.
func TestProjectorRules_ReseedAndRepublishCarryAudience(t *testing.T) {
	e := newEnv(t)
	store := mustOpenBolt(t, "")
	cfg := projection.Config{Rules: mustRules(t, testRules)}
	p := startProjector(t, e.js, store, cfg)
	ann := newWriter("acme", "ann", 0)
	ev := ann.event("lists", "l1", events.OpPut, 0, map[string]any{"owner": "ann", "team": "red"})
	waitCheckpoint(t, p, publish(t, e.js, ruledMsg(t, ev), ev.ID))
	waitAudience(t, e.js, "lists", "l1", 1, "g:red u:ann", "")

	// Reseed: CHANGES purged under the running projector.
	purgeStream(t, e, events.StreamChanges)
	waitFor(t, 20*time.Second, "the reseed", func() bool { return p.Stats().Reseeds > 0 && msgCount(t, e.js, events.StreamChanges) == 1 })
	m := lastChangeMsg(t, e.js, "acme", "lists", "l1")
	if id := m.Header.Get(jetstream.MsgIDHeader); !strings.HasPrefix(id, "seed:") {
		t.Fatalf("last change %q is not a reseeded copy", id)
	}
	if r, _, has := audienceOf(m); !has || r != "g:red u:ann" {
		t.Errorf("reseeded copy: readers %q (header present %v), want g:red u:ann", r, has)
	}

	// Republish: the change of an event applied while publishes fail
	// stays in the outbox; the next start publishes it.
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	down, err := projection.New(&downPubJS{JetStream: e.js, err: errServerDown}, store, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := down.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	ev = ann.event("lists", "l1", events.OpPatch, 1, map[string]any{"team": "blue"})
	seq := publish(t, e.js, ruledMsg(t, ev), ev.ID)
	waitFor(t, 10*time.Second, "the patch committed", func() bool {
		cp, err := store.Checkpoint(context.Background())
		return err == nil && cp >= seq
	})
	if err := down.Close(); err != nil {
		t.Fatal(err)
	}
	entries, err := store.Outbox(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	var held bool
	for _, e := range entries {
		held = held || strings.HasPrefix(e.MsgID, "chg:")
	}
	if !held {
		t.Fatalf("the change did not stay in the outbox: %d entries", len(entries))
	}
	startProjector(t, e.js, store, cfg)
	waitFor(t, 20*time.Second, "the republished change", func() bool {
		for _, m := range streamMsgs(t, e.js, events.StreamChanges) {
			if strings.HasPrefix(m.Header.Get(jetstream.MsgIDHeader), "chg:") {
				if got := m.Header.Get(events.HeaderReaders); got != "g:blue u:ann" {
					t.Fatalf("republished change: readers %q, want g:blue u:ann", got)
				}
				if got := m.Header.Get(events.HeaderWasReaders); got != "g:red u:ann" {
					t.Fatalf("republished change: was-readers %q, want g:red u:ann", got)
				}
				return true
			}
		}
		return false
	})
}

// TestProjectorRules_RulesChangeReemits: a projector started under other
// rules than CHANGES' audiences were computed under publishes every live
// document again with its new audience (the old one as WasReaders), once.
func TestProjectorRules_RulesChangeReemits(t *testing.T) {
	e := newEnv(t)
	store := mustOpenBolt(t, "")
	p := startProjector(t, e.js, store, projection.Config{Rules: mustRules(t, testRules)})
	ann := newWriter("acme", "ann", 0)
	ev := ann.event("lists", "l1", events.OpPut, 0, map[string]any{"owner": "ann", "team": "red"})
	waitCheckpoint(t, p, publish(t, e.js, ruledMsg(t, ev), ev.ID))
	waitAudience(t, e.js, "lists", "l1", 1, "g:red u:ann", "")
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	owners := strings.Replace(testRules, "read:  [{user: owner}, {group: team}]", "read:  [{user: owner}]", 1)
	p = startProjector(t, e.js, store, projection.Config{Rules: mustRules(t, owners)})
	waitAudience(t, e.js, "lists", "l1", 1, "u:ann", "g:red u:ann")
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	before := lastSeq(t, e.js, events.StreamChanges)
	p = startProjector(t, e.js, store, projection.Config{Rules: mustRules(t, owners)})
	if got := lastSeq(t, e.js, events.StreamChanges); got != before {
		t.Errorf("a restart under the same rules published %d changes again (%s; stats %+v)", got-before,
			lastChangeMsg(t, e.js, "acme", "lists", "l1").Header.Get(jetstream.MsgIDHeader), p.Stats())
	}
}

// TestVisibility: the gateway's doc reads judge a document as the
// projector's audience does, a follower through its parent in the view.
func TestVisibility(t *testing.T) {
	store := mustOpenBolt(t, "")
	list := projection.Doc{Tenant: "acme", Collection: "lists", ID: "l1", Version: 1,
		Fields: events.Fields{"owner": []byte(`"ann"`), "team": []byte(`"red"`)}}
	if err := store.Commit(context.Background(), &projection.Batch{Checkpoint: 1, Docs: []projection.Doc{list}}); err != nil {
		t.Fatal(err)
	}
	v := projection.Visibility{Rules: mustRules(t, testRules), Store: store}
	tests := []struct {
		coll, list string
		want       string
		ruled      bool
	}{
		{"todos", "l1", "g:red u:ann", true},
		{"todos", "l9", "", true},
		{"notes", "l1", "", false},
	}
	for _, tt := range tests {
		aud, ruled, err := v.Audience(context.Background(), "acme", tt.coll, "x", events.Fields{"list": []byte(`"` + tt.list + `"`)})
		if err != nil {
			t.Fatal(err)
		}
		if got := events.EncodeAudience(aud); got != tt.want || ruled != tt.ruled {
			t.Errorf("%s of list %s: audience %q ruled %v, want %q %v", tt.coll, tt.list, got, ruled, tt.want, tt.ruled)
		}
	}
	if aud, ruled, err := (projection.Visibility{}).Audience(context.Background(), "acme", "lists", "l1", list.Fields); err != nil || ruled || aud != nil {
		t.Errorf("no rules: %q %v %v", aud, ruled, err)
	}
}

// TestProjectorRules_VerifyJudgesTheSame: a rebuild under the same rules
// refuses the same writes, so the view verifies (invariant 4); without the
// rules it would apply them and differ.
func TestProjectorRules_VerifyJudgesTheSame(t *testing.T) {
	e := newEnv(t)
	store := mustOpenBolt(t, "")
	cfg := projection.Config{Rules: mustRules(t, testRules)}
	p := startProjector(t, e.js, store, cfg)
	ann, bob := newWriter("acme", "ann", 0), newWriter("acme", "bob", 0)
	var last uint64
	for _, ev := range []*events.Event{
		ann.event("lists", "l1", events.OpPut, 0, map[string]any{"owner": "ann"}),
		bob.event("lists", "l1", events.OpPatch, 1, map[string]any{"owner": "bob"}),
		ann.event("todos", "t1", events.OpPut, 0, map[string]any{"list": "l1"}),
		bob.event("todos", "t2", events.OpPut, 0, map[string]any{"list": "l1"}),
	} {
		last = publish(t, e.js, ruledMsg(t, ev), ev.ID)
	}
	waitCheckpoint(t, p, last)
	if _, err := projection.Verify(context.Background(), e.js, store, cfg); err != nil {
		t.Fatalf("verify under the same rules: %v", err)
	}
	if _, err := projection.Verify(context.Background(), e.js, store, projection.Config{}); !errors.Is(err, projection.ErrDiverged) {
		t.Fatalf("verify without the rules: %v, want ErrDiverged", err)
	}
}
