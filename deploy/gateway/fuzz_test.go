package gateway_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/deploy/gateway"
	"github.com/ebbsync/ebb/events"
)

// recordingJS is a gateway.JetStream that stores what is published and
// reads nothing: fuzzing needs thousands of requests a second.
type recordingJS struct {
	mu   sync.Mutex
	msgs []*nats.Msg
}

func (r *recordingJS) PublishMsg(_ context.Context, m *nats.Msg, _ ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, m)
	return &jetstream.PubAck{Stream: events.StreamEvents, Sequence: uint64(len(r.msgs))}, nil
}

func (r *recordingJS) Stream(context.Context, string) (jetstream.Stream, error) {
	return nil, jetstream.ErrStreamNotFound
}

func (r *recordingJS) OrderedConsumer(context.Context, string, jetstream.OrderedConsumerConfig) (jetstream.Consumer, error) {
	return nil, errors.New("not in the fuzz fake")
}

var _ gateway.JetStream = (*recordingJS)(nil)

// FuzzPushBody feeds arbitrary push bodies to the gateway. Whatever the
// body, the answer is a JSON status the protocol names, and every message
// published is a valid event of the URL's tenant on its own subject.
func FuzzPushBody(f *testing.F) {
	ids, clk := events.NewIDSource(nil), events.NewClock(nil, 0)
	good := events.Event{Schema: 1, ID: ids.New().String(), Tenant: "acme", Collection: "todos", Doc: "t.1 x", Op: events.OpPut,
		Fields: events.Fields{"title": json.RawMessage(`"x"`)}, HLC: clk.Now(), Client: "phone", Seq: 1}
	gb, _ := events.EncodeEvent(&good)
	other := good
	other.Tenant = "evil"
	ob, _ := events.EncodeEvent(&other)
	for _, seed := range []string{"[]", "[" + string(gb) + "]", "[" + string(ob) + "," + string(gb) + "]", "{{", "[[[[", "[\xff]", `[{"schema":1}]`, "null"} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		js := &recordingJS{}
		g, err := gateway.New(gateway.Config{JetStream: js, MaxBatch: 50, MaxBody: 1 << 20})
		if err != nil {
			t.Fatal(err)
		}
		rec := httptest.NewRecorder()
		g.ServeHTTP(rec, httptest.NewRequest("POST", "/v1/acme/events", strings.NewReader(string(body))))
		switch rec.Code {
		case http.StatusOK:
			var resp gateway.PushResponse
			if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil {
				t.Fatalf("200 with a body that is not a PushResponse: %v", err)
			}
		case http.StatusBadRequest, http.StatusRequestEntityTooLarge:
			var ae struct{ Error string }
			if err := json.Unmarshal(rec.Body.Bytes(), &ae); err != nil || ae.Error == "" {
				t.Fatalf("%d without a JSON error: %q", rec.Code, rec.Body.String())
			}
		default:
			t.Fatalf("status %d: %s", rec.Code, rec.Body.String())
		}
		for _, m := range js.msgs {
			ev, err := events.DecodeEvent(m.Data, events.Limits{})
			if err != nil {
				t.Fatalf("published an invalid event: %v", err)
			}
			if ev.Tenant != "acme" || m.Subject != ev.Subject() || m.Header.Get(jetstream.MsgIDHeader) != ev.ID {
				t.Fatalf("published %s (id header %q) for event of %s/%s/%s id %s",
					m.Subject, m.Header.Get(jetstream.MsgIDHeader), ev.Tenant, ev.Collection, ev.Doc, ev.ID)
			}
		}
	})
}

// FuzzEventSubjectCheck fuzzes the projector's validation path for one
// message: events.DecodeEvent on the payload, then Event.CheckSubject.
// Whenever both pass, the subject's tenant and client tokens are the
// payload's, so NATS permissions on events.ClientEvents(T, C) confine the
// payload to tenant T and client C too (no smuggling, no writing as another
// client); and a valid event re-encodes to a payload that decodes to the
// same event.
func FuzzEventSubjectCheck(f *testing.F) {
	ev := events.Event{Schema: 1, ID: events.NewIDSource(nil).New().String(), Tenant: "acme", Collection: "todos", Doc: "t1", Op: events.OpPut,
		Fields: events.Fields{"title": json.RawMessage(`"x"`)}, HLC: events.NewClock(nil, 0).Now(), Client: "alice", Seq: 1}
	b, _ := events.EncodeEvent(&ev)
	f.Add(ev.Subject(), b)
	f.Add(events.EventSubject("evil", "alice", "todos", "t1"), b)
	f.Add(events.EventSubject("acme", "mallory", "todos", "t1"), b)
	f.Add("ebb.evt.~YWNtZQ.alice.todos.t1", b)
	f.Add("ebb.evt.acme.alice.todos", []byte(`{}`))
	f.Fuzz(func(t *testing.T, subject string, data []byte) {
		ev, err := events.DecodeEvent(data, events.Limits{})
		if err != nil {
			if !errors.Is(err, events.ErrInvalid) && !errors.Is(err, events.ErrUnknownSchema) {
				t.Fatalf("decode error %v wraps neither ErrInvalid nor ErrUnknownSchema", err)
			}
			return
		}
		again, err := events.EncodeEvent(ev)
		if err != nil {
			t.Fatalf("re-encode a decoded event: %v", err)
		}
		ev2, err := events.DecodeEvent(again, events.Limits{})
		if err != nil {
			t.Fatalf("a decoded event re-encodes to an invalid one: %v", err)
		}
		if ev2.Subject() != ev.Subject() || ev2.ID != ev.ID || ev2.Seq != ev.Seq {
			t.Fatalf("round trip changed the event: %+v vs %+v", ev, ev2)
		}
		if ev.CheckSubject(subject) != nil {
			return // the projector dead-letters it
		}
		addr, err := events.ParseEventSubject(subject)
		if err != nil || addr.DocAddress != ev.Address() || addr.Client != ev.Client {
			t.Fatalf("subject %q passes the check but names %+v (%v) for event %+v", subject, addr, err, ev)
		}
		tenant, err := events.TenantOfSubject(subject)
		if err != nil || tenant != ev.Tenant {
			t.Fatalf("subject %q passes the check but its tenant token is %q (%v), payload tenant %q", subject, tenant, err, ev.Tenant)
		}
	})
}
