package events

import (
	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
)

// HeaderCarrier carries W3C trace context ("traceparent", "tracestate") in
// NATS message headers for OpenTelemetry propagation. Unlike http.Header it
// keeps keys exactly as given, lower case as the trace-context specification
// writes them, which is what PROTOCOL.md promises other clients.
type HeaderCarrier nats.Header

var _ propagation.TextMapCarrier = HeaderCarrier(nil)

// Get returns the first value of key.
func (c HeaderCarrier) Get(key string) string {
	if v := c[key]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// Set replaces the values of key with value.
func (c HeaderCarrier) Set(key, value string) { c[key] = []string{value} }

// Keys returns the header keys.
func (c HeaderCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}

// Span attribute keys of the write path. The producer, the projector and
// the replica set the same names, so one write's spans can be searched by
// one event id from the client's append to every replica's apply.
const (
	AttrEvent      = attribute.Key("ebb.event.id")
	AttrCollection = attribute.Key("ebb.collection")
	AttrDoc        = attribute.Key("ebb.doc")
	AttrOp         = attribute.Key("ebb.op")
	AttrClient     = attribute.Key("ebb.client")
	AttrSeq        = attribute.Key("ebb.client.seq")
	AttrVersion    = attribute.Key("ebb.version")
	AttrPolicy     = attribute.Key("ebb.policy")
	AttrOutcome    = attribute.Key("ebb.outcome")
	AttrCount      = attribute.Key("ebb.events")
	AttrDuplicate  = attribute.Key("ebb.duplicate")
	AttrStreamSeq  = attribute.Key("ebb.stream.sequence")
	AttrSubject    = attribute.Key("messaging.destination.name") // OpenTelemetry messaging conventions
	AttrMsgID      = attribute.Key("messaging.message.id")
	AttrSystem     = attribute.Key("messaging.system")
)
