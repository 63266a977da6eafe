package consumer

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.etcd.io/bbolt"

	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/producer"
)

// TestReplica_StoreSizePerDocument: after a fresh replica caught up with
// documents the projector wrote (two fields, ~130 bytes of JSON each, as
// `ebb bench`'s catch-up writes them), its closed store holds at most
// twice the documents' JSON (issue 15: "local store size per document vs its
// JSON <= 2x"; the change payloads as received made it 5x).
func TestReplica_StoreSizePerDocument(t *testing.T) {
	const n = 10_000
	_, nc, js := mustServer(t)
	mustProjector(t, js, testPolicies())
	w, err := OpenReplica(t.Context(), ReplicaConfig{Dir: t.TempDir(), Tenant: "t1", Conn: nc, Policies: testPolicies()})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	pad := json.RawMessage(`"` + strings.Repeat("x", 54) + `"`)
	for i := 0; i < n; i += 1000 {
		ws := make([]producer.Write, 0, 1000)
		for j := i; j < i+1000; j++ {
			ws = append(ws, producer.Write{Collection: "bench", Doc: fmt.Sprintf("doc-%05d", j), Op: events.OpPut,
				Fields: events.Fields{"n": json.RawMessage(fmt.Sprint(j)), "v": pad}})
		}
		if _, err := w.Log().AppendBatch(t.Context(), ws); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := w.Sync(t.Context()); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	r, err := OpenReplica(t.Context(), ReplicaConfig{Dir: dir, Tenant: "t1", Conn: nc, Policies: testPolicies()})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := r.Sync(t.Context()); err != nil {
		t.Fatal(err)
	}
	docs, err := r.List(t.Context(), "bench", false)
	if err != nil {
		t.Fatal(err)
	}
	if len(docs) != n {
		t.Fatalf("%d documents after the catch-up, want %d", len(docs), n)
	}
	type fullDoc struct {
		Collection string        `json:"collection"`
		ID         string        `json:"id"`
		Version    uint64        `json:"version"`
		Fields     events.Fields `json:"fields"`
	}
	all := make([]fullDoc, 0, len(docs))
	for _, d := range docs {
		all = append(all, fullDoc{d.Collection, d.ID, d.Version, d.Fields})
	}
	b, err := json.Marshal(all)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	// What the store holds is bbolt's high-water mark (every page up to the
	// last allocated, free ones included); the file's length adds the
	// growth step (storeGrowth, 4 MiB) past it, unwritten and sparse: a
	// fixed cost per replica, not per document.
	path := filepath.Join(dir, DBFile)
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	var held int64
	err = db.View(func(tx *bbolt.Tx) error { held = tx.Size(); return nil })
	if cerr := db.Close(); err != nil || cerr != nil {
		t.Fatal(err, cerr)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	ratio := float64(held) / float64(len(b))
	t.Logf("%d documents: JSON %d B (%.0f B/doc), %s holds %d B (%.0f B/doc, %.2fx), file length %d B",
		n, len(b), float64(len(b))/n, DBFile, held, float64(held)/n, ratio, fi.Size())
	if ratio > 2 {
		t.Fatalf("local store %.2fx the documents' JSON, want at most 2x", ratio)
	}
}
