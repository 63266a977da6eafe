// Package rules is ebb's sync rules language (issue 18): a YAML file, reviewed
// like code, that decides per document which users of a tenant may read it
// and which may write it, from the document's fields and the user's name and
// groups. The projector ([projection.Config].Rules) computes each change's
// audience with [Set.Audience] and refuses writes with [Set.MayWrite]; the
// HTTP gateway hides documents with the same answers.
//
// # The file
//
//	default: allow            # or deny: collections the file does not name
//	collections:
//	  lists:
//	    read:  [{user: owner}, {group: team}]
//	    write: [{user: owner}]
//	  todos:
//	    follow: {collection: lists, field: list}
//	  notes:
//	    read:  [{everyone: true}]
//	    write: [{user: owner}]
//
// A rule is exactly one of:
//
//   - {user: F}: the user whose name is in field F of the document;
//   - {group: F}: members of the group whose name is in field F;
//   - {everyone: true}: every user of the tenant.
//
// Field F may hold a string or a list of strings; each names one user or
// group. A missing field, or a value that is neither (a number, an object,
// null, an empty string), lets nobody in through that rule: rules only ever
// grant. A user may read a document when any read rule grants it, and write
// it when any write rule does. `read: []` is readable by nobody (only
// services, which read the tenant's whole feed). A collection with read rules
// and no `write` is written by its readers.
//
// follow: {collection: P, field: F} makes a document of the collection read
// and written exactly as the document of collection P whose id is in field F
// (a todo as its list). F must hold a string; a missing or non-string field,
// or a parent that does not exist, gives nobody: no reader, and every write
// refused. A deleted parent gives no reader either, but its followers'
// writes are judged on what its tombstone kept of its last live state: the
// fields its write rules read ([Set.Kept], which the projector keeps with
// the tombstone and gives back through [Lookup]), so whoever could write
// the parent last may still delete or move its followers; with nothing
// kept, nobody may. P must itself have read rules: follow chains are
// refused (depth 1), so there are no cycles. A collection has either read
// (and write) rules or follow, never both.
//
// A collection the file does not name is tenant-wide, as without rules
// (default: allow, the default): its changes carry no audience and every
// user of the tenant reads and writes it. With default: deny, nobody reads or
// writes it.
//
// Every bad file is refused by [Parse] and [Load] with an [*Error] that
// names the collection, the rule and the field (errors.Is ErrInvalid): an
// unknown key, a rule with no kind or two, an empty field name, everyone
// other than true, a follow of a collection the file does not name, of a
// collection that itself follows, or of itself, read rules beside follow.
//
// # What the projector does with it
//
// The audience of a document state is the set of principals
// (events.Principals) its read rules grant: "*", "u:<user>", "g:<group>".
// With projection.Config.Rules, every change the projector publishes for a
// collection the rules decide carries the audience of its state in
// events.HeaderReaders and, in events.HeaderWasReaders, everyone who may
// still hold a copy: every principal who was a reader of any state of the
// document so far (its cumulative audience, which the view keeps with the
// state, bounded: past projection.MaxAudienceBytes it is "*"; a follower
// adds its parent's). A user who missed intermediate changes thus still
// gets its notice that the document left its view. A tombstone's readers
// are its was-readers, so every holder learns of the delete. The headers
// are the same on apply, on the outbox's republish and on a reseed. When a
// parent's audience changes, each live follower's change is published
// again, same version, new audience. Under changed rules (the view records
// their Fingerprint) every live document is published again.
//
// The writer of an event is its client (the subject's, which auth confines
// to the user's name) with the groups the server stamped in
// events.HeaderWriterGroups; the projector judges it with [Set.MayWrite] on
// the state before (when there is one) and the state after (when it is
// live), and refuses it with a rejected receipt, "sync rules:
// <collection>/<id>: <why>", leaving the view untouched. Rules need
// authentication: without it there is no identity to judge, and ebb serve
// refuses --rules without --auth.
//
// [Set.Fingerprint] identifies a rule set (a hash of its meaning, not of
// its text), so a server can tell that the rules changed since it last ran.
package rules
