// Package feed serves the change feed of sync rules (issue 18): one page of
// a tenant's CHANGES for one reader, through the audience filter, the same
// for the HTTP pull (deploy/gateway) and for NATS clients (Responder).
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
// state's audience but is not in this one's, or skipped. LastSeq moves
// past every message read, skipped ones too, so a reader's cursor never
// reads a message twice: each visible change travels once per reader, and
// a page may send fewer changes than it read, even none, while More is
// true. A long-poll that reads only skipped changes waits on, within its
// wait, for one the reader may see. The page carries the stream's state,
// read after it (StreamState), so a reader detects a recreated CHANGES as
// a NATS reader does from stream info.
//
// The Responder answers change requests over NATS for clients that may
// not read CHANGES directly (auth's filtered reads): a client requests
// RequestSubject, which the server routes into the stream account as
// UserSubject(user, tenant); the responder (queue group QueueGroup) looks
// the user's groups up at request time (Identities), answers the page as
// JSON (Page, or the compact page of CompactFormat when the request asks
// for one: the tenant, collections and writers named once, about half the
// bytes; DecodeReply reads both) or a refusal (ErrorReply with an
// HTTP-like status), and
// bounds long-polls per user and in all (LongPolls) and other requests in
// flight. A page is cut before it outgrows the connection's max payload.
package feed
