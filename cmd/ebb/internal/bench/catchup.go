package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.etcd.io/bbolt"

	"github.com/ebbsync/ebb/consumer"
	"github.com/ebbsync/ebb/events"
)

// runCatchUp: Sizes.CatchUp documents written through a projector (so
// CHANGES holds what a server really publishes), then a fresh
// consumer.Replica opened online syncs them all, timed from OpenReplica
// until Sync returns with every document applied; against an ordered
// consumer reading the same messages and doing nothing with them. Server
// fsync per write (the embedded default); catch-up only reads.
//
// It also reports two size rows from the same data: the bytes the
// catch-up pulled (every byte the replica's own connection received from
// OpenReplica until Sync returned, protocol included) against a
// full-state download (the documents as one JSON array of {collection, id,
// version, fields}), and the replica's local file per document against
// that JSON per document.
func runCatchUp(ctx context.Context, r *runner) ([]Result, error) {
	n := r.sizes.CatchUp
	sm := r.syncs()[0]
	e, err := r.newEnv(ctx, sm)
	if err != nil {
		return nil, err
	}
	defer e.stop()
	tenant := fmt.Sprintf("bench-catchup-%d", time.Now().UnixNano())
	if err := r.fillChanges(ctx, e, tenant, n); err != nil {
		return nil, err
	}
	var (
		wireBytes, rawWire            int64
		rawPeak, ebbPeak              []float64
		jsonBytes, dbBytes, fileBytes int64
	)
	raw := func(ctx context.Context, _ int) (float64, error) {
		stop := peakHeap()
		start := time.Now()
		b, err := readOrdered(ctx, e.js, tenant, n)
		d := time.Since(start)
		rawPeak = append(rawPeak, float64(stop())/(1<<20))
		if err != nil {
			return 0, err
		}
		rawWire = b
		return rate(n, d), nil
	}
	ebb := func(ctx context.Context, _ int) (float64, error) {
		dir, err := r.tempDir()
		if err != nil {
			return 0, err
		}
		defer os.RemoveAll(dir)
		nc, err := r.connect(e.url)
		if err != nil {
			return 0, err
		}
		defer nc.Close()
		stop := peakHeap()
		start := time.Now()
		rep, err := consumer.OpenReplica(ctx, consumer.ReplicaConfig{Dir: dir, Tenant: tenant, Conn: nc, Logger: r.log})
		if err != nil {
			stop()
			return 0, fmt.Errorf("open replica: %w", err)
		}
		defer rep.Close()
		sctx, cancel := context.WithTimeout(ctx, 30*time.Minute)
		_, err = rep.Sync(sctx)
		cancel()
		d := time.Since(start)
		wireBytes = int64(nc.Stats().InBytes)
		ebbPeak = append(ebbPeak, float64(stop())/(1<<20))
		if err != nil {
			return 0, fmt.Errorf("sync: %w", err)
		}
		if got := rep.Status().Changes.Applied; got < uint64(n) {
			return 0, fmt.Errorf("sync returned with %d of %d changes applied", got, n)
		}
		if jsonBytes == 0 {
			docs, err := rep.List(ctx, benchCollection, false)
			if err != nil {
				return 0, fmt.Errorf("list: %w", err)
			}
			b, err := fullState(docs)
			if err != nil {
				return 0, err
			}
			jsonBytes = int64(len(b))
			if err := rep.Close(); err != nil {
				return 0, fmt.Errorf("close replica: %w", err)
			}
			if dbBytes, fileBytes, err = storeSize(filepath.Join(dir, consumer.DBFile)); err != nil {
				return 0, err
			}
		}
		return rate(n, d), nil
	}
	eb, rw, ratio, err := r.pair(ctx, fmt.Sprintf("catch-up %d", n), raw, ebb)
	if err != nil {
		return nil, err
	}
	out := []Result{r.row(Result{Key: "catch-up", Workload: fmt.Sprintf("catch-up of %d changes", n), Sync: sm.name, Unit: "docs/s",
		Ebb: eb, Raw: rw, Ratio: ratio, Target: Target{AtLeast, 0.7},
		Baseline: "ordered consumer reading the same messages",
		Note:     fmt.Sprintf("peak Go heap (embedded server included) %.0f MiB ebb, %.0f MiB raw", median(ebbPeak), median(rawPeak))})}
	perDoc := func(b int64) float64 { return float64(b) / float64(n) }
	out = append(out,
		r.row(Result{Key: "catch-up-bytes", Workload: fmt.Sprintf("fresh catch-up bytes, %d docs", n), Unit: "bytes/doc",
			Ebb: perDoc(wireBytes), Raw: perDoc(jsonBytes), Ratio: float64(wireBytes) / float64(jsonBytes), Target: Target{AtMost, 1.2},
			Baseline: "full-state download: the documents as one JSON array",
			Note: fmt.Sprintf("every byte the replica's connection received until Sync returned, protocol included (the change messages alone: %.0f B/doc)",
				perDoc(rawWire))}),
		r.row(Result{Key: "store-size", Workload: fmt.Sprintf("local store size, %d docs", n), Unit: "bytes/doc",
			Ebb: perDoc(dbBytes), Raw: perDoc(jsonBytes), Ratio: float64(dbBytes) / float64(jsonBytes), Target: Target{AtMost, 2},
			Baseline: "the document's JSON in a full-state download",
			Note: fmt.Sprintf("what %s holds after the catch-up, closed: bbolt's high-water mark (file length %.0f B/doc, with the sparse growth step)",
				consumer.DBFile, perDoc(fileBytes))}),
	)
	return out, nil
}

// fillChanges writes n documents of tenant through a projector until
// CHANGES holds a change for each.
func (r *runner) fillChanges(ctx context.Context, e *env, tenant string, n int) error {
	r.step("catch-up: projecting %d documents into CHANGES (untimed)", n)
	gen, err := r.openLog(tenant)
	if err != nil {
		return err
	}
	defer gen.Close()
	p, stopProjector, err := r.startProjector(ctx, e, "ebb-bench-fill")
	if err != nil {
		return err
	}
	defer stopProjector()
	return r.writeThrough(ctx, e, p, gen, 0, n, n)
}

// readOrdered reads n changes of tenant with a bare ordered consumer and
// returns the bytes it received (subjects, headers, payloads).
func readOrdered(ctx context.Context, js jetstream.JetStream, tenant string, n int) (int64, error) {
	cons, err := js.OrderedConsumer(ctx, events.StreamChanges,
		jetstream.OrderedConsumerConfig{FilterSubjects: []string{events.TenantChanges(tenant)}})
	if err != nil {
		return 0, fmt.Errorf("ordered consumer: %w", err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(consumer.DefaultCatchUpBatch))
	if err != nil {
		return 0, fmt.Errorf("ordered consumer: %w", err)
	}
	defer it.Stop()
	var b int64
	for range n {
		m, err := it.Next()
		if err != nil {
			return 0, fmt.Errorf("ordered consumer: %w", err)
		}
		b += int64(len(m.Subject()) + len(m.Data()))
		for k, vs := range m.Headers() {
			for _, v := range vs {
				b += int64(len(k) + len(v) + 4)
			}
		}
	}
	return b, nil
}

// peakHeap samples the heap every few milliseconds until stop is called
// and returns the highest HeapAlloc seen.
func peakHeap() (stop func() uint64) {
	var (
		wg   sync.WaitGroup
		peak uint64
		done = make(chan struct{})
	)
	runtime.GC()
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapAlloc)
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	return func() uint64 { close(done); wg.Wait(); return peak }
}

// storeSize returns what the bbolt file at path holds (its high-water
// mark: every page up to the last allocated, free ones included) and its
// length, which adds bbolt's growth step past the mark: unwritten, sparse,
// and the same for every replica however many documents it holds.
func storeSize(path string) (held, length int64, err error) {
	fi, err := os.Stat(path)
	if err != nil {
		return 0, 0, fmt.Errorf("local store size: %w", err)
	}
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true})
	if err != nil {
		return 0, 0, fmt.Errorf("local store size: open %s: %w", path, err)
	}
	err = db.View(func(tx *bbolt.Tx) error { held = tx.Size(); return nil })
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return 0, 0, fmt.Errorf("local store size: %s: %w", path, err)
	}
	return held, fi.Size(), nil
}

// fullState is the baseline of the byte rows: a full-state download, the
// documents as one JSON array of {collection, id, version, fields}.
func fullState(docs []consumer.Doc) ([]byte, error) {
	type fullDoc struct {
		Collection string        `json:"collection"`
		ID         string        `json:"id"`
		Version    uint64        `json:"version"`
		Fields     events.Fields `json:"fields"`
	}
	all := make([]fullDoc, 0, len(docs))
	for _, d := range docs {
		all = append(all, fullDoc{d.Collection, d.ID, d.Version, d.Fields})
	}
	b, err := json.Marshal(all)
	if err != nil {
		return nil, fmt.Errorf("encode full state: %w", err)
	}
	return b, nil
}
