package main

import (
	"path/filepath"
	"testing"
)

// README's Operations section, as written, against the built binary: the
// stream state and dead letters of a running server, a backup while it
// serves, a restore into a new data directory, a server on it, verify.
func TestE2E_Operations(t *testing.T) {
	e := newE2E(t)
	e.startServer("--policy", "todos=manual", "--policy", "notes=merge")
	e.ok("alice", "applied (version 1)", "put", "todos", "t1", `{"title":"milk"}`)
	e.ok("alice", "applied (version 1)", "put", "notes", "n1", `{"text":"shopping"}`)

	e.ok("", "EVENTS", "streams")
	e.ok("", "no dead letters", "dead", "list")
	e.ok("", "nothing to replay", "dead", "replay", "--all")
	backup := filepath.Join(e.dir, "ebb-backup.tar")
	e.ok("", "backed up to", "backup", "--data", filepath.Join(e.dir, "server"), backup)
	e.stopServer()

	restored := filepath.Join(e.dir, "ebb-data-restored")
	e.ok("", "view rebuilt from EVENTS 1..2: 2 documents; policies default=lww notes=merge todos=manual", "restore", "--data", restored, backup)
	e.startServer("--data", restored)
	e.ok("bob", "pulled 2", "sync")
	if got := field(e.doc("bob", "todos", "t1"), "title"); got != `"milk"` {
		t.Fatalf("bob's todos/t1 after the restore: %s", got)
	}
	e.ok("bob", "applied (version 2)", "patch", "todos", "t1", `{"done":true}`)
	e.stopServer()
	e.ok("", "OK: 2 documents, events 1..3 replayed", "verify", "--data", restored)
}
