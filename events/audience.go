package events

import (
	"fmt"
	"slices"
	"strings"
)

// Sync rules (issue 18) decide, per document, who may read it. The projector
// writes the answer on each change it publishes to CHANGES as the audience:
// a set of principals in the HeaderReaders header, and in HeaderWasReaders
// everyone who was a reader of any earlier state (who may still hold a copy:
// CHANGES keeps one message per document, so a reader offline across several
// moves sees only the last). A server that filters the change feed for a
// user (HTTP pull, the NATS change responder) sends a change to a user one of
// whose principals is in its readers; a user who may hold a copy but is not
// a reader of the new state gets a notice instead (Change.Left), so its local
// copy is removed. A change with
// no HeaderReaders header is about a collection no rule names: every user of
// the tenant reads it, as without rules.
//
// Principals are "*" (every user of the tenant), "u:<user>" and
// "g:<group>", the name written with EncodeToken so that a principal holds
// no space. A header value is the principals, sorted, unique, separated by
// one space; an empty value is an audience of nobody.
const (
	HeaderReaders    = "Ebb-Readers"
	HeaderWasReaders = "Ebb-Was-Readers"
	// HeaderWriterGroups is set by the server, never by a client, on
	// each event it accepts from a user: the writer's groups (from the
	// users file or its login token), as a space-separated list of
	// EncodeToken names, so write rules can name groups. A client's own
	// value is dropped before the event is stored.
	HeaderWriterGroups = "Ebb-Writer-Groups"
)

// Everyone is the principal that names every user of the tenant.
const Everyone = "*"

// UserPrincipal returns the principal that names user.
func UserPrincipal(user string) string { return "u:" + EncodeToken(user) }

// GroupPrincipal returns the principal that names the members of group.
func GroupPrincipal(group string) string { return "g:" + EncodeToken(group) }

// Principals returns the principals of a user who belongs to groups: its
// own, one per group and Everyone.
func Principals(user string, groups []string) []string {
	p := make([]string, 0, len(groups)+2)
	p = append(p, Everyone, UserPrincipal(user))
	for _, g := range groups {
		p = append(p, GroupPrincipal(g))
	}
	return p
}

// EncodeAudience returns the header value of an audience: the principals
// sorted, without repeats, separated by one space.
func EncodeAudience(principals []string) string {
	p := slices.Clone(principals)
	slices.Sort(p)
	return strings.Join(slices.Compact(p), " ")
}

// ParseAudience reads a header value written by EncodeAudience. It refuses
// a value that is not one: an unknown kind of principal, a name that is no
// canonical token, an unsorted or repeated list.
func ParseAudience(v string) ([]string, error) {
	if v == "" {
		return nil, nil
	}
	p := strings.Split(v, " ")
	for i, s := range p {
		if err := checkPrincipal(s); err != nil {
			return nil, fmt.Errorf("parse audience %q: %w", v, err)
		}
		if i > 0 && p[i-1] >= s {
			return nil, fmt.Errorf("parse audience %q: principals not sorted and unique at %q", v, s)
		}
	}
	return p, nil
}

func checkPrincipal(s string) error {
	if s == Everyone {
		return nil
	}
	kind, name, ok := strings.Cut(s, ":")
	if !ok || (kind != "u" && kind != "g") {
		return fmt.Errorf("principal %q: want \"*\", \"u:<user>\" or \"g:<group>\"", s)
	}
	if _, err := DecodeToken(name); err != nil {
		return fmt.Errorf("principal %q: %w", s, err)
	}
	return nil
}

// InAudience reports whether any of a user's principals (Principals) is in
// audience (ParseAudience).
func InAudience(audience, principals []string) bool {
	for _, p := range principals {
		if _, found := slices.BinarySearch(audience, p); found {
			return true
		}
	}
	return false
}
