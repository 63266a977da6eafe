package bench

import (
	"context"
	"fmt"
	"time"

	"github.com/ebbsync/ebb/consumer"
	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/producer"
	"github.com/ebbsync/ebb/projection"
)

// deltaShare is the share of documents the delta workload changes.
const deltaShare = 100 // 1 in 100

// runDelta: Sizes.Delta documents written through a projector; a replica
// catches up on all of them (untimed) and closes; 1% of the documents are
// written again through the same projector; the replica reopens online and
// syncs. Ebb is every byte received on the replica's own connection from
// OpenReplica until Sync returns (nats.Conn Statistics.InBytes: payloads,
// headers, subjects and the protocol around them), against a full-state
// download: every document as one JSON array of {collection, id, version,
// fields}. A size, measured once: it does not depend on the machine.
func runDelta(ctx context.Context, r *runner) ([]Result, error) {
	n := max(deltaShare, r.sizes.Delta)
	changed := n / deltaShare
	sm := r.syncs()[0]
	e, err := r.newEnv(ctx, sm)
	if err != nil {
		return nil, err
	}
	defer e.stop()
	tenant := fmt.Sprintf("bench-delta-%d", time.Now().UnixNano())
	p, stopProjector, err := r.startProjector(ctx, e, "ebb-bench-delta")
	if err != nil {
		return nil, err
	}
	defer stopProjector()
	gen, err := r.openLog(tenant)
	if err != nil {
		return nil, err
	}
	defer gen.Close()
	write := func(from, count int) error {
		return r.writeThrough(ctx, e, p, gen, from, count, n)
	}

	r.step("delta: %d documents through the projector, a replica catches up (untimed)", n)
	if err := write(0, n); err != nil {
		return nil, err
	}
	dir, err := r.tempDir()
	if err != nil {
		return nil, err
	}
	nc, err := r.connect(e.url)
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	open := func() (*consumer.Replica, error) {
		rep, err := consumer.OpenReplica(ctx, consumer.ReplicaConfig{Dir: dir, Tenant: tenant, Conn: nc, Logger: r.log})
		if err != nil {
			return nil, fmt.Errorf("open replica: %w", err)
		}
		sctx, cancel := context.WithTimeout(ctx, 30*time.Minute)
		defer cancel()
		if _, err := rep.Sync(sctx); err != nil {
			_ = rep.Close()
			return nil, fmt.Errorf("sync: %w", err)
		}
		return rep, nil
	}
	rep, err := open()
	if err != nil {
		return nil, err
	}
	docs, err := rep.List(ctx, benchCollection, false)
	if err != nil {
		_ = rep.Close()
		return nil, fmt.Errorf("list: %w", err)
	}
	if err := rep.Close(); err != nil {
		return nil, fmt.Errorf("close replica: %w", err)
	}
	if len(docs) != n {
		return nil, fmt.Errorf("delta: the replica caught up on %d documents, want %d", len(docs), n)
	}
	full, err := fullState(docs)
	if err != nil {
		return nil, err
	}

	r.step("delta: %d of %d documents changed, the replica syncs again", changed, n)
	if err := write(n, changed); err != nil {
		return nil, err
	}
	before := nc.Stats().InBytes
	rep, err = open()
	if err != nil {
		return nil, err
	}
	pulled := nc.Stats().InBytes - before
	last := benchWrite(n+changed-1, n)
	d, err := rep.Get(ctx, last.Collection, last.Doc)
	cerr := rep.Close()
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", last.Doc, err)
	}
	if cerr != nil {
		return nil, fmt.Errorf("close replica: %w", cerr)
	}
	if d.Version < 2 {
		return nil, fmt.Errorf("delta: %s at version %d after the second sync, want its change (2)", last.Doc, d.Version)
	}
	res := r.row(Result{Key: "delta-bytes", Workload: fmt.Sprintf("bytes pulled, %d of %d docs changed", changed, n), Unit: "bytes",
		Ebb: float64(pulled), Raw: float64(len(full)), Ratio: float64(pulled) / float64(len(full)), Target: Target{AtMost, 0.02},
		Baseline: "full-state download: every document as one JSON array",
		Note:     "every byte the replica's connection received from reopening until Sync returned, protocol included"})
	res.Rounds = 1
	return []Result{res}, nil
}

// writeThrough appends writes from to from+count-1 over docs documents
// (benchWrite) to gen, publishes them into EVENTS and waits until projector
// p has applied them and CHANGES holds a change of each.
func (r *runner) writeThrough(ctx context.Context, e *env, p *projection.Projector, gen *producer.Log, from, count, docs int) error {
	cs, err := e.js.Stream(ctx, events.StreamChanges)
	if err != nil {
		return fmt.Errorf("stream %s: %w", events.StreamChanges, err)
	}
	info, err := cs.Info(ctx)
	if err != nil {
		return fmt.Errorf("stream %s info: %w", events.StreamChanges, err)
	}
	changesBefore := info.State.LastSeq
	const chunk = 10_000 // bounds memory
	for i := from; i < from+count; i += chunk {
		evs, err := appendWritesFrom(ctx, gen, i, min(chunk, from+count-i), docs)
		if err != nil {
			return err
		}
		ms, err := eventMsgs(evs)
		if err != nil {
			return err
		}
		if err := publishAll(ctx, e.js, ms); err != nil {
			return err
		}
	}
	es, err := e.js.Stream(ctx, events.StreamEvents)
	if err != nil {
		return fmt.Errorf("stream %s: %w", events.StreamEvents, err)
	}
	ei, err := es.Info(ctx)
	if err != nil {
		return fmt.Errorf("stream %s info: %w", events.StreamEvents, err)
	}
	last := ei.State.LastSeq
	if err := waitUntil(ctx, 60*time.Minute, "projector", func() (bool, error) {
		select {
		case <-p.Done():
			return false, fmt.Errorf("projector stopped: %w", p.Err())
		default:
		}
		return p.Stats().Checkpoint >= last, nil
	}); err != nil {
		return err
	}
	// The checkpoint commits before the outbox is published.
	return waitUntil(ctx, 10*time.Minute, "changes published", func() (bool, error) {
		info, err := cs.Info(ctx)
		if err != nil {
			return false, fmt.Errorf("stream %s info: %w", events.StreamChanges, err)
		}
		return info.State.LastSeq >= changesBefore+uint64(count), nil
	})
}
