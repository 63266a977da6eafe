// Package events is ebb's wire contract: the types that travel between clients,
// the projector and microservices, and the rules for naming, encoding and
// validating them.
//
// An app's change is an [Event] (an intent: put, patch, delete or resolve one
// document) published by the client to the EVENTS stream. The projector applies
// events in order under a conflict policy and publishes, for each applied event,
// a [Change] (the full new state of the document at its new version) to the
// CHANGES stream, which keeps only the last change per document, and a
// [Receipt] (the fate of the event) to the writer's RECEIPTS subject. What cannot
// be applied at all goes to DEAD as a [DeadLetter].
//
// Ordering uses a hybrid logical clock ([HLC], [Clock]); event ids are ULIDs,
// monotonic per client ([IDSource]). Every name that reaches a NATS subject is
// encoded by [EncodeToken] so any document id is safe and no two ids share a
// subject, and tenants are the third subject token so NATS permissions can
// confine a client to its tenant.
//
// The package does no I/O of its own: [EnsureStreams] talks to JetStream only
// through the small [StreamManager] the caller passes. PROTOCOL.md beside this
// file is the normative description of subjects, headers, payloads and streams.
package events
