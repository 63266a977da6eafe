package gateway

import (
	"context"
	"errors"
	"fmt"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/ebbsync/ebb/deploy/feed"
	"github.com/ebbsync/ebb/events"
)

// errForeign marks a message whose payload is not about the subject it was
// stored on: another tenant's, client's or document's, whoever wrote it.
var errForeign = feed.ErrForeign

// Reasons a message is skipped, the reason attribute of ebb.gateway.skipped.
const (
	skipUnreadable = "unreadable" // not a valid payload of its stream
	skipForeign    = "foreign"    // a valid payload of another subject
	skipAudience   = "audience"   // a change whose audience headers do not parse (sync rules)
)

// readChange decodes the change stored on subject and checks that it is
// that subject's document's change (feed.ReadChange).
func readChange(subject string, data []byte) (*events.Change, error) {
	return feed.ReadChange(subject, data)
}

// readReceipt decodes the receipt stored on subject and checks that it is
// for that subject's tenant, client and device: a receipt with a device
// belongs on ebb.rcpt.<tenant>.<client>.<device>, one without on the
// client's legacy subject ebb.rcpt.<tenant>.<client>.
func readReceipt(subject string, data []byte) (*events.Receipt, error) {
	r, err := events.DecodeReceipt(data)
	if err != nil {
		return nil, err
	}
	if want := r.Subject(); want != subject {
		return nil, fmt.Errorf("%w: receipt of tenant %q, client %q, device %q stored on %s", errForeign, r.Tenant, r.Client, r.Device, subject)
	}
	return r, nil
}

// skipped records a message the gateway will not serve: it is counted
// (Skipped, and the ebb.gateway.skipped counter) and logged with the
// reason, and the caller goes on with the next message.
func (g *Gateway) skipped(ctx context.Context, stream string, seq uint64, subject string, err error) {
	reason := skipUnreadable
	switch {
	case errors.Is(err, errForeign):
		reason = skipForeign
	case errors.Is(err, feed.ErrAudience):
		reason = skipAudience
	}
	g.skips.Add(1)
	if g.skipCounter != nil {
		g.skipCounter.Add(ctx, 1, metric.WithAttributes(attribute.String("stream", stream), attribute.String("reason", reason)))
	}
	g.log.WarnContext(ctx, "skipped a message that is not its subject's", "stream", stream, "seq", seq,
		"subject", subject, "reason", reason, "err", err)
}

// Skipped returns how many messages the gateway has skipped because they
// were unreadable or did not match their subject.
func (g *Gateway) Skipped() uint64 { return g.skips.Load() }
