package auth

import (
	"slices"

	"github.com/ebbsync/ebb/events"
)

// jsAPI is the JetStream API subject prefix.
const jsAPI = "$JS.API."

// Permissions are the subjects a user may publish to and subscribe to
// inside its account. Nil Publish and Subscribe together (an admin) mean
// everything. DenyPublish wins over Publish.
type Permissions struct {
	Publish     []string
	DenyPublish []string
	Subscribe   []string
}

// All reports whether p allows everything.
func (p Permissions) All() bool { return p.Publish == nil && p.Subscribe == nil }

// InboxPrefix is the private inbox prefix of user name: the user must
// connect with nats.CustomInboxPrefix(InboxPrefix(name)), and may subscribe
// only below it.
func InboxPrefix(name string) string { return "_INBOX_" + events.EncodeToken(name) }

// durableSubjects are the API subjects that name durable d on CHANGES
// beyond what every user of a tenant may publish (creating it with the
// tenant's filter and fetching from it are covered by the ordered
// consumer's wildcards, and imports must not overlap: a message matching
// two imports would be delivered twice).
func durableSubjects(d string) []string {
	c := events.StreamChanges
	return []string{
		jsAPI + "CONSUMER.INFO." + c + "." + d,
		jsAPI + "CONSUMER.DELETE." + c + "." + d,
		"$JS.ACK." + c + "." + d + ".>",
	}
}

// denyDurable are the subjects that would let a stranger touch durable d:
// create or update it with any filter, read from it, ack for it, delete it.
func denyDurable(d string) []string {
	c := events.StreamChanges
	return []string{
		jsAPI + "CONSUMER.CREATE." + c + "." + d,
		jsAPI + "CONSUMER.CREATE." + c + "." + d + ".>",
		jsAPI + "CONSUMER.DURABLE.CREATE." + c + "." + d,
		jsAPI + "CONSUMER.INFO." + c + "." + d,
		jsAPI + "CONSUMER.DELETE." + c + "." + d,
		jsAPI + "CONSUMER.MSG.NEXT." + c + "." + d,
		"$JS.ACK." + c + "." + d + ".>",
	}
}

// Permissions returns the NATS subject permissions of usr inside its own
// account (see the package documentation for the list and the reasons).
// They are also exactly the subjects its account imports from
// StreamAccount, so a reply subject it names can reach nothing else.
//
// These are the permissions without filtered reads; Users.PermissionsOf
// gives the ones of the Users' mode.
func (usr User) Permissions() Permissions { return usr.permissions(false) }

func (usr User) permissions(filtered bool) Permissions {
	if usr.Role == RoleAdmin {
		return Permissions{}
	}
	return Permissions{Publish: usr.imports(filtered), Subscribe: []string{InboxPrefix(usr.Name) + ".>"}}
}

// imports are the subjects usr's account imports from StreamAccount;
// filtered is the Users' filtered reads mode (see Users.WithFilteredReads).
func (usr User) imports(filtered bool) []string {
	t := events.EncodeToken(usr.Tenant)
	changes := events.TenantChanges(usr.Tenant)
	pub := []string{
		jsAPI + "STREAM.INFO." + events.StreamChanges,
		jsAPI + "CONSUMER.CREATE." + events.StreamChanges + ".*." + changes,
		// Several filters (a scope of two or more collections) travel in
		// the body; the responder checks each of them.
		jsAPI + "CONSUMER.CREATE." + events.StreamChanges + ".*",
		jsAPI + "CONSUMER.MSG.NEXT." + events.StreamChanges + ".*",
	}
	// The change responder: under filtered reads a client's only way to
	// its changes (its CHANGES creates and fetches are routed to a
	// refusal, importsOf and fetchRoutesOf, and it has no direct get);
	// otherwise a replica's compact catch-up. Its pages are the user's own
	// tenant's, filtered in that mode (a service reads CHANGES directly).
	pub = append(pub, ChangesSubject)
	if !filtered || usr.Role != RoleClient {
		pub = append(pub, jsAPI+"DIRECT.GET."+events.StreamChanges+"."+events.ChangesPrefix+"."+t+".>")
	}
	switch usr.Role {
	case RoleClient:
		pub = append(pub,
			events.ClientEvents(usr.Tenant, usr.Name),
			jsAPI+"STREAM.INFO."+events.StreamReceipts,
			jsAPI+"CONSUMER.CREATE."+events.StreamReceipts+".*."+events.ReceiptSubject(usr.Tenant, usr.Name),
			// A device log follows every device of its user with one filter.
			jsAPI+"CONSUMER.CREATE."+events.StreamReceipts+".*."+events.ReceiptSubject(usr.Tenant, usr.Name)+".>",
			jsAPI+"CONSUMER.CREATE."+events.StreamReceipts+".*",
			jsAPI+"CONSUMER.MSG.NEXT."+events.StreamReceipts+".*",
		)
	case RoleService:
		for _, d := range usr.Durables {
			pub = append(pub, durableSubjects(d)...)
		}
	}
	return pub
}

// PermissionsOf returns usr's permissions in u's filtered reads mode with
// the durables of every user of u but usr denied: what a users-file user
// gets, for a user made elsewhere (a verified login token) that u does
// not list.
func (u *Users) PermissionsOf(usr User) Permissions { return u.permissionsIn(usr) }

// permissionsIn returns usr's permissions with the durables of every other
// user of u denied.
func (u *Users) permissionsIn(usr User) Permissions {
	p := usr.permissions(u.filtered)
	if p.All() {
		return p
	}
	for _, other := range u.list {
		if other.Name == usr.Name {
			continue
		}
		for _, d := range other.Durables {
			p.DenyPublish = append(p.DenyPublish, denyDurable(d)...)
		}
	}
	slices.Sort(p.DenyPublish)
	p.DenyPublish = slices.Compact(p.DenyPublish)
	return p
}
