// Package consumer is ebb's read path: it replays the CHANGES stream from
// the last sequence a reader applied, then follows it live. Apps use it
// through a Replica (their offline-first local copy); microservices use
// Subscribe (durable, acknowledged) or Watch (ordered, ephemeral).
//
// # The idea
//
// CHANGES keeps only the last change of every document, and every change
// is a document's full state at a version. So a reader that was away for a
// month downloads each changed document once, applying a change is
// idempotent (it replaces the stored state only if its version is newer),
// and "where was I" is one number: the stream sequence of the last change
// applied. Reading is an ordered consumer with DeliverByStartSequence from
// that number + 1, filtered to the tenant (events.TenantChanges) or some of
// its collections (events.CollectionChanges).
//
// A Replica with a backlog (two or more changes after its cursor) first
// catches up through the server's change feed (deploy/feed, rules.go): the
// same changes from the same cursor in compact pages, a third of the bytes
// of one message per change, up to the stream's last sequence when it
// began; then it follows CHANGES as above for the live tail. It takes only
// a page that says it is unfiltered for the stream, hands over to the
// direct reader before a change the feed could not read (which quarantines
// it, see Quarantine), and reads directly when no feed answers (retrying
// after a minute). Under sync rules, where the server refuses direct
// reads, it reads everything through the feed.
//
// # Replica
//
// A Replica keeps one bbolt file (DBFile in ReplicaConfig.Dir) holding both
// the producer's log ("producer.*" buckets) and its view ("consumer.*"),
// so one transaction applies a batch of changes, advances the stored
// sequence, and settles the pending writes those changes or receipts
// settle. The file has one owner, the producer.Log: the replica reaches
// its own buckets only through the log's transactions (producer.Log.View
// and Update give a *producer.Tx: the log's typed methods, such as
// Tx.Settle and Tx.UnsettledFor, and Tx.Bucket for "consumer.*" names),
// and never holds the *bbolt.DB nor touches a "producer.*" bucket. What the app reads (Get, List, Watch) is the synced state with
// the client's unsettled writes applied on top by projection.Decide, the
// same policy code the server's projector runs: offline reads show offline
// writes, and a write the server will lose under lww shows as lost already.
//
// Reads and writes cost the document they touch, not the backlog: Get and a
// write's base read that document's unsettled writes from the log's index
// (producer.Tx.UnsettledFor), List its collection's, a receipt looks its
// event up by id. Sync waits for the writes up to the log's last sequence
// when it starts (and the copies Reissue makes of them) through the log's
// index of writes awaiting their fate (producer.Tx.Awaiting): one seek per
// view commit, whatever the backlog, and failed writes, which wait for
// nothing, are not in it. The gap checks cost the same: whether a write
// awaits its receipt comes from the log's counts (producer.Log.Counts), a
// receipt batch that skipped sequences reads the writes awaiting their
// fate before its latest answer only, suspects are looked up by id. Only a
// RECEIPTS start over a gap (a reset, receipts gone after the cursor, a
// restored stream) judges every unsettled write (producer.Tx.EachUnsettled):
// once per gap, never per operation. A write reads its base inside the
// log's transaction (producer.Log.AppendWith),
// so concurrent Puts are group-committed (one fsync for all of them) and
// each still builds on the one stored before it. Batch makes several
// writes in one transaction, all or nothing, each its own event. The
// bookkeeping that follows a write online, the receipt follower's and the
// change follower's applies (and the publisher's ack marks, in the
// producer), are requests in the same group-commit queue
// (producer.Log.Batch): whatever is queued when a commit starts shares one
// transaction and one fsync with the Puts queued with it, and a batch's
// failure is its own (the rest of its group commits without it). So those
// applies may run more than once; their spans and logs are made once their
// transaction has committed. A receipt that arrives after the change that
// settled its write (the usual order online) is a lookup and a cursor
// move in that shared transaction, nothing more.
//
// OpenReplica opens the file with producer.OpenStore: a store that is
// missing while its marker (DBFile + producer.MarkerSuffix) says one was
// made, emptied, truncated or damaged is refused with one line naming the
// file and what to do ('ebb doctor'), and the file is left as it was. A
// new identity is never minted over an old one.
//
// A write leaves the overlay when the server has decided it: a receipt
// (rejected/invalid: recorded as a Rejection and the app's value reverts to
// the server's; duplicate: see below) or the change it caused
// (change.Event = its id). An applied, merged or conflict receipt that
// arrives before its change waits (bucket consumer.awaiting) until the view
// holds the version it names, so the app never sees its write flicker away
// and back. Manual conflicts arrive with the document (Change.Conflicts);
// Conflicts lists them and Resolve settles one.
//
// A "duplicate" receipt says the server had decided the event already, not
// how. It settles the event silently when the replica knows the fate
// otherwise (the change the event caused, its first receipt, or a conflict
// record naming it). When it does not, the event was republished after its
// receipt expired and CHANGES no longer holds a change it caused: applied
// and since overwritten, or rejected. Dropping it would hide a possible
// rejection from its writer (invariant 1), so it is recorded as a Rejection
// with outcome duplicate and a reason saying its fate is unknown (counted
// in SyncReport.Rejected); a change it caused arriving later removes that
// record. Telling the two apart for sure would need the server's decision
// history, which neither CHANGES nor the duplicate receipt carries.
//
// # Quarantine
//
// A message on a subject the replica reads is used only if its payload is
// the subject's: a change names the tenant, collection and document of its
// subject; a receipt names the replica's tenant and client and travels on
// its device's subject (events.DeviceReceiptSubject). One that does
// not (ErrSubjectMismatch: another tenant's or document's payload written
// onto the subject) or cannot be decoded (ErrUnreadable: garbage, a schema
// newer than the client's) is quarantined: counted, logged with its
// reason, and stepped over. Status.Quarantined counts them since open,
// Status.LastQuarantine says which and why (wrapping ErrQuarantined). A
// quarantined message never touches the view, so it cannot move a document
// to another version or shadow the document's next change, which applies
// as usual; and it never stops a follower, so every other document keeps
// syncing.
//
// A message in a stream never changes, so only one in a newer schema can
// become usable (after an upgrade): those are kept by stream sequence
// (bucket consumer.quarantine), and each follower start reads up to 256 of
// them again. One the stream still holds that the replica can now read is
// applied as it would have been (a change only if newer than the view); one
// the stream no longer holds (CHANGES replaced it with the document's next
// change; RECEIPTS' age removed it) is forgotten. Garbage and foreign
// payloads are not kept, so whoever writes them cannot grow the store or
// slow every start. A write whose own receipt was quarantined stays
// pending until its receipt is read again and used. A full resync of a
// stream clears its kept quarantine: the replay reads it all again.
//
// # Devices
//
// The writer the server deduplicates is a device's log, not a client: the
// producer log mints a device id with the store, and a client id (under
// auth, the user) may have any number of devices, each numbering its
// events from 1. The RECEIPTS follower of a device log reads every
// receipt subject of its client with one filter, ReceiptSubject(tenant,
// client)+".>", so NATS permissions can confine it to its own client's
// receipts; a legacy log (made before devices, device "") reads the
// client's subject. A receipt of an event the log does not hold unsettled
// (another device's of the client, or one settled already) changes
// nothing: it is not quarantined, awaited or counted. Receipts of the
// log's own earlier devices (before a fork) settle their events as usual.
//
// A store that was restored from an older backup, or copied and run in two
// places, writes under sequences the server already has from another
// event. Two receipts recover from it:
//
//   - "reused" (the projector holds another event under the event's
//     sequence): producer.Log.Reissue writes the event again under a new
//     device and settles the original with the receipt, in one transaction
//     of the log's. The overlay shows the write pending throughout, once;
//     Sync waits for the new event's fate as well.
//   - any receipt of the current device for an event the log does not
//     hold at all (producer.Tx.Holds): producer.Log.ObserveReceipt forks the log to a new device if
//     the server applied a sequence the log has not reached (a restored
//     backup, or a copy that ran ahead), before the log writes it again.
//
// Both run after the receipts transaction commits, in stream order: that
// transaction records them (bucket consumer.relog) with its cursor, and
// each is dropped once the log has it. Both calls are idempotent, and the
// records are read again at every open and follower start, so a crash in
// between loses no write.
//
// A legacy log that forks keeps reading the client's subject while one of
// its legacy writes is unsettled (their receipts travel there), then reads
// its device's subjects from the receipt that forked it (the cursor is
// moved back there once: no device receipt can come before it, and the
// legacy filter read none). Not covered: a crash between the fork and
// recording where it happened makes the follower switch at once, so the
// receipts of that log's other unsettled legacy writes are not read.
//
// # Connections
//
// OpenReplica without ReplicaConfig.Conn opens offline; Attach(ctx, nc)
// connects it later and Detach disconnects it. Attach and Detach are
// serialised: an Attach stops the previous attachment before starting its
// own, so concurrent calls leave exactly one. The JetStream context the
// publisher uses drops an async publish's future after the publisher's
// AckTimeout (and allows at least its MaxInFlight), so acks given up on do
// not pile up until nats.go refuses every publish (ErrTooManyStalledMsgs). The replica never closes
// nc: the caller dials with the options it needs (credentials, TLS,
// nats.MaxReconnects(-1)) and nats.Conn reconnects by itself after network
// loss, while the followers resume after the last sequence they read and
// the producer's publisher retries. Attach again (same or new conn) after
// the caller closed its conn. Sync(ctx) pushes pending writes (the
// publisher's Flush), waits for the fate of each, then pulls until the view
// has every change in scope that CHANGES held at that point.
//
// Failover: the followers' pull requests ask for a 1 s idle heartbeat, so
// a server that stops answering (a dead host, a partition) is noticed
// after two missed heartbeats and the consumer is remade, on whichever
// server nats.Conn reconnects to. Each read of a stream's state (stream
// info, a subject's last message: at a follower's start, in gap checks and
// in Sync) is bounded to 2 s per attempt and tried again while ctx lasts,
// so a stream without a leader (a cluster electing one) delays Sync by
// the election, not by the whole context.
//
// # Resets and lost receipts
//
// Every time a follower (re)starts it compares the stream with its stored
// cursor. A CHANGES stream created later than the one recorded, or whose
// last sequence is below the stored one, was reset: the view (not the
// pending writes) is cleared and replayed from the start. A stream `ebb
// restore` brought back from a backup of the recorded one (its metadata
// MetaRestoredCreated and MetaRestoredLastSeq) holds the same messages
// up to the backup's last sequence: a cursor at or below it resumes, one
// beyond it was reset. A RECEIPTS gap
// (stored sequence below the stream's first - 1, because the replica was
// offline longer than RECEIPTS' retention, or a purge, or a reset) is
// judged by the log: the published-but-unreceipted events whose receipts
// could be gone (any, after a reset; else those published before the
// stream's oldest receipt, plus ten minutes for clock skew) are republished
// with their ids, and a client with none outstanding just moves its cursor,
// with no resync. Which events to republish is stored in the transaction
// that moves the cursor past the gap, and forgotten only once they are
// republished, so a republish that fails (a detach, the server gone, a
// crash) is done by the next start. The projector answers "duplicate" for those it applied
// (their effect reaches the view through CHANGES) and applies those it
// never saw. A republish JetStream drops as a duplicate (the first publish
// is inside EVENTS' dedupe window) reaches no projector, so no receipt will
// ever answer the republish; the first publish's receipt may still be in
// the stream after the cursor, so once the follower has read every receipt
// RECEIPTS held for the client at that point (kept in consumer.meta across
// restarts), a write still without a receipt is settled as a "duplicate"
// receipt would settle it (silently if the view shows its fate, else a
// Rejection of unknown fate that a change it caused removes and a
// rejected receipt arriving after all makes precise). A write still
// pending at the gap may have reached EVENTS with its ack lost (a detach,
// a crash), its receipt among those gone: it is kept as a suspect with the
// cursor, and once the publisher's ack says JetStream dropped its publish
// as a duplicate (producer.Entry.Duplicate; read at every Sync and every
// GapCheckInterval), it is settled the same way; a new publish is answered
// as usual. Both are logged and counted in Status.Resyncs /
// Status.LastResync (wrapping ErrResync) and SyncReport.Resynced, never
// silent.
//
// Every full resync (a reset, or a scope change on reopen) first settles
// the receipts still waiting for their change: they said how the server
// decided, and the replay brings the state.
//
// The same gaps can open while the replica stays attached: nats.go's
// ordered consumer remakes its server consumer by itself after a
// reconnect, a server restart or missed heartbeats, and resumes after the
// last message it delivered, stepping over what the stream lost meanwhile.
// So the stream is also checked (read-only) before a batch from a remade
// consumer is applied (for RECEIPTS also after a sequence jump while the
// follower was behind, and after a jump in a batch that answers a write of
// the device while one published before it still waits: its receipt may
// have been removed between the follower's start and its consumer's first
// read), every ReplicaConfig.GapCheckInterval while writes
// await their receipt (a lost receipt may be followed by no message at
// all), and at every Sync, which waits for a CHANGES resync it finds
// needed. A check that finds a reset or possibly lost receipts restarts the
// follower, whose start recovers as above before anything past the gap is
// applied. Not detected: a purge of only some subjects of RECEIPTS that
// leaves its first sequence where it was.
//
// # Clock
//
// Every change applied feeds the producer log's hybrid logical clock
// (events.Clock.Update), which always moves past it, even when the change
// is far ahead of the client's wall clock: a write built on a change is
// stamped after it. Bounding timestamps is the server's job; a drift past
// the log's MaxDrift is only logged (at most once a minute).
//
// # Subscriptions
//
// Subscribe runs a durable consumer: each change is acked after the handler
// returns nil, and redelivered with a backoff (NakWithDelay) when it fails;
// MaxAckPending defaults to 1 so a failing change holds back the ones after
// it and stream order holds. Stop ends it at once; Drain lets delivered
// changes finish. Watch is the ordered, ephemeral variant for read-only
// watchers: it starts with the current state of every document and follows.
// Both check each change against its subject as a replica does: one that
// is unreadable or not its subject's never reaches the handler (Subscribe
// terminates it, Watch skips it) and is counted in Quarantined.
//
// # Telemetry
//
// ReplicaConfig.TracerProvider and MeterProvider go to the replica's
// producer log and publisher (append and publish spans, write metrics; see
// the producer package) and trace the replica's apply of each change that
// carries trace context: a span ebb.replica.apply (kind consumer), a child
// of the projector's publish of the change, starting when the apply is
// queued for the log's next group commit (so it includes that wait) and
// ended when the commit returns. So one write is one trace from the writer's append to every
// replica's apply. Catch-up progress is observable as
// ebb.replica.changes.applied, .pending and .sequence (attribute
// ebb.client).
//
// # Performance
//
// Catch-up is a two-stage pipeline. The follower's reader goroutine takes
// each message from the ordered consumer, reads its stream sequence and
// pending count from the reply subject, and decodes the head of the change
// (version, address, cause) with a one-pass scanner that falls back to
// encoding/json for anything unusual (FuzzDecodeHead holds the two equal).
// It builds the view's key and value in the batch's arena and keeps
// nothing else of the message, so the client's copy is garbage at once.
// The value is an 8-byte version and the synced record (synced.go): what
// projection.Doc holds, compact (ids as 16 bytes, a field clock equal to
// the document's own as one byte, no tenant, address or settled conflict),
// read from the payload in one pass when it has the projector's shape and
// through events.DecodeChange otherwise; a payload that does not decode is
// kept as received and judged on read, as before. A document of ~130
// bytes of JSON costs ~210 bytes of file instead of ~700
// (TestReplica_StoreSizePerDocument). It appends to the batch being filled under a mutex,
// with no channel operation per message; the applier swaps that batch for
// the one it has just committed, so two batches and their arenas are
// recycled for the whole catch-up and preparing a message allocates only
// the head's strings: the compact record is built in a buffer the reader
// keeps for the follower's life (TestPrepareChange_ReusesScratchAcrossBatches).
// While the stream holds more than was read (the
// message's pending count), the applier waits for a full batch
// (CatchUpBatch; at most 50 ms, in case the count overstated what comes),
// so a long catch-up costs at most one commit per thousand documents,
// whatever the speed of the disk, and live tailing one per change. Reading
// and parsing the next batch overlaps the commit (and fsync) of this one,
// and does not stop at CatchUpBatch: while a commit runs the reader fills
// the next batch up to four times that, which the applier takes whole, so
// a disk slower than the stream gets fewer, larger commits instead of
// holding the reader up. Inside the
// transaction a change costs a bucket lookup and a put; a key after the
// bucket's last needs no lookup, and a transaction that only appended packs
// its pages 90% full instead of bbolt's 50%. The store maps 64 MiB up front
// and grows its file 4 MiB at a time, so a catch-up into a fresh file does
// not remap (and fsync a new size) at every doubling from 32 KiB. Opening a
// replica commits once: the view's buckets and scope are written in the
// transaction that opens the log (producer.LogConfig.Init). Starting or
// restarting a follower writes nothing unless it has something to store (a
// reset stream; receipts to republish, or a fork to rewind to): the first
// batch stores the stream's identity with the cursor. A Sync reads
// CHANGES' info once, for its reset check and its target. Memory is
// bounded by the pull buffer and the two batches (each at most four times
// CatchUpBatch), not by N.
//
// BenchmarkCatchUpRatio measures a fresh catch-up against a bare ordered
// consumer reading the same stream; its figures are in the README's
// Performance section.
//
// # Encryption at rest
//
// With ReplicaConfig.Cipher the whole local file is encrypted value by
// value: the producer's log (see the producer package) and the view's
// synced documents (consumer.docs: the 8-byte version stays in the clear so
// applying a change compares versions without decrypting; the synced
// record is sealed, bound to the document key and that version), receipts
// awaiting their change, rejections and quarantined messages' subjects and
// reasons. In the clear: bbolt keys, which are
// collection names and document ids (consumer.docs, .conflicts, .awaiting
// keys; event ULIDs of rejections; stream sequences of quarantined
// messages), the cursors, and the scope (tenant and
// collection names). Names and ordering are visible to someone holding
// the file; contents are not. Keyed hashes for the keys were left out: List
// scans a collection by key prefix and reads ids from keys. The log's key
// check in producer.meta guards the whole file: the view's buckets are only
// written by a replica that opened the log with the same cipher.
//
// Cost, BenchmarkCatchUpEncrypted against BenchmarkCatchUp in the same runs
// (five runs, -benchtime 5x, after the catch-up work above): 0.63x to 1.04x,
// medians 0.93x at N=5000 and 0.81x at N=20000, the spread being the shared
// machine's; peak heap 20-23 against 18-19 MiB at N=5000 (the sealed copies,
// which do not come from the batch's arena).
//
// # Files
//
// One job per file. The Replica: replica.go (ReplicaConfig, OpenReplica,
// Close), link.go (Attach, Detach and the link they run), changes.go (the
// CHANGES follower's start and apply), receipts.go (the RECEIPTS follower's
// start, republish and apply), read.go (Doc and the overlay reads: Get,
// List, Conflicts, Rejections), write.go (base versions and Put, Patch,
// Delete, Resolve), batch.go (Batch), sync.go (Status, Sync and its wait),
// watch.go (Replica.Watch), rules.go (reading CHANGES through the
// server's change feed: a backlog's catch-up, everything under sync
// rules). Under the followers: follow.go (the follower
// and its pipeline), head.go (the change head decoder), gap.go (gap checks
// and lost receipts), restored.go (whether a cursor still fits its stream),
// devices.go (a client's devices and forked logs), quarantine.go (messages
// set aside), synced.go (the compact synced record of a document),
// store.go (the view's buckets and cursors, read and written
// through the producer.Tx of the log that owns the file; the *bbolt.DB and
// the log's buckets moved out of reach of this package, so the log alone
// keeps its indexes and counts true). For services:
// subscribe.go (Subscribe and Watch). Around them: request.go (JetStream
// requests with retries), telemetry.go, errors.go (the sentinel errors),
// logkeys.go.
package consumer
