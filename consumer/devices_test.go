package consumer

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.etcd.io/bbolt"

	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/producer"
)

// publishDeviceReceipt publishes rc on its device's receipt subject, as the
// projector does.
func publishDeviceReceipt(tb testing.TB, js jetstream.Publisher, rc *events.Receipt) {
	tb.Helper()
	rc.Schema = events.SchemaVersion
	b, err := events.EncodeReceipt(rc)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := js.Publish(tb.Context(), rc.Subject(), b); err != nil {
		tb.Fatalf("publish receipt: %v", err)
	}
}

// receiptOf is the receipt of e with outcome o.
func receiptOf(e *events.Event, o events.Outcome, version uint64) *events.Receipt {
	return &events.Receipt{Event: e.ID, Tenant: e.Tenant, Client: e.Client, Device: e.Device, Seq: e.Seq,
		Collection: e.Collection, Doc: e.Doc, Outcome: o, Version: version, Reason: "test"}
}

func entryOf(tb testing.TB, r *Replica, id string) producer.Entry {
	tb.Helper()
	e, ok, err := r.Log().Entry(tb.Context(), id)
	if err != nil || !ok {
		tb.Fatalf("entry %s: %v, %v", id, ok, err)
	}
	return e
}

// TestReplica_FollowsEveryDeviceOfItsClient: a device log reads every
// receipt subject of its client with one filter. Its current device's
// receipts and those of a device it had before a fork settle its events;
// receipts of the client's other devices are ignored without a word (not
// quarantined, not pending, not rejections).
func TestReplica_FollowsEveryDeviceOfItsClient(t *testing.T) {
	_, nc, js := mustServer(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	r, err := OpenReplica(ctx, ReplicaConfig{Dir: t.TempDir(), Tenant: "t1", Client: "alice", Conn: nc, Policies: testPolicies()})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := r.Put(ctx, "lww", "d1", events.Fields{"n": json.RawMessage(`1`)}); err != nil {
		t.Fatal(err)
	}
	e1 := waitPublished(t, r, 1)[0].Event
	if e1.Device == "" {
		t.Fatal("a new replica's events carry no device")
	}
	// Fork: the server applied a sequence of this device the log never wrote.
	if forked, err := r.Log().ObserveReceipt(ctx, &events.Receipt{Event: "01J00000000000000000000000", Tenant: "t1", Client: "alice",
		Device: e1.Device, Seq: 9, Outcome: events.OutcomeApplied}); err != nil || !forked {
		t.Fatalf("fork: %v, %v", forked, err)
	}
	if _, err := r.Put(ctx, "lww", "d2", events.Fields{"n": json.RawMessage(`2`)}); err != nil {
		t.Fatal(err)
	}
	var e2 *events.Event
	waitFor(t, 10*time.Second, "the second write to be published", func() bool {
		es, err := r.Log().Entries(ctx, producer.StatePublished)
		for _, e := range es {
			if e.Event.Doc == "d2" {
				e2 = e.Event
			}
		}
		return err == nil && e2 != nil
	})
	if e2.Device == e1.Device {
		t.Fatalf("write after the fork has the old device %s", e2.Device)
	}
	other := &events.Receipt{Event: "01J00000000000000000000001", Tenant: "t1", Client: "alice", Device: "01J0000000000000000000PHNE",
		Seq: 1, Collection: "lww", Doc: "d1", Outcome: events.OutcomeApplied, Version: 7}
	publishDeviceReceipt(t, js, other)
	publishDeviceReceipt(t, js, &events.Receipt{Event: "01J00000000000000000000002", Tenant: "t1", Client: "alice", Device: other.Device,
		Seq: 2, Collection: "lww", Doc: "d1", Outcome: events.OutcomeRejected, Reason: "not mine"})
	publishDeviceReceipt(t, js, receiptOf(e2, events.OutcomeRejected, 0))
	publishDeviceReceipt(t, js, receiptOf(e1, events.OutcomeRejected, 0))
	waitFor(t, 10*time.Second, "every receipt read and both writes settled", func() bool {
		st := r.Status()
		return st.Pending == 0 && st.Receipts.Seq == 4
	})
	st := r.Status()
	if st.Quarantined != 0 || st.Rejections != 2 || st.Err != nil {
		t.Fatalf("status %+v: want nothing quarantined and exactly this device's two rejections", st)
	}
	_ = r.log.View(t.Context(), func(tx *producer.Tx) error {
		if n := tx.Bucket(bucketAwaiting).KeyN(); n != 0 {
			t.Errorf("%d receipts awaiting a change: another device's applied receipt was kept", n)
		}
		return nil
	})
}

// TestReplica_LegacyLogKeepsTheClientSubject: a log made before devices
// existed (device "") still reads its receipts on the client's subject.
func TestReplica_LegacyLogKeepsTheClientSubject(t *testing.T) {
	if got := receiptFilter("t1", "alice", ""); got != events.ReceiptSubject("t1", "alice") {
		t.Fatalf("legacy filter %q, want %q", got, events.ReceiptSubject("t1", "alice"))
	}
	if got, want := receiptFilter("t1", "alice", "D1"), events.ReceiptSubject("t1", "alice")+".>"; got != want {
		t.Fatalf("device filter %q, want %q", got, want)
	}
}

// TestReplica_ReusedReceiptWritesAgain: a "reused" receipt (the device's
// sequence was taken by another event: a restored or copied store) makes
// the replica write the event again as a new device. The overlay shows it
// pending the whole time, never lost and never twice, and Sync waits for
// the new event's fate too.
func TestReplica_ReusedReceiptWritesAgain(t *testing.T) {
	_, nc, js := mustServer(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	r, err := OpenReplica(ctx, ReplicaConfig{Dir: t.TempDir(), Tenant: "t1", Client: "alice", Conn: nc, Policies: testPolicies()})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := r.Put(ctx, "lww", "d1", events.Fields{"n": json.RawMessage(`1`)}); err != nil {
		t.Fatal(err)
	}
	e1 := waitPublished(t, r, 1)[0].Event
	old := r.Log().Device()

	// Sync must not end on the reused receipt: it waits for the new event.
	type result struct {
		rep SyncReport
		err error
	}
	synced := make(chan result, 1)
	go func() {
		sctx, scancel := context.WithTimeout(ctx, 20*time.Second)
		defer scancel()
		rep, err := r.Sync(sctx)
		synced <- result{rep, err}
	}()
	rc := receiptOf(e1, events.OutcomeReused, 0)
	rc.Reason = "sequence 1 is event 01J0000000000000000000OTHR"
	publishDeviceReceipt(t, js, rc)

	var e2 *events.Event
	waitFor(t, 10*time.Second, "the write to be sent again", func() bool {
		es, err := r.Log().Entries(ctx, producer.StatePublished)
		if err == nil && len(es) == 1 && es[0].Event.ID != e1.ID {
			e2 = es[0].Event
		}
		return e2 != nil
	})
	if e2.Device == old || e2.Device != r.Log().Device() || e2.Seq != 1 || e2.Doc != "d1" || string(e2.Fields["n"]) != "1" {
		t.Fatalf("written again as %+v: want the same write, sequence 1 of a new device (was %s)", e2, old)
	}
	if got := entryOf(t, r, e1.ID); got.State != producer.StateSettled || got.Outcome != events.OutcomeReused || !strings.Contains(got.Reason, e2.ID) {
		t.Fatalf("original entry %+v: want settled reused, naming %s", got, e2.ID)
	}
	d, err := r.Get(ctx, "lww", "d1")
	if err != nil || d.Pending != 1 || string(d.Fields["n"]) != "1" {
		t.Fatalf("view %+v, %v: want the write shown once, pending", d, err)
	}
	if st := r.Status(); st.Rejections != 0 || st.Quarantined != 0 {
		t.Fatalf("status %+v: a reused write is neither rejected nor quarantined", st)
	}
	select {
	case res := <-synced:
		t.Fatalf("sync ended (%+v, %v) while the write sent again had no receipt", res.rep, res.err)
	default:
	}
	publishDeviceReceipt(t, js, receiptOf(e2, events.OutcomeRejected, 0))
	res := <-synced
	if res.err != nil || res.rep.Rejected != 1 {
		t.Fatalf("sync: %+v, %v: want it to end with the new event's rejection", res.rep, res.err)
	}
}

// TestReplica_ReceiptOfUnwrittenSequenceForks: a receipt of the current
// device for a sequence the log never wrote (a restored backup) forks the
// log before it writes that sequence again.
func TestReplica_ReceiptOfUnwrittenSequenceForks(t *testing.T) {
	_, nc, js := mustServer(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	r, err := OpenReplica(ctx, ReplicaConfig{Dir: t.TempDir(), Tenant: "t1", Client: "alice", Conn: nc, Policies: testPolicies()})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := r.Put(ctx, "lww", "d1", events.Fields{"n": json.RawMessage(`1`)}); err != nil {
		t.Fatal(err)
	}
	e1 := waitPublished(t, r, 1)[0].Event
	publishDeviceReceipt(t, js, receiptOf(e1, events.OutcomeRejected, 0))
	publishDeviceReceipt(t, js, &events.Receipt{Event: "01J00000000000000000000003", Tenant: "t1", Client: "alice", Device: e1.Device,
		Seq: 2, Collection: "lww", Doc: "d9", Outcome: events.OutcomeApplied, Version: 1})
	waitFor(t, 10*time.Second, "the log to fork", func() bool { return r.Log().Device() != e1.Device })
	if st := r.Status(); st.Quarantined != 0 || st.Pending != 0 {
		t.Fatalf("status %+v", st)
	}
}

const envDevicesHelper = "EBB_CONSUMER_DEVICES_HELPER"

// TestDevicesHelperProcess is the child of
// TestReplica_ReusedReceiptSurvivesACrash: it attaches the replica in
// EBB_DIR and, once a receipts transaction has committed, says so and
// waits to be killed before the log is told.
func TestDevicesHelperProcess(t *testing.T) {
	if os.Getenv(envDevicesHelper) != "reused" {
		t.Skip("helper process for TestReplica_ReusedReceiptSurvivesACrash")
	}
	afterReceiptsCommit = func() {
		fmt.Println("committed")
		select {} // killed here
	}
	nc, err := nats.Connect(os.Getenv("EBB_URL"))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	r, err := OpenReplica(context.Background(), ReplicaConfig{Dir: os.Getenv("EBB_DIR"), Tenant: "t1", Client: "alice", Conn: nc})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	select {}
}

// TestReplica_ReusedReceiptSurvivesACrash: a process killed after it
// stored a "reused" receipt's cursor, before the log wrote the event
// again, loses nothing: the next open writes it again.
func TestReplica_ReusedReceiptSurvivesACrash(t *testing.T) {
	s, nc, js := mustServer(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	dir := t.TempDir()
	r, err := OpenReplica(ctx, ReplicaConfig{Dir: dir, Tenant: "t1", Client: "alice", Conn: nc, Policies: testPolicies()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Put(ctx, "lww", "d1", events.Fields{"n": json.RawMessage(`1`)}); err != nil {
		t.Fatal(err)
	}
	e1 := waitPublished(t, r, 1)[0].Event
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	publishDeviceReceipt(t, js, receiptOf(e1, events.OutcomeReused, 0))

	cmd := exec.Command(os.Args[0], "-test.run=^TestDevicesHelperProcess$")
	cmd.Env = append(os.Environ(), envDevicesHelper+"=reused", "EBB_DIR="+dir, "EBB_URL="+s.ClientURL())
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	seen := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if sc.Text() == "committed" {
				seen <- true
				return
			}
		}
		seen <- false
	}()
	select {
	case ok := <-seen:
		if !ok {
			_ = cmd.Wait()
			t.Fatal("helper ended without committing the receipt")
		}
	case <-ctx.Done():
		_ = cmd.Process.Kill()
		t.Fatal("helper never committed the receipt")
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()

	r, err = OpenReplica(ctx, ReplicaConfig{Dir: dir, Tenant: "t1", Client: "alice", Policies: testPolicies()})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if st := r.Status(); st.Receipts.Seq != 1 {
		t.Fatalf("receipts cursor %d after the crash, want 1 (the receipt was committed)", st.Receipts.Seq)
	}
	if got := entryOf(t, r, e1.ID); got.State != producer.StateSettled || got.Outcome != events.OutcomeReused {
		t.Fatalf("original entry %+v after the crash: want settled reused (written again)", got)
	}
	pend, err := r.Log().Entries(ctx, producer.StatePending)
	if err != nil || len(pend) != 1 || pend[0].Event.Doc != "d1" || pend[0].Event.Device == e1.Device {
		t.Fatalf("pending after the crash %+v, %v: want the write once, under a new device", pend, err)
	}
}

// TestReplica_LegacyLogForks: a log made before devices existed reads its
// receipts on the client's subject; a "reused" receipt there forks it to a
// device, and from then on it reads its device's subject: the write sent
// again is settled by a receipt there.
func TestReplica_LegacyLogForks(t *testing.T) {
	_, nc, js := mustServer(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	dir := t.TempDir()
	r, err := OpenReplica(ctx, ReplicaConfig{Dir: dir, Tenant: "t1", Client: "alice", Policies: testPolicies()})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	// Make it a log from before devices: no device in its meta (under the
	// log's API, on the closed file).
	db, err := bbolt.Open(filepath.Join(dir, DBFile), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bbolt.Tx) error { return tx.Bucket([]byte("producer.meta")).Delete([]byte("device")) }); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	r, err = OpenReplica(ctx, ReplicaConfig{Dir: dir, Tenant: "t1", Client: "alice", Policies: testPolicies(), Conn: nc})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if d := r.Log().Device(); d != "" {
		t.Fatalf("device %q, want a legacy log", d)
	}
	for _, id := range []string{"d1", "d2"} {
		if _, err := r.Put(ctx, "lww", id, events.Fields{"n": json.RawMessage(`1`)}); err != nil {
			t.Fatal(err)
		}
	}
	es := waitPublished(t, r, 2)
	e1, legacy := es[0].Event, es[1].Event
	publishDeviceReceipt(t, js, receiptOf(e1, events.OutcomeReused, 0)) // on the client's subject
	var e2 *events.Event
	waitFor(t, 10*time.Second, "the write to be sent again as a device", func() bool {
		es, err := r.Log().Entries(ctx, producer.StatePublished)
		for _, e := range es {
			if e.Event.ID != e1.ID && e.Event.ID != legacy.ID {
				e2 = e.Event
			}
		}
		return err == nil && e2 != nil
	})
	if e2.Device == "" {
		t.Fatal("written again without a device")
	}
	// The device's receipt first, then the legacy write's, on the client's
	// subject: both are read.
	publishDeviceReceipt(t, js, receiptOf(e2, events.OutcomeRejected, 0))
	publishDeviceReceipt(t, js, receiptOf(legacy, events.OutcomeRejected, 0))
	sctx, scancel := context.WithTimeout(ctx, 10*time.Second)
	defer scancel()
	if _, err := r.Sync(sctx); err != nil {
		t.Fatalf("sync: %v (status %+v)", err, r.Status())
	}
	if st := r.Status(); st.Pending != 0 || st.Rejections != 2 || st.Quarantined != 0 {
		t.Fatalf("status %+v: want both rejections read, nothing pending", st)
	}
}
