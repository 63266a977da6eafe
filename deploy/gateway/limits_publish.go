package gateway

import (
	"context"
	"errors"
	"math"
	"net/http"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/deploy/auth"
	"github.com/ebbsync/ebb/events"
)

// Metered returns js with every publish onto an event subject first
// allowed by m (auth.Meter.AllowSubject: the user's publish rate, the
// tenant's storage), so the HTTP paths into EVENTS keep the same quotas,
// and share the same budget, as a client's NATS connection. A refused
// publish returns the *auth.QuotaError (wrapping auth.ErrPublishRate or
// auth.ErrTenantStorage) without sending anything: a push answers it as
// the event's error (status failed, later events not attempted) with HTTP
// 429 and Retry-After for a rate, 507 for storage (see quotaStatus). A
// Writer given a Metered JetStream (WriterConfig.JetStream) takes m as its
// Meter: it charges a document write when its request comes, answers one
// over a quota with the same statuses before writing it into its log, and
// has its logs publish through js unmetered. Other subjects pass
// unmetered. A nil m returns js.
func Metered(js WriterJetStream, m *auth.Meter) WriterJetStream {
	if m == nil {
		return js
	}
	return &metered{WriterJetStream: js, m: m}
}

type metered struct {
	WriterJetStream
	m *auth.Meter
}

func (j *metered) allow(msg *nats.Msg) error {
	if !strings.HasPrefix(msg.Subject, events.EventsPrefix+".") {
		return nil
	}
	return j.m.AllowMsg(msg)
}

func (j *metered) PublishMsg(ctx context.Context, msg *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	if err := j.allow(msg); err != nil {
		return nil, err
	}
	return j.WriterJetStream.PublishMsg(ctx, msg, opts...)
}

func (j *metered) PublishMsgAsync(msg *nats.Msg, opts ...jetstream.PublishOpt) (jetstream.PubAckFuture, error) {
	if err := j.allow(msg); err != nil {
		return nil, err
	}
	return j.WriterJetStream.PublishMsgAsync(msg, opts...)
}

// quotaStatus sets Retry-After for a rate refusal and returns the HTTP
// status of a push or document write refused for q: 429 for a rate, 507 for a tenant's storage.
func quotaStatus(w http.ResponseWriter, q *auth.QuotaError) int {
	if !errors.Is(q, auth.ErrPublishRate) {
		return http.StatusInsufficientStorage
	}
	secs := int(math.Ceil(q.RetryAfter.Seconds()))
	w.Header().Set("Retry-After", strconv.Itoa(max(secs, 1)))
	return http.StatusTooManyRequests
}
