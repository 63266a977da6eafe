package rules

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/ebbsync/ebb/events"
)

// ErrInvalid is wrapped by every error about a bad rules file.
var ErrInvalid = errors.New("invalid sync rules")

// Error is a bad rules file: what is wrong, and where. Collection, Rule and
// Field are empty when the problem is not inside one.
type Error struct {
	Collection string // the collection whose entry is wrong
	Rule       string // "read[1]", "write[0]", "follow", ...
	Field      string // the key or document field the problem is about
	Reason     string
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("sync rules")
	if e.Collection != "" {
		fmt.Fprintf(&b, ": collection %q", e.Collection)
	}
	if e.Rule != "" {
		fmt.Fprintf(&b, ", rule %s", e.Rule)
	}
	if e.Field != "" {
		fmt.Fprintf(&b, ", field %q", e.Field)
	}
	b.WriteString(": ")
	b.WriteString(e.Reason)
	return b.String()
}

// Unwrap makes every Error match ErrInvalid.
func (e *Error) Unwrap() error { return ErrInvalid }

// Kind is what a rule grants.
type Kind string

const (
	KindUser     Kind = "user"     // the user named in Field
	KindGroup    Kind = "group"    // members of the group named in Field
	KindEveryone Kind = "everyone" // every user of the tenant
)

// Rule grants read or write access.
type Rule struct {
	Kind  Kind   `json:"kind"`
	Field string `json:"field,omitempty"` // the document field that names the user or group
}

// Follow makes a collection read and written as its parent.
type Follow struct {
	Collection string `json:"collection"` // the parent collection
	Field      string `json:"field"`      // the child's field holding the parent's id
}

// Collection is one collection's rules: Read and Write, or Follow.
type Collection struct {
	Read   []Rule  `json:"read,omitempty"`
	Write  []Rule  `json:"write"` // the Read rules when the file has no write
	Follow *Follow `json:"follow,omitempty"`
}

// Set is a parsed rules file. It is immutable and safe for concurrent use.
type Set struct {
	deny        bool
	collections map[string]*Collection
	followers   map[string][]Child // parent collection -> collections that follow it
	fingerprint string
}

// Child is a collection that follows a parent, by Field.
type Child struct{ Collection, Field string }

// Writer is who wrote an event: its user name and groups.
type Writer struct {
	Name   string
	Groups []string
}

// Lookup reads a document of the same tenant: its fields and whether it
// exists (created and not deleted). The rules call it for a follow's parent.
// For a parent that does not exist, fields non-nil (possibly empty) are
// what its tombstone kept of its last live state for the write rules
// ([Set.Kept]): writes of its followers are judged on them, reads never
// (a deleted parent's followers are read by nobody). nil fields: nothing
// kept (never created, or deleted before anything was kept), and nobody
// may write its followers.
type Lookup func(ctx context.Context, collection, id string) (fields events.Fields, exists bool, err error)

// Load reads and parses the rules file at path.
func Load(path string) (*Set, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load sync rules: %w", err)
	}
	s, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("load sync rules %s: %w", path, err)
	}
	return s, nil
}

// Parse parses a rules file (see the package doc). Every problem is an
// *Error wrapping ErrInvalid.
func Parse(data []byte) (*Set, error) {
	var root yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&root); err != nil {
		return nil, &Error{Reason: fmt.Sprintf("not YAML: %v", err)}
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return nil, &Error{Reason: "more than one YAML document"}
	}
	top := &root
	if top.Kind == yaml.DocumentNode && len(top.Content) == 1 {
		top = top.Content[0]
	}
	keys, err := mapping(top, "the file", "default", "collections")
	if err != nil {
		return nil, err
	}
	s := &Set{collections: map[string]*Collection{}, followers: map[string][]Child{}}
	if n := keys["default"]; n != nil {
		switch v := scalar(n); v {
		case "allow":
		case "deny":
			s.deny = true
		default:
			return nil, &Error{Field: "default", Reason: fmt.Sprintf("%q: want allow or deny", v)}
		}
	}
	cs := keys["collections"]
	if cs == nil || cs.Kind != yaml.MappingNode || len(cs.Content) == 0 {
		return nil, &Error{Field: "collections", Reason: "the file names no collection: want a mapping of collection names to their rules"}
	}
	for i := 0; i+1 < len(cs.Content); i += 2 {
		name := cs.Content[i].Value
		if err := events.ValidateName("collection", name, events.DefaultLimits.MaxNameBytes); err != nil {
			return nil, &Error{Collection: name, Reason: err.Error()}
		}
		if _, dup := s.collections[name]; dup {
			return nil, &Error{Collection: name, Reason: "named twice"}
		}
		c, err := parseCollection(name, cs.Content[i+1])
		if err != nil {
			return nil, err
		}
		s.collections[name] = c
	}
	for name, c := range s.collections {
		if c.Follow == nil {
			continue
		}
		p, ok := s.collections[c.Follow.Collection]
		switch {
		case c.Follow.Collection == name:
			return nil, &Error{Collection: name, Rule: "follow", Field: "collection", Reason: "a collection cannot follow itself"}
		case !ok:
			return nil, &Error{Collection: name, Rule: "follow", Field: "collection", Reason: fmt.Sprintf("follows %q, which the file does not name", c.Follow.Collection)}
		case p.Follow != nil:
			return nil, &Error{Collection: name, Rule: "follow", Field: "collection", Reason: fmt.Sprintf("follows %q, which itself follows %q: follow chains are refused (depth 1)", c.Follow.Collection, p.Follow.Collection)}
		}
		s.followers[c.Follow.Collection] = append(s.followers[c.Follow.Collection], Child{Collection: name, Field: c.Follow.Field})
	}
	for _, ch := range s.followers {
		slices.SortFunc(ch, func(a, b Child) int { return strings.Compare(a.Collection, b.Collection) })
	}
	canon, err := json.Marshal(struct {
		Deny        bool                   `json:"deny"`
		Collections map[string]*Collection `json:"collections"`
	}{s.deny, s.collections})
	if err != nil {
		return nil, fmt.Errorf("sync rules: fingerprint: %w", err)
	}
	sum := sha256.Sum256(canon)
	s.fingerprint = hex.EncodeToString(sum[:])
	return s, nil
}

func parseCollection(name string, n *yaml.Node) (*Collection, error) {
	keys, err := mapping(n, fmt.Sprintf("collection %q", name), "read", "write", "follow")
	if err != nil {
		var e *Error
		if errors.As(err, &e) {
			e.Collection = name
		}
		return nil, err
	}
	c := &Collection{}
	if f := keys["follow"]; f != nil {
		if keys["read"] != nil || keys["write"] != nil {
			return nil, &Error{Collection: name, Rule: "follow", Reason: "a collection has follow or read/write rules, not both"}
		}
		fk, err := mapping(f, "follow", "collection", "field")
		if err != nil {
			return nil, at(err, name, "follow")
		}
		c.Follow = &Follow{Collection: scalar(fk["collection"]), Field: scalar(fk["field"])}
		if c.Follow.Collection == "" {
			return nil, &Error{Collection: name, Rule: "follow", Field: "collection", Reason: "missing: name the parent collection"}
		}
		if err := checkField(c.Follow.Field); err != nil {
			return nil, &Error{Collection: name, Rule: "follow", Field: "field", Reason: err.Error()}
		}
		return c, nil
	}
	if keys["read"] == nil {
		return nil, &Error{Collection: name, Rule: "read", Reason: "missing: a collection needs read rules or follow"}
	}
	if c.Read, err = parseRules(name, "read", keys["read"]); err != nil {
		return nil, err
	}
	c.Write = c.Read
	if w := keys["write"]; w != nil {
		if c.Write, err = parseRules(name, "write", w); err != nil {
			return nil, err
		}
	}
	if c.Read == nil {
		c.Read = []Rule{}
	}
	if c.Write == nil {
		c.Write = []Rule{}
	}
	return c, nil
}

func parseRules(coll, what string, n *yaml.Node) ([]Rule, error) {
	if n.Kind != yaml.SequenceNode {
		return nil, &Error{Collection: coll, Rule: what, Reason: "want a list of rules, e.g. [{user: owner}]"}
	}
	out := make([]Rule, 0, len(n.Content))
	for i, rn := range n.Content {
		where := fmt.Sprintf("%s[%d]", what, i)
		keys, err := mapping(rn, "a rule", "user", "group", "everyone")
		if err != nil {
			return nil, at(err, coll, where)
		}
		if len(keys) != 1 {
			return nil, &Error{Collection: coll, Rule: where, Reason: "a rule is exactly one of {user: FIELD}, {group: FIELD}, {everyone: true}"}
		}
		switch {
		case keys["everyone"] != nil:
			if v := keys["everyone"]; v.Kind != yaml.ScalarNode || v.Value != "true" {
				return nil, &Error{Collection: coll, Rule: where, Field: "everyone", Reason: fmt.Sprintf("%q: want true (leave the rule out to grant nothing)", scalar(v))}
			}
			out = append(out, Rule{Kind: KindEveryone})
		default:
			kind := KindUser
			if keys["group"] != nil {
				kind = KindGroup
			}
			f := scalar(keys[string(kind)])
			if err := checkField(f); err != nil {
				return nil, &Error{Collection: coll, Rule: where, Field: string(kind), Reason: err.Error()}
			}
			out = append(out, Rule{Kind: kind, Field: f})
		}
	}
	return out, nil
}

func checkField(f string) error {
	if f == "" {
		return errors.New("missing: name a document field")
	}
	return events.ValidateName("field", f, events.DefaultLimits.MaxFieldNameBytes)
}

// at fills in where a nested error happened.
func at(err error, coll, rule string) error {
	var e *Error
	if errors.As(err, &e) {
		e.Collection, e.Rule = coll, rule
	}
	return err
}

// mapping checks that n is a mapping whose keys are among allowed and
// returns its values by key.
func mapping(n *yaml.Node, what string, allowed ...string) (map[string]*yaml.Node, error) {
	if n == nil || n.Kind != yaml.MappingNode {
		return nil, &Error{Reason: fmt.Sprintf("%s: want a mapping with keys %s", what, strings.Join(allowed, ", "))}
	}
	out := map[string]*yaml.Node{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i].Value
		if !slices.Contains(allowed, k) {
			return nil, &Error{Field: k, Reason: fmt.Sprintf("unknown key in %s (want %s)", what, strings.Join(allowed, ", "))}
		}
		if _, dup := out[k]; dup {
			return nil, &Error{Field: k, Reason: fmt.Sprintf("key given twice in %s", what)}
		}
		out[k] = n.Content[i+1]
	}
	return out, nil
}

func scalar(n *yaml.Node) string {
	if n == nil || n.Kind != yaml.ScalarNode {
		return ""
	}
	return n.Value
}

// Fingerprint identifies the rule set's meaning (not its text: comments,
// order and spacing do not change it); "" for a nil Set (no rules).
func (s *Set) Fingerprint() string {
	if s == nil {
		return ""
	}
	return s.fingerprint
}

// Ruled reports whether the rules decide who reads and writes collection:
// a collection the file names, or any collection under default: deny. A
// nil Set rules nothing; Audience and MayWrite then grant everything.
func (s *Set) Ruled(collection string) bool {
	if s == nil {
		return false
	}
	_, ok := s.collections[collection]
	return ok || s.deny
}

// Collection returns the rules of a collection the file names.
func (s *Set) Collection(name string) (Collection, bool) {
	c, ok := s.collections[name]
	if !ok {
		return Collection{}, false
	}
	return *c, true
}

// Followers returns the collections that follow parent, in name order.
// A nil Set has none.
func (s *Set) Followers(parent string) []Child {
	if s == nil {
		return nil
	}
	return slices.Clone(s.followers[parent])
}

// Parent returns the document a follower's state follows: the parent
// collection and the id in the follow field. ok is false when collection
// follows nothing or the field holds no string (nobody then).
func (s *Set) Parent(collection string, fields events.Fields) (parent, id string, follows, ok bool) {
	c, named := s.collections[collection]
	if !named || c.Follow == nil {
		return "", "", false, false
	}
	var v string
	if raw, has := fields[c.Follow.Field]; has && json.Unmarshal(raw, &v) == nil && v != "" {
		return c.Follow.Collection, v, true, true
	}
	return c.Follow.Collection, "", true, false
}

// Kept returns what a tombstone of collection keeps of its last live
// state, whose fields are fields, so that writes of its followers can be
// judged after it is deleted (see Lookup): the values of the fields its
// write rules read, as a non-nil map (empty when they read none, as under
// {everyone: true}). nil when no collection follows collection: nothing
// needs it. The rest of the state is not kept.
func (s *Set) Kept(collection string, fields events.Fields) events.Fields {
	if s == nil || len(s.followers[collection]) == 0 {
		return nil
	}
	c := s.collections[collection]
	if c == nil {
		return nil
	}
	out := events.Fields{}
	for _, r := range c.Write {
		if v, ok := fields[r.Field]; ok && r.Field != "" {
			out[r.Field] = v
		}
	}
	return out
}

// judged returns the rules that decide a document of collection with
// fields, and the fields they read: the parent's for a follower (nil
// rules and ok false: nobody).
// A follower of a deleted parent is judged, for a write only, on what the
// parent's tombstone kept (see Lookup).
func (s *Set) judged(ctx context.Context, collection string, fields events.Fields, lookup Lookup, write bool) (c *Collection, f events.Fields, why string, err error) {
	c = s.collections[collection]
	if c == nil {
		return nil, nil, "", nil
	}
	if c.Follow == nil {
		return c, fields, "", nil
	}
	pc, id, _, ok := s.Parent(collection, fields)
	if !ok {
		return nil, nil, fmt.Sprintf("it follows collection %s by field %s, which holds no document id", pc, c.Follow.Field), nil
	}
	if lookup == nil {
		return nil, nil, fmt.Sprintf("its parent %s/%s cannot be read", pc, id), nil
	}
	pf, exists, err := lookup(ctx, pc, id)
	if err != nil {
		return nil, nil, "", fmt.Errorf("sync rules: read parent %s/%s of a %s document: %w", pc, id, collection, err)
	}
	if !exists {
		if write && pf != nil {
			return s.collections[pc], pf, "", nil // a deleted parent: who could write its last live state
		}
		return nil, nil, fmt.Sprintf("its parent %s/%s (field %s) does not exist", pc, id, c.Follow.Field), nil
	}
	return s.collections[pc], pf, "", nil
}

// Audience returns the principals that may read a document of collection
// whose state has fields (sorted, unique; nil: nobody), and whether the
// rules decide the collection at all (ruled false: tenant-wide, no
// audience). lookup reads a follow's parent. The only errors are lookup's.
func (s *Set) Audience(ctx context.Context, collection string, fields events.Fields, lookup Lookup) (audience []string, ruled bool, err error) {
	if !s.Ruled(collection) {
		return nil, false, nil
	}
	c, f, _, err := s.judged(ctx, collection, fields, lookup, false)
	if err != nil || c == nil {
		return nil, true, err
	}
	var p []string
	for _, r := range c.Read {
		switch r.Kind {
		case KindEveryone:
			p = append(p, events.Everyone)
		case KindUser:
			for _, n := range names(f[r.Field]) {
				p = append(p, events.UserPrincipal(n))
			}
		case KindGroup:
			for _, n := range names(f[r.Field]) {
				p = append(p, events.GroupPrincipal(n))
			}
		}
	}
	if len(p) == 0 {
		return nil, true, nil
	}
	slices.Sort(p)
	return slices.Compact(p), true, nil
}

// MayWrite judges whether w may write a document of collection whose state
// (before or after the write) has fields. It returns "" when the write is
// allowed, else why not, naming the rules ("write needs you to be the user
// in field owner"). A collection the rules do not decide is writable by
// everyone. The only errors are lookup's.
func (s *Set) MayWrite(ctx context.Context, collection string, fields events.Fields, w Writer, lookup Lookup) (refusal string, err error) {
	if !s.Ruled(collection) {
		return "", nil
	}
	if _, named := s.collections[collection]; !named {
		return "the rules deny every collection they do not name (default: deny)", nil
	}
	c, f, why, err := s.judged(ctx, collection, fields, lookup, true)
	if err != nil {
		return "", err
	}
	if c == nil {
		return "nobody may write it: " + why, nil
	}
	for _, r := range c.Write {
		switch r.Kind {
		case KindEveryone:
			return "", nil
		case KindUser:
			if slices.Contains(names(f[r.Field]), w.Name) {
				return "", nil
			}
		case KindGroup:
			ns := names(f[r.Field])
			for _, g := range w.Groups {
				if slices.Contains(ns, g) {
					return "", nil
				}
			}
		}
	}
	if len(c.Write) == 0 {
		return "nobody may write it (no write rule)", nil
	}
	needs := make([]string, len(c.Write))
	for i, r := range c.Write {
		if r.Kind == KindGroup {
			needs[i] = "be in the group in field " + r.Field
		} else {
			needs[i] = "be the user in field " + r.Field
		}
	}
	return "write needs you to " + strings.Join(needs, ", or to "), nil
}

// names reads a field as a list of names: a string, or the non-empty
// strings of a list. Anything else names nobody.
func names(raw json.RawMessage) []string {
	if len(raw) == 0 {
		return nil
	}
	var one string
	if json.Unmarshal(raw, &one) == nil {
		if one == "" {
			return nil
		}
		return []string{one}
	}
	var many []any
	if json.Unmarshal(raw, &many) != nil {
		return nil
	}
	out := make([]string, 0, len(many))
	for _, v := range many {
		if s, ok := v.(string); ok && s != "" {
			out = append(out, s)
		}
	}
	return out
}
