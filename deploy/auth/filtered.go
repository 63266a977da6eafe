package auth

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/nats-io/nats.go"

	"github.com/ebbsync/ebb/events"
)

// ChangesSubject is the subject a client in filtered reads mode asks for
// its changes on (see Users.WithFilteredReads). Its account imports it
// from StreamAccount, where the request arrives on
// ChangesSubject.<user>.<tenant> (events.EncodeToken of each, written by
// the import mapping, never by the client) with the reply going back to
// the asker: a change responder there (queue group "ebb-api") answers it
// with the changes the user may read. ChangesAsker reads the two tokens.
const ChangesSubject = "_ebb.api.changes"

// ChangesAllSubject is where the import routes ChangesSubject in accounts
// without filtered reads: ChangesAllSubject.<user>.<tenant>, answered by an
// unfiltered change responder (a server without sync rules). Accounts of
// the two modes route to different subjects, so a server without rules can
// never answer a client of rules accounts with every change of its
// tenant, whatever the fleet runs while it moves to sync rules.
const ChangesAllSubject = "_ebb.api.changes-all"

// ChangesAsker returns the user and tenant of a request that arrived in
// StreamAccount on subject, ChangesSubject.<user>.<tenant>; an error for
// any other subject.
func ChangesAsker(subject string) (user, tenant string, err error) {
	rest, ok := strings.CutPrefix(subject, ChangesSubject+".")
	tok := strings.Split(rest, ".")
	if !ok || len(tok) != 2 {
		return "", "", fmt.Errorf("changes request on %q: want %s.<user>.<tenant>", subject, ChangesSubject)
	}
	if user, err = events.DecodeToken(tok[0]); err != nil {
		return "", "", fmt.Errorf("changes request on %q: user: %w", subject, err)
	}
	if tenant, err = events.DecodeToken(tok[1]); err != nil {
		return "", "", fmt.Errorf("changes request on %q: tenant: %w", subject, err)
	}
	return user, tenant, nil
}

// WithFilteredReads returns u in filtered reads mode (on) or without it,
// for a server whose sync rules filter what each user reads; u itself is
// unchanged, and the two share the login guard. In that mode, a user of
// role client may not read CHANGES directly: its consumer creates on
// CHANGES (one filter or several) are answered with a 403 whose
// description says "sync rules", so are its fetches from any consumer on
// CHANGES, and it has no direct get on CHANGES (a permissions
// violation); its stream info and its receipts are as before. Instead its
// account imports ChangesSubject, routed to the change responder. A
// service keeps its tenant-wide CHANGES reads; an admin everything. The
// mode is written into the accounts: NATSUsers, NATSConfig, and
// Users.Link, Users.Imports, Users.FetchRoutesOf and Users.PermissionsOf
// for token logins; an account made before keeps the mode it was made
// with. NATSConfigWith(false) is refused in this mode (it has no
// responder to refuse or route anything).
func (u *Users) WithFilteredReads(on bool) *Users {
	return &Users{list: u.list, byName: u.byName, limits: u.limits, guard: u.guard, dummy: u.dummy,
		known: map[string][32]byte{}, filtered: on}
}

// FilteredReads reports whether u is in filtered reads mode
// (WithFilteredReads).
func (u *Users) FilteredReads() bool { return u.filtered }

// FilteredModeSubject is the marker of filtered reads mode in a NATS
// configuration: the accounts NATSConfig (and NATSUsers) writes for Users
// in that mode map it, in StreamAccount, to
// FilteredModeSubject.<fingerprint> (an account-level subject mapping),
// the fingerprint being AccountsFingerprint of the Users they were written
// from; a configuration without the mode has no such mapping.
// FilteredMarker and CheckFilteredReads look for it.
const FilteredModeSubject = "_ebb.mode.filtered"

// filteredModeTarget is what StreamAccount maps FilteredModeSubject to in
// u's accounts (filtered reads mode only).
func (u *Users) filteredModeTarget() string {
	return FilteredModeSubject + "." + u.AccountsFingerprint()
}

// AccountsFingerprint is a digest (32 hex digits) of every deterministic
// input of the accounts NATSConfig writes for u: every user's name, role,
// tenant, groups, durables and password_hash (when the users file gives
// a hash), the NATS limits written into the accounts (max_connections,
// max_subscriptions, max_payload, max_consumers) and the filtered reads
// mode. A plain password is not in it: NATSConfig hashes it with a random
// salt each time, so nothing of it can be compared, and a password
// changed in plain text is not detected (give password_hash to have it
// covered). Two configurations written from the same users file carry
// the same fingerprint, and one written from a file that differs in any
// of those inputs another. The limits ebb itself enforces (publish rate,
// storage, consumers per user, login) are not in the accounts and not in
// it.
func (u *Users) AccountsFingerprint() string {
	type entry struct {
		Name, Role, Tenant string
		Groups, Durables   []string
		PasswordHash       string `json:",omitempty"`
	}
	list := make([]entry, 0, len(u.list))
	for _, usr := range u.list {
		e := entry{Name: usr.Name, Role: string(usr.Role), Tenant: usr.Tenant,
			Groups: slices.Sorted(slices.Values(usr.Groups)), Durables: slices.Sorted(slices.Values(usr.Durables)),
			PasswordHash: usr.PasswordHash}
		if usr.Role == RoleAdmin {
			e.Tenant = "" // ignored for an admin, and not written
		}
		list = append(list, e)
	}
	slices.SortFunc(list, func(a, b entry) int { return strings.Compare(a.Name, b.Name) })
	type limits struct{ MaxConnections, MaxSubscriptions, MaxPayload, MaxConsumers int }
	l := u.limits
	b, err := json.Marshal(struct {
		Filtered bool
		Users    []entry
		Limits   limits
	}{u.filtered, list, limits{l.MaxConnections, l.MaxSubscriptions, l.MaxPayload, l.MaxConsumers}})
	if err != nil {
		panic(fmt.Sprintf("auth: fingerprint of users: %v", err)) // cannot happen: strings and slices
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16])
}

// ErrNotFilteredReads is wrapped by FilteredMarker's and
// CheckFilteredReads's error when the NATS server's configuration is not
// in filtered reads mode (it carries no marker).
var ErrNotFilteredReads = errors.New("the NATS server's accounts are not in filtered reads mode")

// ErrOtherUsersFile is wrapped by CheckFilteredReads's error when the NATS
// server's accounts are in filtered reads mode but were written from
// other users than the ones checked (another AccountsFingerprint: the
// users, their password hashes, the NATS limits or the mode differ; a
// password changed in plain text is not detected).
var ErrOtherUsersFile = errors.New("the NATS accounts were generated from another users file")

// FilteredMarker asks, on nc, which must be a connection in StreamAccount
// (an admin's, as `ebb serve --nats` makes), the server nc is connected
// to for the marker of filtered reads mode, and returns the fingerprint
// it carries (AccountsFingerprint of the Users its accounts were written
// from). It answers requests on FilteredModeSubject.> with the subject
// they arrived on, and asks on FilteredModeSubject: only that server's
// mapping (applied where the request enters) can turn the one into the
// other, and no user account can hear either (they import nothing of
// them). An error wrapping ErrNotFilteredReads says that no answer came
// (no mapping: nats-server answers "no responders" at once, or ctx ended
// first); any other error says what failed. ctx bounds the wait: give it
// a short deadline.
func FilteredMarker(ctx context.Context, nc *nats.Conn) (string, error) {
	sub, err := nc.Subscribe(FilteredModeSubject+".>", func(m *nats.Msg) { _ = m.Respond([]byte(m.Subject)) })
	if err != nil {
		return "", fmt.Errorf("filtered reads check: subscribe %s.>: %w", FilteredModeSubject, err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := nc.FlushWithContext(ctx); err != nil {
		return "", fmt.Errorf("filtered reads check: flush: %w", err)
	}
	m, err := nc.RequestWithContext(ctx, FilteredModeSubject, nil)
	switch {
	case err == nil:
		fp, ok := strings.CutPrefix(string(m.Data), FilteredModeSubject+".")
		if !ok || fp == "" {
			return "", fmt.Errorf("filtered reads check: unexpected answer %q to %s", m.Data, FilteredModeSubject)
		}
		return fp, nil
	case errors.Is(err, nats.ErrNoResponders), errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout):
		return "", fmt.Errorf("%w: on server %s, a request on %s got no answer (%v): account %s has no mapping of it",
			ErrNotFilteredReads, serverName(nc), FilteredModeSubject, err, StreamAccount)
	}
	return "", fmt.Errorf("filtered reads check on server %s: request %s: %w", serverName(nc), FilteredModeSubject, err)
}

// CheckFilteredReads reports whether the server nc is connected to (nc
// must be in StreamAccount, see FilteredMarker) runs the accounts
// NATSConfig writes for u in filtered reads mode: nil if its marker
// carries u's AccountsFingerprint; an error wrapping ErrNotFilteredReads
// if it has no marker, one wrapping ErrOtherUsersFile if the marker is
// another users file's (or of a version of ebb that wrote no
// fingerprint); any other error says what failed. It checks that one
// server only: a cluster's every node must be checked on a connection of
// its own.
func CheckFilteredReads(ctx context.Context, nc *nats.Conn, u *Users) error {
	fp, err := FilteredMarker(ctx, nc)
	if err != nil {
		return err
	}
	if want := u.WithFilteredReads(true).AccountsFingerprint(); fp != want {
		return fmt.Errorf("%w: server %s has accounts of fingerprint %s, this users file's is %s (users, roles, tenants, groups, durables, password hashes or NATS limits differ; a plain-text password change is not detected)",
			ErrOtherUsersFile, serverName(nc), fp, want)
	}
	return nil
}

// serverName names the server nc is connected to: its server_name and
// its URL without credentials.
func serverName(nc *nats.Conn) string {
	name, url := nc.ConnectedServerName(), nc.ConnectedUrlRedacted()
	if name == "" {
		return url
	}
	return fmt.Sprintf("%s (%s)", name, url)
}
