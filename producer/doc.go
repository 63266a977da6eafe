// Package producer is the client's write path: a durable local log (an
// outbox) and a Publisher that drains it to the EVENTS stream.
//
// An app's write becomes an event in [Log.Append]: the log assigns its ULID
// (monotonic, restored across restarts), its client sequence (+1 per
// event), its HLC timestamp, tenant and client, validates it, and commits it
// to bbolt with an fsync before returning. From then on the event cannot be
// lost (invariant 1): it stays in the log, pending until JetStream
// acknowledges it, then published, then settled when its receipt arrives,
// or failed if the server refused it for good. Entries are kept after they
// settle (so the app can show history and a Replica can overlay unsettled
// ones on its view); pruning is left for later.
//
// A [Publisher] sends pending entries in log order with a window of async
// publishes, at most one per document at a time. Each message carries the
// event id as Nats-Msg-Id and the W3C trace context of the Append in its
// headers ([events.HeaderCarrier]). A PubAck, duplicate or not, marks the
// entry published; acks are stored in batches by a committer goroutine,
// each batch a Log.Batch request that shares the next group commit with
// the appends queued beside it, so there is no fsync per ack. Retryable failures
// (no connection, timeouts, no responders, leader changes) are retried
// forever with exponential backoff and full jitter, and every retry restarts
// from the oldest unacknowledged entry. While the connection is down the
// publisher does not publish at all (nothing lands in the client's reconnect
// buffer) and it wakes up on reconnect and on new appends. Permanent
// refusals (permission denied, message too large, other 4xx JetStream
// errors, classified with errors.Is/As only) mark the entry failed with the
// server's reason, call OnFailure, and publishing goes on behind it.
//
// NATS reports a publish permission violation on the connection, not in the
// ack, so the publisher first sees a missing ack (AckTimeout); it then
// retries in probe mode, one message at a time with a connection flush, and
// a new nats.ErrPermissionViolation on the connection during that probe
// marks the message failed. Without a [Conn] such a message is retried
// forever.
//
// # Order
//
// Per document, events reach EVENTS in client-sequence order (DESIGN.md
// invariant 5), retries included: an event is published only once the
// previous event of its document (same subject) is acknowledged or failed
// for good, so two events of one document are never in flight together and
// a failure in the middle of the window cannot let a later one of the same
// document through first. Events of other documents keep filling the
// window meanwhile, so with many documents the window is as full as before;
// a single hot document gets one publish per round trip.
//
// Across documents there is no such promise: an event held behind its
// document, or one whose publish failed mid-window while later ones were
// acknowledged, lands after events with higher client sequences. That is
// bounded: the publisher reads no further than MaxInFlight client sequences
// past the oldest entry it has not finished, so no event is ever overtaken
// by one MaxInFlight or more sequences later (TestPublisher_MidWindowFailure
// and the crash test check both rules). The projector relies on the bound:
// it remembers the sequences it has not seen below a writer's high-water
// mark (holes) for projection.DefaultHoleWindow (65536) sequences, which is
// why MaxInFlight may not exceed 65536.
//
// # Duplicates
//
// A crash between a publish and storing its ack re-publishes the event on
// restart; JetStream drops the copy inside the stream's duplicate window
// (events.StreamOptions.DedupeWindow) and acks it as a duplicate. A copy sent
// after the window has passed reaches EVENTS a second time
// (TestPublisher_DuplicateBeyondDedupeWindow shows it). The projector drops
// it by the writer's high-water mark of Seq and its holes: a sequence at or
// below the mark that is not a hole was applied before. That is sound
// because a first copy is overtaken by less than MaxInFlight sequences (see
// Order), well inside the projector's hole window.
//
// # Telemetry
//
// With LogConfig.TracerProvider, Append (and AppendBatch) is a span,
// ebb.producer.append, a child of the span in its ctx, with the event id,
// collection, doc and op. The append span's W3C context, not the caller's,
// is what the log stores with each entry, so a publish made after a restart
// still joins the write's trace. With PublisherConfig.TracerProvider every
// publish attempt is a span, ebb.producer.publish (kind producer, a child of
// the append, with the event id, subject and, once acknowledged, the stream
// sequence), and the message carries the publish span's context: the
// projector's apply is its child. Metrics (OpenTelemetry, nil provider =
// none): ebb.producer.events.appended, .published (attribute ebb.duplicate),
// .failed, ebb.producer.retries, the histogram ebb.producer.publish.duration
// (publish to ack, seconds), and the gauges ebb.producer.pending and
// ebb.producer.oldest_pending.age (seconds), both with attribute ebb.client.
//
// # Performance
//
// What a write costs, by contract: each Append, AppendBatch or AppendWith
// call is committed whole in one bbolt transaction (one fsync), which
// concurrent calls share (group commit, see group.go): N writers waiting at
// once cost one fsync, not N, and a call's failure is its own (a failed
// commit, the disk full, fails every call of its group). Bookkeeping
// joins the same queue: Log.Batch (a replica's receipt and change applies)
// and the Publisher's ack marks run in the transaction of the next group
// commit, beside the appends queued with them, so a write online and what
// follows it share fsyncs instead of taking one each. A Batch fn may run
// more than once (its group retried without a member that failed) and must
// only touch its tx; Log.Update keeps a transaction of its own, its fn run
// once. An append never waits for bookkeeping to arrive (the leader's wait
// for its group to fill counts appends only), though it may share a commit
// with bookkeeping already queued. Log.Stats counts the commits and the
// requests they held. The
// unsettled entries are indexed by document (producer.bydoc, written in the
// transaction that appends or settles), so Tx.UnsettledFor, UnsettledIn and
// UnsettledEntry cost the entries they return, not the backlog; the
// entries awaiting their fate (pending or published, not failed) are
// indexed by sequence (producer.awaiting, written where an entry is
// appended, fails or settles), so Tx.Awaiting costs one seek; the copies
// Reissue writes are indexed by sequence (producer.copies); and Log.Counts
// is kept in memory. A log written before an index is indexed once when
// opened. Only Tx.EachUnsettled reads the whole backlog. A Publisher
// keeps at most MaxInFlight publishes awaiting their PubAck and at most one
// per document (see Order), so a backlog spread over fewer documents than
// MaxInFlight drains with fewer in flight.
//
// The figures live in the README's Performance section, rerun with `ebb
// bench` (workload push: a drained backlog beside js.PublishMsgAsync of the
// same events, both server fsync policies) or with BenchmarkProducer and
// BenchmarkRawPublishAsync in this package.
//
// # Encryption at rest
//
// With LogConfig.Cipher (a keys.Cipher, AES-256-GCM) every value that
// holds user data is sealed: the encoded event (producer.events), the
// entry state with the server's reasons (producer.state) and the outbound
// record with subject and trace context (producer.pending). Each value
// carries a random 12-byte nonce and is bound to its bucket and key, so a
// value copied to another entry fails to open instead of being read as
// that entry. What stays in the clear: bbolt keys (client sequences,
// event ULIDs in producer.ids), the meta bucket (tenant, client id, last
// sequence, last ULID, HLC) and the unsettled index: its keys and the
// unsettled markers' values are keyed hashes (HMAC-SHA256, truncated to 16
// bytes, under a random key sealed in producer.meta) of the collection and
// document, so they show which writes share a document, not its name:
// names and counters, never document contents. producer.meta holds a sealed check
// value (keys.CheckStore), so another key, no key, or a key on a plaintext
// log is refused at open with keys.ErrWrongKey; a log is encrypted or not
// for life.
//
// BenchmarkProducerEncrypted measures the cost of sealing against
// BenchmarkProducer; the figures are in the README's Performance section.
//
// # The local store
//
// A Log owns its bbolt file and every bucket in it (OpenStore, or Open for
// a file of its own). Other packages that keep state beside the log, so
// that one transaction changes both (the consumer's view, the gateway's
// writer), run their transactions through Log.View, Log.Update and
// Log.Batch (shared with the group commit, see Performance): the
// *Tx they get has the log's typed methods (Settle, UnsettledFor,
// UnsettledIn, UnsettledEntry, Awaiting, CopiesAfter, EachUnsettled, Holds) and
// Bucket, which opens buckets of their own namespace and refuses the
// log's ("producer.*", ErrReservedBucket). No *bbolt.DB or *bbolt.Tx is
// reachable from outside the package, so the log's indexes and counts
// cannot be bypassed; a change, a settle and a cursor written in one
// Update commit together or not at all.
//
// # Files
//
// log.go (Log, LogConfig, Open, Append, Entries, settle), open.go
// (OpenStore and the checks of a file before bbolt maps it, its marker),
// file.go (CheckFile), tx.go (Tx, Bucket, Cursor: the API other packages
// reach the file through; moved here from the *bbolt.Tx parameters that
// Unsettled, Settle, UnsettledFor and Prepare had, and the DB and OpenDB
// that handed the file out), store.go (bucket names, records, entry
// reads), index.go (the unsettled-by-document and awaiting indexes,
// Counts), group.go (group commit, Prepare and Batch), stats.go (Stats), device.go (devices,
// Reissue, Successor), publisher.go (Publisher), doctor.go (Diagnose),
// codec.go, telemetry.go, errors.go.
package producer
