package auth

import (
	"slices"
	"strings"

	"github.com/nats-io/nats.go"

	"github.com/ebbsync/ebb/events"
)

// Directory tells who a user is at request time, by the name a request's
// routing subject carries (the mapping writes it, not the user): the
// responders that act for a user ask it for the user's groups (the
// publish responder's writer-groups stamp, the change responder's
// filter). *Users is one (the users file); jwtlogin.NATSLogin is one that
// also knows the users of token logins. Identity must be safe for
// concurrent use.
type Directory interface {
	// Identity returns the user called name, false if there is none.
	Identity(name string) (User, bool)
}

var _ Directory = (*Users)(nil)

// WriterGroups returns the events.HeaderWriterGroups value of a writer
// who belongs to groups: each group written with events.EncodeToken, the
// tokens sorted and unique, separated by one space; "" for none.
func WriterGroups(groups []string) string {
	toks := make([]string, 0, len(groups))
	for _, g := range groups {
		toks = append(toks, events.EncodeToken(g))
	}
	slices.Sort(toks)
	return strings.Join(slices.Compact(toks), " ")
}

// StampWriterGroups sets events.HeaderWriterGroups on h to the writer's
// groups (WriterGroups), after removing every value a client sent under
// that name in any letter case; with no groups the header is left
// absent. It is what every path that accepts an event from a user does
// before the event is stored (the publish responder; the HTTP gateway's
// push and document writes), so the header is only ever the server's.
// h must not be nil.
func StampWriterGroups(h nats.Header, groups []string) {
	for k := range h {
		if strings.EqualFold(k, events.HeaderWriterGroups) {
			delete(h, k)
		}
	}
	if v := WriterGroups(groups); v != "" {
		h.Set(events.HeaderWriterGroups, v)
	}
}
