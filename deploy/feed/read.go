package feed

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/events"
)

// JetStream is what a Source needs of a JetStream connection.
type JetStream interface {
	Stream(ctx context.Context, name string) (jetstream.Stream, error)
	OrderedConsumer(ctx context.Context, stream string, cfg jetstream.OrderedConsumerConfig) (jetstream.Consumer, error)
}

// DefaultTimeout bounds each JetStream call of a Source with no Timeout.
const DefaultTimeout = 10 * time.Second

// Source reads pages of CHANGES (and of any stream, for the gateway's
// receipts and lists) for one request at a time. It is safe for concurrent
// use; its fields must not change once it is in use.
type Source struct {
	JetStream JetStream // required
	// Timeout bounds the JetStream calls of one read (plus its wait);
	// default DefaultTimeout.
	Timeout time.Duration
	// Skipped, if set, is told of every message a read does not serve
	// because it is not its subject's (ErrForeign), unreadable, or carries
	// an unreadable audience (ErrAudience). The read goes on with the next
	// message either way.
	Skipped func(ctx context.Context, stream string, seq uint64, subject string, err error)
}

func (s *Source) timeout() time.Duration {
	if s.Timeout > 0 {
		return s.Timeout
	}
	return DefaultTimeout
}

func (s *Source) skip(ctx context.Context, stream string, seq uint64, subject string, err error) {
	if s.Skipped != nil {
		s.Skipped(ctx, stream, seq, subject, err)
	}
}

// errStop, returned by a ReadAfter callback, ends the read before the
// message it was handed: more is reported true.
var errStop = errors.New("stop reading")

// ReadAfter hands fn up to limit messages of stream on filters with
// sequence after `after`, in order, through one ordered consumer. With none
// there and wait > 0 it waits up to wait for the first. It reports whether
// more messages are waiting after the last one handed to fn. An error of fn
// ends the read with that error.
func (s *Source) ReadAfter(ctx context.Context, stream string, filters []string, after uint64, limit int, wait time.Duration,
	fn func(seq uint64, m jetstream.Msg) error) (more bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout()+wait)
	defer cancel()
	cons, err := s.JetStream.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{
		FilterSubjects:    filters,
		DeliverPolicy:     jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:       after + 1,
		InactiveThreshold: 5 * time.Second,
	})
	if err != nil {
		return false, fmt.Errorf("read %s after %d: %w", stream, after, err)
	}
	handle := func(m jetstream.Msg) error {
		md, err := m.Metadata()
		if err != nil {
			return fmt.Errorf("read %s: message metadata: %w", stream, err)
		}
		if err := fn(md.Sequence.Stream, m); err != nil {
			return err
		}
		more = md.NumPending > 0
		return nil
	}
	n := 0
	if wait > 0 {
		// Long-poll: the first message may not exist yet. The wait ends
		// early when ctx does (a client gone, a responder closing).
		wctx, wcancel := context.WithTimeout(ctx, wait)
		m, err := cons.Next(jetstream.FetchContext(wctx))
		// The wait may be over before Next even asks (FetchContext then
		// refuses a deadline already past, as ErrInvalidOption): on a
		// busy machine making the consumer can take all of a short wait.
		waited := wctx.Err() != nil
		wcancel()
		switch {
		case ctx.Err() != nil:
			return false, fmt.Errorf("read %s after %d: %w", stream, after, ctx.Err())
		case errors.Is(err, nats.ErrTimeout), errors.Is(err, jetstream.ErrNoMessages), errors.Is(err, context.DeadlineExceeded),
			err != nil && waited:
			return false, nil
		case err != nil:
			return false, fmt.Errorf("read %s after %d: %w", stream, after, err)
		}
		if err := handle(m); errors.Is(err, errStop) {
			return true, nil
		} else if err != nil {
			return false, err
		}
		n++
		if !more {
			return false, nil
		}
	}
	if n < limit {
		batch, err := cons.FetchNoWait(limit - n)
		if err != nil {
			return false, fmt.Errorf("read %s after %d: %w", stream, after, err)
		}
		for m := range batch.Messages() {
			if err := handle(m); errors.Is(err, errStop) {
				return true, nil
			} else if err != nil {
				return false, err
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return false, fmt.Errorf("read %s after %d: %w", stream, after, err)
		}
	}
	return more, nil
}

// StreamState is where the stream a page was read from stands, read after
// the page: a reader keeps StreamCreated with its cursor and compares
// (events/PROTOCOL.md, "Resets and lost messages"). The stream is the whole
// of CHANGES or RECEIPTS, not the tenant's or client's part of it.
type StreamState struct {
	// FirstSeq is the stream's first sequence (0 when it is empty). For
	// RECEIPTS, FirstSeq > after+1 means receipts after the cursor may be
	// gone (expired by age, or purged).
	FirstSeq uint64 `json:"first_seq"`
	// StreamLastSeq is the stream's last sequence. A cursor above it is
	// not of this stream's history.
	StreamLastSeq uint64 `json:"stream_last_seq"`
	// StreamCreated identifies the stream's incarnation: another value
	// than the one kept with the cursor means the stream was deleted and
	// created again, its sequences started over.
	StreamCreated time.Time `json:"stream_created"`
	// Restored holds the stream's metadata that says it was restored from
	// a backup (its keys begin "ebb.restored_": the incarnation and last
	// sequence it was restored from), so a cursor of that incarnation
	// resumes rather than resyncs, as it would reading CHANGES directly.
	Restored map[string]string `json:"restored,omitempty"`
}

// restoredPrefix begins the stream metadata keys `ebb restore` writes.
const restoredPrefix = "ebb.restored_"

// State reads where stream stands. Called after a page is read, so a
// message removed before the page was read shows as a FirstSeq beyond it.
func (s *Source) State(ctx context.Context, stream string) (StreamState, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout())
	defer cancel()
	st, err := s.JetStream.Stream(ctx, stream)
	if err != nil {
		return StreamState{}, fmt.Errorf("read stream %s info: %w", stream, err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return StreamState{}, fmt.Errorf("read stream %s info: %w", stream, err)
	}
	first := info.State.FirstSeq
	if info.State.Msgs == 0 {
		first = 0
	}
	state := StreamState{FirstSeq: first, StreamLastSeq: info.State.LastSeq, StreamCreated: info.Created.UTC()}
	for k, v := range info.Config.Metadata {
		if strings.HasPrefix(k, restoredPrefix) {
			if state.Restored == nil {
				state.Restored = map[string]string{}
			}
			state.Restored[k] = v
		}
	}
	return state, nil
}

// ReadChange decodes the change stored on subject and checks that it is
// that subject's document's change (ErrForeign if not).
func ReadChange(subject string, data []byte) (*events.Change, error) {
	c, err := events.DecodeChange(data)
	if err != nil {
		return nil, err
	}
	if want := events.ChangeSubject(c.Tenant, c.Collection, c.Doc); want != subject {
		return nil, fmt.Errorf("%w: change of tenant %q, collection %q, doc %q stored on %s", ErrForeign, c.Tenant, c.Collection, c.Doc, subject)
	}
	return c, nil
}
