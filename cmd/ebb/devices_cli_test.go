package main

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/events"
)

// TestCLI_SecondDeviceOfAUser: under --auth, two data directories of the
// same user are two devices. Both write through the CLI, to different
// documents and to the same one; every write is applied (none answered
// duplicate and lost), and both devices end with the same view.
func TestCLI_SecondDeviceOfAUser(t *testing.T) {
	srv := serveInProcess(t, "", "--auth", writeFile(t, "users.yaml", usersYAML))
	base := map[string]string{"EBB_NATS": srv.nats, "EBB_TENANT": "acme", "EBB_USER": "alice", "EBB_PASSWORD": "alice-pw"}
	phone := with(base, "EBB_DATA", filepath.Join(t.TempDir(), "phone"))
	laptop := with(base, "EBB_DATA", filepath.Join(t.TempDir(), "laptop"))

	// A device's receipts follower reads every device of its user with one
	// filter: the user may, and only for itself.
	nc := connectAs(t, srv.nats, "alice", "alice-pw", nil)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	for user, allowed := range map[string]bool{"alice": true, "bob": false} {
		ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
		defer cancel()
		filter := events.ReceiptSubject("acme", user) + ".>"
		_, err := js.OrderedConsumer(ctx, events.StreamReceipts, jetstream.OrderedConsumerConfig{FilterSubjects: []string{filter}})
		if (err == nil) != allowed {
			t.Fatalf("alice following %s: %v, want allowed %v", filter, err, allowed)
		}
	}

	for _, w := range []struct {
		env  map[string]string
		name string
		doc  string
		body string
	}{
		{phone, "phone", "p1", `{"by":"phone"}`},
		{laptop, "laptop", "l1", `{"by":"laptop"}`},
		{phone, "phone", "shared", `{"n":1}`},
		{laptop, "laptop", "shared2", `{"n":2}`},
	} {
		out := mustCLI(t, w.env, "put", "todos", w.doc, w.body)
		if !strings.Contains(out, "synced, applied") {
			t.Fatalf("%s put %s: %q, want synced, applied", w.name, w.doc, out)
		}
	}
	// The laptop writes the phone's document after seeing it.
	mustCLI(t, laptop, "sync", "--timeout", "20s")
	if out := mustCLI(t, laptop, "put", "todos", "shared", `{"n":3}`); !strings.Contains(out, "synced, applied") {
		t.Fatalf("laptop put shared: %q, want synced, applied", out)
	}
	want := map[string]string{"p1": `{"by":"phone"}`, "l1": `{"by":"laptop"}`, "shared": `{"n":3}`, "shared2": `{"n":2}`}
	for name, env := range map[string]map[string]string{"phone": phone, "laptop": laptop} {
		mustCLI(t, env, "sync", "--timeout", "20s")
		for doc, body := range want {
			out := mustCLI(t, env, "get", "todos", doc, "--json")
			var rec docRecord
			if err := json.Unmarshal([]byte(out), &rec); err != nil {
				t.Fatalf("%s get %s: %q: %v", name, doc, out, err)
			}
			got, _ := json.Marshal(rec.Doc)
			if string(got) != body || rec.Pending != 0 {
				t.Errorf("%s get %s: %s (pending %d), want %s synced", name, doc, got, rec.Pending, body)
			}
		}
	}
}
