package auth

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"golang.org/x/crypto/bcrypt"

	"github.com/ebbsync/ebb/events"
)

// StreamAccount is the NATS account that holds ebb's streams, ebb's own
// connection and the admins. No other user is in it.
const StreamAccount = "EBB"

// InternalUser is the name of the embedded server's own user. NATSUsers
// lists it, in StreamAccount and with an unusable password, so that
// package deploy/embedded knows the account to put its connection in; the
// embedded server replaces the password with a random one.
const InternalUser = ReservedPrefix + "internal"

// userAccountPrefix starts the account name of every non-admin user.
const userAccountPrefix = "USER_"

// AccountOf returns the name of the NATS account usr lives in:
// StreamAccount for an admin, an account of its own otherwise.
func AccountOf(usr User) string {
	if usr.Role == RoleAdmin {
		return StreamAccount
	}
	return userAccountPrefix + events.EncodeToken(usr.Name)
}

// jsInfoSink is where a user account's $JS.API.INFO goes: nowhere. A
// user account must import something that covers $JS.API.INFO, or
// nats-server gives it its own JetStream API import ($JS.API.> into the
// system account), which would answer every JetStream request of the user
// alongside (and overlapping) the imports from StreamAccount.
const jsInfoSink = "_ebb.none.js-info"

// export is one service StreamAccount offers; streamed marks a request
// answered by many messages (a fetch); stream marks a stream export (not
// a service).
type export struct {
	subject  string
	streamed bool
	stream   bool
}

// exports are everything any user account may import from StreamAccount.
// Each account imports only its own narrow subset (User.Permissions).
var exports = []export{
	{subject: events.EventsPrefix + ".>"}, // a publish answered by its PubAck
	{subject: jsAPI + "STREAM.INFO." + events.StreamChanges},
	{subject: jsAPI + "STREAM.INFO." + events.StreamReceipts},
	{subject: jsAPI + "CONSUMER.CREATE." + events.StreamChanges + ".>"},
	{subject: jsAPI + "CONSUMER.CREATE." + events.StreamReceipts + ".>"},
	{subject: jsAPI + "CONSUMER.INFO." + events.StreamChanges + ".*"},
	{subject: jsAPI + "CONSUMER.DELETE." + events.StreamChanges + ".*"},
	{subject: jsAPI + "CONSUMER.MSG.NEXT." + events.StreamChanges + ".*", streamed: true},
	{subject: jsAPI + "CONSUMER.MSG.NEXT." + events.StreamReceipts + ".*", streamed: true},
	{subject: jsAPI + "DIRECT.GET." + events.StreamChanges + ".>"},
	{subject: "$JS.ACK." + events.StreamChanges + ".>"},
	{subject: jsInfoSink},
	{subject: streamInfoSubject + ".*"},
	{subject: consumerCreateSubject + ".>"},
	{subject: deliverPrefix + ".>", stream: true}, // fetched messages, to each user's own inbox
	{subject: publishSubject + ".>"},
	{subject: ChangesSubject + ".*.*"},    // filtered reads: <user>.<tenant>, written by the mapping
	{subject: ChangesAllSubject + ".*.*"}, // without: <user>.<tenant>, written by the mapping
}

// NATSConfig returns NATSConfigWith(true): the configuration of
// deploy/nats-auth.conf, for an external server that `ebb serve --nats`
// (which runs StartAPI) is connected to.
func (u *Users) NATSConfig() (string, error) { return u.NATSConfigWith(true) }

// NATSConfigWith returns the nats-server configuration of u for an external
// server: an "accounts" block with StreamAccount (JetStream, the admins,
// the exports) and one account per other user (that user, its imports and
// its limits). Plain passwords are written as bcrypt hashes (cost
// bcrypt.DefaultCost); password hashes as they are. Connect `ebb serve
// --nats` as an admin. The embedded server uses the same configuration
// (NATSUsers). With responder, users' events, stream info and consumer
// create requests go to StartAPI's responders, which must then run on a
// connection in StreamAccount (ebb serve runs them); without, they go to
// JetStream directly, which keeps no publish rate or storage quota,
// answers a subjects_filter with every tenant's subjects and accepts a
// push consumer delivering into any subject of StreamAccount; it neither
// stamps writer groups nor lets a consumer have several filters, and it
// is refused in filtered reads mode (WithFilteredReads).
func (u *Users) NATSConfigWith(responder bool) (string, error) {
	if u.filtered && !responder {
		return "", errors.New("nats config: filtered reads need the responders: without them a client's CHANGES reads are not refused and its change requests reach nothing")
	}
	return u.natsConfig(func(usr User) (string, error) {
		if usr.PasswordHash != "" {
			return usr.PasswordHash, nil
		}
		h, err := bcrypt.GenerateFromPassword([]byte(usr.Password), bcrypt.DefaultCost)
		if err != nil {
			return "", fmt.Errorf("hash password of %q: %w", usr.Name, err)
		}
		return string(h), nil
	}, false, responder)
}

// NATSUsers returns one nats-server user per user, each with its account
// and its permissions, plus InternalUser in StreamAccount (see there): the
// configuration NATSConfigWith(true) writes, parsed by nats-server itself
// (the embedded server runs StartAPI on its internal connection). A
// password_hash is handed over as is (nats-server checks bcrypt itself),
// so is a plain password. Every account a user points at is complete:
// imports, exports, limits and JetStream.
func (u *Users) NATSUsers() []*server.User {
	conf, err := u.natsConfig(func(usr User) (string, error) {
		if usr.PasswordHash != "" {
			return usr.PasswordHash, nil
		}
		return usr.Password, nil
	}, true, true)
	if err != nil {
		panic(fmt.Sprintf("auth: NATS configuration of valid users: %v", err)) // cannot happen: no hashing
	}
	opts := &server.Options{}
	if err := opts.ProcessConfigString(conf); err != nil {
		panic(fmt.Sprintf("auth: nats-server refuses the configuration it was generated for: %v\n%s", err, conf))
	}
	return opts.Users
}

func (u *Users) natsConfig(password func(User) (string, error), internal, responder bool) (string, error) {
	l := u.limits
	var b strings.Builder
	b.WriteString("# Generated by ebb (deploy/auth). Every user but the admins has an account of\n")
	b.WriteString("# its own that holds no stream and imports only the requests it may make from\n")
	b.WriteString("# " + StreamAccount + ", so a reply subject it names lands in its own account.\n")
	b.WriteString("# Clients connect with the inbox prefix _INBOX_<user> (nats.CustomInboxPrefix).\n")
	b.WriteString("accounts {\n")
	fmt.Fprintf(&b, "  %s: {\n", StreamAccount)
	fmt.Fprintf(&b, "    jetstream: {max_consumers: %d}\n", l.MaxConsumers)
	if u.filtered {
		// The marker CheckFilteredReads looks for: only a configuration
		// written in filtered reads mode carries it.
		fmt.Fprintf(&b, "    mappings: {\n      %s: %s\n    }\n", strconv.Quote(FilteredModeSubject), strconv.Quote(u.filteredModeTarget()))
	}
	b.WriteString("    users: [\n")
	if internal {
		pw := make([]byte, 32)
		if _, err := rand.Read(pw); err != nil {
			return "", fmt.Errorf("internal user password: %w", err)
		}
		fmt.Fprintf(&b, "      {user: %s, password: %s}\n", strconv.Quote(InternalUser), strconv.Quote(hex.EncodeToString(pw)))
	}
	for _, usr := range u.list {
		if usr.Role != RoleAdmin {
			continue
		}
		pw, err := password(usr)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "      {user: %s, password: %s} # admin\n", strconv.Quote(usr.Name), strconv.Quote(pw))
	}
	b.WriteString("    ]\n    exports: [\n")
	for _, e := range exports {
		if e.stream {
			fmt.Fprintf(&b, "      {stream: %s}\n", strconv.Quote(e.subject))
		} else if e.streamed {
			fmt.Fprintf(&b, "      {service: %s, response: stream}\n", strconv.Quote(e.subject))
		} else {
			fmt.Fprintf(&b, "      {service: %s}\n", strconv.Quote(e.subject))
		}
	}
	b.WriteString("    ]\n")
	if responder {
		b.WriteString("    imports: [\n")
		for _, usr := range u.list {
			if usr.Role == RoleAdmin {
				continue
			}
			for _, im := range fetchRoutesOf(usr, u.filtered).Requests {
				fmt.Fprintf(&b, "      {stream: {account: %s, subject: %s}, to: %s}\n", strconv.Quote(AccountOf(usr)), strconv.Quote(im.Local), strconv.Quote(im.Remote))
			}
		}
		b.WriteString("    ]\n")
	}
	b.WriteString("  }\n")
	for _, usr := range u.list {
		if usr.Role == RoleAdmin {
			continue
		}
		pw, err := password(usr)
		if err != nil {
			return "", err
		}
		p := u.permissionsIn(usr)
		fmt.Fprintf(&b, "  # %s: role %s, tenant %s\n", usr.Name, usr.Role, usr.Tenant)
		fmt.Fprintf(&b, "  %s: {\n", strconv.Quote(AccountOf(usr)))
		fmt.Fprintf(&b, "    limits: {max_connections: %d, max_subscriptions: %d, max_payload: %d}\n", l.MaxConnections, l.MaxSubscriptions, l.MaxPayload)
		fmt.Fprintf(&b, "    users: [\n      {\n        user: %s\n        password: %s\n", strconv.Quote(usr.Name), strconv.Quote(pw))
		b.WriteString("        permissions: {\n")
		writeList(&b, "publish", p.Publish, p.DenyPublish)
		writeList(&b, "subscribe", p.Subscribe, nil)
		b.WriteString("        }\n      }\n    ]\n    imports: [\n")
		for _, im := range importsOf(usr, responder, u.filtered) {
			if im.Local == im.Remote {
				fmt.Fprintf(&b, "      {service: {account: %s, subject: %s}}\n", StreamAccount, strconv.Quote(im.Remote))
				continue
			}
			fmt.Fprintf(&b, "      {service: {account: %s, subject: %s}, to: %s}\n", StreamAccount, strconv.Quote(im.Remote), strconv.Quote(im.Local))
		}
		if responder {
			r := fetchRoutesOf(usr, u.filtered)
			fmt.Fprintf(&b, "      {stream: {account: %s, subject: %s}, to: %s}\n", StreamAccount, strconv.Quote(r.Deliveries.Remote), strconv.Quote(r.Deliveries.Local))
			b.WriteString("    ]\n")
			fmt.Fprintf(&b, "    exports: [\n      {stream: %s, accounts: [%s]}\n", strconv.Quote(r.Export), StreamAccount)
		}
		b.WriteString("    ]\n  }\n")
	}
	b.WriteString("}\n")
	return b.String(), nil
}

func writeList(b *strings.Builder, name string, allow, deny []string) {
	fmt.Fprintf(b, "          %s: {\n            allow: [\n", name)
	for _, s := range allow {
		fmt.Fprintf(b, "              %s\n", strconv.Quote(s))
	}
	b.WriteString("            ]\n")
	if len(deny) > 0 {
		b.WriteString("            deny: [\n")
		for _, s := range deny {
			fmt.Fprintf(b, "              %s\n", strconv.Quote(s))
		}
		b.WriteString("            ]\n")
	}
	b.WriteString("          }\n")
}

// Import is one service import of a user account from StreamAccount: what
// the user publishes on Local reaches Remote in StreamAccount.
type Import struct {
	Local, Remote string
}

// Imports returns the service imports of usr's account in the embedded
// configuration (NATSConfigWith(true), with ServeAPI's responders) without
// filtered reads, for code that builds such an account on a running
// server (package deploy/auth/jwtlogin); Users.Imports gives them in the
// Users' mode. It is empty for an admin.
func Imports(usr User) []Import {
	if usr.Role == RoleAdmin {
		return nil
	}
	return importsOf(usr, true, false)
}

// Imports is the package's Imports in u's filtered reads mode.
func (u *Users) Imports(usr User) []Import {
	if usr.Role == RoleAdmin {
		return nil
	}
	return importsOf(usr, true, u.filtered)
}

// ruledChanges stands for CHANGES in the routed consumer create and
// fetch subjects of a client in filtered reads mode: the responders
// refuse it (filteredReadsRefusal). It is no stream name, and only the
// import mappings write it (ruledRest).
const ruledChanges = "CHANGES-BY-RULES"

// ruledRest returns rest, the <stream>.<...> tokens of one of usr's
// consumer create or fetch subjects, with CHANGES replaced by
// ruledChanges if usr is a client in filtered reads mode.
func ruledRest(usr User, filtered bool, rest string) string {
	if stream, after, _ := strings.Cut(rest, "."); stream == events.StreamChanges && filtered && usr.Role == RoleClient {
		return ruledChanges + "." + after
	}
	return rest
}

// filteredReadsRefusal is the text of a refused CHANGES read of a client
// in filtered reads mode.
const filteredReadsRefusal = "this server filters CHANGES by sync rules: a client reads its changes through " + ChangesSubject + ", not from CHANGES directly"

func importsOf(usr User, responder, filtered bool) []Import {
	var out []Import
	for _, s := range usr.imports(filtered) {
		if s == ChangesSubject {
			// The mapping, not the user, names the asker; the mode names
			// the responder that may answer (ChangesAllSubject).
			remote := ChangesSubject
			if !filtered {
				remote = ChangesAllSubject
			}
			out = append(out, Import{Local: s, Remote: remote + "." + events.EncodeToken(usr.Name) + "." + events.EncodeToken(usr.Tenant)})
			continue
		}
		if stream, ok := strings.CutPrefix(s, jsAPI+"STREAM.INFO."); ok && responder {
			out = append(out, Import{Local: s, Remote: streamInfoSubject + "." + stream})
			continue
		}
		if strings.HasPrefix(s, events.EventsPrefix+".") && responder {
			// Through the publish responder, which keeps the quotas.
			out = append(out, Import{Local: s, Remote: publishSubject + "." + s})
			continue
		}
		if rest, ok := strings.CutPrefix(s, jsAPI+"CONSUMER.CREATE."); ok && !responder && strings.Count(rest, ".") == 1 { // <stream>.*: no filter token
			// Several filters in the body: only the responder can
			// confine them; without it, the create has no import.
			continue
		}
		if rest, ok := strings.CutPrefix(s, jsAPI+"CONSUMER.CREATE."); ok && responder {
			// Wildcards map by position: the user's stream, name and
			// filter tokens arrive as they were sent, after its name and
			// tenant, which the mapping writes.
			rest = ruledRest(usr, filtered, rest)
			out = append(out, Import{Local: s, Remote: consumerCreateSubject + "." + events.EncodeToken(usr.Name) + "." + events.EncodeToken(usr.Tenant) + "." + rest})
			continue
		}
		if strings.HasPrefix(s, jsAPI+"CONSUMER.MSG.NEXT.") && responder {
			continue // a stream StreamAccount imports (fetchRoutesOf)
		}
		out = append(out, Import{Local: s, Remote: s})
	}
	return append(out, Import{Local: jsAPI + "INFO", Remote: jsInfoSink})
}

// deliverPrefix starts the subjects, in StreamAccount, that the fetch
// responder names as the reply of a fetch it forwards:
// <deliverPrefix>.<user token>.<rest of the user's inbox>. Each user
// account imports only its own ones, as a stream, into its inbox.
const deliverPrefix = "_ebb.deliver"

// FetchRoutes are the stream imports that carry a user's fetches (MSG.NEXT)
// through the fetch responder in the embedded configuration, instead of a
// service import. A service import would hide the user's inbox behind a
// _R_ reply that a client connection may not name as a reply, and
// JetStream's messages carry $JS.ACK replies no client may forward; a
// stream keeps both.
type FetchRoutes struct {
	// Export is the subject the user's account exports as a stream to
	// StreamAccount (its fetch requests).
	Export string
	// Requests are what StreamAccount imports from the user's account:
	// Local in the user's account arrives on Remote in StreamAccount.
	Requests []Import
	// Deliveries is what the user's account imports from StreamAccount:
	// Remote in StreamAccount arrives on Local, its inbox.
	Deliveries Import
}

// FetchRoutesOf returns the fetch routes of usr's account (empty for an
// admin) without filtered reads, for code that builds such an account on
// a running server (package deploy/auth/jwtlogin; see Link);
// Users.FetchRoutesOf gives them in the Users' mode.
func FetchRoutesOf(usr User) FetchRoutes {
	if usr.Role == RoleAdmin {
		return FetchRoutes{}
	}
	return fetchRoutesOf(usr, false)
}

// FetchRoutesOf is the package's FetchRoutesOf in u's filtered reads mode.
func (u *Users) FetchRoutesOf(usr User) FetchRoutes {
	if usr.Role == RoleAdmin {
		return FetchRoutes{}
	}
	return fetchRoutesOf(usr, u.filtered)
}

func fetchRoutesOf(usr User, filtered bool) FetchRoutes {
	user := events.EncodeToken(usr.Name)
	r := FetchRoutes{
		Export:     jsAPI + "CONSUMER.MSG.NEXT.>",
		Deliveries: Import{Local: InboxPrefix(usr.Name) + ".>", Remote: deliverPrefix + "." + user + ".>"},
	}
	for _, s := range usr.imports(filtered) {
		if rest, ok := strings.CutPrefix(s, jsAPI+"CONSUMER.MSG.NEXT."); ok {
			rest = ruledRest(usr, filtered, rest)
			r.Requests = append(r.Requests, Import{Local: s, Remote: nextSubject + "." + user + "." + events.EncodeToken(usr.Tenant) + "." + rest})
		}
	}
	return r
}

// Link gives acc, usr's account newly made on ns, a running server, what
// the embedded configuration without filtered reads gives a users-file
// user's account: the limits of l (max_connections, max_subscriptions and
// max_payload, as NATSConfigWith writes them; zero fields are their
// defaults), the service imports (Imports) and the fetch routes
// (FetchRoutesOf) to and from stream, StreamAccount. Users.Link does it
// in the Users' mode with the Users' limits. Call it once, on an account
// with nothing else in it: the limits and service imports are set as the
// account's claims (nats-server's Server.UpdateAccountClaims, the only
// way it offers to limit an account made at run time), which replace any
// imports and exports the account had.
func Link(ns *server.Server, stream, acc *server.Account, usr User, l Limits) error {
	return link(ns, stream, acc, usr, false, l)
}

// Link is the package's Link in u's filtered reads mode, with u's limits.
func (u *Users) Link(ns *server.Server, stream, acc *server.Account, usr User) error {
	return link(ns, stream, acc, usr, u.filtered, u.limits)
}

func link(ns *server.Server, stream, acc *server.Account, usr User, filtered bool, l Limits) error {
	if usr.Role == RoleAdmin {
		return nil
	}
	if err := claimAccount(ns, stream, acc, importsOf(usr, true, filtered), l); err != nil {
		return err
	}
	r := fetchRoutesOf(usr, filtered)
	if err := acc.AddStreamExport(r.Export, []*server.Account{stream}); err != nil {
		return fmt.Errorf("link %s: export %s: %w", acc.Name, r.Export, err)
	}
	for _, im := range r.Requests {
		if err := stream.AddMappedStreamImport(acc, im.Local, im.Remote); err != nil {
			return fmt.Errorf("link %s: stream import %s: %w", acc.Name, im.Local, err)
		}
	}
	if err := acc.AddMappedStreamImport(stream, r.Deliveries.Remote, r.Deliveries.Local); err != nil {
		return fmt.Errorf("link %s: stream import %s: %w", acc.Name, r.Deliveries.Remote, err)
	}
	return nil
}

// claimAccount sets acc's limits (l, as the generated configuration's
// "limits" block) and its service imports from stream through claims.
// The imports go in the same claims, not after: nats-server gives an
// account whose claims are set without an import covering $JS.API.INFO
// its own JetStream API import (see jsInfoSink), and replaces an
// account's imports whenever its claims are set. nats-server skips an
// import it cannot add (logging it at debug level); the count of the
// account's imports tells.
func claimAccount(ns *server.Server, stream, acc *server.Account, ims []Import, l Limits) error {
	l = l.WithDefaults()
	ac := jwt.NewAccountClaims(acc.Name)
	ac.Name = acc.Name
	ac.Limits.Conn = int64(l.MaxConnections)
	ac.Limits.Subs = int64(l.MaxSubscriptions)
	ac.Limits.Payload = int64(l.MaxPayload)
	for _, im := range ims {
		ji := &jwt.Import{Type: jwt.Service, Account: stream.Name, Subject: jwt.Subject(im.Remote)}
		if im.Local != im.Remote {
			ji.LocalSubject = jwt.RenamingSubject(im.Local)
		}
		ac.Imports.Add(ji)
	}
	before := acc.NumServiceImports() // the server's own (system) imports, set again with the claims
	ns.UpdateAccountClaims(acc, ac)
	if got := acc.NumServiceImports() - before; got != len(ims) {
		return fmt.Errorf("link %s: %d of its %d service imports from %s were accepted", acc.Name, got, len(ims), stream.Name)
	}
	return nil
}
