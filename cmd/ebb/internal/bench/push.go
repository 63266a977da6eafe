package bench

import (
	"context"
	"fmt"
	"time"

	"github.com/ebbsync/ebb/producer"
)

// pushWindow is the publisher's MaxInFlight in the push workload, the
// same order as the raw client's default async window (4000).
const pushWindow = 4096

// runPush: a backlog of Sizes.Push writes appended offline
// (producer.Log.AppendBatch, untimed), then a Publisher drains it, timed
// from Start until Flush returns (every event acknowledged by JetStream);
// against PublishMsgAsync of the same encoded events to a stream
// configured as EVENTS, timed until the last ack.
func runPush(ctx context.Context, r *runner) ([]Result, error) {
	n := r.sizes.Push
	var out []Result
	for _, sm := range r.syncs() {
		e, err := r.newEnv(ctx, sm)
		if err != nil {
			return out, err
		}
		res, err := r.push(ctx, e, sm, n)
		e.stop()
		if err != nil {
			return out, err
		}
		out = append(out, res)
	}
	return out, nil
}

func (r *runner) push(ctx context.Context, e *env, sm syncMode, n int) (Result, error) {
	gen, err := r.openLog("bench-push")
	if err != nil {
		return Result{}, err
	}
	evs, err := appendWrites(ctx, gen, n, benchDocs)
	gen.Close()
	if err != nil {
		return Result{}, err
	}
	msgs, err := eventMsgs(evs)
	if err != nil {
		return Result{}, err
	}
	raw := func(ctx context.Context, _ int) (float64, error) {
		ms := rawMsgs(msgs)
		start := time.Now()
		if err := publishAll(ctx, e.js, ms); err != nil {
			return 0, err
		}
		return rate(n, time.Since(start)), nil
	}
	ebb := func(ctx context.Context, _ int) (float64, error) {
		l, err := r.openLog("bench-push")
		if err != nil {
			return 0, err
		}
		defer l.Close()
		if _, err := appendWrites(ctx, l, n, benchDocs); err != nil {
			return 0, err
		}
		p, err := producer.NewPublisher(l, e.js, e.nc, producer.PublisherConfig{MaxInFlight: pushWindow, Logger: r.log})
		if err != nil {
			return 0, fmt.Errorf("new publisher: %w", err)
		}
		defer p.Close()
		start := time.Now()
		if err := p.Start(ctx); err != nil {
			return 0, fmt.Errorf("start publisher: %w", err)
		}
		fctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
		defer cancel()
		if err := p.Flush(fctx); err != nil {
			return 0, fmt.Errorf("flush %d writes: %w", n, err)
		}
		return rate(n, time.Since(start)), nil
	}
	eb, rw, ratio, err := r.pair(ctx, fmt.Sprintf("push %d (sync=%s)", n, sm.name), raw, ebb)
	if err != nil {
		return Result{}, err
	}
	return r.row(Result{Key: "push/" + sm.name, Workload: fmt.Sprintf("push of a %d backlog", n), Sync: sm.name, Unit: "msgs/s",
		Ebb: eb, Raw: rw, Ratio: ratio, Target: Target{AtLeast, 0.8},
		Baseline: "PublishMsgAsync of the same events",
		Note:     fmt.Sprintf("Publisher MaxInFlight %d, %d documents round-robin", pushWindow, benchDocs)}), nil
}
