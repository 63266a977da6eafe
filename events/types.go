package events

import "encoding/json"

// SchemaVersion is the payload schema this package writes and reads. A
// payload with any other "schema" value is refused with ErrUnknownSchema; a
// new payload field always comes with a new schema version.
const SchemaVersion = 1

// Op is what an event does to its document.
type Op string

// The operations.
const (
	OpPut     Op = "put"     // replace the document with Fields (creating it if absent)
	OpPatch   Op = "patch"   // set Fields; a JSON null removes that field
	OpDelete  Op = "delete"  // delete the document (a tombstone remains)
	OpResolve Op = "resolve" // settle the open conflict Event.Resolves with Fields as the new state
)

// Valid reports whether o is one of the operations.
func (o Op) Valid() bool {
	switch o {
	case OpPut, OpPatch, OpDelete, OpResolve:
		return true
	}
	return false
}

// Fields are a document's fields by name, each value raw JSON.
type Fields = map[string]json.RawMessage

// Event is one client's intent to change one document: what travels on
// EVENTS. Only the changed fields travel; BaseVersion is the document version
// the client last saw, which the conflict policies compare with the server's.
type Event struct {
	Schema      int    `json:"schema"`
	ID          string `json:"id"` // ULID, also the Nats-Msg-Id; unique per write, never reused (nothing relies on ids increasing)
	Tenant      string `json:"tenant"`
	Collection  string `json:"collection"`
	Doc         string `json:"doc"`
	Op          Op     `json:"op"`
	Fields      Fields `json:"fields,omitempty"`
	BaseVersion uint64 `json:"base_version"` // the version in the last change the client applied; 0: none. At most MaxSafeInteger
	HLC         HLC    `json:"hlc"`
	Client      string `json:"client"`
	// Device is the id of the writing client's local log (one per device
	// and install; a ULID minted with the store, never reused). A client
	// (a user under auth) may have any number of devices; the writer the
	// projector deduplicates is (tenant, client, device). Empty names the
	// client's one legacy log.
	Device string `json:"device,omitempty"`
	Seq    uint64 `json:"seq"` // the device's sequence, from 1, +1 per event; at most MaxSafeInteger
	// Resolves names the conflict an OpResolve settles.
	Resolves string `json:"resolves,omitempty"`
	// After is the id of the client's previous event on this document that
	// had not been settled (no receipt) when this one was written: this
	// event was built on top of it. The event is then fresh only if the
	// document's current state was made by After; otherwise it is stale
	// (the predecessor was rejected, or another write came in between) and
	// the collection's policy decides. BaseVersion stays the version the
	// client last had from the server.
	After string `json:"after,omitempty"`
}

// Address returns the document the event addresses.
func (e *Event) Address() DocAddress {
	return DocAddress{Tenant: e.Tenant, Collection: e.Collection, Doc: e.Doc}
}

// Subject is the subject the event is published on.
func (e *Event) Subject() string { return EventSubject(e.Tenant, e.Client, e.Collection, e.Doc) }

// ReceiptSubject is the subject of the event's receipt.
func (e *Event) ReceiptSubject() string { return DeviceReceiptSubject(e.Tenant, e.Client, e.Device) }

// Subject is the subject the receipt is published on.
func (r *Receipt) Subject() string { return DeviceReceiptSubject(r.Tenant, r.Client, r.Device) }

// CheckSubject returns an error wrapping ErrInvalid unless subject is the
// one e must travel on. The projector checks every event this way: NATS
// permissions vouch for the subject's tenant and client, and this ties the
// payload to them. Token encoding is canonical, so equality is the check.
func (e *Event) CheckSubject(subject string) error {
	if subject == e.Subject() {
		return nil
	}
	addr, err := ParseEventSubject(subject)
	if err != nil {
		return &FieldError{Field: "subject", Reason: err.Error(), Err: ErrInvalid}
	}
	return invalid("subject", "%q is client %q writing %s/%s/%s but the event is client %q writing %s/%s/%s",
		subject, addr.Client, addr.Tenant, addr.Collection, addr.Doc, e.Client, e.Tenant, e.Collection, e.Doc)
}

// Policy names a conflict policy. The names are part of the protocol because
// conflict records carry them.
type Policy string

// The built-in policies. A custom resolver registered with the projector
// has a name of its own.
const (
	PolicyLWW    Policy = "lww"
	PolicyMerge  Policy = "merge"
	PolicyReject Policy = "reject"
	PolicyManual Policy = "manual"
)

// ConflictStatus is the state of a conflict record.
type ConflictStatus string

// The conflict states.
const (
	// ConflictOpen: a manual conflict waiting for a resolve event.
	ConflictOpen ConflictStatus = "open"
	// ConflictResolved: a manual conflict settled by a resolve event.
	ConflictResolved ConflictStatus = "resolved"
	// ConflictOverwritten: settled automatically (lww, merge, custom); the
	// record keeps what was overwritten.
	ConflictOverwritten ConflictStatus = "overwritten"
)

// Side is one competing state of a document in a conflict.
type Side struct {
	Event   string `json:"event,omitempty"` // the event that wrote this state
	Client  string `json:"client,omitempty"`
	HLC     HLC    `json:"hlc"`
	Version uint64 `json:"version,omitempty"` // version of the state, where it was applied
	Deleted bool   `json:"deleted,omitempty"`
	Fields  Fields `json:"fields,omitempty"`
}

// Conflict records two writes that raced: a stale event (its BaseVersion
// behind the document) against the state the server had. Sides[0] is the
// server's state, Sides[1] the incoming write.
type Conflict struct {
	ID         string         `json:"id"` // the id of the incoming event
	Policy     Policy         `json:"policy"`
	Status     ConflictStatus `json:"status"`
	Sides      []Side         `json:"sides"`
	Lost       []string       `json:"lost,omitempty"`       // fields (or "*" for the whole document) the winner overwrote
	Resolution string         `json:"resolution,omitempty"` // the resolve event that settled it
}

// Change is the full state of one document at a version, as the projector
// published it to CHANGES. Applying a change is idempotent: it replaces the
// replica's state when Version is newer.
type Change struct {
	Schema     int                   `json:"schema"`
	Tenant     string                `json:"tenant"`
	Collection string                `json:"collection"`
	Doc        string                `json:"doc"`
	Version    uint64                `json:"version"` // 1 on create, +1 per applied change
	Deleted    bool                  `json:"deleted,omitempty"`
	Fields     Fields                `json:"fields,omitempty"`    // the whole document; omitted when empty (always on a tombstone)
	HLC        HLC                   `json:"hlc"`                 // clock of the write that made this state
	Clocks     map[string]FieldClock `json:"clocks,omitempty"`    // per-field clocks, for field-level merge: only under merge or a custom resolver (PROTOCOL.md)
	Event      string                `json:"event"`               // the event that caused this change
	Client     string                `json:"client"`              // its writer
	Device     string                `json:"device,omitempty"`    // its writer's device (Event.Device); empty for a legacy log
	Seq        uint64                `json:"seq"`                 // its sequence in that device's log
	Conflicts  []Conflict            `json:"conflicts,omitempty"` // open conflicts on the document
	// Settled is the conflict this change settled or recorded, on the change
	// as first published; a copy reseeded from the view omits it (the view's
	// conflict history keeps the record).
	Settled *Conflict `json:"settled,omitempty"`
	// AsWritten reports that this state is exactly what its cause event
	// wrote onto the state its writer saw (decided fresh, or a resolve), not
	// shaped by a policy (merged, conflicted, won or lost over a concurrent
	// write). Only then is a later event with After = Event fresh.
	AsWritten bool `json:"as_written,omitempty"`
	// Left is set only on a notice a filtering server (sync rules) sends
	// in place of a change its user may no longer read: the document left
	// the user's view, so its local copy is removed. Such a notice carries
	// the address, Version and Event of the change and no Fields; it is
	// never stored in CHANGES.
	Left bool `json:"left,omitempty"`
}

// Address returns the document the change is about.
func (c *Change) Address() DocAddress {
	return DocAddress{Tenant: c.Tenant, Collection: c.Collection, Doc: c.Doc}
}

// FieldClock records when one field last changed: the document version, the
// HLC and the client of the write. Field-level merge compares an event's base version
// with Version to tell whether the field changed concurrently, and HLCs to
// pick the winner. Removed fields keep their clock.
type FieldClock struct {
	Version uint64 `json:"version"`
	HLC     HLC    `json:"hlc"`
	Client  string `json:"client,omitempty"` // the field's writer, the tie-break for equal HLCs
}

// Outcome is the fate of an event.
type Outcome string

// The outcomes a receipt reports.
const (
	OutcomeApplied   Outcome = "applied"   // applied as written
	OutcomeMerged    Outcome = "merged"    // applied, but a concurrent write shaped the result (merge, custom; lww never: a stale write that wins is applied)
	OutcomeRejected  Outcome = "rejected"  // not applied; Reason says why (stale version under reject, lost lww, ...)
	OutcomeConflict  Outcome = "conflict"  // kept as an open conflict (manual); Conflict names it
	OutcomeDuplicate Outcome = "duplicate" // decided before (or too far behind its writer to tell); nothing changed, and it does not say how it was decided
	OutcomeInvalid   Outcome = "invalid"   // refused (malformed, foreign subject, clock ahead, beyond the window, reused id, failed resolver); dead-lettered; its seq is not used up
	// OutcomeReused: the writer's sequence was already taken by a
	// different event (its log was restored from a backup or copied);
	// nothing changed. The device must start a new log (a new Device) and
	// write the event again there. Reason names the event that holds the
	// sequence.
	OutcomeReused Outcome = "reused"
)

// Valid reports whether o is one of the outcomes.
func (o Outcome) Valid() bool {
	switch o {
	case OutcomeApplied, OutcomeMerged, OutcomeRejected, OutcomeConflict, OutcomeDuplicate, OutcomeInvalid, OutcomeReused:
		return true
	}
	return false
}

// Receipt tells the client that wrote an event what became of it. An event
// may have several receipts (republished after JetStream's duplicate
// window, it is answered duplicate again); the first one read settles it.
type Receipt struct {
	Schema     int     `json:"schema"`
	Event      string  `json:"event"`
	Tenant     string  `json:"tenant"`
	Client     string  `json:"client"`
	Device     string  `json:"device,omitempty"` // the event's Device
	Seq        uint64  `json:"seq"`
	Collection string  `json:"collection,omitempty"` // omitted on invalid receipts
	Doc        string  `json:"doc,omitempty"`        // omitted on invalid receipts
	Outcome    Outcome `json:"outcome"`
	Reason     string  `json:"reason,omitempty"`
	Version    uint64  `json:"version,omitempty"`  // the document's version after the event; 0 (omitted) on duplicate, reused, invalid, and a rejected write to a document that never existed
	Conflict   string  `json:"conflict,omitempty"` // the id of the conflict record it raised or settled (the record is in the change)
	Stream     uint64  `json:"stream_seq"`         // the event's sequence in EVENTS
}

// DeadLetter is a message the projector could not apply at all, with the
// reason, kept whole for an operator.
type DeadLetter struct {
	Schema  int                 `json:"schema"`
	Reason  string              `json:"reason"`
	Subject string              `json:"subject"`    // the original subject
	Stream  uint64              `json:"stream_seq"` // its sequence in EVENTS
	Header  map[string][]string `json:"header,omitempty"`
	Data    []byte              `json:"data"`           // the raw payload, or its first bytes when Size is larger (base64 in JSON)
	Size    int                 `json:"size,omitempty"` // the raw payload's length in bytes
	Event   string              `json:"event,omitempty"`
	Tenant  string              `json:"tenant,omitempty"`
	Client  string              `json:"client,omitempty"`
}
