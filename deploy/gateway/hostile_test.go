package gateway_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ebbsync/ebb/deploy/embedded/embeddedtest"
	"github.com/ebbsync/ebb/deploy/gateway"
	"github.com/ebbsync/ebb/events"
)

// rawEvent returns a valid event as JSON with the text at "FIELDS" replaced
// by fields (raw JSON of the fields object), so tests can write what a
// marshaller would refuse to produce.
func (e *env) rawEvent(seq uint64, doc, fields string) string {
	ev := e.event("acme", "todos", "d", seq)
	ev.Fields = events.Fields{"x": json.RawMessage(`"FIELDS"`)}
	b, _ := events.EncodeEvent(&ev)
	s := strings.Replace(string(b), `{"x":"FIELDS"}`, fields, 1)
	return strings.Replace(s, `"doc":"d"`, `"doc":`+doc, 1)
}

// TestPush_HostileEvents sends events built to hurt: each is refused
// alone, with the field at fault, and the good event beside them is stored.
func TestPush_HostileEvents(t *testing.T) {
	e := newEnv(t)
	many := make([]string, 1001)
	for i := range many {
		many[i] = fmt.Sprintf(`"f%d":1`, i)
	}
	tests := []struct {
		name, doc, fields string
		wantField         string
	}{
		{"deeply nested value", `"d"`, `{"x":` + strings.Repeat("[", 5000) + strings.Repeat("]", 5000) + `}`, "fields.x"},
		{"too many fields", `"d"`, "{" + strings.Join(many, ",") + "}", "fields"},
		{"fields too big", `"d"`, `{"x":"` + strings.Repeat("a", 300<<10) + `"}`, "fields"},
		{"invalid UTF-8 in a value", `"d"`, "{\"x\":\"\xff\xfe\"}", "payload"},
		{"invalid UTF-8 in a doc id", "\"\xc3\x28\"", `{"x":1}`, "payload"},
		{"control character in a doc id", `"a\u0000b"`, `{"x":1}`, "doc"},
		{"doc id too long", `"` + strings.Repeat("d", 600) + `"`, `{"x":1}`, "doc"},
	}
	batch := make([]string, 0, len(tests)+1)
	for i, tt := range tests {
		batch = append(batch, e.rawEvent(uint64(i+1), tt.doc, tt.fields))
	}
	good := e.event("acme", "todos", "ok", 100)
	gb, _ := events.EncodeEvent(&good)
	batch = append(batch, string(gb))

	code, body := e.do(t, "POST", "/v1/acme/events", "["+strings.Join(batch, ",")+"]")
	if code != 200 {
		t.Fatalf("push: %d %.300s", code, body)
	}
	var resp gateway.PushResponse
	if err := json.Unmarshal(body, &resp); err != nil {
		t.Fatal(err)
	}
	for i, tt := range tests {
		r := resp.Results[i]
		if r.Status != gateway.StatusInvalid || !strings.HasPrefix(r.Field, tt.wantField) {
			t.Errorf("%s: %+v, want invalid on field %s", tt.name, r, tt.wantField)
		} else {
			t.Logf("%s: %.120s", tt.name, r.Error)
		}
	}
	if r := resp.Results[len(tests)]; r.Status != gateway.StatusAccepted {
		t.Errorf("the good event beside them: %+v", r)
	}
}

func TestPush_HostileBodies(t *testing.T) {
	e := newEnv(t)
	tests := []struct {
		name, body string
		wantCode   int
	}{
		{"nested arrays beyond the decoder's depth", strings.Repeat("[", 100_000) + strings.Repeat("]", 100_000), 400},
		{"invalid UTF-8 outside strings", "[\xff]", 400},
		{"a million tiny elements", "[" + strings.Repeat("1,", 1_000_000) + "1]", 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := e.do(t, "POST", "/v1/acme/events", tt.body)
			if code != tt.wantCode {
				t.Fatalf("status %d, want %d: %.200s", code, tt.wantCode, body)
			}
			if code, _ := e.do(t, "GET", "/healthz", nil); code != 200 {
				t.Fatalf("healthz after a hostile body: %d", code)
			}
		})
	}
}

// TestNATS_OversizedMessageRefused: a message over the server's max payload
// is refused at the client with nats.ErrMaxPayload and the connection
// keeps working.
func TestNATS_OversizedMessageRefused(t *testing.T) {
	s := embeddedtest.MustStart(t)
	nc := embeddedtest.MustConnect(t, s)
	js := embeddedtest.MustJetStream(t, nc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := events.EnsureStreams(ctx, js, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	big := make([]byte, nc.MaxPayload()+1)
	_, err := js.Publish(ctx, events.EventSubject("acme", "c1", "todos", "big"), big)
	if !errors.Is(err, nats.ErrMaxPayload) {
		t.Fatalf("publish %d bytes: %v, want ErrMaxPayload", len(big), err)
	}
	if _, err := js.Publish(ctx, events.EventSubject("acme", "c1", "todos", "small"), []byte("{}")); err != nil {
		t.Fatalf("publish after the refusal: %v", err)
	}
}
