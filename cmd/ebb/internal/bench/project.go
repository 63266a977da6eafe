package bench

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/projection"
)

// runProjector: Sizes.Project events (a third create documents, the rest
// overwrite them with a stale base version) in EVENTS; a projector with a
// fresh view store applies all of them, timed from Start until its
// checkpoint reaches the stream's last sequence and RECEIPTS holds a
// receipt for each (so its publishing is inside the time); against a durable pull
// consumer that fetches the same stream 256 at a time (the projector's
// batch) and acks each batch as the projector does (AckAll, one ack of its
// last message), doing nothing else; and, as a second baseline (row
// projector-publish), against the same fetch and ack plus the two
// publishes per event the projector makes, which bound it. Each round runs
// on a fresh server.
func runProjector(ctx context.Context, r *runner) ([]Result, error) {
	var out []Result
	for _, sm := range r.syncs() {
		res, err := r.project(ctx, sm, r.sizes.Project)
		out = append(out, res...)
		if err != nil {
			return out, err
		}
	}
	return out, nil
}

func (r *runner) project(ctx context.Context, sm syncMode, n int) ([]Result, error) {
	var (
		e      *env
		msgs   uint64 // messages in EVENTS
		last   uint64 // EVENTS' last sequence
		consNo int
	)
	defer func() {
		if e != nil {
			e.stop()
		}
	}()
	setup := func(ctx context.Context, round int) error {
		if e != nil {
			e.stop()
		}
		var err error
		if e, err = r.newEnv(ctx, sm); err != nil {
			return err
		}
		gen, err := r.openLog("bench-projector")
		if err != nil {
			return err
		}
		evs, err := appendWrites(ctx, gen, n, max(1, n/3))
		gen.Close()
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
		s, err := e.js.Stream(ctx, events.StreamEvents)
		if err != nil {
			return fmt.Errorf("stream %s: %w", events.StreamEvents, err)
		}
		info, err := s.Info(ctx)
		if err != nil {
			return fmt.Errorf("stream %s info: %w", events.StreamEvents, err)
		}
		msgs, last = info.State.Msgs, info.State.LastSeq
		return nil
	}
	// drain reads the msgs events of EVENTS with a fresh durable named
	// name as the projector does (batches of DefaultBatchSize, each acked
	// on its last message: AckAll), handing each message to each if set.
	drain := func(ctx context.Context, name string, each func(jetstream.Msg) error) error {
		cons, err := e.js.CreateOrUpdateConsumer(ctx, events.StreamEvents, jetstream.ConsumerConfig{Durable: name, AckPolicy: jetstream.AckAllPolicy})
		if err != nil {
			return fmt.Errorf("create consumer %s: %w", name, err)
		}
		defer e.js.DeleteConsumer(context.WithoutCancel(ctx), events.StreamEvents, name)
		var got uint64
		for got < msgs {
			// Never ask for more than remain: Fetch would wait out
			// MaxWait for messages that will not come.
			batch, err := cons.Fetch(int(min(uint64(projection.DefaultBatchSize), msgs-got)), jetstream.FetchMaxWait(time.Second))
			if err != nil {
				return fmt.Errorf("fetch: %w", err)
			}
			var last jetstream.Msg
			for m := range batch.Messages() {
				last = m
				got++
				if each != nil {
					if err := each(m); err != nil {
						return err
					}
				}
			}
			if err := batch.Error(); err != nil {
				return fmt.Errorf("fetch: %w", err)
			}
			if last != nil {
				if err := last.Ack(); err != nil {
					return fmt.Errorf("ack: %w", err)
				}
			}
		}
		return nil
	}
	raw := func(ctx context.Context, _ int) (float64, error) {
		consNo++
		start := time.Now()
		if err := drain(ctx, fmt.Sprintf("ebb-bench-raw-%d", consNo), nil); err != nil {
			return 0, err
		}
		return rate(int(msgs), time.Since(start)), nil
	}
	// rawPublish is the projector's real bound: the same fetch and ack,
	// and for each event the two publishes the projector makes (a change
	// on the document's subject, a receipt on the writer's), async, timed
	// until the last publish is acknowledged.
	receipt := make([]byte, receiptBytes)
	ids := newIDs()
	rawPublish := func(ctx context.Context, _ int) (float64, error) {
		consNo++
		start := time.Now()
		err := drain(ctx, fmt.Sprintf("ebb-bench-raw-publish-%d", consNo), func(m jetstream.Msg) error {
			_, rest, _ := strings.Cut(m.Subject(), ".")
			for _, out := range []*nats.Msg{
				{Subject: rawOutStreams[0].subject + "." + rest, Data: m.Data()},
				{Subject: rawOutStreams[1].subject + ".t.c", Data: receipt},
			} {
				out.Header = nats.Header{jetstream.MsgIDHeader: []string{ids()}}
				if _, err := e.js.PublishMsgAsync(out, withStall); err != nil {
					return fmt.Errorf("publish to %s: %w", out.Subject, err)
				}
			}
			return nil
		})
		if err != nil {
			return 0, err
		}
		select {
		case <-e.js.PublishAsyncComplete():
		case <-ctx.Done():
			return 0, ctx.Err()
		}
		return rate(int(msgs), time.Since(start)), nil
	}
	ebb := func(ctx context.Context, _ int) (float64, error) {
		consNo++
		d, err := r.tempDir()
		if err != nil {
			return 0, err
		}
		store, err := projection.OpenBolt(filepath.Join(d, "view.db"), projection.BoltOptions{})
		if err != nil {
			return 0, fmt.Errorf("open view: %w", err)
		}
		defer store.Close()
		name := fmt.Sprintf("ebb-bench-projector-%d", consNo)
		p, err := projection.New(e.js, store, projection.Config{Durable: name, Logger: r.log})
		if err != nil {
			return 0, fmt.Errorf("new projector: %w", err)
		}
		defer p.Close()
		rinfo, err := e.js.Stream(ctx, events.StreamReceipts)
		if err != nil {
			return 0, fmt.Errorf("stream %s: %w", events.StreamReceipts, err)
		}
		ri, err := rinfo.Info(ctx)
		if err != nil {
			return 0, fmt.Errorf("stream %s info: %w", events.StreamReceipts, err)
		}
		receiptsBefore := ri.State.Msgs
		start := time.Now()
		if err := p.Start(ctx); err != nil {
			return 0, fmt.Errorf("start projector: %w", err)
		}
		err = waitUntil(ctx, 10*time.Minute, "projector", func() (bool, error) {
			select {
			case <-p.Done():
				return false, fmt.Errorf("projector stopped: %w", p.Err())
			default:
			}
			return p.Stats().Checkpoint >= last, nil
		})
		if err != nil {
			return 0, err
		}
		// The checkpoint commits before its batch's outbox is published:
		// stop the clock once RECEIPTS holds this round's receipt of every
		// event (one projector per server, so all of them are its own).
		rs, err := e.js.Stream(ctx, events.StreamReceipts)
		if err != nil {
			return 0, fmt.Errorf("stream %s: %w", events.StreamReceipts, err)
		}
		err = waitUntil(ctx, 10*time.Minute, "receipts published", func() (bool, error) {
			info, err := rs.Info(ctx)
			if err != nil {
				return false, fmt.Errorf("stream %s info: %w", events.StreamReceipts, err)
			}
			return info.State.Msgs >= receiptsBefore+msgs, nil
		})
		if err != nil {
			return 0, err
		}
		return rate(int(msgs), time.Since(start)), nil
	}
	eb, rw, ratio, err := r.pairsWith(ctx, fmt.Sprintf("projector %d (sync=%s)", n, sm.name), setup,
		[]baseline{{"raw fetch+ack", raw}, {"raw fetch+ack+2 publishes", rawPublish}}, ebb)
	if err != nil {
		return nil, err
	}
	workload := fmt.Sprintf("projector, %d events", n)
	return []Result{
		r.row(Result{Key: "projector/" + sm.name, Workload: workload, Sync: sm.name, Unit: "events/s",
			Ebb: eb, Raw: rw[0], Ratio: ratio[0], Target: Target{AtLeast, 0.6},
			Baseline: "durable fetch(256) + AckAll per batch of the same stream, nothing published",
			Note:     "a third create, the rest overwrite with a stale base (lww); the projector also publishes a change and a receipt per event, which this baseline does not"}),
		r.row(Result{Key: "projector-publish/" + sm.name, Workload: workload + ", vs fetch+ack+2 publishes", Sync: sm.name, Unit: "events/s",
			Ebb: eb, Raw: rw[1], Ratio: ratio[1], Target: Target{AtLeast, 0.6},
			Baseline: "the same fetch and ack, plus per event two async publishes (the event's bytes as a change, a receipt-sized message) into streams configured as CHANGES and RECEIPTS",
			Note:     fmt.Sprintf("the projector's real bound: it publishes a change and a receipt per event; receipt stand-in %d B", receiptBytes)}),
	}, nil
}

// receiptBytes is about the size of an encoded receipt.
const receiptBytes = 160
