// Package auth holds ebb's users and the NATS permissions of each role: the
// one place that decides what a credential may touch (DESIGN.md invariant 7,
// "a client credentialed for tenant A can neither read nor write tenant B").
//
// A users file (YAML, see Parse) names each user, its password (or a bcrypt
// password_hash), its tenant and its role. The same Users value serves the
// embedded nats-server (NATSUsers: one NATS user per ebb user, with subject
// permissions) and the HTTP gateway (Authenticate), so the two paths can
// never disagree about who may do what; NATSConfig writes the equivalent
// authorization block for an external nats-server (deploy/nats-auth.conf).
//
// # Roles
//
//   - client: publishes events of its tenant as itself (events.ClientEvents;
//     the projector refuses a payload whose client is not the subject's), reads its
//     tenant's changes and its own receipts. Its client id is its user name,
//     so its receipts subject is exactly events.ReceiptSubject(tenant, name).
//   - service: reads its tenant's changes, also through durable consumers
//     that it acknowledges; it writes nothing.
//   - admin: everything (operators, `ebb verify`).
//
// # What the NATS permissions allow, and why
//
// JetStream is driven through request subjects, so tenant confinement is a
// matter of allowing only the API subjects that carry the tenant in them.
// The subjects below are the ones consumer.Replica, consumer.Watch and
// producer.Publisher really use (found by running them under these
// permissions and recording every $JS.API request, see
// TestSecurity_TenantIsolation in cmd/ebb):
//
//	publish  ebb.evt.<tenant>.<user>.>                                client events, as itself
//	publish  $JS.API.STREAM.INFO.CHANGES / .RECEIPTS                  reset detection
//	publish  $JS.API.CONSUMER.CREATE.CHANGES.*.ebb.chg.<tenant>.>     ordered consumer, one filter
//	publish  $JS.API.CONSUMER.CREATE.RECEIPTS.*.ebb.rcpt.<tenant>.<user>
//	publish  $JS.API.CONSUMER.MSG.NEXT.CHANGES.* / .RECEIPTS.*        fetch
//	publish  $JS.API.DIRECT.GET.CHANGES.ebb.chg.<tenant>.>            last change in scope
//	subscribe _INBOX_<user>.>                                         the user's private inbox
//
// A service has no event publish and no receipts, but may also publish
// $JS.ACK.CHANGES.> (acks of its durable consumers). Nothing else is
// allowed: no stream create, update, delete or purge, no consumer list or
// delete, no direct get by sequence ($JS.API.DIRECT.GET.CHANGES without a
// subject), no STREAM.MSG.GET, no subscription outside the private inbox.
// A user must connect with nats.CustomInboxPrefix(InboxPrefix(name)):
// replies of JetStream requests and fetched messages go to the inbox, and a
// shared _INBOX.> would let one tenant read another's fetches.
//
// Consumer creation is confined by its filter: nats.go puts a single filter
// subject into the create subject ($JS.API.CONSUMER.CREATE.<stream>.<name>.<filter>)
// and nats-server refuses a request whose body filter differs from it. A
// consumer with several filter subjects (FilterSubjects) is created on
// $JS.API.CONSUMER.CREATE.<stream>.<name>, which cannot be confined and is
// therefore refused: a Replica or a consumer.Subscribe scoped to two or more
// collections does not work under auth today (scoped to one collection or to
// the whole tenant, they send one filter and work).
//
// # Residual exposure
//
// Subjects that name a consumer rather than a tenant cannot be confined by
// subject: MSG.NEXT and (for services) $JS.ACK. A user who
// knows the name of another tenant's consumer could fetch from it or ack
// for it. Ordered consumers get random 22-character names and consumer
// names cannot be listed, so this needs a durable consumer with a guessable
// name: give service durables unguessable names. STREAM.INFO also answers
// a subjects_filter request with per-subject counts, which shows the
// subject names (encoded document ids) of other tenants, not their content.
//
// # HTTP
//
// The gateway takes the same credentials as HTTP Basic auth, or as
// "Authorization: Bearer <token>" where the token is the base64 (standard,
// padded) encoding of "user:password" — the Basic credentials under another
// scheme, for clients whose HTTP stack only sets bearer tokens.
// Authenticate checks a password in constant time (plain) or with bcrypt
// (hash); a successful bcrypt check is cached in memory by a SHA-256 of the
// password so a busy client does not pay bcrypt per request.
// BenchmarkAuthenticate (go test -bench . ./deploy/auth, shared 2-core VM):
//
//	plain password           25 ns/op
//	bcrypt, cached          159 ns/op
//	bcrypt, wrong password   59 ms/op  (cost 10; every miss pays it)
//
// So wrong passwords are expensive to check: a flood of them costs the
// server a core per ~17 requests a second. There is no rate limit yet;
// put one in front of the gateway if it faces the internet.
package auth
