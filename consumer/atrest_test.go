package consumer

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ebbsync/ebb/deploy/keys"
	"github.com/ebbsync/ebb/events"
)

const atRestMarker = "consumer-atrest-marker-4f2e"

func atRestCipher(t testing.TB, b byte) *keys.Cipher {
	t.Helper()
	var k keys.Key
	k[0] = b
	c, err := k.Cipher(keys.PurposeClient)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestReplica_EncryptedRoundTrip fills every value bucket of an encrypted
// replica with a marker (a synced document with a conflict, a pending
// write, a receipt awaiting its change, a rejection), then checks that
// reads return it, the file holds no plaintext marker (a plaintext control
// does), and everything reads back after reopening with the key.
func TestReplica_EncryptedRoundTrip(t *testing.T) {
	_, nc, js := mustServer(t)
	for _, tc := range []struct {
		name       string
		c          *keys.Cipher
		wantMarker bool
	}{{"plaintext control", nil, true}, {"encrypted", atRestCipher(t, 1), false}} {
		t.Run(tc.name, func(t *testing.T) {
			tenant := strings.ReplaceAll(tc.name, " ", "-")
			dir := t.TempDir()
			cfg := ReplicaConfig{Dir: dir, Tenant: tenant, Cipher: tc.c}
			r, err := OpenReplica(t.Context(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			mark := func(s string) events.Fields { return events.Fields{"v": json.RawMessage(`"` + atRestMarker + s + `"`)} }
			ch := testChange(tenant, "notes", "n1", 1, 0)
			ch.Fields = mark(" synced")
			ch.Conflicts = []events.Conflict{{ID: "c1", Status: events.ConflictOpen, Policy: events.PolicyManual, Sides: []events.Side{{Fields: mark(" theirs")}}}}
			publishChange(t, js, ch)
			// The replica's own writes: one that stays pending, one whose
			// receipt waits for a change, one rejected.
			if _, err := r.Put(t.Context(), "notes", "pending", mark(" pending")); err != nil {
				t.Fatal(err)
			}
			if _, err := r.Put(t.Context(), "notes", "waiting", mark(" waiting")); err != nil {
				t.Fatal(err)
			}
			if _, err := r.Put(t.Context(), "notes", "rejected", mark(" rejected")); err != nil {
				t.Fatal(err)
			}
			es, err := r.Log().Entries(t.Context())
			if err != nil || len(es) != 3 {
				t.Fatalf("entries: %d, %v", len(es), err)
			}
			for i, o := range []events.Outcome{events.OutcomeApplied, events.OutcomeRejected} {
				e := es[i+1].Event
				b, _ := events.EncodeReceipt(&events.Receipt{Schema: events.SchemaVersion, Event: e.ID, Tenant: tenant, Client: r.Client(),
					Device: e.Device, Seq: e.Seq, Collection: e.Collection, Doc: e.Doc, Outcome: o, Version: 1, Reason: "test"})
				if _, err := js.Publish(t.Context(), e.ReceiptSubject(), b); err != nil {
					t.Fatal(err)
				}
			}
			if err := r.Attach(t.Context(), nc); err != nil {
				t.Fatal(err)
			}
			waitFor(t, 20*time.Second, "changes and receipts applied", func() bool {
				s := r.Status()
				return s.Changes.Seq > 0 && s.Receipts.Seq >= 2 && s.Rejections == 1
			})
			r.Detach()
			check := func(r *Replica) {
				t.Helper()
				d, err := r.Get(t.Context(), "notes", "n1")
				if err != nil || !strings.Contains(string(d.Fields["v"]), atRestMarker) || len(d.Conflicts) != 1 {
					t.Fatalf("get n1: %+v, %v", d, err)
				}
				if cs, err := r.Conflicts(t.Context()); err != nil || len(cs) != 1 {
					t.Fatalf("conflicts: %v, %v", cs, err)
				}
				if rs, err := r.Rejections(t.Context()); err != nil || len(rs) != 1 || !strings.Contains(string(rs[0].Fields["v"]), atRestMarker) {
					t.Fatalf("rejections: %+v, %v", rs, err)
				}
				if ds, err := r.List(t.Context(), "notes", false); err != nil || len(ds) != 3 {
					t.Fatalf("list: %+v, %v", ds, err)
				}
			}
			check(r)
			if err := r.Close(); err != nil {
				t.Fatal(err)
			}
			raw, err := os.ReadFile(filepath.Join(dir, DBFile))
			if err != nil {
				t.Fatal(err)
			}
			if got := bytes.Contains(raw, []byte(atRestMarker)); got != tc.wantMarker {
				t.Fatalf("marker in the file: %v, want %v", got, tc.wantMarker)
			}
			r, err = OpenReplica(t.Context(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			check(r)
		})
	}
}

// TestReplica_WrongKeyRefused opens an encrypted replica with another key
// and without a key, and a plaintext replica with a key: each fails at
// open with ErrWrongKey naming the file, and the right key still works.
func TestReplica_WrongKeyRefused(t *testing.T) {
	enc, plain := t.TempDir(), t.TempDir()
	for _, p := range []struct {
		dir string
		c   *keys.Cipher
	}{{enc, atRestCipher(t, 1)}, {plain, nil}} {
		r, err := OpenReplica(t.Context(), ReplicaConfig{Dir: p.dir, Tenant: "acme", Cipher: p.c})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.Put(t.Context(), "notes", "n1", events.Fields{"v": json.RawMessage(`1`)}); err != nil {
			t.Fatal(err)
		}
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name string
		dir  string
		c    *keys.Cipher
	}{
		{"wrong key", enc, atRestCipher(t, 2)},
		{"missing key", enc, nil},
		{"plaintext with key", plain, atRestCipher(t, 1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := OpenReplica(t.Context(), ReplicaConfig{Dir: tt.dir, Tenant: "acme", Cipher: tt.c})
			if err == nil {
				r.Close()
			}
			if !errors.Is(err, keys.ErrWrongKey) || !strings.Contains(err.Error(), filepath.Join(tt.dir, DBFile)) {
				t.Fatalf("open: %v, want ErrWrongKey naming the file", err)
			}
		})
	}
	r, err := OpenReplica(t.Context(), ReplicaConfig{Dir: enc, Tenant: "acme", Cipher: atRestCipher(t, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if d, err := r.Get(t.Context(), "notes", "n1"); err != nil || d.Pending != 1 {
		t.Fatalf("get with the right key: %+v, %v", d, err)
	}
}
