// Package gateway is ebb's HTTP surface: health and readiness, Prometheus
// metrics, read access to the server view, and a sync gateway for clients
// that cannot speak NATS (a phone app doing plain HTTP, a browser, curl).
//
// The sync routes hold no state of their own. A pushed batch of events is
// validated and published to EVENTS exactly as a NATS client would publish
// it, with the event id as Nats-Msg-Id, so pushing the same batch again is
// harmless. An event JetStream drops as a repeat is compared with the
// message it repeats: the same event is "duplicate", another event under
// the same id is "invalid" (it would otherwise vanish without a trace).
// Changes, receipts and documents are read straight from the CHANGES and
// RECEIPTS streams, which are the same compacted feed NATS clients replay:
// a document's current state is the last message on its change subject. A
// client's receipts are those of every one of its devices and of its
// legacy log (events.ClientReceipts, one ordered consumer), or one
// device's with ?device=. The changes and receipts answers carry the
// stream's first and last sequence and creation time (StreamState), read
// after the page, so an HTTP client can tell a reset stream or expired
// receipts as a NATS client does from the stream info.
//
// The changes pull reads the same pages as NATS clients of the change
// responder (deploy/feed, one copy of the reading code): ?collection=
// (repeatable) narrows it to those collections. With sync rules
// (Config.Visibility) a user of role client is served through the audience
// filter of its principals (its name and its groups, Config.Groups): the
// changes it may read, a Left notice for a document that left its view,
// nothing of the others, its cursor moving past them all; a document it
// may not read answers 404 on GET and on its history, as if it did not
// exist, and is left out of lists and the conflict list (Visibility decides
// from the document's current fields); GET of a deleted document answers
// such a user 404 without the tombstone's version. A write's precondition
// on a document it may not read answers 404 as GET does, whatever its
// value, with no ETag or version, and writes nothing. Services and admins read the whole
// tenant. Every event the gateway accepts from an authenticated user, by
// push or document write, carries events.HeaderWriterGroups set by the
// gateway to the user's groups (see stamping for a document write's log).
//
// Document writes (PUT, PATCH, DELETE on /v1/{tenant}/docs/{collection}/{id})
// are for services and curl, which should not mint ULIDs, HLCs and client
// sequences. A Writer builds the event for them, as a client's producer
// would (the log is one device of its identity, and follows every receipt
// subject of the identity), in a durable producer.Log of the writing identity (the
// authenticated user, or DefaultWriteClient without auth) inside the
// server's data directory; the answer waits, bounded by Config.WriteWait,
// for the event's receipt and reports its outcome. What the gateway
// guarantees:
//
//   - Nothing acknowledged is lost: 2xx (202 included) is sent only after
//     the event is fsynced in the log; the log's Publisher publishes it,
//     after a restart too (OpenWriter opens every log in its directory
//     that holds a write pending or awaiting its receipt).
//   - Logs are open only while they have work: a log is closed once no
//     request uses it, no write it holds is pending or published without
//     its receipt, and it has been idle for WriterConfig.IdleClose; at
//     most WriterConfig.MaxOpenLogs are open (the least recently used
//     closable ones make room). A write that failed for good does not
//     keep its log open: its outcome stays in the file. Any request of an
//     identity whose log is closed reopens it, GET of a write included,
//     and so may close another identity's idle log; when the bound is
//     full of logs in use or with writes pending or awaiting receipts,
//     the request (a write, or a GET of a write) is refused with 503 and
//     Retry-After, before anything is written, logged and counted
//     (ebb.gateway.writer.refused). A log opens without NATS: its
//     receipt follower starts in the background, retrying, so during an
//     outage GET of a write answers from the file and a write is
//     accepted (202) and published once NATS is back. A closed log's
//     receipts consumer is deleted in the background, best effort. A
//     reopened log resumes where it was (device, sequence, idempotency
//     keys, receipts checkpoint); files are kept for good (Writer says
//     why).
//   - At most once per Idempotency-Key: a retry with the same key and the
//     same request answers from the first event (replayed), never writes
//     again, across crashes (idempotency.go); the key with another request
//     is 422. Without a key, each request is a new write.
//   - If-Match / If-None-Match are checked against the document's last
//     change when the request comes (412 with the current ETag; under sync
//     rules only for a user who may read it, else 404 as above); the event
//     is written on that version, so a write that races in between is
//     settled by the collection's policy like any client's: under reject
//     it is rejected (412 when the request had If-Match), under manual it
//     is a conflict (409), under lww and merge it may apply over the other
//     write (recorded as overwritten, invariant 6). Strict compare-and-set
//     is the reject policy's.
//
// The outcomes, statuses and headers are documented in events/PROTOCOL.md.
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
