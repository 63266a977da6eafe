package consumer

import (
	"encoding/json"
	"errors"
	"path/filepath"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/projection"
	"github.com/ebbsync/ebb/projection/rules"
)

// TestReplicaRules_LeftAfterTwoMoves: with the real projector and feed,
// ann's replica holds a list she owns, goes offline while the list moves
// to bob and then to carl, comes back and syncs. CHANGES keeps only the
// list's last change (readers carl), which names ann among its
// was-readers, so the feed sends her a Left notice and the replica no
// longer holds the list.
func TestReplicaRules_LeftAfterTwoMoves(t *testing.T) {
	s, nc, js := mustServer(t)
	startRulesProjector(t, nc, js, ownerReadsEveryoneWrites)

	// A service moves the list between owners; its replica reads the
	// whole tenant (no rules feed).
	svc, err := OpenReplica(t.Context(), ReplicaConfig{Dir: t.TempDir(), Tenant: "acme", Client: "svc", Conn: nc})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Close() })
	own := func(owner string) {
		t.Helper()
		if _, err := svc.Put(t.Context(), "lists", "l1", events.Fields{"owner": json.RawMessage(`"` + owner + `"`)}); err != nil {
			t.Fatal(err)
		}
		syncWithin(t, svc)
	}
	own("ann")

	annNC, err := s.Connect()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(annNC.Close)
	ann := openRulesReplica(t, t.TempDir(), annNC)
	syncWithin(t, ann)
	if got := docIDs(t, ann, "lists"); got != "[l1]" {
		t.Fatalf("ann's lists %s, want [l1]", got)
	}

	ann.Detach()
	own("bob")
	own("carl")

	annNC2, err := s.Connect()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(annNC2.Close)
	if err := ann.Attach(t.Context(), annNC2); err != nil {
		t.Fatal(err)
	}
	syncWithin(t, ann)
	if _, err := ann.Get(t.Context(), "lists", "l1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("ann's replica still holds a list that moved to bob then carl while she was offline: %v", err)
	}
}

// startRulesProjector runs a projector on js under rules (YAML) with a
// bbolt view of its own, and the change responder on nc, until the test
// ends: the server side of sync rules, for replicas of ann, bob and carl.
func startRulesProjector(t *testing.T, nc *nats.Conn, js jetstream.JetStream, src string) {
	t.Helper()
	set, err := rules.Parse([]byte(src))
	if err != nil {
		t.Fatal(err)
	}
	store, err := projection.OpenBolt(filepath.Join(t.TempDir(), "view.db"), projection.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pr, err := projection.New(js, store, projection.Config{Rules: set})
	if err != nil {
		t.Fatal(err)
	}
	if err := pr.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pr.Close(); _ = store.Close() })
	startResponder(t, nc, js)
}

// ownerReadsEveryoneWrites are rules under which a user may write what
// it may not read.
const ownerReadsEveryoneWrites = "collections:\n  lists:\n    read: [{user: owner}]\n    write: [{everyone: true}]\n"
