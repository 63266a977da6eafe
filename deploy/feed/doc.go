// Package feed serves a tenant's change feed one page at a time: one page
// of CHANGES for one reader, the same for the HTTP pull (deploy/gateway)
// and for NATS clients (Responder). Under sync rules (issue 18) it is the
// only way a client reads its changes; in every mode it is how a replica
// catches up on a backlog in compact pages (issue 15).
//
// A Source reads a page with one ordered consumer after the reader's
// cursor, on the tenant's change subjects or those of the collections
// asked for. Each message is checked against its subject (ReadChange); one
// that is not its document's change, or whose audience headers do not
// parse, is skipped and told to Source.Skipped, never served and never
// fatal. With Query.Filtered, each change is judged for the reader's
// principals (Judge, on the HeaderReaders and HeaderWasReaders headers the
// projector writes): sent as stored, replaced by a Left notice (address,
// version, event, Left set, no fields) when the reader was in the previous
// state's audience but is not in this one's, or skipped; the page says it
// was filtered (no Page.Unfiltered). LastSeq moves past every message read,
// skipped ones too, so a reader's cursor never reads a message twice: each
// visible change travels once per reader, and a page may send fewer
// changes than it read, even none, while More is true. A long-poll that
// reads only skipped changes waits on, within its wait, for one the reader
// may see. The page carries the stream's state, read after it
// (StreamState, with the restore metadata), so a reader detects a
// recreated CHANGES, and resumes a restored one, as a NATS reader does
// from stream info.
//
// The Responder answers change requests over NATS: a client requests
// RequestSubject, which the server's auth routes into the stream account
// as UserSubject(user, tenant), so the server names who asks; the
// responder (queue group QueueGroup) looks the user up at request time
// (Identities: its groups, or a refusal for a user the tenant does not
// have), filters under rules and serves every change as stored without
// them (ResponderConfig.Unfiltered); a server without auth also serves the
// bare RequestSubject for the tenant the body names (Open). It answers the
// page as JSON (Page, or the compact page of CompactFormat when the
// request asks for one: the tenant, collections and writers named once and
// a change's cause only on the asker's own changes; DecodeReply reads
// both) or a refusal (ErrorReply with an HTTP-like status), bounds
// long-polls per user and in all (LongPolls) and other requests in flight,
// and cuts a page before it outgrows the connection's max payload.
package feed
