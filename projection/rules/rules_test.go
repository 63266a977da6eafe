package rules_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/projection/rules"
)

const example = `
collections:
  lists:
    read:  [{user: owner}, {group: team}]
    write: [{user: owner}]
  todos:
    follow: {collection: lists, field: list}
  notes:
    read: [{everyone: true}]
    write: [{user: owner}]
`

func mustParse(tb testing.TB, src string) *rules.Set {
	tb.Helper()
	s, err := rules.Parse([]byte(src))
	if err != nil {
		tb.Fatalf("parse: %v", err)
	}
	return s
}

func fields(tb testing.TB, kv map[string]any) events.Fields {
	tb.Helper()
	f := events.Fields{}
	for k, v := range kv {
		b, err := json.Marshal(v)
		if err != nil {
			tb.Fatal(err)
		}
		f[k] = b
	}
	return f
}

// docs is a Lookup over a fixed set of documents.
type docs map[string]events.Fields

func (d docs) lookup(_ context.Context, c, id string) (events.Fields, bool, error) {
	f, ok := d[c+"/"+id]
	return f, ok, nil
}

func TestParse_BadFilesNameWhere(t *testing.T) {
	tests := []struct {
		name, src                string
		coll, rule, field, words string
	}{
		{"not yaml", "collections: [", "", "", "", "not YAML"},
		{"no collections", "default: allow\n", "", "", "collections", "names no collection"},
		{"bad default", "default: maybe\ncollections: {a: {read: []}}", "", "", "default", "allow or deny"},
		{"unknown top key", "colections: {}\n", "", "", "colections", "unknown key"},
		{"unknown collection key", "collections: {lists: {reed: []}}", "lists", "", "reed", "unknown key"},
		{"no read", "collections: {lists: {write: [{user: owner}]}}", "lists", "read", "", "needs read rules or follow"},
		{"read not a list", "collections: {lists: {read: {user: owner}}}", "lists", "read", "", "list of rules"},
		{"rule of two kinds", "collections: {lists: {read: [{user: owner, group: team}]}}", "lists", "read[0]", "", "exactly one"},
		{"rule of no kind", "collections: {lists: {read: [{}]}}", "lists", "read[0]", "", "exactly one"},
		{"unknown rule key", "collections: {lists: {read: [{role: admin}]}}", "lists", "read[0]", "role", "unknown key"},
		{"empty field", "collections: {lists: {read: [{user: owner}], write: [{group: ''}]}}", "lists", "write[0]", "group", "name a document field"},
		{"everyone false", "collections: {lists: {read: [{everyone: false}]}}", "lists", "read[0]", "everyone", "want true"},
		{"follow and read", "collections: {lists: {read: []}, todos: {read: [], follow: {collection: lists, field: list}}}", "todos", "follow", "", "not both"},
		{"follow unknown", "collections: {todos: {follow: {collection: lists, field: list}}}", "todos", "follow", "collection", "does not name"},
		{"follow self", "collections: {todos: {follow: {collection: todos, field: list}}}", "todos", "follow", "collection", "itself"},
		{"follow chain", "collections: {lists: {read: []}, todos: {follow: {collection: lists, field: list}}, notes: {follow: {collection: todos, field: todo}}}", "notes", "follow", "collection", "chains"},
		{"follow no field", "collections: {lists: {read: []}, todos: {follow: {collection: lists}}}", "todos", "follow", "field", "name a document field"},
		{"follow unknown key", "collections: {lists: {read: []}, todos: {follow: {collection: lists, field: list, via: x}}}", "todos", "follow", "via", "unknown key"},
		{"bad collection name", "collections: {\"\": {read: []}}", "", "", "", "must not be empty"},
		{"two documents", "collections: {a: {read: []}}\n---\ncollections: {b: {read: []}}\n", "", "", "", "more than one"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := rules.Parse([]byte(tt.src))
			if !errors.Is(err, rules.ErrInvalid) {
				t.Fatalf("Parse = %v, want ErrInvalid", err)
			}
			var e *rules.Error
			if !errors.As(err, &e) {
				t.Fatalf("Parse = %T, want *rules.Error", err)
			}
			if e.Collection != tt.coll || e.Rule != tt.rule || e.Field != tt.field {
				t.Errorf("error at collection %q rule %q field %q, want %q %q %q (%v)", e.Collection, e.Rule, e.Field, tt.coll, tt.rule, tt.field, err)
			}
			if !strings.Contains(err.Error(), tt.words) {
				t.Errorf("error %q does not say %q", err, tt.words)
			}
		})
	}
}

func TestAudience(t *testing.T) {
	s := mustParse(t, example)
	ctx := context.Background()
	store := docs{
		"lists/l1": fields(t, map[string]any{"owner": "ann", "team": []any{"red", 7, "blue", ""}}),
	}
	tests := []struct {
		name       string
		collection string
		fields     events.Fields
		want       []string
		ruled      bool
	}{
		{"owner and team", "lists", store["lists/l1"], []string{"g:blue", "g:red", "u:ann"}, true},
		{"missing fields: nobody", "lists", fields(t, map[string]any{"title": "x"}), nil, true},
		{"owner not a string: nobody", "lists", fields(t, map[string]any{"owner": 3}), nil, true},
		{"user name encoded", "lists", fields(t, map[string]any{"owner": "a b"}), []string{events.UserPrincipal("a b")}, true},
		{"follower as its parent", "todos", fields(t, map[string]any{"list": "l1"}), []string{"g:blue", "g:red", "u:ann"}, true},
		{"follower of a missing parent: nobody", "todos", fields(t, map[string]any{"list": "l9"}), nil, true},
		{"follower without the field: nobody", "todos", fields(t, map[string]any{}), nil, true},
		{"everyone", "notes", fields(t, map[string]any{}), []string{"*"}, true},
		{"unnamed collection is tenant-wide", "other", fields(t, map[string]any{"owner": "ann"}), nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ruled, err := s.Audience(ctx, tt.collection, tt.fields, store.lookup)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tt.want) || ruled != tt.ruled {
				t.Errorf("Audience = %q ruled %v, want %q ruled %v", got, ruled, tt.want, tt.ruled)
			}
			if _, err := events.ParseAudience(events.EncodeAudience(got)); err != nil {
				t.Errorf("audience does not encode as a header: %v", err)
			}
		})
	}
}

func TestMayWrite(t *testing.T) {
	s := mustParse(t, example+"  shared:\n    read: [{group: team}]\n")
	ctx := context.Background()
	store := docs{"lists/l1": fields(t, map[string]any{"owner": "ann", "team": "red"})}
	ann := rules.Writer{Name: "ann"}
	bob := rules.Writer{Name: "bob", Groups: []string{"red"}}
	tests := []struct {
		name       string
		collection string
		fields     events.Fields
		w          rules.Writer
		refused    string // "" allowed
	}{
		{"owner writes", "lists", store["lists/l1"], ann, ""},
		{"team member may read, not write", "lists", store["lists/l1"], bob, "write needs you to be the user in field owner"},
		{"follower written as its parent", "todos", fields(t, map[string]any{"list": "l1"}), ann, ""},
		{"follower refused as its parent", "todos", fields(t, map[string]any{"list": "l1"}), bob, "write needs you to be the user in field owner"},
		{"follower of a missing parent refused", "todos", fields(t, map[string]any{"list": "nope"}), ann, "does not exist"},
		{"follower without its field refused", "todos", fields(t, map[string]any{}), ann, "holds no document id"},
		{"no write rules: the readers write", "shared", fields(t, map[string]any{"team": "red"}), bob, ""},
		{"no write rules: others refused", "shared", fields(t, map[string]any{"team": "red"}), ann, "be in the group in field team"},
		{"unnamed collection writable", "other", nil, bob, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s.MayWrite(ctx, tt.collection, tt.fields, tt.w, store.lookup)
			if err != nil {
				t.Fatal(err)
			}
			if (tt.refused == "") != (got == "") || !strings.Contains(got, tt.refused) {
				t.Errorf("MayWrite = %q, want refusal containing %q", got, tt.refused)
			}
		})
	}
}

func TestDefaultDeny(t *testing.T) {
	s := mustParse(t, "default: deny\ncollections: {notes: {read: [{everyone: true}]}}\n")
	aud, ruled, err := s.Audience(context.Background(), "other", nil, nil)
	if err != nil || !ruled || aud != nil {
		t.Errorf("Audience of an unnamed collection under deny = %q, %v, %v; want nobody, ruled", aud, ruled, err)
	}
	if why, _ := s.MayWrite(context.Background(), "other", nil, rules.Writer{Name: "ann"}, nil); !strings.Contains(why, "default: deny") {
		t.Errorf("MayWrite under deny = %q", why)
	}
	if why, _ := s.MayWrite(context.Background(), "notes", nil, rules.Writer{Name: "ann"}, nil); why != "" {
		t.Errorf("MayWrite of everyone's notes = %q", why)
	}
}

func TestFingerprint_MeaningNotText(t *testing.T) {
	a := mustParse(t, example)
	b := mustParse(t, "# the same rules\ncollections:\n  notes: {read: [{everyone: true}], write: [{user: owner}]}\n  todos: {follow: {field: list, collection: lists}}\n  lists: {write: [{user: owner}], read: [{user: owner}, {group: team}]}\n")
	c := mustParse(t, strings.Replace(example, "write: [{user: owner}]", "write: [{group: team}]", 1))
	if a.Fingerprint() != b.Fingerprint() {
		t.Errorf("same rules, other text: fingerprints differ")
	}
	if a.Fingerprint() == c.Fingerprint() {
		t.Errorf("other rules: same fingerprint")
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "rules.yaml")
	if err := os.WriteFile(p, []byte(example), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := rules.Load(p); err != nil {
		t.Fatal(err)
	}
	if _, err := rules.Load(filepath.Join(dir, "none.yaml")); err == nil || errors.Is(err, rules.ErrInvalid) {
		t.Errorf("Load of a missing file = %v, want a read error", err)
	}
	if err := os.WriteFile(p, []byte("collections: {lists: {read: [{user: ''}]}}"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := rules.Load(p); !errors.Is(err, rules.ErrInvalid) || !strings.Contains(err.Error(), p) {
		t.Errorf("Load of a bad file = %v, want ErrInvalid naming the path", err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(example))
	f.Add([]byte("default: deny\ncollections: {a: {read: []}}"))
	f.Add([]byte("collections: {a: {read: [{group: g}]}, b: {follow: {collection: a, field: x}}}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := rules.Parse(data)
		if err != nil {
			if !errors.Is(err, rules.ErrInvalid) {
				t.Fatalf("Parse error %v does not wrap ErrInvalid", err)
			}
			return
		}
		if len(s.Fingerprint()) != 64 {
			t.Fatalf("fingerprint %q", s.Fingerprint())
		}
		// Any accepted set answers without panicking, and its audiences
		// are valid header values.
		for _, c := range []string{"a", "b", "lists", "todos", "notes"} {
			aud, _, err := s.Audience(context.Background(), c, events.Fields{"x": json.RawMessage(`"p"`)}, docs{}.lookup)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := events.ParseAudience(events.EncodeAudience(aud)); err != nil {
				t.Fatal(err)
			}
			_, _ = s.MayWrite(context.Background(), c, nil, rules.Writer{Name: "u"}, docs{}.lookup)
		}
	})
}

// deleted is a Lookup whose documents are all deleted: a parent's fields
// are what its tombstone kept (nil: nothing).
type deleted map[string]events.Fields

func (d deleted) lookup(_ context.Context, c, id string) (events.Fields, bool, error) {
	return d[c+"/"+id], false, nil
}

// TestKept_DeletedParentJudgesWritesNotReads: a tombstone keeps the fields
// its write rules read (only for a collection something follows); a
// follower of a deleted parent is written by whoever could write what it
// kept, read by nobody, and written by nobody when nothing was kept.
func TestKept_DeletedParentJudgesWritesNotReads(t *testing.T) {
	s := mustParse(t, example)
	ctx := context.Background()
	list := fields(t, map[string]any{"owner": "ann", "team": "red", "title": "secret"})
	kept := s.Kept("lists", list)
	if len(kept) != 1 || string(kept["owner"]) != `"ann"` {
		t.Fatalf("Kept(lists) = %v, want only owner", kept)
	}
	if k := s.Kept("notes", fields(t, map[string]any{"owner": "ann"})); k != nil {
		t.Errorf("Kept(notes), which nothing follows = %v, want nil", k)
	}
	everyone := mustParse(t, "collections:\n  lists: {read: [{everyone: true}]}\n  todos: {follow: {collection: lists, field: list}}\n")
	if k := everyone.Kept("lists", list); k == nil || len(k) != 0 {
		t.Errorf("Kept under everyone = %v (nil %v), want empty, not nil", k, k == nil)
	}
	store := deleted{"lists/l1": kept, "lists/l2": nil}
	todo := func(l string) events.Fields { return fields(t, map[string]any{"list": l}) }
	for _, tt := range []struct {
		name    string
		fields  events.Fields
		w       rules.Writer
		refused string
	}{
		{"its last writer", todo("l1"), rules.Writer{Name: "ann"}, ""},
		{"a reader who could not write it", todo("l1"), rules.Writer{Name: "bob", Groups: []string{"red"}}, "be the user in field owner"},
		{"nothing kept", todo("l2"), rules.Writer{Name: "ann"}, "does not exist"},
		{"never existed", todo("l9"), rules.Writer{Name: "ann"}, "does not exist"},
	} {
		got, err := s.MayWrite(ctx, "todos", tt.fields, tt.w, store.lookup)
		if err != nil {
			t.Fatal(err)
		}
		if (tt.refused == "") != (got == "") || !strings.Contains(got, tt.refused) {
			t.Errorf("%s: MayWrite = %q, want refusal containing %q", tt.name, got, tt.refused)
		}
	}
	aud, ruled, err := s.Audience(ctx, "todos", todo("l1"), store.lookup)
	if err != nil || !ruled || aud != nil {
		t.Errorf("Audience of a deleted parent's follower = %q ruled %v err %v, want nobody", aud, ruled, err)
	}
}
