// Package gateway is ebb's HTTP surface: health and readiness, Prometheus
// metrics, read access to the server view, and a sync gateway for clients
// that cannot speak NATS (a phone app doing plain HTTP, a browser, curl).
//
// The gateway holds no state of its own. A pushed batch of events is
// validated and published to EVENTS exactly as a NATS client would publish
// it, with the event id as Nats-Msg-Id, so pushing the same batch again is
// harmless. Changes, receipts and documents are read straight from the
// CHANGES and RECEIPTS streams, which are the same compacted feed NATS
// clients replay: a document's current state is the last message on its
// change subject. The routes are documented in events/PROTOCOL.md.
package gateway
