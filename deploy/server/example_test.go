package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ebbsync/ebb/consumer"
	"github.com/ebbsync/ebb/deploy/server"
	"github.com/ebbsync/ebb/events"
)

// ExampleStart embeds an ebb server in a Go program: a replica writes
// through it over NATS, and the document is read back over HTTP.
func ExampleStart() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dir, _ := os.MkdirTemp("", "ebb-embed")
	defer os.RemoveAll(dir)

	// The whole server: embedded NATS and a bbolt view in the data
	// directory, the projector, HTTP. Zero fields are ebb serve's defaults
	// (NATS on 127.0.0.1:4222, HTTP on 127.0.0.1:8080); here free ports.
	s, err := server.Start(ctx, server.Config{
		Data:       filepath.Join(dir, "ebb-data"),
		NATSListen: "127.0.0.1:-1",
		HTTPListen: "127.0.0.1:0",
	})
	if err != nil {
		panic(err)
	}
	defer s.Close(context.Background())

	// A client writes through a replica over NATS...
	nc, err := nats.Connect(s.NATSURL())
	if err != nil {
		panic(err)
	}
	defer nc.Close()
	r, err := consumer.OpenReplica(ctx, consumer.ReplicaConfig{
		Dir: filepath.Join(dir, "phone"), Tenant: "acme", Client: "phone", Conn: nc})
	if err != nil {
		panic(err)
	}
	defer r.Close()
	if _, err := r.Put(ctx, "todos", "t1", events.Fields{"title": json.RawMessage(`"buy milk"`)}); err != nil {
		panic(err)
	}
	if _, err := r.Sync(ctx); err != nil {
		panic(err)
	}

	// ...and anyone reads the server view over HTTP.
	resp, err := http.Get(s.URL() + "/v1/acme/docs/todos/t1")
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	var doc struct {
		Version uint64                     `json:"version"`
		Doc     map[string]json.RawMessage `json:"doc"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
		panic(err)
	}
	fmt.Printf("%d v%d %s\n", resp.StatusCode, doc.Version, doc.Doc["title"])
	// Output: 200 v1 "buy milk"
}
