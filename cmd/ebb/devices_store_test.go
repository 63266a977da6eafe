package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ebbsync/ebb/consumer"
	"github.com/ebbsync/ebb/producer"
)

// TestCLI_DamagedStoreRefused: put and get on a local store that is
// truncated, emptied or missing (its marker present) fail with one line
// naming the file and 'ebb doctor', and leave the file as it was: no new
// identity is minted over the old one.
func TestCLI_DamagedStoreRefused(t *testing.T) {
	tests := []struct {
		name   string
		damage func(t *testing.T, path string, data []byte)
	}{
		{"truncated", func(t *testing.T, path string, data []byte) {
			if err := os.WriteFile(path, data[:5*4096], 0o600); err != nil {
				t.Fatal(err)
			}
		}},
		{"emptied", func(t *testing.T, path string, _ []byte) {
			if err := os.WriteFile(path, nil, 0o600); err != nil {
				t.Fatal(err)
			}
		}},
		{"missing", func(t *testing.T, path string, _ []byte) {
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "client")
			env := map[string]string{"EBB_DATA": dir, "EBB_NATS": "nats://127.0.0.1:1", "EBB_TENANT": "acme"}
			if out, stderr, code := runIn(t, env, "put", "todos", "t1", `{"title":"`+strings.Repeat("x", 50000)+`"}`); code != 0 {
				t.Fatalf("put: %d %s %s", code, out, stderr)
			}
			path := filepath.Join(dir, consumer.DBFile)
			if _, err := os.Stat(path + producer.MarkerSuffix); err != nil {
				t.Fatalf("no marker beside a new store: %v", err)
			}
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			tt.damage(t, path, data)
			before, berr := os.ReadFile(path)
			for _, args := range [][]string{{"put", "todos", "t2", `{"title":"b"}`}, {"get", "todos", "t1"}} {
				_, stderr, code := runIn(t, env, args...)
				lines := strings.Split(strings.TrimRight(stderr, "\n"), "\n")
				if code != 1 || len(lines) != 1 || !strings.Contains(stderr, path) || !strings.Contains(stderr, "ebb doctor") {
					t.Errorf("%s on a %s store: exit %d, stderr %q: want exit 1 and one line naming %s and 'ebb doctor'", args[0], tt.name, code, stderr, path)
				}
				after, aerr := os.ReadFile(path)
				if (berr == nil) != (aerr == nil) || !bytes.Equal(before, after) {
					t.Errorf("%s on a %s store changed the file: %d bytes (%v), was %d (%v)", args[0], tt.name, len(after), aerr, len(before), berr)
				}
			}
		})
	}
}
