// Package auth holds ebb's users, their NATS accounts and permissions,
// their quotas and the login guard: the one place that decides what a
// credential may touch. It keeps DESIGN.md invariant 7 as restated in
// events/PROTOCOL.md: a client of tenant A can neither read nor write
// tenant B, including writes the server makes on its behalf.
//
// A users file (YAML, see Parse) names each user, its password (or a bcrypt
// password_hash), its tenant, its role, the groups it belongs to (which
// sync rules name) and, for a service, the durables it owns; an optional
// limits block sets the quotas (see Limits). The same
// Users value serves the embedded nats-server (NATSUsers, with
// NATSAuthenticator checking logins) and the HTTP gateway
// (AuthenticateFrom), so the two paths cannot disagree about who may do
// what; NATSConfig writes the equivalent configuration for an external
// nats-server (`ebb nats-config`; deploy/nats-auth.conf).
//
// # Roles
//
//   - client: publishes events of its tenant as itself (events.ClientEvents;
//     the projector refuses a payload whose client is not the subject's), reads its
//     tenant's changes and its own receipts. Its client id is its user name,
//     so its receipts are on events.ReceiptSubject(tenant, name) and, for
//     each of its devices, the subjects below it (events.ClientReceipts).
//   - service: reads its tenant's changes, also through the durable
//     consumers it lists under durables, which it acknowledges; over NATS
//     it writes nothing (the HTTP gateway's writes are the server's own).
//   - admin: everything (operators, `ebb verify`, `ebb serve --nats`).
//
// # Accounts: why a reply subject cannot reach a stream
//
// NATS checks permissions on the subject a client publishes to, never on
// the reply subject it names, and JetStream publishes its answers (API
// responses, PubAcks, direct-get messages) to that reply subject in the
// account that holds the streams. With every user in that account, any
// client could make the server write into any stream
// (`pub '$JS.API.STREAM.INFO.CHANGES' ” --reply ebb.chg.acme.notes.n1`).
//
// So the streams, ebb's own connection and the admins live in account
// StreamAccount ("EBB"), and every other user lives in an account of its
// own (AccountOf) that holds no stream and imports from EBB, as services,
// exactly the requests the user may make. nats-server maps the reply
// subject of an imported request to a private one in EBB and delivers the
// answer back into the asker's account: a reply subject a client names
// lands in its own account, where nothing stores it. This closes the class
// by design, not by filtering subjects one at a time.
//
// The imports, which are also the user's publish permissions inside its
// account (defence in depth, and a clear "permissions violation" for
// anything else):
//
//	ebb.evt.<tenant>.<user>.>                                client events, as itself; the PubAck is the answer
//	$JS.API.STREAM.INFO.CHANGES / .RECEIPTS                  reset detection (see below)
//	$JS.API.CONSUMER.CREATE.CHANGES.*.ebb.chg.<tenant>.>     ordered consumer, one filter
//	$JS.API.CONSUMER.CREATE.CHANGES.*                        several filters, in the body (checked)
//	$JS.API.CONSUMER.CREATE.RECEIPTS.*.ebb.rcpt.<tenant>.<user>
//	$JS.API.CONSUMER.CREATE.RECEIPTS.*                       several filters, in the body (checked)
//	$JS.API.CONSUMER.MSG.NEXT.CHANGES.* / .RECEIPTS.*        fetch, from the user's own consumers (below)
//	$JS.API.DIRECT.GET.CHANGES.ebb.chg.<tenant>.>            last change in scope
//	subscribe _INBOX_<user>.>                                the user's private inbox
//
// In filtered reads mode (Users.WithFilteredReads, for sync rules) a
// client's CHANGES consumer creates and fetches are routed to a refusal
// (403, "... sync rules ..."), it has no DIRECT.GET on CHANGES, and it
// imports instead
//
//	_ebb.api.changes    to _ebb.api.changes.<user>.<tenant> in EBB: the change responder
//
// (without filtered reads every client and service imports it too, to
// _ebb.api.changes-all.<user>.<tenant>: the unfiltered responder's pages)
//
// A service has no event publish and no receipts; for each durable it owns
// it also has CONSUMER.INFO, CONSUMER.DELETE and $JS.ACK of that name.
// Every user account also imports $JS.API.INFO from a subject nobody
// answers: without an import covering it, nats-server would give the
// account its own JetStream API import, overlapping the others. Nothing
// else is reachable: no stream create, update, delete or purge, no
// consumer list, no direct get by sequence, no STREAM.MSG.GET, no
// subscription outside the private inbox. Clients connect with
// nats.CustomInboxPrefix(InboxPrefix(name)) as before; clients need no
// change, since the imports keep the $JS.API subject names.
//
// A configuration written in filtered reads mode also carries a marker
// its admins can see: StreamAccount maps FilteredModeSubject to
// FilteredModeSubject.<AccountsFingerprint>, a digest of the users,
// roles, tenants, groups, durables, password hashes and NATS limits it
// was written from and of the mode (not of plain passwords, hashed with a
// random salt: a plain-text password change is not detected), a mapping
// the configuration without the mode lacks. FilteredMarker reads it on an admin's connection, and
// CheckFilteredReads compares it with a Users' fingerprint
// (ErrNotFilteredReads without a marker, ErrOtherUsersFile for another
// one). A check proves the configuration of the one server the
// connection is on; `ebb serve --rules --nats` checks every server of
// its cluster (deploy/server). No user account can answer for it: they
// import nothing of the marker subjects. With APIConfig.Rules the
// consumer create and fetch responders refuse every CHANGES read of a
// user Identities does not know as a service, whatever the accounts say,
// so a server reloaded with accounts written without the mode still
// routes clients' consumer creates and fetches to a refusal (direct gets
// it does not route: see deploy/server for the re-check).
//
// Responders: in the embedded configuration (NATSUsers) and in the one
// NATSConfig writes for an external server (deploy/nats-auth.conf), three
// kinds of request do not go to JetStream directly but to responders in
// EBB (StartAPI, which the embedded server runs on its own connection
// and `ebb serve --nats` on its connection to the external server).
// STREAM.INFO goes to ServeStreamInfo, which asks JetStream with an empty
// request and drops the per-subject lists, since a subjects_filter would
// list every tenant's subjects (login names, document ids).
// CONSUMER.CREATE goes to the consumer create responder, which checks
// every filter subject of the request (the one in the subject, and each
// of filter_subject and filter_subjects in the body of a create on
// $JS.API.CONSUMER.CREATE.<stream>.<name>, the subject a scope of several
// collections uses) against the user's scope (its tenant's changes, its
// own receipts) and refuses, naming the filter, one outside it or a
// request with none; it also refuses push
// consumers (JetStream publishes a push consumer's messages to its
// deliver subject in EBB, where a deliver subject onto another tenant's
// stream subjects would write there: a reply subject by another name),
// an ack wait below MinAckWait and an inactive threshold below
// MinInactiveThreshold, and passes the rest on with only its owner set
// (below). It reads the bytes it sends: a request any of whose JSON
// objects holds two keys equal under encoding/json's case folding
// ("deliver_subject" and "Deliver_subject") is refused, since the check
// and JetStream could each take another of the two. A client's events
// (ebb.evt.<tenant>.<user>.>) go to the publish responder, which keeps the
// quotas (below) and passes each allowed event on to JetStream with its
// payload and headers, less every Nats-* header but Nats-Msg-Id and the
// Nats-Expected-* checks on the event's own subject (server-owned ones such
// as Nats-Msg-Size, Nats-Rollup or Nats-TTL, in any letter case), and
// JetStream's answer back. It also sets the events.HeaderWriterGroups
// header to the writer's groups (StampWriterGroups), as the Directory it
// is given says (APIConfig.Identities: the users file, or
// jwtlogin.NATSLogin for token logins; none without one), after dropping
// every value the client sent under that name in any letter case, so
// write rules see only the server's. NATSConfigWith(false) imports all
// three directly, with none of this: there a client's own
// HeaderWriterGroups reaches EVENTS as sent, and it is refused in
// filtered reads mode (nothing would refuse a client's CHANGES reads or
// route its change requests).
//
// A client or service asks for pages of its changes on ChangesSubject; in
// filtered reads mode its import maps the request to
// ChangesSubject.<user>.<tenant> in EBB (ChangesAsker reads them), where a
// filtering change responder (package deploy/feed) answers it with what
// the user's principals may read, and without it to
// ChangesAllSubject.<user>.<tenant>, where an unfiltered one (a server
// without rules) answers every change of the tenant, for a replica's
// catch-up; the reply goes back to the asker as any imported request's.
// The two modes' subjects differ so neither responder ever answers the
// other's accounts. The user and
// tenant tokens are the mapping's: a client naming them itself is a
// permissions violation. The responder learns the user's groups from the
// same Directory.
//
// Fetches (CONSUMER.MSG.NEXT) go to the fetch responder, which forwards
// one only from a consumer of the asker: its OwnerMetadata (set by the
// consumer create responder) is the asker's name, or it has none (an
// admin's or ebb's own), and every filter subject lies within the
// asker's scope (its tenant's changes; its own receipts); no filter is
// the whole stream, refused. A foreign consumer is answered with a
// status message 403 naming it, an unknown name with JetStream's own
// "409 Consumer Deleted" (so an owner's ordered consumer makes a new
// one); neither is forwarded, and the jetstream client reports both as
// errors. So a stranger learns whether a name exists, never what it
// reads. A fetch cannot travel as a service import: that hides the
// asker's inbox behind a _R_ reply, which nats-server lets no client
// connection name as a reply, and JetStream's messages carry $JS.ACK
// replies no client may forward. So each user account exports its
// fetch subjects as a stream to EBB, which imports them as
// _ebb.api.next.<user>.<tenant>.<stream>.<consumer> (the mapping, not
// the user, writes the name and tenant); the responder forwards with a
// reply in _ebb.deliver.<user>.<inbox rest>, and the user's account
// imports _ebb.deliver.<user>.> as a stream into its own inbox, with
// the ack replies intact (FetchRoutesOf). A stream import reaches only
// subscriptions made after it, so an account made on a running server
// (Link, token logins) needs API.Resubscribe before its first fetch.
// The price is one CONSUMER.INFO round trip and two more hops per fetch
// request, not per message (BenchmarkFetch: some tenths of a
// millisecond on a loaded machine), and the checks run one at a time on
// the responder's subscription. A consumer deleted and made again by
// someone else between the check and the fetch (microseconds) is not
// caught.
//
// # One account per user, not per tenant
//
// Per-tenant accounts would close the cross-tenant case as well (and
// nats-server does not pass an answer on through the importing account's
// own imports, so a reply onto a neighbour's event subject goes nowhere
// either). An account per user is chosen for two reasons: nats-server's
// account limits (connections, subscriptions, payload) then are per-user
// quotas, which NATS offers no other way for plain users; and a reply
// subject a user names can never reach another user's inbox, even one
// whose random token leaked, since no one else is in the account. The
// cost, from BenchmarkAccounts_* (go test -run x -bench Accounts
// ./deploy/embedded), is in deploy/README.md: connection setup a little
// slower, publish latency unchanged within noise, and some tens of KiB of
// heap per user, so one server holds tens of thousands of users this way;
// beyond that, accounts made on demand by auth callout.
//
// # Durables
//
// Consumer names are one subject token and NATS wildcards are whole
// tokens, so a durable cannot be confined by a name prefix. A service
// lists the durables it owns (User.Durables, unique in the file); the
// permissions of every other user deny each API subject naming them
// (create or update with any filter, the legacy DURABLE.CREATE, info,
// fetch, ack, delete). So nobody else can take one over, read from it or
// make the server delete it. NATS cannot check a request body; the
// consumer create responder refuses ack waits and inactive thresholds
// below a second, to the owner too. A durable not listed is fetched from
// only by the user that made it (see the fetch responder above); any
// user of the tenant scope may still create or update it. Every consumer a user creates counts against its
// own Limits.MaxConsumersPerUser and the shared Limits.MaxConsumers.
//
// # Quotas
//
// Limits are enforced by nats-server on each user's account: connections
// per user, subscriptions per connection and payload per message, and the
// JetStream consumers of each stream of EBB, shared by all. Each has a
// default and is answered with nats-server's own error (see Limits). A
// token user's account, made at run time (deploy/auth/jwtlogin), gets the
// same connection, subscription and payload limits from the same Limits
// (Link sets them as the account's claims). The consumer create responder
// also bounds the consumers one user holds on CHANGES and RECEIPTS
// (Limits.MaxConsumersPerUser): it stamps each with the user's name
// (OwnerMetadata) and counts them, listing the streams' consumers at most
// every 5 s, so one user cannot use up the shared bound.
//
// nats-server has no message rate per account, and JetStream's account
// limits (storage) apply to EBB, which holds every tenant's streams, so
// the publish rate and the storage quota are ebb's own: a Meter, asked by
// the publish responder before it passes an event on, by the HTTP
// gateway's push before it publishes one, and by its document writes
// before one enters the server's write log (answered 429 or 507 there, so
// a write the gateway accepted is never refused later). Per user, a token bucket of events and
// of bytes (PublishLimit); per tenant, the bytes of its messages in
// EVENTS, CHANGES and DEAD (StorageLimit). A refusal is a *QuotaError
// (ErrPublishRate, ErrTenantStorage) naming the tenant, the user and the
// limit, answered over NATS as the PubAck's API error (ErrCodePublishRate,
// ErrCodeTenantStorage); producer.Publisher retries it with backoff, so a
// device's log keeps every write it accepted.
//
// Storage is counted by the server, not by nats-server: per-tenant
// streams would multiply the streams, the projector's consumers and its
// checkpoints by the tenants, and max-msgs-per-subject bounds messages
// per document, not bytes per tenant. A measure reads the three streams
// headers-only (ordered consumers; no payloads) every StorageLimit.Rescan
// and counts each message's subject, headers and payload size under its
// tenant (the size is the last Nats-Msg-Size, the one JetStream appends,
// never below 0); between measures the events a Meter accepts are added.
// So, with one server, the count is never below the truth by more than
// what the projector derives (changes, dead letters) since the last
// measure, and is above it by what aged out or was compacted since then.
//
// # Rate and storage quotas are per server
//
// Each ebb server has its own Meter, and nothing is shared between them:
// with N servers on one NATS (a queue group spreads NATS publishes over
// their responders, and an HTTP client may write through any of them), a
// user may publish up to N times PublishLimit, one budget per server, and
// since each Meter adds only the events it accepted itself, a tenant's
// storage may overshoot StorageLimit by up to N times what it accepts
// between measures (each measure reads the streams, so the overshoot does
// not accumulate past one Rescan). Set the limits for one server's share
// (the budget divided by N) where that matters. The login Guard is per
// server too: N servers allow N times the guesses. Sharing the budgets
// (in a JetStream KV, say) would put a round trip on every publish and
// has not been done. The connection, subscription and payload limits and
// MaxConsumers are nats-server's (per account and per stream, wherever
// the users connect), and MaxConsumersPerUser is counted from the
// streams' consumers, which every server sees alike.
//
// # Logins
//
// Every login, NATS or HTTP, goes through a Guard: failures are counted
// per user name and per source IP; past LoginLimit.Burst in a row, an
// attempt is refused without any password check for a backoff that
// doubles up to LoginLimit.MaxBackoff, and at most LoginLimit.Checks
// bcrypt checks run at once. A locked name can thus be kept locked by an
// attacker (at most MaxBackoff at a time, a success after it clears it);
// behind a proxy every HTTP client has the proxy's source. If the file has
// any password_hash, a failure for an unknown name or a plain password pays
// one bcrypt at the file's highest cost, so failures do not tell which
// names exist. A successful bcrypt check over HTTP is cached in memory by
// a SHA-256 of the password so a busy client does not pay bcrypt per
// request.
//
// # HTTP
//
// The gateway takes the same credentials as HTTP Basic auth, or as
// "Authorization: Bearer <token>" where the token is the base64 (standard,
// padded) encoding of "user:password" — the Basic credentials under another
// scheme, for clients whose HTTP stack only sets bearer tokens.
package auth
