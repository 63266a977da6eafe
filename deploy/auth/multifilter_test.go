package auth_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/consumer"
	"github.com/ebbsync/ebb/deploy/embedded/embeddedtest"
	"github.com/ebbsync/ebb/events"
)

// publishChange puts a valid change of tenant's doc into CHANGES (as the
// projector would).
func publishChange(t *testing.T, js jetstream.JetStream, tenant, collection, doc string) {
	t.Helper()
	data, err := events.EncodeChange(&events.Change{Schema: events.SchemaVersion, Tenant: tenant, Collection: collection, Doc: doc,
		Version: 1, Fields: events.Fields{"title": json.RawMessage(`"` + doc + `"`)}, HLC: events.HLC{Wall: time.Now().UnixMilli()},
		Event: events.NewIDSource(time.Now).New().String(), Client: "writer", Seq: 1, AsWritten: true})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.Publish(ctx, events.ChangeSubject(tenant, collection, doc), data); err != nil {
		t.Fatal(err)
	}
}

// TestMultiCollection_ReplicaAndSubscribeUnderAuth (issue 18 item 3): a
// replica and a service subscription scoped to two collections send
// several filter subjects, so their consumers are created on
// $JS.API.CONSUMER.CREATE.<stream>.<name>, which must go through the
// consumer create responder and work.
func TestMultiCollection_ReplicaAndSubscribeUnderAuth(t *testing.T) {
	srv, js := nextServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	publishChange(t, js, "acme", "lists", "l1")
	publishChange(t, js, "acme", "todos", "t1")
	publishChange(t, js, "acme", "notes", "n1") // outside both scopes

	r, err := consumer.OpenReplica(ctx, consumer.ReplicaConfig{Dir: t.TempDir(), Tenant: "acme", Client: "alice",
		Conn: connectAs(t, srv, "alice"), Collections: []string{"lists", "todos"}})
	if err != nil {
		t.Fatalf("open a two-collection replica under auth: %v", err)
	}
	t.Cleanup(func() { _ = r.Close() })
	embeddedtest.WaitFor(t, 30*time.Second, "the replica has l1 and t1", func() bool {
		_, e1 := r.Get(ctx, "lists", "l1")
		_, e2 := r.Get(ctx, "todos", "t1")
		return e1 == nil && e2 == nil
	})
	if st := r.Status(); st.Err != nil || st.Quarantined != 0 {
		t.Fatalf("replica error: %v, quarantined %d (%v)", st.Err, st.Quarantined, st.LastQuarantine)
	}
	if _, err := r.Get(ctx, "notes", "n1"); err == nil {
		t.Fatal("the replica holds a document outside its collections")
	}

	var mu sync.Mutex
	got := map[string]bool{}
	sub, err := consumer.Subscribe(ctx, embeddedtest.MustJetStream(t, connectAs(t, srv, "search")), consumer.SubscribeConfig{
		Tenant: "acme", Collections: []string{"lists", "todos"}, Durable: "search-two",
		Handler: func(_ context.Context, ch *events.Change) error {
			mu.Lock()
			got[ch.Collection+"/"+ch.Doc] = true
			mu.Unlock()
			return nil
		}})
	if err != nil {
		t.Fatalf("a two-collection subscription under auth: %v", err)
	}
	t.Cleanup(sub.Stop)
	embeddedtest.WaitFor(t, 30*time.Second, "the subscription got l1 and t1", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return got["lists/l1"] && got["todos/t1"]
	})
	mu.Lock()
	defer mu.Unlock()
	if got["notes/n1"] {
		t.Fatal("the subscription got a change outside its collections")
	}
}

// TestHostile_MultiFilterCreateChecksEveryFilter: a create with several
// filter subjects is refused if any one of them is outside the asker's
// scope (another tenant, a wildcard wider than its tenant, another user's
// receipts), or if it has none (the whole stream); the refusal names the
// filter, and nothing is created.
func TestHostile_MultiFilterCreateChecksEveryFilter(t *testing.T) {
	srv, js := nextServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	alice := connectAs(t, srv, "alice")
	own := events.CollectionChanges("acme", "lists")
	for _, tc := range []struct {
		name, stream, filter string // filter: the foreign one, "" for none at all
	}{
		{"othertenant", events.StreamChanges, events.TenantChanges("evil")},
		{"widerwildcard", events.StreamChanges, "ebb.chg.*.>"},
		{"everything", events.StreamChanges, ">"},
		{"prefixonly", events.StreamChanges, "ebb.chg.>"},
		{"bobsreceipts", events.StreamReceipts, events.ReceiptSubject("acme", "bob")},
		{"bobsdevices", events.StreamReceipts, events.ReceiptSubject("acme", "bob") + ".>"},
		{"nofilter", events.StreamChanges, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mine := own
			if tc.stream == events.StreamReceipts {
				mine = events.ReceiptSubject("acme", "alice")
			}
			filters := []string{mine, tc.filter}
			if tc.filter == "" {
				filters = nil
			}
			body, err := json.Marshal(map[string]any{"stream_name": tc.stream, "config": map[string]any{
				"name": tc.name, "filter_subjects": filters, "ack_policy": "none", "deliver_policy": "all"}})
			if err != nil {
				t.Fatal(err)
			}
			resp, err := alice.Request("$JS.API.CONSUMER.CREATE."+tc.stream+"."+tc.name, body, 10*time.Second)
			if err != nil {
				t.Fatalf("multi-filter create: %v (want an API error answer)", err)
			}
			var answer struct {
				Error *struct {
					Code        int    `json:"code"`
					Description string `json:"description"`
				} `json:"error"`
			}
			if err := json.Unmarshal(resp.Data, &answer); err != nil || answer.Error == nil {
				t.Fatalf("multi-filter create with %q: not refused: %s", tc.filter, resp.Data)
			}
			want := tc.filter
			if want == "" {
				want = "whole stream"
			}
			if answer.Error.Code != 403 || !strings.Contains(answer.Error.Description, want) {
				t.Fatalf("refusal %d %q does not name %q", answer.Error.Code, answer.Error.Description, want)
			}
			if _, err := js.Consumer(ctx, tc.stream, tc.name); !errors.Is(err, jetstream.ErrConsumerNotFound) {
				t.Fatalf("consumer %s exists after the refusal: %v", tc.name, err)
			}
		})
	}
	// A durable the users file gives search is denied to alice on the
	// create subject without a filter too.
	if _, err := alice.Request("$JS.API.CONSUMER.CREATE.CHANGES.search-two", []byte(`{"stream_name":"CHANGES","config":{"durable_name":"search-two","filter_subjects":["`+own+`"]}}`), 2*time.Second); err == nil {
		t.Fatal("alice's create of search's listed durable was answered")
	}
	// The same create with the filters all in scope passes, owned by alice.
	body := `{"stream_name":"CHANGES","config":{"name":"mine","filter_subjects":["` + own + `","` + events.CollectionChanges("acme", "todos") +
		`"],"ack_policy":"none","deliver_policy":"all"}}`
	resp, err := alice.Request("$JS.API.CONSUMER.CREATE.CHANGES.mine", []byte(body), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var ok struct {
		Error  json.RawMessage `json:"error"`
		Config struct {
			Metadata map[string]string `json:"metadata"`
		} `json:"config"`
	}
	if err := json.Unmarshal(resp.Data, &ok); err != nil || ok.Error != nil || ok.Config.Metadata["ebb_user"] != "alice" {
		t.Fatalf("an in-scope multi-filter create: %s", resp.Data)
	}
}
