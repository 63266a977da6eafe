package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ebbsync/ebb/consumer"
	"github.com/ebbsync/ebb/deploy/embedded/embeddedtest"
	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/projection"
)

// testReplica is an app's replica, in process, of the e2e server.
type testReplica struct {
	t   *testing.T
	e   *e2e
	r   *consumer.Replica
	nc  *nats.Conn
	dir string
}

func openTestReplica(t *testing.T, e *e2e, name string) *testReplica {
	t.Helper()
	tr := &testReplica{t: t, e: e, dir: filepath.Join(e.dir, "replica-"+name)}
	r, err := consumer.OpenReplica(t.Context(), consumer.ReplicaConfig{Dir: tr.dir, Tenant: "acme", Client: name})
	if err != nil {
		t.Fatal(err)
	}
	tr.r = r
	t.Cleanup(tr.close)
	return tr
}

// attach connects the replica to the server with a new connection, whose
// statistics count what the replica pulls from then on.
func (tr *testReplica) attach() {
	tr.t.Helper()
	nc, err := nats.Connect(tr.e.natsURL, nats.MaxReconnects(-1))
	if err != nil {
		tr.t.Fatal(err)
	}
	if err := tr.r.Attach(tr.t.Context(), nc); err != nil {
		tr.t.Fatal(err)
	}
	tr.nc = nc
}

func (tr *testReplica) detach() {
	if tr.nc != nil {
		tr.r.Detach()
		tr.nc.Close()
		tr.nc = nil
	}
}

func (tr *testReplica) close() {
	tr.detach()
	if tr.r != nil {
		tr.r.Close()
		tr.r = nil
	}
}

func (tr *testReplica) sync() consumer.SyncReport {
	tr.t.Helper()
	ctx, cancel := contextWithTimeout(tr.t, 60*time.Second)
	defer cancel()
	rep, err := tr.r.Sync(ctx)
	if err != nil {
		tr.t.Fatalf("sync: %v", err)
	}
	return rep
}

func (tr *testReplica) put(id string, n int) {
	tr.t.Helper()
	if _, err := tr.r.Put(tr.t.Context(), "todos", id, events.Fields{"n": json.RawMessage(fmt.Sprint(n)), "pad": json.RawMessage(`"` + strings.Repeat("x", 8<<10) + `"`)}); err != nil {
		tr.t.Fatal(err)
	}
}

// docs returns the replica's todos as id -> n.
func (tr *testReplica) docs() map[string]string {
	tr.t.Helper()
	ds, err := tr.r.List(tr.t.Context(), "todos", false)
	if err != nil {
		tr.t.Fatal(err)
	}
	out := map[string]string{}
	for _, d := range ds {
		out[d.ID] = string(d.Fields["n"])
	}
	return out
}

// A backup taken while the server serves, restored after the server was
// killed and its data directory deleted, brings every acknowledged write
// back with its sequences: ebb verify agrees, and replicas resume from
// where they were, pulling only what changed since, never a full resync.
func TestBackupRestore_LoseDataDirRestoreResume(t *testing.T) {
	e := newE2E(t)
	e.startServer()
	server := filepath.Join(e.dir, "server")

	alice, bob := openTestReplica(t, e, "alice"), openTestReplica(t, e, "bob")
	alice.attach()
	bob.attach()
	want := map[string]string{}
	for i := range 20 {
		alice.put(fmt.Sprintf("a%02d", i), i)
		want[fmt.Sprintf("a%02d", i)] = fmt.Sprint(i)
	}
	for i := range 5 {
		bob.put(fmt.Sprintf("b%02d", i), i)
		want[fmt.Sprintf("b%02d", i)] = fmt.Sprint(i)
	}
	alice.sync()
	bob.sync()
	bob.sync()
	// Bob goes offline; Alice changes ten documents after that.
	bob.detach()
	for i := range 10 {
		alice.put(fmt.Sprintf("a%02d", i), 100+i)
		want[fmt.Sprintf("a%02d", i)] = fmt.Sprint(100 + i)
	}
	alice.sync()
	if got := alice.docs(); len(got) != len(want) {
		t.Fatalf("alice before the backup: %d docs, want %d", len(got), len(want))
	}

	// The projector acknowledges a batch just after its changes are
	// stored: wait for it, so the backup's position is known.
	embeddedtest.WaitFor(t, 10*time.Second, "the projector's ack of EVENTS 35", func() bool {
		var rec streamsRecord
		out, _, code := e.run("", "streams", "--json")
		return code == 0 && json.Unmarshal([]byte(out), &rec) == nil && len(rec.Projectors) == 1 && rec.Projectors[0].AckFloor == 35
	})
	// Back up while serving, then lose the server and its data directory.
	backup := filepath.Join(e.dir, "backup.tar")
	out := e.ok("", "backed up to", "backup", "--data", server, backup)
	if !strings.Contains(out, "EVENTS") || !strings.Contains(out, "projector acknowledged EVENTS up to 35") {
		t.Fatalf("backup:\n%s", out)
	}
	// Dave writes after the backup began and reads his change: both are
	// lost with the server, and the restored CHANGES is behind his cursor.
	alice.detach()
	dave := openTestReplica(t, e, "dave")
	dave.attach()
	dave.put("lost", 1)
	dave.sync()
	dave.detach()
	if err := e.serve.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = e.serve.Wait()
	e.serve = nil
	if err := os.RemoveAll(server); err != nil {
		t.Fatal(err)
	}

	var rec restoreRecord
	out = e.ok("", "", "restore", "--data", server, "--json", backup)
	if err := json.Unmarshal([]byte(out), &rec); err != nil {
		t.Fatalf("restore --json: %v: %s", err, out)
	}
	if rec.Checkpoint != 35 || rec.Docs != 25 || len(rec.Streams) != 4 {
		t.Fatalf("restore: %+v", rec)
	}
	for _, s := range rec.Streams {
		if s.Name == events.StreamEvents && (s.FirstSeq != 1 || s.LastSeq != 35 || s.Messages != 35) {
			t.Fatalf("restored EVENTS renumbered: %+v", s)
		}
	}
	e.startServer()

	// Alice resumes: nothing to pull, no resync; a new write goes through.
	alice.attach()
	if rep := alice.sync(); rep.Resynced || rep.Pulled != 0 {
		t.Fatalf("alice after the restore: %+v (%v)", rep, alice.r.Status().LastResync)
	}
	alice.put("a99", 99)
	want["a99"] = "99"
	if rep := alice.sync(); rep.Resynced || rep.Pushed != 1 {
		t.Fatalf("alice's write after the restore: %+v", rep)
	}
	// Bob pulls the ten documents Alice changed while he was away, and
	// her new one: not the whole tenant.
	bob.attach()
	in0 := bob.nc.Stats()
	rep := bob.sync()
	bobIn := bob.nc.Stats().InBytes - in0.InBytes
	if rep.Resynced || rep.Pulled != 11 {
		t.Fatalf("bob after the restore: %+v, want 11 pulled and no resync", rep)
	}
	// A new replica pulls everything: what a full resync would cost.
	carol := openTestReplica(t, e, "carol")
	carol.attach()
	in0 = carol.nc.Stats()
	if rep := carol.sync(); rep.Pulled != len(want) {
		t.Fatalf("carol: %+v, want %d pulled", rep, len(want))
	}
	fullIn := carol.nc.Stats().InBytes - in0.InBytes
	// Documents of 8 KiB: what bob pulls is 11 of them and a few KiB of
	// protocol, well under the 26 a full resync pulls.
	if bobIn*10 > fullIn*6 {
		t.Fatalf("bob pulled %d bytes, a full resync pulls %d: not a partial catch-up", bobIn, fullIn)
	}
	t.Logf("bob pulled %d bytes for 11 documents; a full resync of %d pulls %d", bobIn, len(want), fullIn)
	for name, r := range map[string]*testReplica{"alice": alice, "bob": bob, "carol": carol} {
		if got := r.docs(); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("%s after the restore:\n got %v\nwant %v", name, got, want)
		}
	}
	// Dave read past the backup: CHANGES' history after his cursor is not
	// the one he read, so he resyncs fully, and his write after the
	// backup is gone (written after the backup began, it is not in it).
	dave.attach()
	if rep := dave.sync(); !rep.Resynced {
		t.Fatalf("dave read past the backup and did not resync: %+v", rep)
	}
	if got := dave.docs(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("dave after the restore:\n got %v\nwant %v", got, want)
	}
	alice.detach()
	bob.detach()
	carol.detach()
	dave.detach()
	e.stopServer()
	if out := e.ok("", "OK: 26 documents", "verify", "--data", server); !strings.Contains(out, "events 1..36") {
		t.Fatalf("verify: %s", out)
	}
}

func contextWithTimeout(t *testing.T, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(t.Context(), d)
}

// A restore refuses a data directory in use and a damaged backup; a
// backup refuses to go without the policies unless told to.
func TestRestore_RefusesUsedDataDirAndDamagedBackup(t *testing.T) {
	e := newAdminEnv(t, projection.Config{})
	env := map[string]string{"EBB_NATS": e.url}
	dir := filepath.Join(t.TempDir(), "b")
	if _, stderr, code := runIn(t, env, "backup", "--data", t.TempDir(), dir); code != 2 || !strings.Contains(stderr, "--no-policies") {
		t.Fatalf("backup without policies: %d %s", code, stderr)
	}
	out, stderr, code := runIn(t, env, "backup", "--no-policies", "--json", dir)
	var man struct {
		Target  string         `json:"target"`
		Streams []backupStream `json:"streams"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &man) != nil || len(man.Streams) != 4 || man.Streams[3].Name != events.StreamEvents {
		t.Fatalf("backup --json: %d %s %s", code, out, stderr)
	}

	used := t.TempDir()
	if err := os.WriteFile(filepath.Join(used, policyFile), []byte(`{"default":"lww"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, stderr, code := runIn(t, nil, "restore", "--data", used, dir); code != 2 || !strings.Contains(stderr, "needs a new data directory") {
		t.Fatalf("restore into a used data directory: %d %s", code, stderr)
	}
	if _, stderr, code := runIn(t, nil, "restore", "--data", t.TempDir(), t.TempDir()); code != 2 || !strings.Contains(stderr, "not an ebb backup") {
		t.Fatalf("restore of a directory that is no backup: %d %s", code, stderr)
	}
	// Into an external NATS: the streams come back there, the view in --data.
	other := embeddedtest.MustStart(t)
	ext := filepath.Join(t.TempDir(), "ext")
	if out, stderr, code := runIn(t, nil, "restore", "--nats", other.ClientURL(), "--data", ext, dir); code != 0 || !strings.Contains(out, "restored into") {
		t.Fatalf("restore --nats: %d %s %s", code, out, stderr)
	}
	if _, err := os.Stat(filepath.Join(ext, viewFile)); err != nil {
		t.Fatalf("restore --nats left no view in --data: %v", err)
	}
	if _, stderr, code := runIn(t, nil, "restore", "--nats", other.ClientURL(), "--data", filepath.Join(t.TempDir(), "ext2"), dir); code != 2 || !strings.Contains(stderr, "exists on the server") {
		t.Fatalf("restore --nats onto existing streams: %d %s", code, stderr)
	}

	snap := filepath.Join(dir, man.Streams[0].File)
	b, err := os.ReadFile(snap)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)-1] ^= 0xff
	if err := os.WriteFile(snap, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, stderr, code := runIn(t, nil, "restore", "--data", filepath.Join(t.TempDir(), "new"), dir); code != 1 || !strings.Contains(stderr, man.Streams[0].File+": SHA-256") {
		t.Fatalf("restore of a damaged backup: %d %s", code, stderr)
	}
}

// A backup taken while a replica keeps writing holds every write
// acknowledged before it began; the events it caught after the
// projector's position are applied by the restored server.
func TestBackupRestore_WhileWriting(t *testing.T) {
	e := newE2E(t)
	e.startServer()
	server := filepath.Join(e.dir, "server")
	erin := openTestReplica(t, e, "erin")
	erin.attach()

	type acked struct {
		id string
		at time.Time
	}
	ackc := make(chan acked, 1024)
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		defer close(ackc)
		for i := 0; ; i++ {
			select {
			case <-stop:
				done <- nil
				return
			default:
			}
			id := fmt.Sprintf("e%04d", i)
			if _, err := erin.r.Put(t.Context(), "todos", id, events.Fields{"n": json.RawMessage(fmt.Sprint(i))}); err != nil {
				done <- err
				return
			}
			ctx, cancel := contextWithTimeout(t, 30*time.Second)
			_, err := erin.r.Sync(ctx)
			cancel()
			if err != nil {
				done <- err
				return
			}
			ackc <- acked{id, time.Now()}
		}
	}()
	var all []acked
	for len(all) < 20 {
		a, ok := <-ackc
		if !ok {
			t.Fatalf("writer stopped: %v", <-done)
		}
		all = append(all, a)
	}
	began := time.Now()
	backup := filepath.Join(e.dir, "backup")
	e.ok("", "backed up to", "backup", "--data", server, backup)
	close(stop)
	for a := range ackc {
		all = append(all, a)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	erin.detach()
	var before []string
	for _, a := range all {
		if a.at.Before(began) {
			before = append(before, a.id)
		}
	}
	if err := e.serve.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = e.serve.Wait()
	e.serve = nil
	if err := os.RemoveAll(server); err != nil {
		t.Fatal(err)
	}
	var rec restoreRecord
	out := e.ok("", "", "restore", "--data", server, "--json", backup)
	if err := json.Unmarshal([]byte(out), &rec); err != nil {
		t.Fatalf("restore --json: %v: %s", err, out)
	}
	var eventsLast uint64
	for _, s := range rec.Streams {
		if s.Name == events.StreamEvents {
			eventsLast = s.LastSeq
		}
	}
	t.Logf("%d writes acknowledged before the backup, %d in all; view rebuilt to %d, EVENTS ends at %d", len(before), len(all), rec.Checkpoint, eventsLast)
	if eventsLast < uint64(len(before)) || rec.Checkpoint > eventsLast {
		t.Fatalf("restore: %+v", rec)
	}
	e.startServer()
	fresh := openTestReplica(t, e, "fresh")
	fresh.attach()
	fresh.sync()
	got := fresh.docs()
	for _, id := range before {
		if _, ok := got[id]; !ok {
			t.Fatalf("write %s, acknowledged before the backup began, is missing after the restore (%d docs)", id, len(got))
		}
	}
	if uint64(len(got)) != eventsLast {
		t.Fatalf("restored server holds %d documents, EVENTS %d events (one document each)", len(got), eventsLast)
	}
	fresh.detach()
	e.stopServer()
	e.ok("", fmt.Sprintf("OK: %d documents", eventsLast), "verify", "--data", server)
}

// A backup of a server with --key-file holds its events in the clear (as
// ebb backup says); a restore with --key-file encrypts the new data
// directory again, and the server and verify read it with the key.
func TestBackupRestore_KeyFile(t *testing.T) {
	const marker = "ebb-restore-marker-51c2a9"
	e := newE2E(t)
	keyFile := writeFile(t, "key", "a passphrase for the server\n")
	e.startServer("--key-file", keyFile)
	e.ok("alice", "applied (version 1)", "put", "notes", "n1", `{"text":"`+marker+`"}`)
	backup := filepath.Join(e.dir, "backup")
	e.ok("", "backed up to", "backup", "--data", filepath.Join(e.dir, "server"), backup)
	e.stopServer()
	if hits, _ := grepTree(t, backup, []byte(marker)); len(hits) == 0 {
		t.Fatalf("the backup's snapshots are not in the clear: the help and README say they are")
	}
	restored := filepath.Join(e.dir, "restored")
	e.ok("", "1 documents", "restore", "--data", restored, "--key-file", keyFile, backup)
	if hits, files := grepTree(t, restored, []byte(marker)); len(hits) > 0 || files == 0 {
		t.Fatalf("restored data directory (%d files) holds the marker in the clear: %v", files, hits)
	}
	e.startServer("--data", restored, "--key-file", keyFile)
	e.ok("bob", "pulled 1", "sync")
	if got := field(e.doc("bob", "notes", "n1"), "text"); got != `"`+marker+`"` {
		t.Fatalf("bob's notes/n1: %s", got)
	}
	e.stopServer()
	e.ok("", "OK: 1 documents", "verify", "--data", restored, "--key-file", keyFile)
}

// Under authentication the operator commands run as an admin, and a
// server restored from the backup serves its users again.
func TestBackupRestore_Auth(t *testing.T) {
	e := newE2E(t)
	users := writeFile(t, "users.yaml", usersYAML)
	e.startServer("--auth", users)
	e.ok("alice", "applied (version 1)", "put", "--user", "alice", "--password", "alice-pw", "todos", "t1", `{"title":"milk"}`)
	admin := []string{"--user", "root", "--password", "root-pw"}
	e.ok("", projection.DefaultDurable, append([]string{"streams"}, admin...)...)
	e.ok("", "no dead letters", append([]string{"dead", "list"}, admin...)...)
	if _, _, code := e.run("", "streams", "--user", "alice", "--password", "alice-pw"); code == 0 {
		t.Fatalf("a client read the server's streams")
	}
	backup := filepath.Join(e.dir, "backup")
	e.ok("", "backed up to", append([]string{"backup", "--data", filepath.Join(e.dir, "server"), backup}, admin...)...)
	e.stopServer()
	restored := filepath.Join(e.dir, "restored")
	e.ok("", "1 documents", "restore", "--data", restored, backup)
	e.startServer("--data", restored, "--auth", users)
	e.ok("bob", "pulled 1", "sync", "--user", "bob", "--password", "bob-pw")
	e.stopServer()
	e.ok("", "OK: 1 documents", "verify", "--data", restored)
}

// A restored CHANGES that lacks a document's current change (its publish
// had not gone through when the backup read the projector's position) gets
// it from the rebuilt view when the projector starts, without a reseed.
func TestRestore_RepublishesChangesTheBackupLacks(t *testing.T) {
	e := newAdminEnv(t, projection.Config{})
	ids := events.NewIDSource(nil)
	for i, doc := range []string{"t1", "t2"} {
		ev := &events.Event{Schema: events.SchemaVersion, ID: ids.New().String(), Tenant: "acme", Collection: "todos", Doc: doc,
			Op: events.OpPut, Fields: events.Fields{"n": json.RawMessage("1")}, HLC: events.HLC{Wall: time.Now().UnixMilli()}, Client: "alice", Seq: uint64(i + 1)}
		data, _ := events.EncodeEvent(ev)
		if _, err := e.js.Publish(t.Context(), ev.Subject(), data); err != nil {
			t.Fatal(err)
		}
	}
	embeddedtest.WaitFor(t, 10*time.Second, "two changes", func() bool { return e.msgs(t, events.StreamChanges) == 2 })
	if err := e.proj.Close(); err != nil {
		t.Fatal(err)
	}
	chg, err := e.js.Stream(t.Context(), events.StreamChanges)
	if err != nil {
		t.Fatal(err)
	}
	lost, err := chg.GetLastMsgForSubject(t.Context(), events.ChangeSubject("acme", "todos", "t1"))
	if err != nil {
		t.Fatal(err)
	}
	if err := chg.DeleteMsg(t.Context(), lost.Sequence); err != nil {
		t.Fatal(err)
	}

	view, err := projection.OpenBolt(filepath.Join(t.TempDir(), "view.db"), projection.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer view.Close()
	if docs, err := rebuildRestored(t.Context(), e.js, view, projection.Config{}, 2); err != nil || docs != 2 {
		t.Fatalf("rebuildRestored: %d %v", docs, err)
	}
	p, err := projection.New(e.js, view, projection.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	embeddedtest.WaitFor(t, 10*time.Second, "t1's change again", func() bool {
		m, err := chg.GetLastMsgForSubject(t.Context(), events.ChangeSubject("acme", "todos", "t1"))
		if err != nil {
			return false
		}
		c, err := events.DecodeChange(m.Data)
		return err == nil && c.Version == 1
	})
	if st := p.Stats(); st.Reseeds != 0 || st.Reanchors != 0 || st.Checkpoint != 2 {
		t.Fatalf("projector on the restored view: %+v", st)
	}
	if n := e.msgs(t, events.StreamChanges); n != 2 {
		t.Fatalf("CHANGES holds %d messages, want 2 (t2's was not published again)", n)
	}
}
