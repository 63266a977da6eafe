package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/consumer"
	"github.com/ebbsync/ebb/events"
)

// runLatency: two online replicas on a server with a projector; the first
// is offered Sizes.Rate Put calls per second for Sizes.Duration (open
// loop: each call starts at its scheduled time, whether or not earlier
// calls have returned), each on its own document; a write's latency runs
// from its scheduled call to the moment the second replica's Watch shows
// it. Against PublishMsgAsync at the same schedule into a stream an
// ordered consumer follows, from the scheduled publish to the receive.
// Server fsync per write (the embedded default).
func runLatency(ctx context.Context, r *runner) ([]Result, error) {
	sm := r.syncs()[0]
	e, err := r.newEnv(ctx, sm)
	if err != nil {
		return nil, err
	}
	defer e.stop()
	_, stopProjector, err := r.startProjector(ctx, e, "ebb-bench-latency")
	if err != nil {
		return nil, err
	}
	defer stopProjector()
	n := max(1, int(float64(r.sizes.Rate)*r.sizes.Duration.Seconds()))
	interval := time.Second / time.Duration(max(1, r.sizes.Rate))
	var e50, e99, w50, w99, r50, r99 []float64
	for i := range r.rounds {
		ebbFirst := i%2 == 1
		for k := range 2 {
			if (k == 0) == ebbFirst {
				r.step("latency: ebb (round %d/%d)", i+1, r.rounds)
				lat, err := r.latencyEbb(ctx, e, i, n, interval)
				if err != nil {
					return nil, err
				}
				e50, e99 = append(e50, pct(lat, 50)), append(e99, pct(lat, 99))
			} else {
				r.step("latency: raw (round %d/%d)", i+1, r.rounds)
				lat, err := latencyRaw(ctx, e, i, n, interval)
				if err != nil {
					return nil, err
				}
				w50, w99 = append(w50, pct(lat, 50)), append(w99, pct(lat, 99))
			}
		}
		r50, r99 = append(r50, e50[i]/w50[i]), append(r99, e99[i]/w99[i])
	}
	what := fmt.Sprintf("write to visible on another replica, %d writes/s for %v", r.sizes.Rate, r.sizes.Duration)
	base := "PublishMsgAsync to an ordered consumer, same schedule"
	return []Result{
		r.row(Result{Key: "latency-p50", Workload: what + ", p50", Sync: sm.name, Unit: "ms", Ebb: median(e50), Raw: median(w50), Ratio: median(r50),
			Target: Target{AtMost, 3}, Baseline: base}),
		r.row(Result{Key: "latency-p99", Workload: what + ", p99", Sync: sm.name, Unit: "ms", Ebb: median(e99), Raw: median(w99), Ratio: median(r99),
			Target: Target{AtMost, 3}, Baseline: base}),
	}, nil
}

// latencyEbb runs one ebb round and returns each write's latency in ms.
func (r *runner) latencyEbb(ctx context.Context, e *env, round, n int, interval time.Duration) ([]float64, error) {
	const tenant = "bench-latency"
	open := func() (*consumer.Replica, error) {
		dir, err := r.tempDir()
		if err != nil {
			return nil, err
		}
		rep, err := consumer.OpenReplica(ctx, consumer.ReplicaConfig{Dir: dir, Tenant: tenant, Conn: e.nc, Logger: r.log})
		if err != nil {
			return nil, fmt.Errorf("open replica: %w", err)
		}
		return rep, nil
	}
	writer, err := open()
	if err != nil {
		return nil, err
	}
	defer writer.Close()
	reader, err := open()
	if err != nil {
		return nil, err
	}
	defer reader.Close()
	sctx, cancel := context.WithTimeout(ctx, time.Minute)
	_, err = reader.Sync(sctx) // caught up before the clock starts
	cancel()
	if err != nil {
		return nil, fmt.Errorf("sync reader: %w", err)
	}
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	coll := fmt.Sprintf("lat%d", round)
	docs, err := reader.Watch(wctx, coll)
	if err != nil {
		return nil, fmt.Errorf("watch: %w", err)
	}
	seen := make(chan map[string]time.Time, 1)
	go func() { // owned by this call: ends when stopWatch closes docs
		m := map[string]time.Time{}
		for d := range docs {
			if _, ok := m[d.ID]; !ok && d.Pending == 0 {
				m[d.ID] = time.Now()
				if len(m) == n {
					break
				}
			}
		}
		seen <- m
	}()
	start := time.Now()
	sched := make([]time.Time, n)
	errs := make(chan error, n)
	var wg sync.WaitGroup
	t := time.NewTimer(0)
	defer t.Stop()
	for i := range n {
		at := start.Add(time.Duration(i) * interval)
		t.Reset(time.Until(at))
		select {
		case <-t.C:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		sched[i] = at
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := "w" + strconv.Itoa(i)
			if _, err := writer.Put(ctx, coll, id, events.Fields{"n": json.RawMessage(strconv.Itoa(i)), "v": pad}); err != nil {
				errs <- fmt.Errorf("put %s: %w", id, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return nil, err
	}
	var m map[string]time.Time
	select {
	case m = <-seen:
	case <-time.After(2 * time.Minute):
		stopWatch()
		m = <-seen
	}
	if len(m) < n {
		return nil, fmt.Errorf("reader saw %d of %d writes within 2m", len(m), n)
	}
	lat := make([]float64, 0, n)
	for i := range n {
		lat = append(lat, float64(m["w"+strconv.Itoa(i)].Sub(sched[i]))/float64(time.Millisecond))
	}
	return lat, nil
}

// latencyRaw runs one raw round and returns each message's latency in ms.
func latencyRaw(ctx context.Context, e *env, round, n int, interval time.Duration) ([]float64, error) {
	subj := fmt.Sprintf("%s.lat.%d", rawSubject, round)
	cons, err := e.js.OrderedConsumer(ctx, rawStream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{subj}, DeliverPolicy: jetstream.DeliverNewPolicy})
	if err != nil {
		return nil, fmt.Errorf("ordered consumer: %w", err)
	}
	recv := make([]time.Time, n)
	var mu sync.Mutex
	got := 0
	all := make(chan struct{})
	cc, err := cons.Consume(func(m jetstream.Msg) {
		now := time.Now()
		i, err := strconv.Atoi(m.Headers().Get("Ebb-Bench-Seq"))
		if err != nil || i < 0 || i >= n {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if recv[i].IsZero() {
			recv[i] = now
			got++
			if got == n {
				close(all)
			}
		}
	})
	if err != nil {
		return nil, fmt.Errorf("consume: %w", err)
	}
	defer cc.Stop()
	ids := newIDs()
	start := time.Now()
	sched := make([]time.Time, n)
	t := time.NewTimer(0)
	defer t.Stop()
	data := make([]byte, 256)
	for i := range n {
		at := start.Add(time.Duration(i) * interval)
		t.Reset(time.Until(at))
		select {
		case <-t.C:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		sched[i] = at
		m := &nats.Msg{Subject: subj, Data: data, Header: nats.Header{
			jetstream.MsgIDHeader: []string{ids()}, "Ebb-Bench-Seq": []string{strconv.Itoa(i)}}}
		if _, err := e.js.PublishMsgAsync(m, withStall); err != nil {
			return nil, fmt.Errorf("publish: %w", err)
		}
	}
	select {
	case <-all:
	case <-time.After(2 * time.Minute):
		mu.Lock()
		defer mu.Unlock()
		return nil, fmt.Errorf("ordered consumer got %d of %d within 2m", got, n)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	mu.Lock()
	defer mu.Unlock()
	lat := make([]float64, 0, n)
	for i := range n {
		lat = append(lat, float64(recv[i].Sub(sched[i]))/float64(time.Millisecond))
	}
	return lat, nil
}

// pct is the p-th percentile of xs (nearest rank).
func pct(xs []float64, p int) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	return s[min(len(s)-1, max(0, i-1))]
}
