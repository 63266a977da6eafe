package auth

import (
	"context"
	"errors"
	"fmt"
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
// in that mode map it, in StreamAccount, to a subject of their own
// (an account-level subject mapping), and a configuration without the
// mode has no such mapping. CheckFilteredReads looks for it.
const FilteredModeSubject = "_ebb.mode.filtered"

// filteredModeTarget is what StreamAccount maps FilteredModeSubject to in
// filtered reads mode.
const filteredModeTarget = FilteredModeSubject + ".on"

// ErrNotFilteredReads is wrapped by CheckFilteredReads's error when the
// NATS server's configuration is not in filtered reads mode.
var ErrNotFilteredReads = errors.New("the NATS server's accounts are not in filtered reads mode")

// CheckFilteredReads reports whether the account of nc, which must be a
// connection in StreamAccount (an admin's, as `ebb serve --nats` makes),
// runs a configuration written in filtered reads mode
// (Users.WithFilteredReads(true).NATSConfig()): it answers requests on
// the subject FilteredModeSubject is mapped to and asks on
// FilteredModeSubject. nil means the mapping delivered the request; an
// error wrapping ErrNotFilteredReads that no answer came (no mapping:
// nats-server answers "no responders" at once, or ctx ended first);
// any other error says what failed. ctx bounds the wait: give it a short
// deadline. It proves the marker, not that the accounts were written from
// the same users file.
func CheckFilteredReads(ctx context.Context, nc *nats.Conn) error {
	sub, err := nc.Subscribe(filteredModeTarget, func(m *nats.Msg) { _ = m.Respond(nil) })
	if err != nil {
		return fmt.Errorf("filtered reads check: subscribe %s: %w", filteredModeTarget, err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := nc.FlushWithContext(ctx); err != nil {
		return fmt.Errorf("filtered reads check: flush: %w", err)
	}
	_, err = nc.RequestWithContext(ctx, FilteredModeSubject, nil)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, nats.ErrNoResponders), errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout):
		return fmt.Errorf("%w: a request on %s got no answer (%v): account %s has no mapping of it to %s",
			ErrNotFilteredReads, FilteredModeSubject, err, StreamAccount, filteredModeTarget)
	}
	return fmt.Errorf("filtered reads check: request %s: %w", FilteredModeSubject, err)
}
