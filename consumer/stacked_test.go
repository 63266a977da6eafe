package consumer

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/ebbsync/ebb/events"
)

// A write stacked offline on the writer's own pending write builds on that
// write, not on whatever the server holds when it arrives. When another
// client's write lands first, the first pending write is stale, and so is
// the second unless the first won: under reject both are rejected and the
// document keeps the other client's state; under lww A's later writes win
// by HLC, the first overwriting B's state, the second built on it. Before
// events carried After, the second write was sent with the version its
// writer predicted and, under reject, was applied as fresh on top of a state
// its writer never saw ({"x":1,"b":2}).
func TestReplica_StackedOfflineWrites(t *testing.T) {
	for _, tc := range []struct {
		coll     string
		wantDoc  string // fields of the server's document afterwards
		wantRejA int    // A's writes rejected
	}{
		{"reject", `{"x":1}`, 2},
		{"lww", `{"a":1,"b":2}`, 0},
	} {
		t.Run(tc.coll, func(t *testing.T) {
			s, _, js := mustServer(t)
			server := mustProjector(t, js, testPolicies())
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			open := func(client string) *node {
				r, err := OpenReplica(ctx, ReplicaConfig{Dir: t.TempDir(), Tenant: "t1", Client: client, Policies: testPolicies()})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { r.Close() })
				return &node{r: r}
			}
			a, b := open("a"), open("b")
			a.online(t, s)
			b.online(t, s)
			if _, err := a.r.Put(ctx, tc.coll, "d", events.Fields{"v": json.RawMessage(`0`)}); err != nil {
				t.Fatal(err)
			}
			for _, n := range []*node{a, b} {
				if _, err := n.r.Sync(ctx); err != nil {
					t.Fatal(err)
				}
			}

			// B writes and syncs while A is offline; then A, still offline,
			// writes twice, later by the clock, each write on the one before.
			a.offline()
			if _, err := b.r.Put(ctx, tc.coll, "d", events.Fields{"x": json.RawMessage(`1`)}); err != nil {
				t.Fatal(err)
			}
			if _, err := b.r.Sync(ctx); err != nil {
				t.Fatal(err)
			}
			bw, err := server.Get(ctx, events.DocAddress{Tenant: "t1", Collection: tc.coll, Doc: "d"})
			if err != nil {
				t.Fatal(err)
			}
			waitFor(t, time.Second, "the wall clock to pass B's write", func() bool { return time.Now().UnixMilli() > bw.HLC.Wall })
			if _, err := a.r.Put(ctx, tc.coll, "d", events.Fields{"a": json.RawMessage(`1`)}); err != nil {
				t.Fatal(err)
			}
			if _, err := a.r.Patch(ctx, tc.coll, "d", events.Fields{"b": json.RawMessage(`2`)}); err != nil {
				t.Fatal(err)
			}
			a.online(t, s)
			rep, err := a.r.Sync(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if rep.Rejected != tc.wantRejA {
				t.Errorf("A's sync rejected %d writes, want %d", rep.Rejected, tc.wantRejA)
			}
			doc, err := server.Get(ctx, events.DocAddress{Tenant: "t1", Collection: tc.coll, Doc: "d"})
			if err != nil {
				t.Fatal(err)
			}
			got, _ := json.Marshal(doc.Fields)
			if string(got) != tc.wantDoc {
				t.Fatalf("server document %s, want %s", got, tc.wantDoc)
			}
			if _, err := b.r.Sync(ctx); err != nil {
				t.Fatal(err)
			}
			for name, n := range map[string]*node{"a": a, "b": b} {
				d, err := n.r.Get(ctx, tc.coll, "d")
				if err != nil {
					t.Fatal(err)
				}
				mine, _ := json.Marshal(d.Fields)
				if string(mine) != tc.wantDoc || d.Version != doc.Version || d.Pending != 0 {
					t.Errorf("replica %s: %s v%d pending %d, want the server's %s v%d", name, mine, d.Version, d.Pending, got, doc.Version)
				}
			}
		})
	}
}
