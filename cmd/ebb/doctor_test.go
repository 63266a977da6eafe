package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ebbsync/ebb/consumer"
)

func TestCLI_DoctorFindsAndSetsAsideADamagedStore(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "client")
	env := map[string]string{"EBB_DATA": dir, "EBB_NATS": "nats://127.0.0.1:1", "EBB_TENANT": "acme"}
	if out, stderr, code := runIn(t, env, "put", "todos", "t1", `{"title":"`+strings.Repeat("x", 50000)+`"}`); code != 0 {
		t.Fatalf("put: %d %s %s", code, out, stderr)
	}
	if out, _, code := runIn(t, env, "doctor"); code != 0 || !strings.Contains(out, "ok (client") || !strings.Contains(out, "1 unsent writes") {
		t.Fatalf("doctor on a healthy store: exit %d, %q", code, out)
	}
	path := filepath.Join(dir, consumer.DBFile)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data[:5*4096], 0o600); err != nil { // the document alone needs 13 pages
		t.Fatal(err)
	}
	out, _, code := runIn(t, env, "doctor")
	if code != 1 || !strings.Contains(out, "damaged") || !strings.Contains(out, "doctor --reset") {
		t.Fatalf("doctor on a truncated store: exit %d, %q", code, out)
	}
	out, _, code = runIn(t, env, "doctor", "--reset")
	if code != 0 || !strings.Contains(out, "moved") {
		t.Fatalf("doctor --reset: exit %d, %q", code, out)
	}
	kept, err := filepath.Glob(path + ".damaged-*")
	if err != nil || len(kept) == 0 {
		t.Fatalf("set-aside files %v (%v), want the store", kept, err)
	}
	if b, err := os.ReadFile(kept[0]); err != nil || len(b) != 5*4096 {
		t.Fatalf("set-aside store: %d bytes, %v: want the damaged file as it was", len(b), err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("store still in place after --reset: %v", err)
	}
}
