package producer

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.etcd.io/bbolt"

	"github.com/ebbsync/ebb/events"
)

func TestLog_DeviceIsTheStores(t *testing.T) {
	dir := t.TempDir()
	a := mustOpen(t, filepath.Join(dir, "a.db"), func(c *LogConfig) { c.Client = "alice" })
	b := mustOpen(t, filepath.Join(dir, "b.db"), func(c *LogConfig) { c.Client = "alice" })
	if a.Device() == "" || b.Device() == "" {
		t.Fatalf("devices %q, %q: a new log must mint one", a.Device(), b.Device())
	}
	if a.Device() == b.Device() {
		t.Fatalf("two stores of one client share device %q", a.Device())
	}
	ea := mustAppend(t, a, put("c", "d", 1))[0]
	eb := mustAppend(t, b, put("c", "d", 2))[0]
	if ea.Device != a.Device() || eb.Device != b.Device() || ea.Seq != 1 || eb.Seq != 1 {
		t.Fatalf("events (%s,%d) and (%s,%d): want each store's device, seq 1", ea.Device, ea.Seq, eb.Device, eb.Seq)
	}
	dev := a.Device()
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	a = mustOpen(t, filepath.Join(dir, "a.db"), func(c *LogConfig) { c.Client = "alice" })
	if a.Device() != dev {
		t.Fatalf("reopened device %q, want %q", a.Device(), dev)
	}
	if e := mustAppend(t, a, put("c", "d", 3))[0]; e.Device != dev || e.Seq != 2 {
		t.Fatalf("after reopen: (%s,%d), want (%s,2)", e.Device, e.Seq, dev)
	}
}

func TestLog_ObserveReceiptForksARestoredLog(t *testing.T) {
	l := tempLog(t)
	evs := mustAppend(t, l, put("c", "d1", 1), put("c", "d2", 2))
	old := l.Device()
	// A receipt for a sequence the log wrote is no news.
	forked, err := l.ObserveReceipt(t.Context(), &events.Receipt{Event: evs[1].ID, Tenant: "t1", Client: l.Client(), Device: old, Seq: 2})
	if err != nil || forked {
		t.Fatalf("observe own seq: forked %v, %v", forked, err)
	}
	// The server applied sequence 5 of this device: the log was restored.
	forked, err = l.ObserveReceipt(t.Context(), &events.Receipt{Event: events.NewIDSource(time.Now).New().String(), Tenant: "t1", Client: l.Client(), Device: old, Seq: 5})
	if err != nil || !forked {
		t.Fatalf("observe seq 5 of a log at 2: forked %v, %v", forked, err)
	}
	if l.Device() == old {
		t.Fatal("device unchanged after fork")
	}
	e := mustAppend(t, l, put("c", "d3", 3))[0]
	if e.Device != l.Device() || e.Seq != 1 {
		t.Fatalf("after fork: (%s,%d), want (%s,1)", e.Device, e.Seq, l.Device())
	}
	// A receipt of the old device no longer forks.
	forked, err = l.ObserveReceipt(t.Context(), &events.Receipt{Event: events.NewIDSource(time.Now).New().String(), Tenant: "t1", Client: l.Client(), Device: old, Seq: 9})
	if err != nil || forked {
		t.Fatalf("observe old device: forked %v, %v", forked, err)
	}
}

func TestLog_ReissueWritesAgainAsANewDevice(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log.db")
	l := mustOpen(t, path)
	first := mustAppend(t, l, put("c", "d", 1))[0]
	w := put("c", "d", 2)
	w.After = first.ID
	second := mustAppend(t, l, w)[0]
	old := l.Device()

	reused := func(e *events.Event) *events.Receipt {
		return &events.Receipt{Schema: events.SchemaVersion, Event: e.ID, Tenant: e.Tenant, Client: e.Client, Device: e.Device,
			Seq: e.Seq, Collection: e.Collection, Doc: e.Doc, Outcome: events.OutcomeReused, Reason: "sequence taken by another event"}
	}
	n1, err := l.Reissue(t.Context(), reused(first))
	if err != nil || n1 == nil {
		t.Fatalf("reissue first: %v, %v", n1, err)
	}
	if n1.Device == old || n1.Seq != 1 || n1.ID == first.ID || string(n1.Fields["v"]) != "1" {
		t.Fatalf("reissued %+v: want a new device, seq 1, a new id, the same fields", n1)
	}
	n2, err := l.Reissue(t.Context(), reused(second))
	if err != nil || n2 == nil {
		t.Fatalf("reissue second: %v, %v", n2, err)
	}
	if n2.Device != n1.Device || n2.Seq != 2 || n2.After != n1.ID {
		t.Fatalf("second reissue (%s,%d,after %s): want device %s seq 2 after %s (no second fork)", n2.Device, n2.Seq, n2.After, n1.Device, n1.ID)
	}
	if got, err := l.Successor(t.Context(), first.ID); err != nil || got != n1.ID {
		t.Fatalf("Successor(first) = %s, %v; want %s", got, err, n1.ID)
	}
	if got, err := l.Successor(t.Context(), n1.ID); err != nil || got != n1.ID {
		t.Fatalf("Successor of a write never rewritten = %s, %v; want itself", got, err)
	}
	// Reissuing a settled event again is a no-op.
	if again, err := l.Reissue(t.Context(), reused(first)); err != nil || again != nil {
		t.Fatalf("reissue again: %v, %v", again, err)
	}
	// What survives a reopen: the originals settled as reused, naming their
	// successors; the successors pending.
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l = mustOpen(t, path)
	es, err := l.Entries(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != 4 {
		t.Fatalf("%d entries, want 4", len(es))
	}
	for i, want := range []struct {
		id    string
		state State
	}{{first.ID, StateSettled}, {second.ID, StateSettled}, {n1.ID, StatePending}, {n2.ID, StatePending}} {
		if es[i].Event.ID != want.id || es[i].State != want.state {
			t.Fatalf("entry %d: %s %s, want %s %s", i, es[i].Event.ID, es[i].State, want.id, want.state)
		}
	}
	if es[0].Outcome != events.OutcomeReused || !strings.Contains(es[0].Reason, n1.ID) {
		t.Fatalf("original settled as %s %q: want reused naming %s", es[0].Outcome, es[0].Reason, n1.ID)
	}
	if l.Device() != n1.Device {
		t.Fatalf("device after reopen %s, want %s", l.Device(), n1.Device)
	}
}

func TestCheckFile(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.db")
	l := mustOpen(t, good)
	mustAppend(t, l, put("c", "d", strings.Repeat("x", 20000)))
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	garbage := append([]byte(nil), data...)
	copy(garbage[:8192], make([]byte, 8192))
	for _, tc := range []struct {
		name    string
		path    string
		wantErr error
	}{
		{"healthy", good, nil},
		{"missing", filepath.Join(dir, "nope.db"), ErrStoreMissing},
		{"empty", write("empty.db", nil), ErrStoreEmpty},
		{"truncated", write("trunc.db", data[:len(data)/2]), ErrStoreDamaged},
		{"header only", write("head.db", data[:100]), ErrStoreDamaged},
		{"meta pages zeroed", write("zero.db", garbage), ErrStoreDamaged},
		{"not bbolt", write("text.db", []byte(strings.Repeat("hello ", 2000))), ErrStoreDamaged},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckFile(tc.path)
			if !errors.Is(err, tc.wantErr) || (err == nil) != (tc.wantErr == nil) {
				t.Fatalf("CheckFile: %v, want %v", err, tc.wantErr)
			}
			if err != nil && !strings.Contains(err.Error(), tc.path) {
				t.Fatalf("error %q does not name the file", err)
			}
		})
	}
	// A file CheckFile passes opens.
	db, err := bbolt.Open(good, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = db.Close()
}

func TestOpenStore_NeverReplacesAStoreThatExisted(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ebb.db")
	l, err := OpenStore(path, LogConfig{Tenant: "t1"}, FileOptions{})
	if err != nil {
		t.Fatalf("new store: %v", err)
	}
	mustAppend(t, l, put("c", "d", 1))
	_ = l.Close()
	if _, err := os.Stat(path + MarkerSuffix); err != nil {
		t.Fatalf("no marker after creating the store: %v", err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		damage  func()
		wantErr error
		want    string
	}{
		{"emptied", func() { os.WriteFile(path, nil, 0o600) }, ErrStoreEmpty, "ebb doctor --reset"},
		{"missing", func() { os.Remove(path) }, ErrStoreMissing, "restore"},
		{"truncated", func() { os.WriteFile(path, data[:len(data)/3], 0o600) }, ErrStoreDamaged, "keep the file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.damage()
			before, _ := os.ReadFile(path)
			l, err := OpenStore(path, LogConfig{Tenant: "t1"}, FileOptions{})
			if err == nil {
				l.Close()
				t.Fatal("opened a damaged store")
			}
			if !errors.Is(err, tc.wantErr) || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("OpenStore: %v, want one line wrapping %v and saying %q", err, tc.wantErr, tc.want)
			}
			after, _ := os.ReadFile(path)
			if string(before) != string(after) {
				t.Fatal("OpenStore changed the damaged file")
			}
		})
	}
	// A store without a marker (made before markers existed) is adopted.
	legacy := filepath.Join(dir, "legacy.db")
	if err := os.WriteFile(legacy, data, 0o600); err != nil {
		t.Fatal(err)
	}
	l, err = OpenStore(legacy, LogConfig{Tenant: "t1"}, FileOptions{})
	if err != nil {
		t.Fatalf("legacy store: %v", err)
	}
	l.Close()
	if _, err := os.Stat(legacy + MarkerSuffix); err != nil {
		t.Fatalf("legacy store not marked: %v", err)
	}
}

// TestLog_AckAfterReceiptCountsAsPublished: the projector can answer an
// event before the publisher has stored its ack; the entry must still
// count as a publish, once (Sync reported "pushed 0" for writes it had
// pushed): at the settle, which is what a Flush waits for, and not again
// at the late ack.
func TestLog_AckAfterReceiptCountsAsPublished(t *testing.T) {
	l := tempLog(t)
	e := mustAppend(t, l, put("c", "d", 1))[0]
	if err := l.db.Update(func(tx *bbolt.Tx) error {
		return l.settle(tx, &events.Receipt{Event: e.ID, Tenant: e.Tenant, Client: e.Client, Seq: e.Seq, Outcome: events.OutcomeApplied, Version: 1, Stream: 7})
	}); err != nil {
		t.Fatal(err)
	}
	if n := l.settledPending.Load(); n != 1 {
		t.Fatalf("settled while pending: counted %d, want 1", n)
	}
	ack := &jetstream.PubAck{Stream: events.StreamEvents, Sequence: 7}
	if _, n, err := l.markResults([]result{{seq: 1, ack: ack}}); err != nil || n != 0 {
		t.Fatalf("markResults after the receipt: published %d, %v; want 0 (counted at the settle)", n, err)
	}
	if _, n, err := l.markResults([]result{{seq: 1, ack: ack}}); err != nil || n != 0 {
		t.Fatalf("a second ack of the same entry: published %d, %v; want 0", n, err)
	}
	got, ok, err := l.Entry(t.Context(), e.ID)
	if err != nil || !ok || got.State != StateSettled || got.PublishedAt.IsZero() {
		t.Fatalf("entry %+v (%v): want settled with a publish time", got, err)
	}
}
