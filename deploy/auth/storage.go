package auth

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/events"
)

// meteredStreams are the streams a tenant's storage is counted in.
var meteredStreams = []string{events.StreamEvents, events.StreamChanges, events.StreamDead}

// measureBatch is how many headers one fetch of a measure asks for.
const measureBatch = 1024

// measure returns the bytes each tenant (by subject token) keeps in
// meteredStreams: for every message, its subject, its headers and its
// payload size (JetStream's Nats-Msg-Size; payloads are not read). A
// stream that does not exist counts nothing.
func measure(ctx context.Context, js jetstream.JetStream) (map[string]int64, error) {
	usage := map[string]int64{}
	for _, name := range meteredStreams {
		if err := measureStream(ctx, js, name, usage); err != nil {
			return nil, err
		}
	}
	return usage, nil
}

func measureStream(ctx context.Context, js jetstream.JetStream, name string, usage map[string]int64) error {
	s, err := js.Stream(ctx, name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("measure %s: %w", name, err)
	}
	last := s.CachedInfo().State.LastSeq
	if s.CachedInfo().State.Msgs == 0 {
		return nil
	}
	// The server removes the consumer once the measure stops reading.
	c, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{HeadersOnly: true, InactiveThreshold: 10 * time.Second})
	if err != nil {
		return fmt.Errorf("measure %s: %w", name, err)
	}
	idle := false
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		// What is there now; only if nothing was, wait a little for more
		// (a message not yet delivered), then call the stream read.
		var batch jetstream.MessageBatch
		var err error
		if idle {
			batch, err = c.Fetch(measureBatch, jetstream.FetchMaxWait(2*time.Second))
		} else {
			batch, err = c.FetchNoWait(measureBatch)
		}
		if err != nil {
			return fmt.Errorf("measure %s: %w", name, err)
		}
		n := 0
		done := false
		for msg := range batch.Messages() {
			n++
			meta, err := msg.Metadata()
			if err != nil {
				return fmt.Errorf("measure %s: %w", name, err)
			}
			if tenant := tenantToken(msg.Subject()); tenant != "" {
				usage[tenant] += messageBytes(msg)
			}
			if meta.Sequence.Stream >= last || meta.NumPending == 0 {
				done = true
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, jetstream.ErrNoMessages) {
			return fmt.Errorf("measure %s: %w", name, err)
		}
		if done || n == 0 && idle {
			return nil
		}
		idle = n == 0
	}
}

// messageBytes is what one message of a headers-only read stands for:
// subject, the headers it was stored with, and the payload size. The
// payload size is the last Nats-Msg-Size, the one JetStream appends to
// the stored headers; an earlier one is a client's (stored before the
// publish responder dropped them, or by an admin) and counts as any
// other header. An unreadable or negative size counts as 0.
func messageBytes(msg jetstream.Msg) int64 {
	n := int64(len(msg.Subject()))
	for k, vs := range msg.Headers() {
		if k == nats.MsgSize && len(vs) > 0 {
			if size, err := strconv.ParseInt(vs[len(vs)-1], 10, 64); err == nil && size > 0 {
				n += size
			}
			vs = vs[:len(vs)-1]
		}
		for _, v := range vs {
			n += int64(len(k) + len(v) + 4) // "k: v\r\n"
		}
	}
	return n
}

// tenantToken returns the tenant token of a subject of EVENTS, CHANGES or
// DEAD (the third token of each), or "".
func tenantToken(subject string) string {
	parts := strings.SplitN(subject, ".", 4)
	if len(parts) < 3 {
		return ""
	}
	return parts[2]
}

// runMeasures measures storage on js at once and then every Rescan, until
// ctx ends. A failed measure keeps the previous counts (and the events
// counted since) and is tried again at the next tick; onErr hears of it.
func (m *Meter) runMeasures(ctx context.Context, js jetstream.JetStream, onErr func(error)) {
	t := time.NewTicker(m.q.Storage.Rescan)
	defer t.Stop()
	for {
		m.beginMeasure()
		usage, err := measure(ctx, js)
		if err != nil {
			m.abortMeasure()
			if ctx.Err() != nil {
				return
			}
			onErr(err)
		} else {
			m.endMeasure(usage)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// abortMeasure forgets a measure that failed.
func (m *Meter) abortMeasure() {
	m.mu.Lock()
	m.next = nil
	m.mu.Unlock()
}

// Measure measures the storage of every tenant on js now and installs the
// result, as StartAPI does every StorageLimit.Rescan.
func (m *Meter) Measure(ctx context.Context, js jetstream.JetStream) error {
	m.beginMeasure()
	usage, err := measure(ctx, js)
	if err != nil {
		m.abortMeasure()
		return err
	}
	m.endMeasure(usage)
	return nil
}
