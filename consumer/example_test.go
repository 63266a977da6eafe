package consumer_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/consumer"
	"github.com/ebbsync/ebb/deploy/embedded"
	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/projection"
)

// ExampleReplica writes while offline, reads its own write back, then
// attaches to a server (embedded NATS plus the projector) and syncs.
func ExampleReplica() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tmp, _ := os.MkdirTemp("", "ebb-example")
	defer os.RemoveAll(tmp)

	// Offline: no Conn.
	r, err := consumer.OpenReplica(ctx, consumer.ReplicaConfig{Dir: filepath.Join(tmp, "app"), Tenant: "acme", Client: "phone"})
	if err != nil {
		panic(err)
	}
	defer r.Close()
	_, _ = r.Put(ctx, "todos", "t1", events.Fields{"title": json.RawMessage(`"buy milk"`)})
	d, _ := r.Get(ctx, "todos", "t1")
	fmt.Printf("offline: %s pending=%d\n", d.Fields["title"], d.Pending)

	// The server: embedded NATS with the ebb streams and the projector.
	s, err := embedded.Start(ctx, embedded.Config{Dir: filepath.Join(tmp, "nats"), DontListen: true})
	if err != nil {
		panic(err)
	}
	defer s.Shutdown(context.Background())
	nc, _ := s.Connect()
	defer nc.Close()
	js, _ := jetstream.New(nc)
	if err := events.EnsureStreams(ctx, js, events.StreamOptions{}); err != nil {
		panic(err)
	}
	view, _ := projection.OpenBolt(filepath.Join(tmp, "view.db"), projection.BoltOptions{})
	defer view.Close()
	p, _ := projection.New(js, view, projection.Config{})
	if err := p.Start(ctx); err != nil {
		panic(err)
	}
	defer p.Close()

	// Online: attach and sync.
	if err := r.Attach(ctx, nc); err != nil {
		panic(err)
	}
	rep, err := r.Sync(ctx)
	if err != nil {
		panic(err)
	}
	d, _ = r.Get(ctx, "todos", "t1")
	fmt.Printf("synced: pushed=%d pulled=%d; %s v%d pending=%d\n", rep.Pushed, rep.Pulled, d.Fields["title"], d.Version, d.Pending)
	// Output:
	// offline: "buy milk" pending=1
	// synced: pushed=1 pulled=1; "buy milk" v1 pending=0
}

// ExampleSubscribe runs a microservice's durable change subscription.
func ExampleSubscribe() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tmp, _ := os.MkdirTemp("", "ebb-example")
	defer os.RemoveAll(tmp)
	s, err := embedded.Start(ctx, embedded.Config{Dir: tmp, DontListen: true})
	if err != nil {
		panic(err)
	}
	defer s.Shutdown(context.Background())
	nc, _ := s.Connect()
	defer nc.Close()
	js, _ := jetstream.New(nc)
	if err := events.EnsureStreams(ctx, js, events.StreamOptions{}); err != nil {
		panic(err)
	}

	got := make(chan string, 1)
	sub, err := consumer.Subscribe(ctx, js, consumer.SubscribeConfig{
		Tenant: "acme", Collections: []string{"todos"}, Durable: "mailer",
		Handler: func(_ context.Context, ch *events.Change) error {
			got <- fmt.Sprintf("%s/%s v%d %s", ch.Collection, ch.Doc, ch.Version, ch.Fields["title"])
			return nil
		},
	})
	if err != nil {
		panic(err)
	}
	defer sub.Stop()

	// What the projector would publish.
	b, _ := events.EncodeChange(&events.Change{Schema: events.SchemaVersion, Tenant: "acme", Collection: "todos", Doc: "t1",
		Version: 1, Fields: events.Fields{"title": json.RawMessage(`"buy milk"`)}, HLC: events.HLC{Wall: 1}})
	if _, err := js.Publish(ctx, events.ChangeSubject("acme", "todos", "t1"), b); err != nil {
		panic(err)
	}
	fmt.Println(<-got)
	if err := sub.Drain(ctx); err != nil {
		panic(err)
	}
	// Output:
	// todos/t1 v1 "buy milk"
}
