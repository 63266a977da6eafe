package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/producer"
)

// benchDocs is how many documents the generated writes go round: enough
// that the publisher's one-in-flight-per-document rule does not bound it
// below its window, as in an app's month of offline edits across many
// documents.
const benchDocs = 4096

// benchCollection is the collection every workload writes.
const benchCollection = "bench"

// pad makes a write's encoded event about 256 bytes.
var pad = json.RawMessage(`"` + strings.Repeat("x", 54) + `"`)

// benchWrite is the i-th write of a workload: a put of two fields on one
// of docs documents.
func benchWrite(i, docs int) producer.Write {
	return producer.Write{Collection: benchCollection, Doc: fmt.Sprintf("doc-%05d", i%docs), Op: events.OpPut,
		Fields: events.Fields{"n": json.RawMessage(fmt.Sprint(i)), "v": pad}}
}

// appendWrites appends n writes to l in batches of 1024 and returns their
// events.
func appendWrites(ctx context.Context, l *producer.Log, n, docs int) ([]*events.Event, error) {
	return appendWritesFrom(ctx, l, 0, n, docs)
}

// appendWritesFrom appends writes from to from+n-1 (see benchWrite).
func appendWritesFrom(ctx context.Context, l *producer.Log, from, n, docs int) ([]*events.Event, error) {
	var out []*events.Event
	for i := from; i < from+n; i += 1024 {
		ws := make([]producer.Write, 0, 1024)
		for j := i; j < min(from+n, i+1024); j++ {
			ws = append(ws, benchWrite(j, docs))
		}
		evs, err := l.AppendBatch(ctx, ws)
		if err != nil {
			return nil, fmt.Errorf("append %d writes: %w", len(ws), err)
		}
		out = append(out, evs...)
	}
	return out, nil
}

// openLog opens a fresh producer log for tenant in a new directory.
func (r *runner) openLog(tenant string) (*producer.Log, error) {
	d, err := r.tempDir()
	if err != nil {
		return nil, err
	}
	l, err := producer.Open(filepath.Join(d, "log.db"), producer.LogConfig{Tenant: tenant, Logger: r.log})
	if err != nil {
		return nil, fmt.Errorf("open log in %s: %w", d, err)
	}
	return l, nil
}

// eventMsgs are evs as the producer publishes them: on their subject,
// their id as Nats-Msg-Id.
func eventMsgs(evs []*events.Event) ([]*nats.Msg, error) {
	out := make([]*nats.Msg, 0, len(evs))
	for _, ev := range evs {
		data, err := events.EncodeEvent(ev)
		if err != nil {
			return nil, fmt.Errorf("encode event %s: %w", ev.ID, err)
		}
		out = append(out, &nats.Msg{Subject: ev.Subject(), Data: data,
			Header: nats.Header{jetstream.MsgIDHeader: []string{ev.ID}}})
	}
	return out, nil
}

// rawMsgs are msgs moved into the raw stream, each with a fresh
// Nats-Msg-Id so that no round is a duplicate of another.
func rawMsgs(msgs []*nats.Msg) []*nats.Msg {
	ids := events.NewIDSource(nil)
	out := make([]*nats.Msg, 0, len(msgs))
	for _, m := range msgs {
		out = append(out, &nats.Msg{Subject: rawSubjectOf(m.Subject), Data: m.Data,
			Header: nats.Header{jetstream.MsgIDHeader: []string{ids.New().String()}}})
	}
	return out
}

// newIDs returns a source of fresh Nats-Msg-Ids.
func newIDs() func() string {
	s := events.NewIDSource(nil)
	return func() string { return s.New().String() }
}
