package projection_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/events/schema"
	"github.com/ebbsync/ebb/projection"
)

// conformanceCase is one file of events/testdata/conformance (its README
// describes the format).
type conformanceCase struct {
	Name        string            `json:"name"`
	Description string            `json:"description"`
	Collections map[string]string `json:"collections"`
	Events      []json.RawMessage `json:"events"`
	Receipts    []struct {
		Event    string         `json:"event"`
		Outcome  events.Outcome `json:"outcome"`
		Version  uint64         `json:"version"`
		Conflict string         `json:"conflict"`
	} `json:"receipts"`
	Docs []struct {
		Collection    string                     `json:"collection"`
		Doc           string                     `json:"doc"`
		Version       uint64                     `json:"version"`
		Deleted       bool                       `json:"deleted"`
		Fields        map[string]json.RawMessage `json:"fields"`
		OpenConflicts int                        `json:"open_conflicts"`
	} `json:"docs"`
}

// TestConformance replays the protocol's conformance corpus through the
// real projector on an embedded JetStream: every event published as a
// client would, the receipts and final document states compared with what
// the corpus says, and every payload on the wire validated against the
// JSON Schemas. A client in another language checks itself against the same
// files.
func TestConformance(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("..", "events", "testdata", "conformance", "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no conformance cases: %v", err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var c conformanceCase
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&c); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		t.Run(c.Name, func(t *testing.T) { runConformance(t, c) })
	}
}

func runConformance(t *testing.T, c conformanceCase) {
	e := newEnv(t)
	reg := projection.NewRegistry()
	pols, err := reg.Policies("lww", c.Collections)
	if err != nil {
		t.Fatal(err)
	}
	store := mustOpenBolt(t, "")
	p := startProjector(t, e.js, store, projection.Config{Policies: pols})
	for i, raw := range c.Events {
		if err := schema.Validate(schema.Event, raw); err != nil {
			t.Fatalf("event %d of the corpus: %v", i, err)
		}
		ev, err := events.DecodeEvent(raw, events.Limits{})
		if err != nil {
			t.Fatalf("event %d of the corpus: %v", i, err)
		}
		m := nats.NewMsg(ev.Subject())
		m.Data = raw
		publish(t, e.js, m, ev.ID)
	}
	waitCheckpoint(t, p, uint64(len(c.Events)))
	waitFor(t, 10*time.Second, "receipts", func() bool { return msgCount(t, e.js, events.StreamReceipts) >= uint64(len(c.Receipts)) })

	got := map[string]*events.Receipt{}
	for _, m := range readAll(t, e.js, events.StreamReceipts) {
		if err := schema.Validate(schema.Receipt, m.Data()); err != nil {
			t.Errorf("receipt on %s: %v", m.Subject(), err)
		}
		r, err := events.DecodeReceipt(m.Data())
		if err != nil {
			t.Fatal(err)
		}
		if _, dup := got[r.Event]; dup {
			t.Errorf("two receipts for event %s", r.Event)
		}
		got[r.Event] = r
	}
	for i, want := range c.Receipts {
		r := got[want.Event]
		switch {
		case r == nil:
			t.Errorf("event %d (%s): no receipt", i, want.Event)
		case r.Outcome != want.Outcome || r.Version != want.Version || (want.Conflict != "" && r.Conflict != want.Conflict):
			t.Errorf("event %d (%s): receipt %s version %d conflict %q (%s), want %s version %d conflict %q",
				i, want.Event, r.Outcome, r.Version, r.Conflict, r.Reason, want.Outcome, want.Version, want.Conflict)
		}
	}

	last := map[string]*events.Change{}
	for _, m := range readAll(t, e.js, events.StreamChanges) {
		if err := schema.Validate(schema.Change, m.Data()); err != nil {
			t.Errorf("change on %s: %v", m.Subject(), err)
		}
		ch, err := events.DecodeChange(m.Data())
		if err != nil {
			t.Fatal(err)
		}
		last[m.Subject()] = ch
	}
	for _, want := range c.Docs {
		addr := events.DocAddress{Tenant: "acme", Collection: want.Collection, Doc: want.Doc}
		d, err := store.Get(t.Context(), addr)
		if err != nil {
			t.Fatalf("get %v: %v", addr, err)
		}
		open := 0
		for _, cf := range d.Conflicts {
			if cf.Status == events.ConflictOpen {
				open++
			}
		}
		if d.Version != want.Version || d.Deleted != want.Deleted || open != want.OpenConflicts || !sameFields(d.Fields, want.Fields) {
			t.Errorf("%s/%s: version %d deleted %v open conflicts %d fields %s; want version %d deleted %v open conflicts %d fields %s",
				want.Collection, want.Doc, d.Version, d.Deleted, open, jsonOf(d.Fields), want.Version, want.Deleted, want.OpenConflicts, jsonOf(want.Fields))
		}
		ch := last[events.ChangeSubject("acme", want.Collection, want.Doc)]
		if ch == nil || ch.Version != want.Version || !sameFields(ch.Fields, want.Fields) {
			t.Errorf("%s/%s: last change in CHANGES %+v, want version %d", want.Collection, want.Doc, ch, want.Version)
		}
	}
	if len(last) != len(c.Docs) {
		t.Errorf("CHANGES holds %d documents, the corpus names %d", len(last), len(c.Docs))
	}
}

// sameFields compares two documents' fields as JSON values.
func sameFields(a, b map[string]json.RawMessage) bool {
	if len(a) != len(b) {
		return false
	}
	for k, va := range a {
		vb, ok := b[k]
		if !ok {
			return false
		}
		var x, y any
		if json.Unmarshal(va, &x) != nil || json.Unmarshal(vb, &y) != nil || !reflect.DeepEqual(x, y) {
			return false
		}
	}
	return true
}

func jsonOf(v any) string { b, _ := json.Marshal(v); return string(b) }
