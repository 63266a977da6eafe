package server

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/ebbsync/ebb/events"
)

// attrStream is the metric attribute naming an ebb stream.
const attrStream = "stream"

// serverGauges reports each stream's message count and last sequence, and
// the projector's checkpoint and lag behind EVENTS (none from a server
// on standby, which applies no partition).
func serverGauges(mp metric.MeterProvider, js jetstream.JetStream, proj runningProjector) error {
	meter := mp.Meter("github.com/ebbsync/ebb/deploy/server")
	msgs, err := meter.Int64ObservableGauge("ebb.stream.messages", metric.WithDescription("messages held by each ebb stream"))
	if err != nil {
		return err
	}
	last, err := meter.Int64ObservableGauge("ebb.stream.last_sequence", metric.WithDescription("last sequence of each ebb stream"))
	if err != nil {
		return err
	}
	checkpoint, err := meter.Int64ObservableGauge("ebb.projector.checkpoint", metric.WithDescription("last EVENTS sequence the projector committed"))
	if err != nil {
		return err
	}
	lag, err := meter.Int64ObservableGauge("ebb.projector.lag", metric.WithDescription("events stored in EVENTS that the projector has not applied yet"))
	if err != nil {
		return err
	}
	_, err = meter.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		for _, name := range []string{events.StreamEvents, events.StreamChanges, events.StreamReceipts, events.StreamDead} {
			st, err := js.Stream(ctx, name)
			if err != nil {
				return fmt.Errorf("stream %s: %w", name, err)
			}
			attr := metric.WithAttributes(attribute.String(attrStream, name))
			o.ObserveInt64(msgs, int64(st.CachedInfo().State.Msgs), attr)
			o.ObserveInt64(last, int64(st.CachedInfo().State.LastSeq), attr)
			if cp, ok := proj.checkpoint(); ok && name == events.StreamEvents {
				o.ObserveInt64(checkpoint, int64(cp))
				o.ObserveInt64(lag, int64(st.CachedInfo().State.LastSeq-min(cp, st.CachedInfo().State.LastSeq)))
			}
		}
		return nil
	}, msgs, last, checkpoint, lag)
	return err
}
