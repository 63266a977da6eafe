package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/ebbsync/ebb/deploy/gateway"
	"github.com/ebbsync/ebb/events"
)

// writeOne pushes one put of coll/id from p and waits for its receipt.
func writeOne(t *testing.T, p *phone, coll, id string, baseVersion uint64, fields string) *events.Receipt {
	t.Helper()
	e := p.event(events.OpPut, coll, id, baseVersion, fields)
	if st := p.push(e); st[0] != gateway.StatusAccepted {
		t.Fatalf("push: %v", st)
	}
	return p.receipt(e.ID)
}

// phoneBook keeps one phone per client and server, so client sequences
// keep rising across writes.
type phoneBook struct {
	t      *testing.T
	phones map[string]*phone
}

func (b *phoneBook) get(base, client string) *phone {
	if p, ok := b.phones[client]; ok && p.base == base {
		return p
	}
	p := newPhone(b.t, base, client)
	if old, ok := b.phones[client]; ok {
		p.seq = old.seq // a restarted server, the same device
	}
	b.phones[client] = p
	return p
}

// The README's Observability step after its Quickstart: a server started
// without --policy on a view built under todos=manual serves it under the
// recorded policies instead of refusing to start.
func TestServe_UsesRecordedPolicies(t *testing.T) {
	book := &phoneBook{t: t, phones: map[string]*phone{}}
	phones := book.get
	data := t.TempDir()
	s := serveInProcess(t, data, "--policy", "todos=manual")
	writeOne(t, phones(s.http, "c1"), "todos", "t1", 0, `{"title":"milk"}`)
	if err := s.stop(); err != nil {
		t.Fatal(err)
	}

	s = serveInProcess(t, data) // no policy flags
	if !strings.Contains(s.stderr.String(), "using those recorded in the data directory") {
		t.Fatalf("serve does not say it uses the recorded policies:\n%s", s.stderr.String())
	}
	// todos is still manual: two writes on version 1 leave a conflict open.
	writeOne(t, phones(s.http, "c1"), "todos", "t1", 1, `{"title":"oat milk"}`)
	if r := writeOne(t, phones(s.http, "c2"), "todos", "t1", 1, `{"title":"soy milk"}`); r.Outcome != events.OutcomeConflict {
		t.Fatalf("stale write under the recorded manual policy: outcome %s, want conflict", r.Outcome)
	}
	if err := s.stop(); err != nil {
		t.Fatal(err)
	}
	if pc := mustLoadPolicies(t, data); pc.Collections["todos"] != "manual" || pc.Default != "lww" {
		t.Fatalf("recorded policies changed: %+v", pc)
	}
	out, stderr, code := runIn(t, nil, "verify", "--data", data, "--json")
	var rec verifyRecord
	if code != 0 || json.Unmarshal([]byte(out), &rec) != nil || !rec.OK || rec.Checkpoint != 3 || rec.Policies != "default=lww todos=manual" {
		t.Fatalf("verify --json: exit %d %s %s", code, out, stderr)
	}
}

// `ebb policy set` changes a policy on purpose, offline, where ebb verify
// can still replay the view, and refuses where it could not.
func TestPolicySet(t *testing.T) {
	book := &phoneBook{t: t, phones: map[string]*phone{}}
	phones := book.get
	data := t.TempDir()
	s := serveInProcess(t, data, "--policy", "todos=manual")
	writeOne(t, phones(s.http, "c1"), "todos", "t1", 0, `{"title":"milk"}`)

	// Not while a server runs on the directory.
	if _, stderr, code := runIn(t, nil, "policy", "set", "notes", "merge", "--data", data); code != 1 || !strings.Contains(stderr, "ebb serve") {
		t.Fatalf("policy set while serving: %d %q", code, stderr)
	}
	if err := s.stop(); err != nil {
		t.Fatal(err)
	}

	// A collection without events: allowed, recorded with the sequence.
	if out, stderr, code := runIn(t, nil, "policy", "set", "notes", "merge", "--data", data); code != 0 || !strings.Contains(out, "notes: merge (changed)") {
		t.Fatalf("policy set notes merge: %d %q %q", code, out, stderr)
	}
	pc := mustLoadPolicies(t, data)
	if pc.Collections["notes"] != "merge" || pc.Collections["todos"] != "manual" || len(pc.History) != 1 ||
		pc.History[0].After != 1 || pc.History[0].From != "lww" || pc.History[0].To != "merge" {
		t.Fatalf("recorded after set: %+v", pc)
	}
	// A collection with events: refused in one line, nothing recorded.
	_, stderr, code := runIn(t, nil, "policy", "set", "todos", "lww", "--data", data)
	if code != 1 || !strings.Contains(stderr, "the policy of a collection with events cannot change") || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
		t.Fatalf("policy set todos lww: %d %q", code, stderr)
	}
	if pc := mustLoadPolicies(t, data); pc.Collections["todos"] != "manual" {
		t.Fatalf("refused change recorded: %+v", pc)
	}
	if _, stderr, code := runIn(t, nil, "policy", "set", "todos", "bogus", "--data", data); code != 2 || !strings.Contains(stderr, "unknown conflict policy") {
		t.Fatalf("unknown policy: %d %q", code, stderr)
	}
	var show policyRecord
	if out, _, code := runIn(t, nil, "policy", "show", "--data", data, "--json"); code != 0 || json.Unmarshal([]byte(out), &show) != nil ||
		show.Collections["notes"] != "merge" || len(show.History) != 1 {
		t.Fatalf("policy show --json: %d %s", code, out)
	}

	// The next serve, given no policies, applies the new one; verify agrees.
	s = serveInProcess(t, data)
	writeOne(t, phones(s.http, "c1"), "notes", "n1", 0, `{"text":"a","colour":"white"}`)
	writeOne(t, phones(s.http, "c1"), "notes", "n1", 1, `{"text":"b","colour":"white"}`)
	if r := writeOne(t, phones(s.http, "c2"), "notes", "n1", 1, `{"text":"a","colour":"blue"}`); r.Outcome != events.OutcomeMerged {
		t.Fatalf("stale write on notes after policy set merge: outcome %s, want merged", r.Outcome)
	}
	if err := s.stop(); err != nil {
		t.Fatal(err)
	}
	if out, stderr, code := runIn(t, nil, "verify", "--data", data); code != 0 || !strings.HasPrefix(out, "OK: ") {
		t.Fatalf("verify after policy set: %d %q %q", code, out, stderr)
	}

	// On a served but empty view any collection may change.
	empty := t.TempDir()
	if err := serveInProcess(t, empty).stop(); err != nil {
		t.Fatal(err)
	}
	if _, stderr, code := runIn(t, nil, "policy", "set", "todos", "reject", "--data", empty); code != 0 {
		t.Fatalf("policy set on an empty view: %d %q", code, stderr)
	}
}
