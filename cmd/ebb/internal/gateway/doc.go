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
// change subject.
//
// A reader of those streams cannot trust what is stored on a subject: a
// change or receipt is served only if its payload is readable and names
// the subject it was read from (readChange, readReceipt); any other
// message is skipped, counted (Gateway.Skipped, ebb.gateway.skipped) and
// logged, never served and never fatal to the rest of the page.
//
// Every answer, errors included, is JSON; request bodies are bounded on
// every route (Config.MaxBody) and concurrent long-polls per user and in
// total (Config.MaxLongPolls, MaxLongPollsPerUser). Lists page like the
// changes feed. The routes are documented in events/PROTOCOL.md.
package gateway
