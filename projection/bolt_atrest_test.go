package projection_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ebbsync/ebb/deploy/keys"
	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/projection"
	"github.com/ebbsync/ebb/projection/storetest"
)

func viewCipher(t testing.TB, b byte) *keys.Cipher {
	t.Helper()
	var k keys.Key
	k[0] = b
	c, err := k.Cipher(keys.PurposeView)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestBoltStore_Encrypted runs the shared store suite on an encrypted store:
// sealing changes nothing a Store promises.
func TestBoltStore_Encrypted(t *testing.T) {
	storetest.RunStoreSuite(t, func(t *testing.T) projection.Store {
		s, err := projection.OpenBolt(filepath.Join(t.TempDir(), "view.db"), projection.BoltOptions{Cipher: viewCipher(t, 1)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
}

const viewMarker = "view-atrest-marker-1c9d"

// TestBoltStore_EncryptedAtRest commits a document, a conflict record and
// an outbox entry holding a marker, checks the file holds no plaintext
// marker (a plaintext control does), reopens with the key and reads all
// three back; another key, no key, and a key on the plaintext store are
// refused with ErrWrongKey naming the file.
func TestBoltStore_EncryptedAtRest(t *testing.T) {
	fields := events.Fields{"v": json.RawMessage(`"` + viewMarker + `"`)}
	addr := events.DocAddress{Tenant: "t", Collection: "c", Doc: "d"}
	paths := map[bool]string{}
	for _, encrypted := range []bool{false, true} {
		var c *keys.Cipher
		if encrypted {
			c = viewCipher(t, 1)
		}
		path := filepath.Join(t.TempDir(), "view.db")
		paths[encrypted] = path
		s, err := projection.OpenBolt(path, projection.BoltOptions{Cipher: c})
		if err != nil {
			t.Fatal(err)
		}
		err = s.Commit(t.Context(), &projection.Batch{
			Checkpoint: 1,
			Docs:       []projection.Doc{{Tenant: "t", Collection: "c", ID: "d", Version: 1, Fields: fields}},
			Conflicts: []projection.ConflictRecord{{Address: addr, Conflict: events.Conflict{ID: "e1", Policy: events.PolicyLWW,
				Status: events.ConflictOverwritten, Sides: []events.Side{{Fields: fields}}}}},
			Outbox: []projection.OutboxEntry{{Subject: "ebb.chg.t.c.d", MsgID: "m1", Data: []byte(viewMarker)}},
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		raw, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if got := bytes.Contains(raw, []byte(viewMarker)); got == encrypted {
			t.Fatalf("encrypted %v: marker in the file: %v", encrypted, got)
		}
		s, err = projection.OpenBolt(path, projection.BoltOptions{Cipher: c})
		if err != nil {
			t.Fatal(err)
		}
		d, err := s.Get(t.Context(), addr)
		if err != nil || !strings.Contains(string(d.Fields["v"]), viewMarker) {
			t.Fatalf("get: %+v, %v", d, err)
		}
		if cs, err := s.Conflicts(t.Context(), addr); err != nil || len(cs) != 1 || cs[0].ID != "e1" {
			t.Fatalf("conflicts: %+v, %v", cs, err)
		}
		if ob, err := s.Outbox(t.Context(), 0); err != nil || len(ob) != 1 || string(ob[0].Data) != viewMarker {
			t.Fatalf("outbox: %+v, %v", ob, err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	for _, tt := range []struct {
		name string
		path string
		c    *keys.Cipher
	}{
		{"wrong key", paths[true], viewCipher(t, 2)},
		{"missing key", paths[true], nil},
		{"plaintext with key", paths[false], viewCipher(t, 1)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s, err := projection.OpenBolt(tt.path, projection.BoltOptions{Cipher: tt.c})
			if err == nil {
				s.Close()
			}
			if !errors.Is(err, keys.ErrWrongKey) || !strings.Contains(err.Error(), tt.path) {
				t.Fatalf("open: %v, want ErrWrongKey naming %s", err, tt.path)
			}
		})
	}
}
