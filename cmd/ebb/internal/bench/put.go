package bench

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/consumer"
)

// putWriters are the goroutine counts of the put workload.
var putWriters = []int{1, 8}

// runPut: an online consumer.Replica on a server with a projector;
// Sizes.Put calls of Replica.Put on distinct documents, shared among 1 or
// 8 goroutines, timed from the first call until Sync returns (every write
// published, applied and settled); against the same number of
// PublishMsgAsync calls of the same-sized events from as many goroutines,
// timed until the last ack.
func runPut(ctx context.Context, r *runner) ([]Result, error) {
	var out []Result
	for _, sm := range r.syncs() {
		rows, err := r.put(ctx, sm)
		out = append(out, rows...)
		if err != nil {
			return out, err
		}
	}
	return out, nil
}

func (r *runner) put(ctx context.Context, sm syncMode) ([]Result, error) {
	n := r.sizes.Put
	e, err := r.newEnv(ctx, sm)
	if err != nil {
		return nil, err
	}
	defer e.stop()
	_, stopProjector, err := r.startProjector(ctx, e, "ebb-bench-put")
	if err != nil {
		return nil, err
	}
	defer stopProjector()
	gen, err := r.openLog("bench-put")
	if err != nil {
		return nil, err
	}
	evs, err := appendWrites(ctx, gen, n, n)
	gen.Close()
	if err != nil {
		return nil, err
	}
	msgs, err := eventMsgs(evs)
	if err != nil {
		return nil, err
	}
	var out []Result
	for _, writers := range putWriters {
		var callRates []float64
		raw := func(ctx context.Context, _ int) (float64, error) {
			ms := rawMsgs(msgs)
			start := time.Now()
			errs := make([]error, writers)
			futures := make([][]jetstream.PubAckFuture, writers)
			var wg sync.WaitGroup
			for w := range writers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := w; i < len(ms); i += writers {
						f, err := e.js.PublishMsgAsync(ms[i], withStall)
						if err != nil {
							errs[w] = fmt.Errorf("publish: %w", err)
							return
						}
						futures[w] = append(futures[w], f)
					}
				}()
			}
			wg.Wait()
			if err := errors.Join(errs...); err != nil {
				return 0, err
			}
			select {
			case <-e.js.PublishAsyncComplete():
			case <-ctx.Done():
				return 0, ctx.Err()
			}
			d := time.Since(start)
			for _, fs := range futures {
				for _, f := range fs {
					select {
					case err := <-f.Err():
						return 0, fmt.Errorf("publish to %s: %w", f.Msg().Subject, err)
					default:
					}
				}
			}
			return rate(n, d), nil
		}
		ebb := func(ctx context.Context, round int) (float64, error) {
			dir, err := r.tempDir()
			if err != nil {
				return 0, err
			}
			rep, err := consumer.OpenReplica(ctx, consumer.ReplicaConfig{Dir: dir, Tenant: "bench-put", Conn: e.nc, Logger: r.log})
			if err != nil {
				return 0, fmt.Errorf("open replica: %w", err)
			}
			defer rep.Close()
			start := time.Now()
			errs := make([]error, writers)
			var wg sync.WaitGroup
			for w := range writers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := w; i < n; i += writers {
						wr := benchWrite(i, n)
						id := fmt.Sprintf("r%d-w%d-%s", round, writers, wr.Doc)
						if _, err := rep.Put(ctx, wr.Collection, id, wr.Fields); err != nil {
							errs[w] = fmt.Errorf("put %s: %w", id, err)
							return
						}
					}
				}()
			}
			wg.Wait()
			calls := time.Since(start)
			if err := errors.Join(errs...); err != nil {
				return 0, err
			}
			sctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
			defer cancel()
			if _, err := rep.Sync(sctx); err != nil {
				return 0, fmt.Errorf("sync: %w", err)
			}
			callRates = append(callRates, rate(n, calls))
			return rate(n, time.Since(start)), nil
		}
		eb, rw, ratio, err := r.pair(ctx, fmt.Sprintf("put x%d (sync=%s)", writers, sm.name), raw, ebb)
		if err != nil {
			return out, err
		}
		out = append(out, r.row(Result{Key: fmt.Sprintf("put-x%d/%s", writers, sm.name), Workload: fmt.Sprintf("Replica.Put online, %d goroutine(s), %d writes", writers, n), Sync: sm.name, Unit: "writes/s",
			Ebb: eb, Raw: rw, Ratio: ratio, Target: Target{AtLeast, 0.5},
			Baseline: "PublishMsgAsync of as many events from as many goroutines",
			Note:     fmt.Sprintf("until Sync returns (all settled); the Put calls alone returned at %.0f/s", median(callRates))}))
	}
	return out, nil
}
