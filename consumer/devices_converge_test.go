package consumer

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ebbsync/ebb/deploy/embedded"
	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/producer"
	"github.com/ebbsync/ebb/projection"
)

// These tests run the real projector. They need it to deduplicate by
// device and answer "reused" on the device's receipt subject (branch
// h10-devices); until then the second device's writes are answered
// duplicate (or never answered on its subject) and they fail.

var devCollections = []string{"lww", "merge", "reject", "manual"}

// randomWrites makes 1-3 random writes on n under every policy, to a few
// shared documents.
func randomWrites(t *testing.T, ctx context.Context, n *node, rng *rand.Rand, docs []string) {
	t.Helper()
	val := func() json.RawMessage { return json.RawMessage(fmt.Sprint(rng.IntN(1000))) }
	for range rng.IntN(3) + 1 {
		col, id := devCollections[rng.IntN(len(devCollections))], docs[rng.IntN(len(docs))]
		var err error
		switch k := rng.IntN(10); {
		case k < 5:
			_, err = n.r.Put(ctx, col, id, events.Fields{"x": val()})
		case k < 9:
			_, err = n.r.Patch(ctx, col, id, events.Fields{[]string{"x", "y"}[rng.IntN(2)]: val()})
		default:
			_, err = n.r.Delete(ctx, col, id)
		}
		if err != nil {
			t.Fatalf("write: %v", err)
		}
	}
}

// settleAll brings every node online and syncs them until a whole round
// changes nothing, resolving every open conflict.
func settleAll(t *testing.T, ctx context.Context, s *embedded.Server, nodes []*node) {
	t.Helper()
	for _, n := range nodes {
		n.online(t, s)
	}
	for i := 0; ; i++ {
		if i == 10 {
			t.Fatal("no quiescence after 10 sync rounds")
		}
		quiet := true
		for _, n := range nodes {
			rep, err := n.r.Sync(ctx)
			if err != nil {
				t.Fatalf("final sync: %v", err)
			}
			if rep.Pushed > 0 || rep.Pulled > 0 || rep.Conflicts > 0 {
				quiet = false
			}
			if rep.Conflicts > 0 {
				resolveSome(t, ctx, n.r, nil)
			}
		}
		if quiet {
			return
		}
	}
}

// checkDevices checks that every node's view equals the server's, and that
// every write any node's log acknowledged ended applied, merged, a
// (resolved) conflict, or rejected with a reason, or was written again
// (reused) as an event that did; none is pending, invalid or answered
// duplicate.
func checkDevices(t *testing.T, ctx context.Context, server projection.Store, nodes []*node, docs []string) {
	t.Helper()
	for _, col := range devCollections {
		for _, id := range docs {
			want, err := server.Get(ctx, events.DocAddress{Tenant: "t1", Collection: col, Doc: id})
			if err != nil {
				t.Fatal(err)
			}
			for i, n := range nodes {
				got, err := n.r.Get(ctx, col, id)
				if err != nil && (want.Version > 0 && !want.Deleted) {
					t.Errorf("replica %d %s/%s: %v, server has v%d", i, col, id, err, want.Version)
					continue
				}
				if got.Version != want.Version || got.Deleted != want.Deleted || !fieldsEqual(got.Fields, want.Fields) || got.Pending != 0 {
					t.Errorf("replica %d %s/%s: v%d %s deleted=%v pending=%d; server v%d %s deleted=%v",
						i, col, id, got.Version, got.Fields, got.Deleted, got.Pending, want.Version, want.Fields, want.Deleted)
				}
			}
		}
	}
	outcomes := map[events.Outcome]int{}
	for i, n := range nodes {
		es, err := n.r.Log().Entries(ctx)
		if err != nil {
			t.Fatal(err)
		}
		byID := map[string]producer.Entry{}
		for _, e := range es {
			byID[e.Event.ID] = e
		}
		rejections, err := n.r.Rejections(ctx)
		if err != nil {
			t.Fatal(err)
		}
		rejected := map[string]bool{}
		for _, rj := range rejections {
			rejected[rj.Event] = rj.Reason != ""
		}
		for _, e := range es {
			outcomes[e.Outcome]++
			switch {
			case e.State != producer.StateSettled:
				t.Errorf("replica %d: event %s (%s %s/%s) is %s, not settled", i, e.Event.ID, e.Event.Op, e.Event.Collection, e.Event.Doc, e.State)
			case e.Outcome == events.OutcomeDuplicate || e.Outcome == events.OutcomeInvalid:
				t.Errorf("replica %d: event %s (%s %s/%s, device %s seq %d) answered %s: %s", i, e.Event.ID, e.Event.Op,
					e.Event.Collection, e.Event.Doc, e.Event.Device, e.Event.Seq, e.Outcome, e.Reason)
			case e.Outcome == events.OutcomeRejected && !rejected[e.Event.ID]:
				t.Errorf("replica %d: rejected event %s not surfaced with a reason", i, e.Event.ID)
			case e.Outcome == events.OutcomeReused:
				found := false
				for id := range byID {
					found = found || (id != e.Event.ID && strings.Contains(e.Reason, id))
				}
				if !found {
					t.Errorf("replica %d: reused event %s not written again (reason %q)", i, e.Event.ID, e.Reason)
				}
			case e.Outcome == events.OutcomeConflict:
				cs, err := server.Conflicts(ctx, e.Event.Address())
				if err != nil {
					t.Fatal(err)
				}
				for _, c := range cs {
					if c.ID == e.Event.ID && c.Status != events.ConflictResolved {
						t.Errorf("replica %d: conflict %s is %s at the end", i, c.ID, c.Status)
					}
				}
			}
		}
	}
	t.Logf("outcomes: %v", outcomes)
}

func openNode(t *testing.T, dir, client string) *node {
	t.Helper()
	r, err := OpenReplica(t.Context(), ReplicaConfig{Dir: dir, Tenant: "t1", Client: client, Policies: testPolicies()})
	if err != nil {
		t.Fatal(err)
	}
	n := &node{r: r}
	t.Cleanup(func() { n.offline(); _ = r.Close() })
	return n
}

func (n *node) close(t *testing.T) {
	t.Helper()
	n.offline()
	if err := n.r.Close(); err != nil {
		t.Fatal(err)
	}
}

// copyDir copies the regular files of src into dst (created).
func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	if err := os.MkdirAll(dst, 0o700); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// TestDevices_TwoReplicasOfOneClientConverge: two replicas of ONE client
// id (two devices of one user) write the same and different documents
// under every policy, going offline and online. Nothing is lost, nothing
// is answered duplicate, and the views converge on the server's.
func TestDevices_TwoReplicasOfOneClientConverge(t *testing.T) {
	s, _, js := mustServer(t)
	server := mustProjector(t, js, testPolicies())
	ctx, cancel := context.WithTimeout(t.Context(), 45*time.Second)
	defer cancel()
	nodes := []*node{openNode(t, t.TempDir(), "alice"), openNode(t, t.TempDir(), "alice")}
	rng := rand.New(rand.NewPCG(7, 12))
	docs := []string{"a", "b", "phone", "laptop"}
	for round := range 20 {
		for i, n := range nodes {
			if rng.IntN(3) == 0 {
				n.offline()
			} else {
				n.online(t, s)
			}
			own := []string{"a", "b", []string{"phone", "laptop"}[i]}
			randomWrites(t, ctx, n, rng, own)
			if n.nc != nil && rng.IntN(2) == 0 {
				if _, err := n.r.Sync(ctx); err != nil {
					t.Fatalf("round %d: sync: %v", round, err)
				}
			}
			resolveSome(t, ctx, n.r, rng)
		}
	}
	settleAll(t, ctx, s, nodes)
	checkDevices(t, ctx, server, nodes, docs)
}

// TestDevices_CopiedStore: a replica's directory is copied (an app's data
// migrated to a new phone while the old one keeps running); both copies
// write, offline and online, and sync. Every write either one acknowledged
// ends decided (one copy's writes under its sequences are answered
// "reused" and written again as a new device), none is silently dropped,
// and the views converge.
func TestDevices_CopiedStore(t *testing.T) {
	s, _, js := mustServer(t)
	server := mustProjector(t, js, testPolicies())
	ctx, cancel := context.WithTimeout(t.Context(), 45*time.Second)
	defer cancel()
	dirA, dirB := t.TempDir(), filepath.Join(t.TempDir(), "copy")
	a := openNode(t, dirA, "")
	a.online(t, s)
	docs := []string{"a", "b", "c"}
	rng := rand.New(rand.NewPCG(3, 4))
	randomWrites(t, ctx, a, rng, docs)
	if _, err := a.r.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	a.close(t)
	copyDir(t, dirA, dirB)
	a = openNode(t, dirA, "")
	b := openNode(t, dirB, "")
	if a.r.Log().Device() != b.r.Log().Device() {
		t.Fatal("the copy has another device: not a copy")
	}
	nodes := []*node{a, b}
	for round := range 8 {
		for _, n := range nodes {
			if round%3 == 1 {
				n.offline()
			} else {
				n.online(t, s)
			}
			randomWrites(t, ctx, n, rng, docs)
		}
	}
	settleAll(t, ctx, s, nodes)
	checkDevices(t, ctx, server, nodes, docs)
	if a.r.Log().Device() == b.r.Log().Device() {
		t.Error("both copies still write as one device")
	}
}

// TestDevices_RestoredBackup: a replica's directory is snapshotted; it
// writes and syncs more; the snapshot is put back (a phone restored from a
// backup) and it writes again and syncs. The restored log's sequences are
// taken on the server: every write it acknowledged ends decided (written
// again as a new device where needed), none is dropped, and it converges.
func TestDevices_RestoredBackup(t *testing.T) {
	s, _, js := mustServer(t)
	server := mustProjector(t, js, testPolicies())
	ctx, cancel := context.WithTimeout(t.Context(), 45*time.Second)
	defer cancel()
	dir, backup := t.TempDir(), filepath.Join(t.TempDir(), "backup")
	docs := []string{"a", "b", "c"}
	rng := rand.New(rand.NewPCG(5, 6))
	n := openNode(t, dir, "")
	n.online(t, s)
	randomWrites(t, ctx, n, rng, docs)
	if _, err := n.r.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	randomWrites(t, ctx, n, rng, docs) // pending in the backup
	n.close(t)
	copyDir(t, dir, backup)

	n = openNode(t, dir, "")
	n.online(t, s)
	for range 3 {
		randomWrites(t, ctx, n, rng, docs)
		if _, err := n.r.Sync(ctx); err != nil {
			t.Fatal(err)
		}
	}
	settleAll(t, ctx, s, []*node{n})
	n.close(t)
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	copyDir(t, backup, dir)

	restored := openNode(t, dir, "")
	old := restored.r.Log().Device()
	randomWrites(t, ctx, restored, rng, docs) // offline, under sequences the server has
	restored.online(t, s)
	randomWrites(t, ctx, restored, rng, docs)
	settleAll(t, ctx, s, []*node{restored})
	checkDevices(t, ctx, server, []*node{restored}, docs)
	if restored.r.Log().Device() == old {
		t.Error("the restored log still writes as the device whose sequences the server has")
	}
}
