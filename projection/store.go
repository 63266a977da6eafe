package projection

import (
	"context"
	"encoding/json"
	"time"

	"github.com/ebbsync/ebb/events"
)

// Store holds a view: documents (tombstones included), the conflict
// history, the checkpoint (last applied EVENTS stream sequence), per-client
// high-water marks of client sequence with their holes, and the outbox of encoded changes and
// receipts not yet published. Commit writes a whole Batch atomically, which
// is what makes a crash at any instruction harmless (DESIGN.md). Reads see
// committed state only. Implementations are safe for concurrent use; every
// one must pass RunStoreSuite (storetest_test.go holds it for this package).
type Store interface {
	// Get returns the document at addr; a zero Doc (Version 0) with the
	// address filled in when there is none.
	Get(ctx context.Context, addr events.DocAddress) (Doc, error)
	// HighWater returns which client sequences of the client of a tenant
	// have been applied: the zero HighWater when none.
	HighWater(ctx context.Context, tenant, client string) (HighWater, error)
	// WriterHighWater returns which sequences of writer k have been
	// applied: the zero HighWater when none. HighWater(ctx, t, c) is
	// WriterHighWater of ClientKey{t, c, ""}, the client's legacy log.
	WriterHighWater(ctx context.Context, k ClientKey) (HighWater, error)
	// SeqEvent returns the id of the event applied at sequence seq of
	// writer k, as committed by Batch.SeqEvents: "" when none is held
	// (never applied, written before ids were kept, or forgotten by
	// Batch.ForgetSeqEvents).
	SeqEvent(ctx context.Context, k ClientKey, seq uint64) (string, error)
	// Checkpoint returns the last EVENTS sequence committed, 0 when none.
	Checkpoint(ctx context.Context) (uint64, error)
	// Streams returns the stream marks last committed (Batch.Streams): the
	// zero StreamMarks when none ever was.
	Streams(ctx context.Context) (StreamMarks, error)
	// Commit applies b in one transaction: all of it or none of it. On
	// success it sets the Key of every b.Outbox entry. A b.Checkpoint below
	// the stored one is refused with an error wrapping ErrCheckpoint, and
	// nothing is written, unless b.Reanchor is set (with b.Streams).
	Commit(ctx context.Context, b *Batch) error
	// Outbox returns up to limit (all if limit <= 0) unpublished entries in
	// the order they were committed.
	Outbox(ctx context.Context, limit int) ([]OutboxEntry, error)
	// RemoveOutbox deletes published entries by key; unknown keys are ignored.
	RemoveOutbox(ctx context.Context, keys []uint64) error
	// Conflicts returns the conflict history of one document (overwritten,
	// open and resolved records), ordered by conflict id.
	Conflicts(ctx context.Context, addr events.DocAddress) ([]events.Conflict, error)
	// Scan calls fn for every document in address order (tenant, collection,
	// id, byte-wise) until fn returns an error, which Scan returns.
	Scan(ctx context.Context, fn func(Doc) error) error
	// DocsWithField returns the live (not deleted) documents of collection
	// in tenant whose field value is the JSON string value, in id order.
	// The projector finds a parent's followers with it under sync rules
	// (Config.Rules).
	DocsWithField(ctx context.Context, tenant, collection, field, value string) ([]Doc, error)
	// ScanConflicts calls fn for every conflict record, ordered by document
	// address then conflict id.
	ScanConflicts(ctx context.Context, fn func(ConflictRecord) error) error
	// Close releases the store. It is safe to call more than once; other
	// calls after Close return ErrClosed.
	Close() error
}

// PartitionedStore is a Store that can keep the progress of several
// projectors apart, one per Partition of EVENTS, over one view: each
// partition's Store shares the documents and conflict history with the
// others (a document belongs to one partition only, so they never write
// the same one) and has its own checkpoint, stream marks, high-water
// marks and outbox. Several ebb servers may then each apply some
// partitions of one view (see Group). Implementations must pass
// storetest.RunPartitionSuite.
type PartitionedStore interface {
	Store
	// Partition returns the Store of partition p (p.Count > 1). The first
	// call for a view records p.Count: a later call with another Count is
	// refused with an error wrapping ErrInvalidConfig, and so, once
	// partitioned, is a Commit on the whole store (its checkpoint no longer
	// moves). A partition created from a whole store that has progress
	// starts where it is: its checkpoint, stream marks and every writer's
	// high-water mark are copied from the whole store, and partition 0
	// takes the whole store's outbox. Commit on a partition's Store also
	// honours Batch.Prev. Closing a partition's Store does not close the
	// store; closing the store closes them all.
	Partition(ctx context.Context, p Partition) (Store, error)
}

// ClientKey names one writer: high-water marks are kept per tenant, client
// and device (one local log of the client; events.Event.Device). Device ""
// is the client's one legacy log, stored as marks were before devices.
type ClientKey struct{ Tenant, Client, Device string }

// SeqEvent is the event applied at one sequence of one writer, remembered
// while the sequence is inside the dedupe window so that another event
// reusing the sequence is told from a true duplicate.
type SeqEvent struct {
	Writer ClientKey
	Seq    uint64
	Event  string // the event id
}

// HighWater is what the projector has applied of one writer: every client
// sequence up to Seq except the Holes. A hole is a sequence below Seq not
// seen yet: the producer keeps a writer's events in order per document
// only, so events of other documents may overtake one (by less than the
// producer's window) and it arrives late, once. Holes further than the
// projector's Config.HoleWindow below Seq are forgotten (see dedupe.go).
type HighWater struct {
	Seq   uint64     // the highest client sequence applied, 0 when none
	Holes []SeqRange // ascending, disjoint, all below Seq; nil when none
}

// SeqRange is the client sequences From through To, both included.
type SeqRange struct{ From, To uint64 }

// ConflictRecord is one conflict record with the document it belongs to.
type ConflictRecord struct {
	Address  events.DocAddress
	Conflict events.Conflict
}

// OutboxEntry is one message waiting to be published.
type OutboxEntry struct {
	Key     uint64              // assigned by Commit, increasing in commit order
	Subject string              // where it goes
	MsgID   string              // its Nats-Msg-Id, so a republish is dropped as a duplicate
	Header  map[string][]string // extra headers (trace context)
	Data    []byte              // encoded payload
}

// StreamMark identifies one incarnation of a stream and how far the view
// has gone in it. A stream deleted and created again under the same name
// is another incarnation: its Created differs and its sequences restart.
type StreamMark struct {
	Created  time.Time // the stream's creation time (StreamInfo.Created); zero: nothing recorded
	FirstSeq uint64    // EVENTS: the stream's first sequence when the view anchored on it
	LastSeq  uint64    // CHANGES: the highest sequence the projector published into it, as last committed
	Msgs     uint64    // CHANGES: the messages it held at the projector's last look (never fewer while intact)
}

// StreamMarks is what the view records of the streams it depends on, so a
// projector never resumes on a stream its state did not come from
// (DESIGN.md, "Streams and the view are identified").
type StreamMarks struct {
	// Events is the EVENTS incarnation the checkpoint counts in.
	Events StreamMark
	// Changes is the CHANGES incarnation that holds every document's
	// current change: published into it, or reseeded from the view.
	Changes StreamMark
	// Docs counts the view's documents (tombstones included) at the
	// checkpoint, when DocsCounted (views from before it was kept are
	// counted once, on start). An intact CHANGES holds one message for
	// each once the outbox is published: fewer means some were purged or
	// deleted, however the rest of CHANGES moved since.
	Docs        uint64
	DocsCounted bool
	// Rules is the fingerprint of the sync rules (Config.Rules) the
	// audiences in CHANGES were last computed under; "" when none. A
	// projector started under other rules publishes every live document's
	// change again with its new audience, then records its own.
	Rules string `json:",omitempty"`
	// Reanchors counts the times the view moved to a new EVENTS
	// incarnation: when non-zero, the view holds what an earlier one
	// applied, and no rebuild from the current EVENTS can reproduce it.
	Reanchors uint64
}

// Batch is everything one projector step writes, committed together.
type Batch struct {
	Checkpoint uint64       // the new checkpoint (last EVENTS sequence the batch covers)
	Streams    *StreamMarks // when set, replaces the recorded stream marks
	Reanchor   bool         // Checkpoint starts over in the new EVENTS incarnation b.Streams names: it may be below the stored one
	// Prev, when set, fences the batch: Commit refuses it (ErrCheckpoint,
	// nothing written) unless the stored checkpoint is *Prev, the one the
	// batch was decided from. Two projectors that both believe they hold
	// a partition (a lease handed over while the old holder finished a
	// batch) can then never both commit from the same state. Nil: no fence
	// (the whole store's single projector).
	Prev      *uint64
	Docs      []Doc                   // new document states; a later entry for the same address wins
	Conflicts []ConflictRecord        // conflict records to write (replacing records with the same id)
	HighWater map[ClientKey]HighWater // new marks, each replacing the stored one whole; one with a Seq below the stored Seq is ignored (a mark never goes back)
	Outbox    []OutboxEntry           // messages to add (Commit assigns Key)
	Published []uint64                // outbox keys to delete
	// SeqEvents are event ids to remember by writer and sequence
	// (Store.SeqEvent), replacing any held for the same one.
	SeqEvents []SeqEvent
	// ForgetSeqEvents lets the store drop, per writer, the ids of every
	// sequence at or below the given one (they left the dedupe window).
	ForgetSeqEvents map[ClientKey]uint64
}

// fieldIs reports whether field of f is the JSON string value.
func fieldIs(f events.Fields, field, value string) bool {
	raw, ok := f[field]
	if !ok {
		return false
	}
	var v string
	return json.Unmarshal(raw, &v) == nil && v == value
}
