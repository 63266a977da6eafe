package bench

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/ebbsync/ebb/consumer"
	"github.com/ebbsync/ebb/events"
)

// runBacklog: an offline consumer.Replica with Sizes.Backlog unsettled
// writes (appended through its Log with AppendBatch, untimed, over
// benchDocs documents) against a fresh one with none; on each, Get of a
// document no pending write touches and Put of new documents, Sizes.BacklogOp
// calls each, timed per call. No server: the row is about the local store.
func runBacklog(ctx context.Context, r *runner) ([]Result, error) {
	u, ops := r.sizes.Backlog, max(1, r.sizes.BacklogOp)
	var eg, ep, wg, wp, rg, rp []float64
	for i := range r.rounds {
		ebbFirst := i%2 == 1
		for k := range 2 {
			backlog := (k == 0) == ebbFirst
			if backlog {
				r.step("backlog: Get/Put with %d unsettled (round %d/%d)", u, i+1, r.rounds)
			} else {
				r.step("backlog: Get/Put with none unsettled (round %d/%d)", i+1, r.rounds)
			}
			pending := 0
			if backlog {
				pending = u
			}
			g, p, err := r.getPut(ctx, pending, ops)
			if err != nil {
				return nil, err
			}
			if backlog {
				eg, ep = append(eg, g), append(ep, p)
			} else {
				wg, wp = append(wg, g), append(wp, p)
			}
		}
		rg, rp = append(rg, eg[i]/wg[i]), append(rp, ep[i]/wp[i])
	}
	base := "the same call on a replica with no unsettled writes"
	return []Result{
		r.row(Result{Key: "get-backlog", Workload: fmt.Sprintf("Get of one document with %d unsettled writes", u), Unit: "µs/op",
			Ebb: median(eg), Raw: median(wg), Ratio: median(rg), Target: Target{AtMost, 2}, Baseline: base}),
		r.row(Result{Key: "put-backlog", Workload: fmt.Sprintf("Put with %d unsettled writes", u), Unit: "µs/op",
			Ebb: median(ep), Raw: median(wp), Ratio: median(rp), Target: Target{AtMost, 2}, Baseline: base}),
	}, nil
}

// getPut opens an offline replica with u unsettled writes and returns the
// mean µs of ops Gets and of ops Puts.
func (r *runner) getPut(ctx context.Context, u, ops int) (get, put float64, err error) {
	dir, err := r.tempDir()
	if err != nil {
		return 0, 0, err
	}
	rep, err := consumer.OpenReplica(ctx, consumer.ReplicaConfig{Dir: dir, Tenant: "bench-backlog", Logger: r.log})
	if err != nil {
		return 0, 0, fmt.Errorf("open replica: %w", err)
	}
	defer func() { err = errors.Join(err, rep.Close()) }()
	if _, err := rep.Put(ctx, "other", "target", events.Fields{"v": pad}); err != nil {
		return 0, 0, fmt.Errorf("put target: %w", err)
	}
	if u > 0 {
		if _, err := appendWrites(ctx, rep.Log(), u, benchDocs); err != nil {
			return 0, 0, err
		}
	}
	start := time.Now()
	for range ops {
		if _, err := rep.Get(ctx, "other", "target"); err != nil {
			return 0, 0, fmt.Errorf("get target: %w", err)
		}
	}
	get = float64(time.Since(start).Microseconds()) / float64(ops)
	start = time.Now()
	for i := range ops {
		id := "new-" + strconv.Itoa(i)
		if _, err := rep.Put(ctx, "other", id, events.Fields{"v": pad}); err != nil {
			return 0, 0, fmt.Errorf("put %s: %w", id, err)
		}
	}
	put = float64(time.Since(start).Microseconds()) / float64(ops)
	return get, put, nil
}
