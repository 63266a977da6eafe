package consumer

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/deploy/embedded"
	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/producer"
	"github.com/ebbsync/ebb/projection"
)

// testPolicies puts one collection under each built-in policy.
func testPolicies() projection.Policies {
	return projection.Policies{Collections: map[string]projection.Resolver{
		"lww": projection.LWW, "merge": projection.Merge, "reject": projection.Reject, "manual": projection.Manual,
	}}
}

// mustProjector runs the server-side projector on js with a bbolt view in a
// temp dir, and returns its store (the server view).
func mustProjector(tb testing.TB, js jetstream.JetStream, p projection.Policies) projection.Store {
	tb.Helper()
	store, err := projection.OpenBolt(filepath.Join(tb.TempDir(), "view.db"), projection.BoltOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	pr, err := projection.New(js, store, projection.Config{Policies: p})
	if err != nil {
		tb.Fatal(err)
	}
	if err := pr.Start(tb.Context()); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = pr.Close(); _ = store.Close() })
	return store
}

// node is one replica of the convergence test and its connection.
type node struct {
	r  *Replica
	nc *nats.Conn
}

func (n *node) online(tb testing.TB, s *embedded.Server) {
	tb.Helper()
	if n.nc != nil {
		return
	}
	nc, err := s.Connect()
	if err != nil {
		tb.Fatal(err)
	}
	if err := n.r.Attach(tb.Context(), nc); err != nil {
		tb.Fatal(err)
	}
	n.nc = nc
}

func (n *node) offline() {
	if n.nc == nil {
		return
	}
	n.r.Detach()
	n.nc.Close()
	n.nc = nil
}

// TestReplica_Converges: three replicas go offline and online at random
// (seeded) while making concurrent edits under every policy; manual
// conflicts are resolved. After everyone syncs, every replica's view equals
// the server view (states and versions) and every write is accounted for:
// applied, merged, rejected with a reason, or part of a resolved conflict.
func TestReplica_Converges(t *testing.T) {
	s, _, js := mustServer(t)
	pol := testPolicies()
	server := mustProjector(t, js, pol)
	rng := rand.New(rand.NewPCG(42, 1))
	collections := []string{"lww", "merge", "reject", "manual"}
	docs := []string{"a", "b", "c"}

	nodes := make([]*node, 3)
	for i := range nodes {
		r, err := OpenReplica(t.Context(), ReplicaConfig{Dir: t.TempDir(), Tenant: "t1", Client: fmt.Sprintf("client-%d", i), Policies: pol})
		if err != nil {
			t.Fatal(err)
		}
		nodes[i] = &node{r: r}
		defer r.Close()
		defer nodes[i].offline()
	}
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	val := func() json.RawMessage { return json.RawMessage(fmt.Sprint(rng.IntN(1000))) }

	for round := range 25 {
		for _, n := range nodes {
			if rng.IntN(3) == 0 {
				n.offline()
			} else {
				n.online(t, s)
			}
		}
		for _, n := range nodes {
			for range rng.IntN(3) + 1 {
				col, id := collections[rng.IntN(len(collections))], docs[rng.IntN(len(docs))]
				var err error
				switch k := rng.IntN(10); {
				case k < 5:
					f := events.Fields{"x": val()}
					if rng.IntN(2) == 0 {
						f["y"] = val()
					}
					_, err = n.r.Put(ctx, col, id, f)
				case k < 9:
					_, err = n.r.Patch(ctx, col, id, events.Fields{[]string{"x", "y", "z"}[rng.IntN(3)]: val()})
				default:
					_, err = n.r.Delete(ctx, col, id)
				}
				if err != nil {
					t.Fatalf("round %d: write: %v", round, err)
				}
			}
			if n.nc != nil && rng.IntN(2) == 0 {
				if _, err := n.r.Sync(ctx); err != nil {
					t.Fatalf("round %d: sync: %v", round, err)
				}
			}
			resolveSome(t, ctx, n.r, rng)
		}
	}
	// Everyone online; sync until no conflict is left open and a full round
	// changes nothing.
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
			if rep.Pushed > 0 || rep.Pulled > 0 {
				quiet = false
			}
			if rep.Conflicts > 0 {
				quiet = false
				resolveSome(t, ctx, n.r, nil)
			}
		}
		if quiet {
			break
		}
	}

	for _, col := range collections {
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
				if got.Version != want.Version || got.Deleted != want.Deleted || !fieldsEqual(got.Fields, want.Fields) || got.Pending != 0 || len(got.Conflicts) != 0 {
					t.Errorf("replica %d %s/%s: v%d %s deleted=%v pending=%d conflicts=%d; server v%d %s deleted=%v",
						i, col, id, got.Version, got.Fields, got.Deleted, got.Pending, len(got.Conflicts), want.Version, want.Fields, want.Deleted)
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
			case e.Outcome == events.OutcomeRejected && !rejected[e.Event.ID]:
				t.Errorf("replica %d: rejected event %s not surfaced with a reason", i, e.Event.ID)
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
			case e.Outcome == events.OutcomeInvalid:
				t.Errorf("replica %d: event %s invalid: %s", i, e.Event.ID, e.Reason)
			}
		}
	}
	t.Logf("outcomes: %v", outcomes)
	for _, o := range []events.Outcome{events.OutcomeApplied, events.OutcomeRejected, events.OutcomeConflict} {
		if outcomes[o] == 0 {
			t.Errorf("no write ended %s: the test did not exercise it", o)
		}
	}
}

// resolveSome resolves open conflicts the replica sees: all of them when rng
// is nil, otherwise each with probability 1/2, keeping a random side.
func resolveSome(t *testing.T, ctx context.Context, r *Replica, rng *rand.Rand) {
	t.Helper()
	cs, err := r.Conflicts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cs {
		side := 0
		if rng != nil {
			if rng.IntN(2) == 0 {
				continue
			}
			side = rng.IntN(len(c.Conflict.Sides))
		}
		f := c.Conflict.Sides[side].Fields
		if len(f) == 0 {
			f = events.Fields{"resolved": json.RawMessage(`true`)}
		}
		if _, err := r.Resolve(ctx, c.Collection, c.Doc, c.Conflict.ID, f); err != nil {
			t.Fatalf("resolve %s: %v", c.Conflict.ID, err)
		}
	}
}
