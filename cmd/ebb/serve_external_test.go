package main

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ebbsync/ebb/deploy/embedded/embeddedtest"
	"github.com/ebbsync/ebb/events"
)

// With --nats, serve uses an existing NATS server: it creates the streams
// there and its projector applies what clients publish to it. Its --data
// directory does not exist yet: serve creates it (issue 14: it once
// failed with a misleading "is another ebb serve using" error).
func TestServe_ExternalNATS(t *testing.T) {
	ext := embeddedtest.MustStart(t)
	ctx, cancel := context.WithCancel(context.Background())
	stderr := &syncBuffer{}
	m := &Main{Stdout: &bytes.Buffer{}, Stderr: stderr, Getenv: func(string) string { return "" }}
	done := make(chan error, 1)
	go func() {
		done <- m.Run(ctx, []string{"serve", "--data", filepath.Join(t.TempDir(), "new"), "--nats", ext.ClientURL(), "--http-listen", "127.0.0.1:0", "--log-format", "json"})
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	}()
	waitFor(t, 20*time.Second, "the ready line", func() bool { return readyURL(stderr.String()) == ext.ClientURL() })

	nc := embeddedtest.MustConnect(t, ext)
	js := embeddedtest.MustJetStream(t, nc)
	ids, clock := events.NewIDSource(nil), events.NewClock(nil, 0)
	ev := events.Event{Schema: 1, ID: ids.New().String(), Tenant: "acme", Collection: "todos", Doc: "t1", Op: events.OpPut,
		Fields: events.Fields{"title": json.RawMessage(`"milk"`)}, HLC: clock.Now(), Client: "c1", Seq: 1}
	data, _ := events.EncodeEvent(&ev)
	msg := nats.NewMsg(ev.Subject())
	msg.Data = data
	if _, err := js.PublishMsg(ctx, msg); err != nil {
		t.Fatalf("publish to the external server (streams must exist): %v", err)
	}
	st, err := js.Stream(ctx, events.StreamChanges)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "the projector's change on the external server", func() bool {
		m, err := st.GetLastMsgForSubject(ctx, events.ChangeSubject("acme", "todos", "t1"))
		return err == nil && m != nil
	})
}
