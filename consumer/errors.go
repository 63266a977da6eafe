package consumer

import "errors"

// Sentinel errors. Match them with errors.Is.
var (
	// ErrInvalidConfig wraps every configuration problem that OpenReplica,
	// Subscribe and Watch report; the message names the field.
	ErrInvalidConfig = errors.New("invalid consumer config")
	// ErrClosed is returned by a Replica, Subscription or Watcher used after
	// Close or Stop.
	ErrClosed = errors.New("closed")
	// ErrOffline is returned by Replica.Sync when the replica has no
	// connection to push or pull with.
	ErrOffline = errors.New("replica is offline")
	// ErrNotFound is returned by Replica.Get for a document the replica's
	// view does not hold (never written, or deleted).
	ErrNotFound = errors.New("document not found")
	// ErrOutOfScope is returned for a collection outside the replica's
	// configured Collections.
	ErrOutOfScope = errors.New("collection outside the replica's scope")
	// ErrResync marks a full resynchronisation of the replica's scope: the
	// CHANGES stream was reset or the replica was too far behind RECEIPTS'
	// retention. It is never returned by a call; Status.Resyncs and
	// SyncReport.Resynced report it, wrapping this error in their Reason.
	ErrResync = errors.New("full resync")
	// ErrUnreadable marks a message that cannot be decoded (a schema newer
	// than this client's, a malformed payload). A Replica quarantines it
	// (ErrQuarantined); Subscribe terminates it; Watch skips it.
	ErrUnreadable = errors.New("unreadable message")
	// ErrSubjectMismatch marks a message whose payload is not what its
	// subject says: a change of another tenant, collection or document, a
	// receipt of another tenant or client.
	ErrSubjectMismatch = errors.New("payload does not match its subject")
	// ErrQuarantined wraps the reason (ErrUnreadable, ErrSubjectMismatch)
	// a message was set aside unused; see doc.go, "Quarantine". It is never
	// returned by a call: Status.LastQuarantine, Subscription.Quarantined
	// and Watcher.Quarantined report it.
	ErrQuarantined = errors.New("message quarantined")
)
