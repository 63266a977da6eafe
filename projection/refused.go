package projection

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/events"
)

// maxRefusedData bounds the payload a dead letter of a refused publish keeps:
// the refused message may be too big for any stream.
const maxRefusedData = 64 << 10

// jsErrCodeHeaderExceedsMaximum is nats-server's "header size exceeds
// maximum allowed" (JSStreamHeaderExceedsMaximumErr), which nats.go does
// not name.
const jsErrCodeHeaderExceedsMaximum jetstream.ErrorCode = 10097

// refusedForGood reports whether a publish error of the projector's will
// not go away by retrying, the one place that decides it: the message
// itself is refused (over the maximum payload or message size, a bad
// subject, headers refused or too big). Everything else is retried, for
// as long as it takes (Ready reports the stall): no connection, timeouts,
// leader changes, an account out of storage, and no stream answering the
// subject, which a cut route or a stream being recreated looks like, and
// after which dropping a receipt would lose it for good.
func refusedForGood(err error) bool {
	switch {
	case errors.Is(err, nats.ErrMaxPayload),
		errors.Is(err, nats.ErrBadSubject),
		errors.Is(err, nats.ErrHeadersNotSupported):
		return true
	case errors.Is(err, jetstream.ErrNoStreamResponse), errors.Is(err, nats.ErrNoResponders):
		return false
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode {
		case jetstream.JSErrCodeStreamMessageExceedsMaximum, jsErrCodeHeaderExceedsMaximum:
			return true
		}
	}
	return false
}

// refusal is an outbox entry refused for good, and why.
type refusal struct {
	entry OutboxEntry
	err   error
}

// deadLetterRefused publishes a dead letter for an outbox entry refused
// for good, so the entry can leave the outbox: the reason, the subject it
// was going to, its headers, and its payload when that is at most 64 KiB.
// Its Nats-Msg-Id derives from the entry's, so a retry is dropped. A
// dead letter refused for good too is logged and given up (never retried
// forever); another failure is returned, and the round is retried.
func (p *Projector) deadLetterRefused(ctx context.Context, r refusal) error {
	e := r.entry
	reason := fmt.Sprintf("publish %s to %s refused for good: %v (%d bytes)", e.MsgID, e.Subject, r.err, len(e.Data))
	dl := &events.DeadLetter{Schema: events.SchemaVersion, Reason: reason, Subject: e.Subject, Header: e.Header}
	if len(e.Data) <= maxRefusedData {
		dl.Data = e.Data
	} else {
		dl.Reason += "; payload omitted"
	}
	if t, err := events.TenantOfSubject(e.Subject); err == nil && validTenant(t) == nil {
		dl.Tenant = t
	}
	data, err := events.EncodeDeadLetter(dl)
	if err != nil {
		return fmt.Errorf("encode dead letter of %s: %w", e.MsgID, err)
	}
	ctx, cancel := context.WithTimeout(ctx, p.cfg.PublishTimeout)
	defer cancel()
	_, err = p.js.PublishMsg(ctx, &nats.Msg{Subject: events.DeadSubject(dl.Tenant), Data: data}, jetstream.WithMsgID("dead:"+e.MsgID))
	switch {
	case err == nil:
		p.log.Error("outbox entry refused for good; dead-lettered", "msg_id", e.MsgID, "subject", e.Subject, "bytes", len(e.Data), "err", r.err)
	case refusedForGood(err):
		p.log.Error("outbox entry refused for good, and its dead letter too; dropped", "msg_id", e.MsgID, "subject", e.Subject,
			"bytes", len(e.Data), "err", r.err, "dead_letter_err", err)
	default:
		return fmt.Errorf("dead-letter %s refused by %s: %w", e.MsgID, e.Subject, err)
	}
	p.dead.Add(1)
	p.metrics.dead.Add(ctx, 1)
	return nil
}
