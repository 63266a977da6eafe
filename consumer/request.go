package consumer

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// followHeartbeat is the idle heartbeat the followers ask of their pull
// requests: a server that stops answering (a dead host, a partition, no
// stream leader) is noticed after two missed heartbeats, and the ordered
// consumer or the follower's own loop moves on (to another cluster member
// through the connection's reconnect) instead of waiting for the
// connection's own ping timeout.
const followHeartbeat = time.Second

// requestTimeout bounds one attempt of a JetStream API request the replica
// reads streams with (stream info, last message of a subject). A request
// to a stream with no leader (a cluster electing one) is never answered;
// without its own bound it would hang for the caller's whole context, while
// a new attempt a moment later reaches the new leader.
const requestTimeout = 2 * time.Second

// retryable reports whether err, from one attempt of a JetStream request
// bounded by attempt, is worth another attempt: the attempt's own deadline
// passed, or no one answered (no responders, no response from the stream, a
// request timeout).
func retryable(attempt context.Context, err error) bool {
	return (errors.Is(err, context.DeadlineExceeded) && attempt.Err() != nil) ||
		errors.Is(err, nats.ErrTimeout) || errors.Is(err, nats.ErrNoResponders) ||
		errors.Is(err, jetstream.ErrNoStreamResponse)
}

// request runs fn, a read-only JetStream request, with at most timeout per
// attempt (requestTimeout when zero), again after a short backoff while an
// attempt goes unanswered (retryable), until ctx ends; it returns fn's
// first other error as it is, and ctx's error (wrapping the last attempt's)
// when ctx ends first. what names the request in that error.
func request[T any](ctx context.Context, timeout time.Duration, what string, fn func(ctx context.Context) (T, error)) (T, error) {
	if timeout <= 0 {
		timeout = requestTimeout
	}
	for n := 0; ; n++ {
		attempt, cancel := context.WithTimeout(ctx, timeout)
		v, err := fn(attempt)
		retry := err != nil && retryable(attempt, err)
		cancel()
		if !retry {
			return v, err
		}
		if ctx.Err() != nil {
			return v, fmt.Errorf("%s: %w (last attempt: %w)", what, ctx.Err(), err)
		}
		if serr := sleepCtx(ctx, min(backoffDelay(n), requestTimeout/4)); serr != nil {
			return v, fmt.Errorf("%s: %w (last attempt: %w)", what, serr, err)
		}
	}
}

// stream returns the stream name's handle (with its info, CachedInfo),
// each attempt bounded (see request).
func stream(ctx context.Context, js jetstream.StreamManager, name string) (jetstream.Stream, error) {
	return request(ctx, 0, "stream info "+name, func(ctx context.Context) (jetstream.Stream, error) {
		return js.Stream(ctx, name)
	})
}

// lastMsgFor returns s's last message under subject, each attempt bounded
// (see request); jetstream.ErrMsgNotFound when there is none.
func lastMsgFor(ctx context.Context, s jetstream.Stream, subject string) (*jetstream.RawStreamMsg, error) {
	return request(ctx, 0, "last message of "+subject, func(ctx context.Context) (*jetstream.RawStreamMsg, error) {
		return s.GetLastMsgForSubject(ctx, subject)
	})
}
