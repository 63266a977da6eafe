// Package projection applies events to a view, in stream order, under a
// conflict policy: the heart of ebb (DESIGN.md invariants 2 to 6). The same
// pure code, [Decide], serves the server projector and a client's overlay of
// its pending writes, so the two can never disagree about what an event
// means.
//
// # Deciding
//
// [Decide] takes a document's current state ([Doc]) and one validated event
// and returns a [Decision]: the outcome for the receipt, the new state
// (version +1) or none, and the conflict record it created or settled. Rules
// common to every policy come first; only a stale event (base version behind
// the document) reaches the collection's [Resolver]: [LWW], [Merge],
// [Reject], [Manual], or a custom one named in a [Registry]. Resolvers must
// be deterministic: a rebuild replays every event through them again. A
// custom resolver that returns an error, panics (Decide recovers it) or
// breaks the Decision contract refuses its event: the projector
// dead-letters it with the error or the panic's value as the reason, sends
// an invalid receipt, and goes on with the next event. So does one whose
// state holds a field value that is not JSON (the reason is "encode the new
// state: field ..."): nothing it returns is committed or published.
//
// Awkward cases, decided once for every policy:
//
//   - A fresh write (base version = current) applies whatever its clock says:
//     its writer saw the current state, so it is causally later.
//   - A write built on its writer's pending predecessor (After) is fresh
//     only if the current state is that predecessor's write exactly as
//     written ([Doc].AsWritten: decided fresh, or a resolve). A predecessor
//     that was merged, held as a manual conflict, or decided by lww over a
//     concurrent write left a state its writer never saw, so the successor
//     is stale and the policy decides it: merge keeps the concurrent fields,
//     manual opens another conflict, lww records what it overwrites.
//   - One edits, one deletes: a put against a tombstone, or a delete against
//     an edit, is a whole-document race: lww (and merge, which has no fields
//     to merge here) gives it to the later write by HLC, then client id;
//     reject rejects the stale one; manual opens a conflict. A patch of a
//     deleted (or never created) document is always rejected: there is
//     nothing to patch, and the writer learns it from its receipt; a put
//     recreates. A delete of a deleted document applies and changes nothing.
//   - Both create the same id (base 0 twice): the second is stale against
//     version 1, so the policy decides; merge unions the fields, giving
//     fields both wrote to the later HLC.
//   - A base version ahead of the document is rejected (the writer saw a
//     version that does not exist).
//   - A document is bounded as a whole, not only per event: an event whose
//     new state, encoded as the change the projector would publish (fields,
//     open conflicts, the conflict record it settles, and the clocks where
//     the policy publishes them: see Changes on the wire), is larger
//     than [Config].MaxDocBytes (default 512 KiB, well under the 1 MiB NATS
//     message) is rejected with a reason naming the limit, under every
//     policy, and the view is untouched. The size is the state's, so a
//     rebuild decides the same.
//   - A client clock an hour behind loses lww and merge to concurrent writes,
//     as those policies promise; its fresh writes still apply.
//   - A clock a year ahead would win every lww forever, so the projector
//     refuses any event whose HLC is more than [Config].MaxDrift ahead of the
//     time EVENTS stored it (the message timestamp, not time.Now, so a
//     rebuild decides the same): dead letter plus an invalid receipt.
//   - A resolve settles the named open conflict with its fields as the new
//     live state, whatever its base version; with no such open conflict it
//     is rejected. Fresh writes during an open manual conflict apply and
//     the conflict stays open.
//   - Duplicates: an event whose writer's sequence was applied before gets
//     a duplicate receipt, or a reused one when another event holds the
//     sequence, and changes nothing (see Duplicates below).
//   - An event id names one write: an event whose id is the cause of the
//     document's current state or an open conflict's id, but which is not
//     that write (another writer or sequence; a true duplicate was answered
//     before), is refused with a dead letter and an invalid receipt.
//
// # Duplicates
//
// The writer is a device's log, not a user: (tenant, client, device), a
// [ClientKey], with Device "" for a client's one legacy log (events with no
// device, stored under the key marks had before devices). A user's phone
// and laptop each number their events from 1 and never see each other's
// writes as duplicates.
//
// JetStream drops a republished event inside its dedupe window; the
// projector drops the copies that come later (a client crashed between a
// publish and storing its ack, and republished after the window). It cannot
// use a plain high-water mark of the writer's sequence: the producer keeps
// a writer's events in order per document only, so an event held back
// behind its document, or one whose publish failed in the middle of the
// producer's window, reaches EVENTS after events with higher sequences, and
// a mark would drop it as a duplicate: a write lost silently. So per writer
// the store keeps a [HighWater]: the mark and the holes below it, sequences
// not seen yet. An event above the mark applies and the sequences it
// skipped become a hole; an event in a hole applies and fills it; anything
// else was seen before (below).
//
// One number bounds it all, the dedupe window [Config].HoleWindow (default
// 65536, the producer's largest MaxInFlight; at most [MaxHoleWindow]):
//
//   - every hole less than the window below the mark is remembered, however
//     many there are (at most window/2 ranges); nothing inside the window
//     is ever forgotten, so a late first-time event there always applies;
//   - for every event applied at a sequence less than the window below the
//     mark, its id is remembered under (writer, sequence). An event at such
//     a sequence that was applied is a true duplicate when its id is the
//     remembered one: a duplicate receipt. With another id it is reused:
//     the writer's log was restored from an older backup or copied to a
//     second place and wrote another event there. It gets an
//     [events.OutcomeReused] receipt whose reason names the event holding
//     the sequence, nothing changes, no dead letter, and a warning is
//     logged; the device must start a new log and write the event again
//     (producer.Log.Reissue). A sequence applied by a store written before
//     ids were kept has none remembered and is taken for a duplicate;
//   - an event more than the window above the mark is refused: a dead
//     letter and an invalid receipt whose reason names the window. The
//     producer never lets an event be overtaken by as much as its window,
//     so only a bug or a forged sequence jumps that far, and refusing it
//     (not recording it) keeps the writer's real later writes from being
//     taken for duplicates;
//   - an event the window or more below the mark is too far behind to tell
//     from a duplicate or a reuse (its hole, if it was one, belongs to an
//     event that failed for good at the producer; its id is forgotten): it
//     gets a duplicate receipt whose reason says "too far behind", and a
//     warning is logged. A client must detect a reuse that deep itself: it
//     forks its log on any receipt for a sequence of its device it never
//     wrote (producer.Log.ObserveReceipt), which the receipts of what its
//     other copy wrote give it.
//
// The marks, the holes and the remembered ids are committed with the view,
// in the same transaction ([Batch].HighWater, SeqEvents and
// ForgetSeqEvents), and decided by the one applier, so a rebuild ([Verify])
// decides the same; it must run with the live HoleWindow. The ids that
// leave the window are forgotten in bulk once per window/16 sequences the
// mark passes, so a writer holds at most window + window/16 of them and
// each costs one insert and one delete. The store encodes a mark in at most
// 18 + window/8 bytes (8 KiB at the default): the holes as ranges, or as a
// bitmap of the window when that is smaller; a mark with no holes is 8
// bytes, and stores written before the bitmap read as they were. In-order
// sequences, the common case, never touch the holes. In an encrypted store
// the writers' names are keys, in the clear like the marks; the remembered
// ids are sealed.
//
// Receipts go to their writer's device: [events.Receipt].Device is the
// event's, the subject is [events.Event.ReceiptSubject]
// (ebb.rcpt.<tenant>.<client>.<device>, the client's subject for a legacy
// log), and the message id names the device (see events/PROTOCOL.md). An
// invalid receipt goes to the subject's tenant and client, and to the
// payload's device only when the payload's client is the subject's.
//
// Nothing is lost silently (invariant 6): what lww and merge overwrite, on
// either side, is kept as a conflict record with status overwritten (Sides[0]
// the server's state, Sides[1] the incoming write, Lost what lost) in the
// store's conflict history and on the change; reject and manual tell the
// writer through its receipt.
//
// # The projector
//
// A [Projector] reads EVENTS through a durable pull consumer (AckAll) and
// per batch: decodes and validates each message, checks its subject against
// its payload and its clock drift, drops duplicates, decides, and commits the
// view, the checkpoint (last applied stream sequence), the writers'
// high-water marks and holes, and an outbox of encoded changes, receipts and dead letters in one [Store]
// transaction; then publishes the outbox (Nats-Msg-Id by document and
// version for a change, by writer, event id and client sequence for a
// receipt, by stream sequence for a dead letter, see events/PROTOCOL.md,
// so a republish is dropped by JetStream),
// removes the published entries in the next transaction, and acks the last
// message. A crash at any point leaves either the whole batch or none of it;
// on start the projector republishes what the outbox still holds and
// recreates its consumer at checkpoint+1. The store, not the consumer, is the
// source of truth for progress: recreating the consumer avoids waiting out
// AckWait for messages a killed run fetched, yet the durable still shows
// operators the projector's position and lag, and they can pause it.
// Garbage, unknown schemas, subject mismatches, future clocks, sequences
// beyond the dedupe window, reused event ids and failing resolvers go to
// DEAD with the reason and a reference to the message in EVENTS (subject,
// stream sequence, size) with a bounded prefix of its data and headers,
// plus an invalid receipt to the subject's tenant when the payload names a
// writer. Trace context in an
// event's headers is carried onto its change and receipt.
//
// The projector never skips a stream sequence (invariants 1 and 2). A
// delivery can be lost between the server and the projector: a connection
// dropped mid-pull (nats.go pulls again after the reconnect and the server
// goes on with later messages) or a message nats.go discards as a slow
// consumer. The server counts it delivered, and the AckAll of the next
// batch would ack it unseen, for good. So the projector checks the
// consumer sequence the server gives each delivery (1, 2, 3, ... for a new
// consumer, redeliveries included): every one must be the next. Stream
// sequences may skip (what EVENTS no longer holds is not delivered), and
// a redelivery, at or below the last stream sequence taken, is dropped.
// When a delivery is missing, when the consumer reports an error (missed
// heartbeats, a leader change, the consumer deleted), or when the projector
// has received nothing for two seconds while the consumer's info shows
// deliveries it never got (a lost tail, which no later delivery would
// reveal), it commits what it has, stops the consumer and recreates it at
// checkpoint+1, as on start (Stats.Resets counts these). Its pull
// requests ask for an idle heartbeat every second and expire after five
// seconds (nats.go's defaults, 15 and 30, took 30s to notice a consumer
// leader that died or was cut off, or a new leader that never got the
// pull request): two missed heartbeats are a consume error. Each request
// of a recreation (read EVENTS, delete, create) waits at most 2s, a
// second more per failed attempt up to 5s, so one sent during a
// cluster's election, which no leader will answer, is sent again soon. We keep the
// durable rather than nats.go's ordered consumer, which detects gaps the
// same way, for the operators' view above; progress lives in the store
// either way. Lag is the checkpoint's: Stats, and ebb_projector_lag in
// ebb serve (EVENTS last sequence minus the checkpoint).
//
// Streams are identified (DESIGN.md): with the checkpoint, in the same
// transaction, the store records which EVENTS incarnation it counts in
// (the stream's creation time, [StreamMarks]). On start, and before
// recreating its consumer, the projector compares: if EVENTS was deleted
// and created again, or ends below the checkpoint (restored from an older
// copy), resuming at checkpoint+1 would skip every new event below it. It
// re-anchors instead, rather than refusing: it reads the new stream from
// its first message, its first batch records the new incarnation with the
// checkpoint counted from there in the batch's transaction (a crash
// before that re-anchors again), and it judges every event by its writer's high-water
// mark and holes, the state that already drops duplicates arriving after
// the JetStream dedupe window, so an event the view applied from the old
// stream gets a duplicate receipt and a new one applies. Nothing waits on
// an operator and nothing is skipped; what is given up is the rebuild:
// Stats.Reanchors and StreamMarks.Reanchors count re-anchors, and Verify
// refuses a re-anchored view (its history began in a stream that is gone).
//
// The view is the authority for CHANGES. The store records which CHANGES
// incarnation holds the view's changes, the last sequence the projector
// published into it and the messages it held at the projector's last
// look. On start (after publishing the outbox) and every two seconds (a
// quarter of StallTimeout if shorter) while running, the projector reads CHANGES' info: created again, ending
// below what it published, its first sequence beyond the last one it
// published (a purge), or fewer messages than at the last look (a purge
// or deletes), and it reseeds CHANGES from the view: every document's
// current change, tombstones included, versions unchanged, under
// Nats-Msg-Id "seed:<reseed ULID>:<subject>:<version>", which the dedupe
// window cannot take for an earlier copy. It does so on its own goroutine,
// between batches, so the reseed and the outbox never race, and records
// the new identity once done (a crash in the middle reseeds again).
// Stats.Reseeds counts reseeds. Not detected: a partial purge or delete
// that leaves the last message the projector published and lands before
// its next look has counted the messages it published since.
//
// Each chunk of outbox publishes waits at most [Config].PublishTimeout
// (10s) for its acks: a PubAck lost while the connection stays up would
// otherwise stall the projector for good. On expiry the publish counts as
// failed: the entries stay in the outbox and go again, with backoff, under
// the same Nats-Msg-Ids, which JetStream drops if the first copy arrived.
// Changes of one document go out in version order, each only once the
// one before it in the chunk is stored (receipts and dead letters go with
// the first round), so a retry after a partial failure can never leave an
// older state as a document's last message in CHANGES.
// Publish errors are classified in one place: a message the servers will
// never take (over the maximum payload or message size, a bad subject,
// headers refused or too big) is refused for good: it goes to DEAD as a
// dead letter with the reason, the subject it was going to and its payload
// when at most 64 KiB, and leaves the outbox. Every other error, no stream
// answering the subject included (a cut route or a stream being recreated
// looks like that), is retried with backoff for as long as it takes, never
// given up; [Projector.Ready] reports the stall after StallTimeout.
// A republish of the outbox at start, and every retry, leaves out a change
// whose version is below the one CHANGES holds for its document (read
// from the stream's leader): after a server restart JetStream's duplicate
// window holds only the ids of the messages it still stores, and CHANGES
// keeps one per document, so an older version sent again would be stored
// after the newer one. Of a document's entries at one version (its change,
// then copies a follower re-emit queued with a newer audience) only the
// last goes: versions cannot order them, and the earlier one, its id
// forgotten, would be stored after the copy and leave the old audience
// last. Every version not yet stored goes, in order, so a
// crash mid-batch drops no later version of a published document from the
// live feed. When CHANGES cannot be read, or holds nothing of the document
// (its first change never went out, or CHANGES was purged: a reseed
// repairs that), it leaves out what is below the view's version instead
// (CHANGES' last message stays right; a version never published may be
// skipped).
//
// The loop decides the next batch while the last one's outbox is published
// (and its last message acked) on a goroutine of its own; it commits that
// batch only once the publish is done, so the outbox never holds more than
// the batch in flight, and batches go out in stream order.
// [Projector.Ready] is nil while the projector makes progress or is idle
// with nothing pending, else names why not: outbox publishes failing for
// longer than StallTimeout (with the last error), the consumer failing to
// be recreated for as long, or recreated three times in a row without
// progress, events pending with no batch committed for StallTimeout, not
// started, or stopped (with Err). Sooner, wrapping ErrUnavailable, when
// it cannot apply anything: no working consumer for more than 5s (at most
// StallTimeout), its consumer's info and EVENTS' unreadable for as long,
// or either of them replicated with its leader cut off from a majority of
// its peers (none heard from within 4s): such a leader goes on answering
// and heartbeating for about 20s before it steps down, and nothing
// written meanwhile commits.
//
// Several ebb servers share one view through a [Group] each: the work is
// split into [Partition]s by a hash of an event subject's tenant,
// collection and document tokens (the writing client left out), so a
// document's events are all in one partition and keep their order, and
// at any moment one server applies each partition. A partition's
// projector has its own durable (ebb-projector-p<i>-of-<n>) reading all
// of EVENTS: it applies its own documents' events, lets its checkpoint
// pass the others', and reseeds only its documents. A [PartitionedStore]
// keeps each partition's checkpoint, stream marks, outbox and writers'
// high-water marks apart (a writer's events span partitions; in one
// partition the sequences of its others are holes never filled, within
// the window as always) over shared documents, and fences every commit by
// the checkpoint the batch started from (Batch.Prev). Who applies a
// partition is decided by a lease per partition in the JetStream KV
// bucket ebb_projector_leases, the bucket's TTL being the lease's
// (GroupConfig.LeaseTTL, 3s): an instance takes a free lease with Create,
// renews it by revision (compare and set) three times per TTL, and stops
// the partition's projector as soon as a renewal is refused or it can no
// longer show one was stored within the TTL; Close stops the projectors
// and deletes the leases (by revision), so another instance takes over
// within a quarter TTL, the interval at which standbys try. A holder that
// dies is replaced after its lease expires: within about LeaseTTL and a
// quarter, plus the new projector's start. A holder paused past its
// lease (a long GC pause, a stopped VM) that resumes in mid-commit is
// refused by the fence, with ErrCheckpoint, and lets the partition go: no
// event is applied twice, none skipped, whatever the timing. With a
// [Fencer] store (PostgreSQL) the new holder also records its lease
// [Epoch] in the store before it starts, so the stale holder's commit is
// refused (ErrFenced) even when the new one has committed nothing yet,
// and it cannot evict its successor; and a holder publishes only while
// its lease is valid by its own clock. We chose the
// KV lease over pinned-client priority groups, which nats-server 2.11+
// (here 2.15) and nats.go 1.55 also offer: a pinned group shares one
// durable among the instances, whereas the projector's recovery recreates
// its durable at checkpoint+1 (the store is the truth about progress), so
// instances would cut each other's consumer; the server moves the pin
// after PinnedTTL without fencing a batch the old client already fetched
// (a fence in the store would be needed anyway), and the new client sees
// the old one's unacked messages only after AckWait. A lease needs only a
// stream's MaxAge and expected-last-subject-sequence publishes, which
// every JetStream has, and operators see who holds what with `nats kv ls
// ebb_projector_leases`. The price: each partition reads all of EVENTS,
// so n partitions read it n times (a partition token in the subjects,
// by a stream subject transform, would avoid it, but changes the
// protocol's subjects). Partitions are not balanced: an instance takes
// every free lease it finds, so the first one up applies all of them
// until it stops or dies. The number of partitions is fixed once a view is
// partitioned. Verify rebuilds a partitioned view ([PartitionCounter])
// partition by partition, each up to its own checkpoint.
//
// A fatal error (a
// failed Commit, say) stops the projector: Done closes and Err returns it.
// Close never waits behind a start-up that is retrying the outbox: it
// cancels it, and Start returns an error wrapping ErrClosed.
//
// [BoltStore] is the embedded store (one bbolt file); storetest.RunStoreSuite
// is the suite every Store implementation must pass. Under sync rules the
// projector finds a parent's followers with Store.DocsWithField: bbolt
// answers it from a field index kept in the same transaction as the
// documents, built the first time a (collection, field) is asked for and
// rebuilt when a write transaction that did not keep it touched the file:
// every write transaction of the store first checks that the one before it
// kept the index (its stamp) and drops the entries otherwise, so an older
// build's writes, or its mere open (a write transaction too), cost one
// scan at the next ask, never a follower missed; a crash leaves the index
// and its stamp as the last commit did (PostgreSQL queries its fields
// column). [Verify] rebuilds the
// view from EVENTS sequence 1 into a scratch store and compares hashes
// (invariant 4), naming the first differing document and field. It hashes
// each document's state as its change (fields, clocks, conflicts, cause)
// and the conflict records, not the state's audience (Doc.Audience) nor
// what a tombstone kept for its followers' write rules (Doc.Kept). A
// parent's tombstone written by a build from before tombstones kept
// anything has Kept nil in the live view, where a rebuild gives it the
// fields: the live projector then refuses a later write that the rebuild
// lets the parent's last writer make (deleting or moving a follower,
// creating the parent again over its live followers), and Verify reports
// nothing until such a write makes the two states differ. It never
// waits for history that is not there: EVENTS missing, not starting at
// sequence 1, ending (or holding nothing more) below the checkpoint, not
// the incarnation the checkpoint counts in, or a re-anchored view, each
// fail at once with an error wrapping ErrHistoryGone that names what is
// missing.
//
// # Changes on the wire
//
// A change carries the whole state of its document, but its per-field
// clocks only where a replica may need them to decide its pending writes
// as the server will: under Merge and custom resolvers. LWW, Reject and
// Manual changes leave them out, so a field costs its own bytes on
// CHANGES. Every path that publishes a change (apply, a follower's or a
// rules change's re-emit, a reseed, ebb restore) encodes it the same way
// ([Policies.EncodeChange]), so a copy is the size MaxDocBytes bounded;
// the view keeps every clock under every policy (Verify hashes
// them, a reseed and a later switch to merge start from them), and the
// conflict record an lww change publishes is decided on the view's
// clocks. A replica's overlay decides an lww patch on a state without
// clocks: the state is the same, only the Lost list of the record it
// predicts may be shorter than the server's.
//
// # Telemetry
//
// With Config.TracerProvider the live projector makes one span per event,
// ebb.projector.apply (kind consumer), a child of the trace context in the
// event's headers (the producer's publish span), with the event id, policy,
// outcome and version; it ends when its batch is committed and published.
// The change and receipt carry the apply span's context in their stored
// outbox headers, so a republish after a crash still joins the trace; each
// publish of them is a span, ebb.projector.publish, whose context the
// message carries (a replica's apply of the change is its child). Dead
// letters get no publish span. Metrics: ebb.projector.outcomes (attributes
// ebb.policy and ebb.outcome; policy "none" when the event could not be
// decoded), ebb.projector.dead_letters, ebb.projector.over_audience
// (copies published read by nobody because their readers under the sync
// rules would pass MaxAudienceBytes, see Stats.OverAudience), and the
// histogram
// ebb.projector.apply.duration (one batch, seconds). The lag gauge is the
// server's (EVENTS last sequence minus Stats().Checkpoint). Verify never
// traces or counts.
//
// # Performance
//
// The projector reads one message and publishes two (a change and a
// receipt) per event, and commits one store transaction, one fsync, per
// batch of up to Config.BatchSize events. In-order client sequences, the
// common case, never touch the per-writer holes (see Duplicates). The
// change, the stored state, the conflict record and the receipt of an
// event are encoded without reflection and without copying the document
// (jsonenc.go), to exactly the bytes encoding/json writes for the events
// types, refusing what it refuses (a field value that is not JSON), so
// nothing on the wire or in the stores differs from a json.Marshal
// (FuzzJSONEncoder checks it); the bbolt outbox and remembered ids,
// whose keys only rise, fill their pages.
//
// The figures live in the README's Performance section, rerun with `ebb
// bench` (workload projector: beside a durable consumer that only fetches
// and acks the same stream, both server fsync policies) or with
// BenchmarkProjector and BenchmarkRawConsume in this package.
//
// # Encryption at rest
//
// BoltOptions.Cipher seals every document, conflict record and outbox
// entry of the bbolt view with AES-256-GCM, each bound to its bucket and
// key. In the clear: keys (tenant, collection, document names; client ids
// of high-water marks; conflict ids), the checkpoint and the high-water
// marks. The field index holds a field's value as its HMAC-SHA-256 (16
// bytes) under a random key kept sealed in the meta bucket, and that hash
// is in the clear in its keys, beside the names of the indexed fields and
// the ids of the documents: deterministic, so the file shows which
// followers share a parent (equal values, equal hashes) and how many each
// parent has, though not the value itself. A sealed check value in the meta
// bucket refuses another key, no key, or a key on a plaintext store
// (keys.ErrWrongKey). Verify's rebuild
// is sealed with a random key that is never stored, so the view never
// touches the temporary directory in the clear.
//
// Cost, the same run, 20,000 events, BenchmarkProjectorEncrypted against
// BenchmarkProjector: 15,541/16,866 against 18,170/16,655 events/s, about
// 0.93x, within this machine's noise.
//
// # PostgreSQL
//
// [OpenPostgres] opens the view on PostgreSQL ([PostgresStore], driver
// pgx), for ebb serve beyond one machine; bbolt stays the embedded
// default. It passes the same storetest.RunStoreSuite. Its tables live in
// one schema ([PostgresOptions].Schema, default "ebb"), created or
// migrated on open: versioned in <schema>.schema_version, in one
// transaction under an advisory lock, so concurrent opens take turns and
// reopening is a no-op; a version newer than the code is refused
// (ErrSchemaVersion).
//
// Services may read the view with SQL (never write it: the projector owns
// it). <schema>.docs has one row per document, tombstones included:
// tenant, collection, doc, version, deleted, fields (JSONB), conflicted
// (open manual conflicts), event, client, seq and hlc_wall (Unix ms) of
// the write that made the state. fields is NULL for a tombstone, and for
// the rare document whose values jsonb cannot hold (a \u0000 escape, an
// unpaired surrogate): such a document is stored, not refused, and its
// state stays whole. The store itself reads the state column, the encoded
// change, so it gives back exactly what was committed and a rebuild into
// bbolt hashes the same (Verify). <schema>.conflicts holds the conflict
// history (policy and status as columns). Names order byte-wise (COLLATE
// "C"), as Scan promises, whatever the database's collation.
//
// Each Commit is one transaction holding the documents, conflict records,
// checkpoint, stream marks, high-water marks and outbox changes; it first
// locks the single meta row, so commits take turns, the checkpoint check
// cannot race, and outbox keys, kept in that row, rise in commit order. A
// commit is as durable as the server makes it: PostgreSQL's defaults
// (fsync, synchronous_commit on) are what ebb assumes. A commit whose
// connection fails during COMMIT may have landed though it returns an
// error; the projector stops on a failed Commit and resumes from what the
// store holds, so that is safe.
//
// Encryption at rest is the database's (its storage or filesystem):
// sealed fields would defeat a queryable view, so a Cipher in
// PostgresOptions is refused (ErrPostgresCipher) rather than ignored.
//
// Tests start a throwaway server with deploy/pgtest; they skip when
// PostgreSQL is not installed, but fail under CI=true.
// BenchmarkProjectorPostgres runs BenchmarkProjector's workload on it.
package projection
