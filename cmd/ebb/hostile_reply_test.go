package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/events"
)

// subjectCounts returns, per subject of stream under filter, the number of
// messages and the sequence of the last one (count<<32 | seq would lose
// nothing here; a string is clearer): a message that lands on a subject
// shows even where the stream keeps one message per subject.
func subjectCounts(t *testing.T, js jetstream.JetStream, stream, filter string) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatalf("stream %s: %v", stream, err)
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(filter))
	if err != nil {
		t.Fatalf("stream %s info: %v", stream, err)
	}
	out := map[string]string{}
	for subj, n := range info.State.Subjects {
		m, err := st.GetLastMsgForSubject(ctx, subj)
		if err != nil {
			t.Fatalf("stream %s last message on %s: %v", stream, subj, err)
		}
		out[subj] = fmt.Sprintf("%d messages, last #%d", n, m.Sequence)
	}
	return out
}

// streamState is what a victim owns: its subjects in every stream, and the
// last sequence of each stream (so a message that lands anywhere shows).
type streamState struct {
	changes, receipts, evts map[string]string
}

func victimState(t *testing.T, js jetstream.JetStream) streamState {
	t.Helper()
	return streamState{
		changes:  subjectCounts(t, js, events.StreamChanges, events.TenantChanges("acme")),
		receipts: subjectCounts(t, js, events.StreamReceipts, events.ReceiptsPrefix+".acme.>"),
		evts:     subjectCounts(t, js, events.StreamEvents, events.EventsPrefix+".acme.>"),
	}
}

func (s streamState) diff(o streamState) string {
	var b strings.Builder
	for _, p := range []struct {
		name string
		a, b map[string]string
	}{{"CHANGES", s.changes, o.changes}, {"RECEIPTS", s.receipts, o.receipts}, {"EVENTS", s.evts, o.evts}} {
		for subj, n := range p.b {
			if p.a[subj] != n {
				fmt.Fprintf(&b, "%s %s: %q -> %q; ", p.name, subj, p.a[subj], n)
			}
		}
	}
	return b.String()
}

// TestHostile_ReplySubjects is issue 13's reply-subject class: NATS checks
// the subject a client publishes to, not the reply subject it names, and
// JetStream answers (API responses, PubAcks, direct-get messages) on that
// reply subject. Every attempt names a subject of a stream as its reply;
// afterwards the victims' CHANGES, RECEIPTS and EVENTS must be unchanged.
func TestHostile_ReplySubjects(t *testing.T) {
	srv := serveInProcess(t, "", "--auth", writeFile(t, "users.yaml", usersYAML))
	base := map[string]string{"EBB_NATS": srv.nats}
	alice := with(base, "EBB_TENANT", "acme", "EBB_DATA", filepath.Join(t.TempDir(), "alice"), "EBB_USER", "alice", "EBB_PASSWORD", "alice-pw")
	eveEnv := with(base, "EBB_TENANT", "evil", "EBB_DATA", filepath.Join(t.TempDir(), "eve"), "EBB_USER", "eve", "EBB_PASSWORD", "eve-pw")
	mustCLI(t, alice, "put", "todos", "t1", `{"title":"acme secret"}`)
	mustCLI(t, eveEnv, "put", "todos", "e1", `{"title":"pwned"}`)
	root := connectAs(t, srv.nats, "root", "root-pw", nil)
	rjs, _ := jetstream.New(root)

	ownEvent := func(user, tenant string) []byte {
		ev := &events.Event{Schema: 1, ID: events.NewIDSource(nil).New().String(), Tenant: tenant, Collection: "todos",
			Doc: "x1", Op: events.OpPut, Fields: events.Fields{"title": []byte(`"x"`)}, HLC: events.NewClock(nil, 0).Now(), Client: user, Seq: 1}
		b, err := events.EncodeEvent(ev)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	type attempt struct {
		name          string
		user, pw      string
		subject, body string
		reply         string
	}
	own := func(user, tenant string) string { return events.EventSubject(tenant, user, "todos", "x1") }
	attempts := []attempt{
		{"stream info into another tenant's document", "eve", "eve-pw", "$JS.API.STREAM.INFO.CHANGES", "", events.ChangeSubject("acme", "todos", "t1")},
		{"stream info into another tenant's receipts", "eve", "eve-pw", "$JS.API.STREAM.INFO.CHANGES", "", events.ReceiptSubject("acme", "alice")},
		{"direct get without headers into another tenant's document", "eve", "eve-pw",
			"$JS.API.DIRECT.GET.CHANGES." + events.ChangeSubject("evil", "todos", "e1"), `{"no_hdr":true}`, events.ChangeSubject("acme", "todos", "t2")},
		{"pub ack into another tenant's document", "eve", "eve-pw", own("eve", "evil"), string(ownEvent("eve", "evil")), events.ChangeSubject("acme", "todos", "t3")},
		{"pub ack into another tenant's events", "eve", "eve-pw", own("eve", "evil"), string(ownEvent("eve", "evil")), events.EventSubject("acme", "alice", "todos", "t4")},
		{"stream info into another tenant's events", "eve", "eve-pw", "$JS.API.STREAM.INFO.CHANGES", "", events.EventSubject("acme", "alice", "todos", "t5")},
		{"same tenant: direct get into another client's document", "bob", "bob-pw",
			"$JS.API.DIRECT.GET.CHANGES." + events.ChangeSubject("acme", "todos", "t1"), `{"no_hdr":true}`, events.ChangeSubject("acme", "todos", "t6")},
		{"same tenant: stream info into another client's receipts", "bob", "bob-pw", "$JS.API.STREAM.INFO.RECEIPTS", "", events.ReceiptSubject("acme", "alice")},
		{"same tenant: stream info into another client's events", "bob", "bob-pw", "$JS.API.STREAM.INFO.CHANGES", "", events.EventSubject("acme", "alice", "todos", "t7")},
		{"same tenant: pub ack into another client's events", "bob", "bob-pw", own("bob", "acme"), string(ownEvent("bob", "acme")), events.EventSubject("acme", "alice", "todos", "t8")},
	}
	refused := 0
	for _, a := range attempts {
		t.Run(a.name, func(t *testing.T) {
			before := victimState(t, rjs)
			nc := connectAs(t, srv.nats, a.user, a.pw, nil)
			if err := nc.PublishRequest(a.subject, a.reply, []byte(a.body)); err != nil {
				t.Fatal(err)
			}
			// Barrier: the same request answered on the attacker's own
			// inbox, after the attempt on the same connection.
			if _, err := nc.Request(a.subject, []byte(a.body), 5*time.Second); err != nil {
				t.Fatalf("the same request on the attacker's own inbox: %v", err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := root.FlushWithContext(ctx); err != nil {
				t.Fatal(err)
			}
			after := victimState(t, rjs)
			// The attacker's own event (a PubAck attempt) is its own write,
			// with its own change and receipt; drop them from both sides.
			tenant := "acme"
			if a.user == "eve" {
				tenant = "evil"
			}
			for _, st := range []streamState{before, after} {
				for subj := range st.evts {
					if strings.HasPrefix(subj, events.EventsPrefix+"."+tenant+"."+a.user+".") {
						delete(st.evts, subj)
					}
				}
				delete(st.changes, events.ChangeSubject(tenant, "todos", "x1"))
				delete(st.receipts, events.ReceiptSubject(tenant, a.user))
			}
			if d := before.diff(after); d != "" {
				t.Fatalf("%s as %s with reply %s wrote into the victim: %s", a.subject, a.user, a.reply, d)
			}
			refused++
		})
	}
	t.Logf("%d of %d reply-subject attempts harmless", refused, len(attempts))
	// The victims still work: alice's document is hers, her sync is clean.
	if out := mustCLI(t, alice, "sync", "--timeout", "20s"); !strings.Contains(out, "synced") && !strings.Contains(out, "pulled") {
		t.Errorf("alice sync after the attempts: %q", out)
	}
	if out := mustCLI(t, alice, "get", "todos", "t1"); !strings.Contains(out, "acme secret") {
		t.Errorf("alice's todos/t1 after the attempts: %q", out)
	}
}

// TestHostile_StreamInfoListsNoSubjects: a stream info request with a
// subjects filter would list the subjects of every tenant (their login
// names in RECEIPTS, their document ids in CHANGES); a user gets the
// stream's info without them.
func TestHostile_StreamInfoListsNoSubjects(t *testing.T) {
	srv := serveInProcess(t, "", "--auth", writeFile(t, "users.yaml", usersYAML))
	alice := map[string]string{"EBB_NATS": srv.nats, "EBB_TENANT": "acme", "EBB_DATA": filepath.Join(t.TempDir(), "alice"), "EBB_USER": "alice", "EBB_PASSWORD": "alice-pw"}
	mustCLI(t, alice, "put", "todos", "secret-doc", `{"title":"acme secret"}`)
	eve := connectAs(t, srv.nats, "eve", "eve-pw", nil)
	for _, stream := range []string{events.StreamReceipts, events.StreamChanges} {
		resp, err := eve.Request("$JS.API.STREAM.INFO."+stream, []byte(`{"subjects_filter":">"}`), 5*time.Second)
		if err != nil {
			t.Fatalf("stream info %s: %v", stream, err)
		}
		body := string(resp.Data)
		if strings.Contains(body, "alice") || strings.Contains(body, "secret-doc") || strings.Contains(body, "ebb.rcpt.acme") || strings.Contains(body, "ebb.chg.acme") {
			t.Errorf("stream info %s with a subjects filter shows another tenant's subjects: %s", stream, body)
		}
		if !strings.Contains(body, `"last_seq"`) {
			t.Errorf("stream info %s has no state: %s", stream, body)
		}
	}
}

// TestHostile_PushConsumerDelivery: a consumer's deliver subject is a
// reply subject of another kind: JetStream publishes the consumer's
// messages to it, in the streams' account. A user's consumer with a
// deliver subject onto another tenant's (or client's) stream subjects
// must not write there.
func TestHostile_PushConsumerDelivery(t *testing.T) {
	srv := serveInProcess(t, "", "--auth", writeFile(t, "users.yaml", usersYAML))
	base := map[string]string{"EBB_NATS": srv.nats}
	alice := with(base, "EBB_TENANT", "acme", "EBB_DATA", filepath.Join(t.TempDir(), "alice"), "EBB_USER", "alice", "EBB_PASSWORD", "alice-pw")
	eveEnv := with(base, "EBB_TENANT", "evil", "EBB_DATA", filepath.Join(t.TempDir(), "eve"), "EBB_USER", "eve", "EBB_PASSWORD", "eve-pw")
	mustCLI(t, alice, "put", "todos", "t1", `{"title":"acme secret"}`)
	mustCLI(t, eveEnv, "put", "todos", "e1", `{"title":"pwned"}`)
	root := connectAs(t, srv.nats, "root", "root-pw", nil)
	rjs, _ := jetstream.New(root)
	attempts := []struct {
		name, subject, body string
	}{
		{"changes into another tenant's document", "$JS.API.CONSUMER.CREATE.CHANGES.evepush1." + events.TenantChanges("evil"),
			`{"stream_name":"CHANGES","config":{"name":"evepush1","deliver_subject":"` + events.ChangeSubject("acme", "todos", "p1") + `","filter_subject":"` + events.TenantChanges("evil") + `","ack_policy":"none","deliver_policy":"all"}}`},
		{"changes into another tenant's events", "$JS.API.CONSUMER.CREATE.CHANGES.evepush2." + events.TenantChanges("evil"),
			`{"stream_name":"CHANGES","config":{"name":"evepush2","deliver_subject":"` + events.EventSubject("acme", "alice", "todos", "p2") + `","filter_subject":"` + events.TenantChanges("evil") + `","ack_policy":"none","deliver_policy":"all"}}`},
		{"receipts into another tenant's receipts", "$JS.API.CONSUMER.CREATE.RECEIPTS.evepush3." + events.ReceiptSubject("evil", "eve"),
			`{"stream_name":"RECEIPTS","config":{"name":"evepush3","deliver_subject":"` + events.ReceiptSubject("acme", "alice") + `","filter_subject":"` + events.ReceiptSubject("evil", "eve") + `","ack_policy":"none","deliver_policy":"all"}}`},
	}
	nc := connectAs(t, srv.nats, "eve", "eve-pw", nil)
	for _, a := range attempts {
		t.Run(a.name, func(t *testing.T) {
			before := victimState(t, rjs)
			resp, err := nc.Request(a.subject, []byte(a.body), 5*time.Second)
			if err != nil {
				t.Fatalf("consumer create: %v", err)
			}
			if !strings.Contains(string(resp.Data), `"error"`) {
				t.Errorf("a push consumer was created: %s", resp.Data)
				// Let it deliver, then show what it wrote.
				waitFor(t, 5*time.Second, "the push consumer to deliver", func() bool { return before.diff(victimState(t, rjs)) != "" })
			}
			if d := before.diff(victimState(t, rjs)); d != "" {
				t.Fatalf("wrote into the victim: %s", d)
			}
		})
	}
}
