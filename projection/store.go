package projection

import (
	"context"
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
	// ScanConflicts calls fn for every conflict record, ordered by document
	// address then conflict id.
	ScanConflicts(ctx context.Context, fn func(ConflictRecord) error) error
	// Close releases the store. It is safe to call more than once; other
	// calls after Close return ErrClosed.
	Close() error
}

// ClientKey names one writer: high-water marks are kept per tenant and client.
type ClientKey struct{ Tenant, Client string }

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
	// Reanchors counts the times the view moved to a new EVENTS
	// incarnation: when non-zero, the view holds what an earlier one
	// applied, and no rebuild from the current EVENTS can reproduce it.
	Reanchors uint64
}

// Batch is everything one projector step writes, committed together.
type Batch struct {
	Checkpoint uint64                  // the new checkpoint (last EVENTS sequence the batch covers)
	Streams    *StreamMarks            // when set, replaces the recorded stream marks
	Reanchor   bool                    // Checkpoint starts over in the new EVENTS incarnation b.Streams names: it may be below the stored one
	Docs       []Doc                   // new document states; a later entry for the same address wins
	Conflicts  []ConflictRecord        // conflict records to write (replacing records with the same id)
	HighWater  map[ClientKey]HighWater // new marks, each replacing the stored one whole; one with a Seq below the stored Seq is ignored (a mark never goes back)
	Outbox     []OutboxEntry           // messages to add (Commit assigns Key)
	Published  []uint64                // outbox keys to delete
}
