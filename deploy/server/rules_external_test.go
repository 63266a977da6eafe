package server_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/crypto/bcrypt"

	"github.com/ebbsync/ebb/consumer"
	"github.com/ebbsync/ebb/deploy/auth"
	"github.com/ebbsync/ebb/deploy/auth/authtest"
	"github.com/ebbsync/ebb/deploy/server"
	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/projection/rules"
)

// externalRules let a list's team write it too, so a write by a team
// member applies only if the server stamped the writer's groups.
const externalRules = `collections:
  lists:
    read: [{user: owner}, {group: team}]
    write: [{user: owner}, {group: team}]
  todos:
    follow: {collection: lists, field: list}
`

// externalRulesUsers are ann (group red), bob (group blue) and the admin
// ops that ebb serve connects as, with bcrypt hashes of the lowest cost
// so the external server's own login checks stay quick under -race.
func externalRulesUsers(t *testing.T) *auth.Users {
	t.Helper()
	hash := func(pw string) string {
		h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		return string(h)
	}
	users, err := auth.New([]auth.User{
		{Name: "ann", PasswordHash: hash("ann-secret"), Tenant: "acme", Role: auth.RoleClient, Groups: []string{"red"}},
		{Name: "bob", PasswordHash: hash("bob-secret"), Tenant: "acme", Role: auth.RoleClient, Groups: []string{"blue"}},
		{Name: "ops", PasswordHash: hash("ops-secret"), Role: auth.RoleAdmin},
	})
	if err != nil {
		t.Fatal(err)
	}
	return users.WithFilteredReads(true)
}

// startExternalNATS starts nats-server from users' configuration written
// with or without filtered reads, as `ebb nats-config` writes it; it
// returns its client URL and the URL with ops's credentials for the server.
func startExternalNATS(t *testing.T, users *auth.Users, filtered bool) (clientURL, adminURL string) {
	t.Helper()
	conf, err := users.WithFilteredReads(filtered).NATSConfig()
	if err != nil {
		t.Fatal(err)
	}
	ns := authtest.MustStartNATS(t, conf)
	url := ns.ClientURL()
	return url, strings.Replace(url, "nats://", "nats://ops:ops-secret@", 1)
}

func externalRulesConfig(t *testing.T, users *auth.Users, adminURL string) server.Config {
	t.Helper()
	set, err := rules.Parse([]byte(externalRules))
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t)
	cfg.Users, cfg.Rules, cfg.NATSURLs = users, set, []string{adminURL}
	return cfg
}

// TestStart_RulesExternalNATSNotFiltered: sync rules on an external
// server whose accounts are not in filtered reads mode (there clients
// read CHANGES directly) are refused at start, naming the fix. This was
// TestStart_RulesRefusedWithExternalNATS, which refused every external
// server: that was a limit of ebb (nothing wrote or checked an external
// server's filtered configuration), not a contract.
func TestStart_RulesExternalNATSNotFiltered(t *testing.T) {
	users := externalRulesUsers(t)
	_, adminURL := startExternalNATS(t, users, false)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	s, err := server.Start(ctx, externalRulesConfig(t, users, adminURL))
	if s != nil {
		s.Close(context.Background())
	}
	if !errors.Is(err, auth.ErrNotFilteredReads) {
		t.Fatalf("start with rules on an unfiltered external server: %v, want ErrNotFilteredReads", err)
	}
	for _, want := range []string{"ebb nats-config", "--rules", "reload"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name the fix (%s)", err, want)
		}
	}
}

// TestSyncRules_ExternalNATS: ebb serve with sync rules against an
// external nats-server configured in filtered reads mode starts, and
// everything the rules need runs there: a client's direct CHANGES reads
// are refused (the consumer create responder), each replica syncs
// exactly the documents it may read through the change responder, a
// team member's write applies (the publish responder stamped its
// groups), and a fresh replica downloads each visible document once.
func TestSyncRules_ExternalNATS(t *testing.T) {
	users := externalRulesUsers(t)
	clientURL, adminURL := startExternalNATS(t, users, true)
	w := &rulesWorld{t: t, srv: mustStart(t, externalRulesConfig(t, users, adminURL)), natsURL: clientURL}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	ann, bob := w.replica("ann"), w.replica("bob")
	must := func(_ consumer.Doc, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(ann.Put(ctx, "lists", "l-ann", fields("owner", "ann", "team", "red", "title", "groceries")))
	must(ann.Put(ctx, "todos", "t-ann", fields("list", "l-ann", "text", "milk")))
	must(bob.Put(ctx, "lists", "l-bob", fields("owner", "bob", "team", "blue", "title", "secret plans")))
	must(bob.Put(ctx, "lists", "l-shared", fields("owner", "bob", "team", "red", "title", "party")))
	if rep := syncOK(t, bob); rep.Rejected != 0 {
		t.Fatalf("bob's own writes rejected: %+v", rep)
	}
	// ann may write l-shared only as a member of team red: only the
	// groups the server stamps on her event say so.
	must(ann.Patch(ctx, "lists", "l-shared", fields("title", "party at ann's")))
	if rep := syncOK(t, ann); rep.Rejected != 0 {
		rejs, _ := ann.Rejections(ctx)
		t.Fatalf("ann's writes rejected (writer groups not stamped?): %+v %+v", rep, rejs)
	}
	syncOK(t, bob)
	if got, want := holds(t, ann), []string{"lists/l-ann", "lists/l-shared", "todos/t-ann"}; !slices.Equal(got, want) {
		t.Fatalf("ann holds %v, want %v", got, want)
	}
	if got, want := holds(t, bob), []string{"lists/l-bob", "lists/l-shared"}; !slices.Equal(got, want) {
		t.Fatalf("bob holds %v, want %v", got, want)
	}
	if d, err := bob.Get(ctx, "lists", "l-shared"); err != nil || !strings.Contains(string(d.Fields["title"]), "party at ann's") {
		t.Fatalf("bob's l-shared after ann's patch: %+v, %v", d, err)
	}

	// ann's direct reads of CHANGES on the external server are refused.
	js, err := jetstream.New(w.conn("ann"))
	if err != nil {
		t.Fatal(err)
	}
	for _, filter := range []string{events.TenantChanges("acme"), events.ChangeSubject("acme", "lists", "l-bob")} {
		c, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := js.OrderedConsumer(c, events.StreamChanges, jetstream.OrderedConsumerConfig{FilterSubjects: []string{filter}})
		cancel()
		if err == nil || !strings.Contains(err.Error(), "sync rules") {
			t.Errorf("ann's ordered consumer on %s: %v, want refused by sync rules", filter, err)
		}
		c, cancel = context.WithTimeout(ctx, 5*time.Second)
		_, err = js.CreateOrUpdateConsumer(c, events.StreamChanges, jetstream.ConsumerConfig{Durable: "ann-peek", FilterSubject: filter})
		cancel()
		if err == nil || !strings.Contains(err.Error(), "sync rules") {
			t.Errorf("ann's durable on %s: %v, want refused by sync rules", filter, err)
		}
	}
	c, cancel2 := context.WithTimeout(ctx, 5*time.Second)
	m, err := w.conn("ann").RequestWithContext(c, "$JS.API.DIRECT.GET."+events.StreamChanges+"."+events.ChangeSubject("acme", "lists", "l-bob"), nil)
	cancel2()
	if err == nil && strings.Contains(string(m.Data), "secret") {
		t.Errorf("ann direct-got l-bob: %s", m.Data)
	}

	// A fresh replica of ann downloads each visible document once.
	fresh := w.replica("ann")
	if rep := syncOK(t, fresh); rep.Pulled != 3 {
		t.Fatalf("a fresh replica of ann pulled %d changes, want 3 (l-ann, l-shared, t-ann)", rep.Pulled)
	}
	if got, want := holds(t, fresh), []string{"lists/l-ann", "lists/l-shared", "todos/t-ann"}; !slices.Equal(got, want) {
		t.Fatalf("ann's fresh replica holds %v, want %v", got, want)
	}
}
