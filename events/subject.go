package events

import (
	"encoding/base64"
	"fmt"
	"strings"
)

// Subject prefixes of the four streams. Each is followed by encoded tokens
// (see EncodeToken): tenant first, so a NATS permission on "<prefix>.<tenant>.>"
// confines a client to its tenant. Event subjects name the writing client
// next, so a permission on "ebb.evt.<tenant>.<client>.>" confines a client
// to writing as itself.
const (
	EventsPrefix   = "ebb.evt"  // ebb.evt.<tenant>.<client>.<collection>.<doc>
	ChangesPrefix  = "ebb.chg"  // ebb.chg.<tenant>.<collection>.<doc>
	ReceiptsPrefix = "ebb.rcpt" // ebb.rcpt.<tenant>.<client>[.<device>]
	DeadPrefix     = "ebb.dead" // ebb.dead.<tenant>
)

// tokenEscape starts every encoded token. It is outside the set of bytes a
// plain token may hold, so plain and encoded tokens can never collide.
const tokenEscape = '~'

var tokenEncoding = base64.RawURLEncoding

// EncodeToken turns any name into one NATS subject token. A name made only of
// ASCII letters, digits, '-' and '_' is its own token; every other name
// (empty, with dots, wildcards, spaces, non-ASCII, ...) becomes '~' followed by
// the unpadded base64url encoding of its bytes. The mapping is reversible by
// DecodeToken and injective.
func EncodeToken(name string) string {
	if isPlainToken(name) {
		return name
	}
	return string(tokenEscape) + tokenEncoding.EncodeToString([]byte(name))
}

// DecodeToken reverses EncodeToken. It refuses any token EncodeToken could not
// have produced, so each name has exactly one token.
func DecodeToken(tok string) (string, error) {
	if tok == "" {
		return "", fmt.Errorf("decode subject token: empty token")
	}
	if tok[0] != tokenEscape {
		if !isPlainToken(tok) {
			return "", fmt.Errorf("decode subject token %q: byte outside [A-Za-z0-9_-] in a plain token", tok)
		}
		return tok, nil
	}
	b, err := tokenEncoding.Strict().DecodeString(tok[1:])
	if err != nil {
		return "", fmt.Errorf("decode subject token %q: %w", tok, err)
	}
	name := string(b)
	// Refuse every token but the canonical one: a plain name written
	// encoded, and the line breaks base64 decoding skips even in strict mode.
	if EncodeToken(name) != tok {
		return "", fmt.Errorf("decode subject token %q: not the canonical encoding of %q", tok, name)
	}
	return name, nil
}

func isPlainToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// EventSubject is the subject a client publishes its event on.
func EventSubject(tenant, client, collection, doc string) string {
	return EventsPrefix + "." + EncodeToken(tenant) + "." + EncodeToken(client) + "." + EncodeToken(collection) + "." + EncodeToken(doc)
}

// ClientEvents is the wildcard of every event subject of one client.
func ClientEvents(tenant, client string) string {
	return EventsPrefix + "." + EncodeToken(tenant) + "." + EncodeToken(client) + ".>"
}

// ChangeSubject is the subject the projector publishes a document's changes on.
func ChangeSubject(tenant, collection, doc string) string {
	return ChangesPrefix + "." + EncodeToken(tenant) + "." + EncodeToken(collection) + "." + EncodeToken(doc)
}

// ReceiptSubject is the subject that carries receipts for the events of a
// client's legacy log (events with no device).
func ReceiptSubject(tenant, client string) string {
	return ReceiptsPrefix + "." + EncodeToken(tenant) + "." + EncodeToken(client)
}

// DeviceReceiptSubject is the subject that carries receipts for the events
// of one device of a client; with an empty device it is ReceiptSubject.
func DeviceReceiptSubject(tenant, client, device string) string {
	if device == "" {
		return ReceiptSubject(tenant, client)
	}
	return ReceiptSubject(tenant, client) + "." + EncodeToken(device)
}

// ClientReceipts is the wildcard of every receipt subject of one client:
// its legacy log's and every device's. A NATS permission to read it confines
// a user to the receipts of its own devices.
func ClientReceipts(tenant, client string) []string {
	s := ReceiptSubject(tenant, client)
	return []string{s, s + ".*"}
}

// DeadSubject is the subject of dead letters for a tenant; use the empty
// tenant ("ebb.dead.~") when the tenant of a message is not known.
func DeadSubject(tenant string) string {
	return DeadPrefix + "." + EncodeToken(tenant)
}

// TenantEvents is the wildcard of every event subject of a tenant.
func TenantEvents(tenant string) string { return EventsPrefix + "." + EncodeToken(tenant) + ".>" }

// TenantChanges is the wildcard of every change subject of a tenant.
func TenantChanges(tenant string) string { return ChangesPrefix + "." + EncodeToken(tenant) + ".>" }

// CollectionChanges is the wildcard of every change subject of one collection.
func CollectionChanges(tenant, collection string) string {
	return ChangesPrefix + "." + EncodeToken(tenant) + "." + EncodeToken(collection) + ".*"
}

// DocAddress names one document: the three names that make its subjects.
type DocAddress struct {
	Tenant     string
	Collection string
	Doc        string
}

// EventAddress is what an event subject names: the writing client and the
// document.
type EventAddress struct {
	Client string
	DocAddress
}

// ParseEventSubject decodes an event subject into the client and document
// it names.
func ParseEventSubject(subject string) (EventAddress, error) {
	names, err := parseSubject(EventsPrefix, subject, "<tenant>.<client>.<collection>.<doc>", 4)
	if err != nil {
		return EventAddress{}, err
	}
	return EventAddress{Client: names[1], DocAddress: DocAddress{Tenant: names[0], Collection: names[2], Doc: names[3]}}, nil
}

// ParseChangeSubject decodes a change subject into the document it addresses.
func ParseChangeSubject(subject string) (DocAddress, error) {
	names, err := parseSubject(ChangesPrefix, subject, "<tenant>.<collection>.<doc>", 3)
	if err != nil {
		return DocAddress{}, err
	}
	return DocAddress{Tenant: names[0], Collection: names[1], Doc: names[2]}, nil
}

// parseSubject decodes the n tokens after prefix.
func parseSubject(prefix, subject, shape string, n int) ([]string, error) {
	rest, ok := strings.CutPrefix(subject, prefix+".")
	if !ok {
		return nil, fmt.Errorf("parse subject %q: want prefix %q", subject, prefix)
	}
	toks := strings.Split(rest, ".")
	if len(toks) != n {
		return nil, fmt.Errorf("parse subject %q: want %s.%s", subject, prefix, shape)
	}
	names := make([]string, n)
	for i, tok := range toks {
		name, err := DecodeToken(tok)
		if err != nil {
			return nil, fmt.Errorf("parse subject %q: %w", subject, err)
		}
		names[i] = name
	}
	return names, nil
}

// TenantOfSubject returns the decoded tenant token of any ebb subject
// ("ebb.<kind>.<tenant>...").
func TenantOfSubject(subject string) (string, error) {
	toks := strings.SplitN(subject, ".", 4)
	if len(toks) < 3 || toks[0] != "ebb" {
		return "", fmt.Errorf("parse subject %q: not an ebb subject", subject)
	}
	return DecodeToken(toks[2])
}
