package auth_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ebbsync/ebb/deploy/auth"
	"github.com/ebbsync/ebb/deploy/embedded"
	"github.com/ebbsync/ebb/deploy/embedded/embeddedtest"
	"github.com/ebbsync/ebb/events"
)

// TestPublish_StampsWriterGroups (issue 18 contract item 2): the publish
// responder sets Ebb-Writer-Groups on every event it forwards to the
// writer's groups, as the Directory says (encoded, sorted), and drops any
// value the client sent, in any letter case; a writer with no groups gets
// no header at all.
func TestPublish_StampsWriterGroups(t *testing.T) {
	u, err := auth.Parse([]byte(`users:
  - {name: alice, password: alice-pw, tenant: acme, role: client, groups: [team-b, "ops team", team-a]}
  - {name: bob, password: bob-pw, tenant: acme, role: client}
`))
	if err != nil {
		t.Fatal(err)
	}
	srv := embeddedtest.MustStart(t, embeddedtest.InProcess(), func(c *embedded.Config) {
		c.Users = u.NATSUsers()
		c.Identities = u
	})
	js := embeddedtest.MustJetStream(t, embeddedtest.MustConnect(t, srv))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := events.EnsureStreams(ctx, js, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(ctx, events.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ user, want string }{
		{"alice", "team-a team-b ~b3BzIHRlYW0"}, // EncodeToken("ops team"), sorted as tokens
		{"bob", ""},
	} {
		ujs := embeddedtest.MustJetStream(t, connectAs(t, srv, tc.user))
		msg := nats.NewMsg(events.EventSubject("acme", tc.user, "lists", "l1"))
		msg.Data = []byte("{}")
		msg.Header[events.HeaderWriterGroups] = []string{"g:admins"}
		msg.Header["ebb-writer-groups"] = []string{"admins"}
		msg.Header["EBB-WRITER-GROUPS"] = []string{"admins"}
		ack, err := ujs.PublishMsg(ctx, msg)
		if err != nil {
			t.Fatalf("%s publishes: %v", tc.user, err)
		}
		got, err := st.GetMsg(ctx, ack.Sequence)
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range got.Header {
			if k != events.HeaderWriterGroups && (k == "ebb-writer-groups" || k == "EBB-WRITER-GROUPS") {
				t.Errorf("%s: the client's %s: %v reached EVENTS", tc.user, k, v)
			}
		}
		v, ok := got.Header[events.HeaderWriterGroups]
		switch {
		case tc.want == "" && ok:
			t.Errorf("%s has no groups, EVENTS has %s: %v", tc.user, events.HeaderWriterGroups, v)
		case tc.want != "" && (len(v) != 1 || v[0] != tc.want):
			t.Errorf("%s: %s = %q, want %q", tc.user, events.HeaderWriterGroups, v, tc.want)
		}
	}
}
