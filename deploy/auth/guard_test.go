package auth

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// TestGuarded_PanicAnswersAndKeepsServing: a handler that panics on one
// request answers it with an API error 500, and the responder answers the
// next request; without the guard the panic ends the process.
func TestGuarded_PanicAnswersAndKeepsServing(t *testing.T) {
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true})
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	sub, err := nc.Subscribe("guard.test", guarded("test", func(m *nats.Msg) {
		if string(m.Data) == "boom" {
			var nilMap map[string]int
			nilMap["x"] = 1 // the kind of bug a hostile request found before
		}
		_ = m.Respond([]byte("ok"))
	}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	resp, err := nc.Request("guard.test", []byte("boom"), 5*time.Second)
	if err != nil {
		t.Fatalf("request that panics: %v", err)
	}
	var e struct {
		Error struct {
			Code int `json:"code"`
		} `json:"error"`
	}
	if err := json.Unmarshal(resp.Data, &e); err != nil || e.Error.Code != 500 {
		t.Fatalf("answer to a panicking request: %q (%v), want an API error 500", resp.Data, err)
	}
	resp, err = nc.Request("guard.test", []byte("fine"), 5*time.Second)
	if err != nil {
		t.Fatalf("next request: %v", err)
	}
	if string(resp.Data) != "ok" {
		t.Fatalf("next request: %q, want ok", resp.Data)
	}
}
