package main

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/events"
)

// TestHostile_DurableTakeover: a service's durable subscription cannot be
// updated (new filter, silly ack wait, an inactive threshold that makes
// the server delete it), read from, acked for or deleted by anyone but
// its owner, of another tenant or of the same one.
func TestHostile_DurableTakeover(t *testing.T) {
	srv := serveInProcess(t, "", "--auth", writeFile(t, "users.yaml", usersYAML))
	alice := map[string]string{"EBB_NATS": srv.nats, "EBB_TENANT": "acme", "EBB_DATA": filepath.Join(t.TempDir(), "alice"), "EBB_USER": "alice", "EBB_PASSWORD": "alice-pw"}
	mustCLI(t, alice, "put", "todos", "t1", `{"title":"acme secret"}`)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	svc := connectAs(t, srv.nats, "svc", "svc-pw", nil)
	sjs, _ := jetstream.New(svc)
	want := jetstream.ConsumerConfig{Durable: "acme-billing", FilterSubject: events.TenantChanges("acme"),
		AckPolicy: jetstream.AckExplicitPolicy, AckWait: 30 * time.Second}
	if _, err := sjs.CreateOrUpdateConsumer(ctx, events.StreamChanges, want); err != nil {
		t.Fatalf("owner creates its durable: %v", err)
	}
	root := connectAs(t, srv.nats, "root", "root-pw", nil)
	rjs, _ := jetstream.New(root)
	durable := func() *jetstream.ConsumerInfo {
		t.Helper()
		c, err := rjs.Consumer(ctx, events.StreamChanges, "acme-billing")
		if err != nil {
			t.Fatalf("durable acme-billing: %v", err)
		}
		info, err := c.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info
	}
	before := durable()

	takeovers := []struct {
		name string
		do   func(ctx context.Context, nc *nats.Conn, js jetstream.JetStream) error
	}{
		{"update with my tenant's filter", func(ctx context.Context, _ *nats.Conn, js jetstream.JetStream) error {
			c := want
			c.FilterSubject = events.TenantChanges("evil")
			_, err := js.CreateOrUpdateConsumer(ctx, events.StreamChanges, c)
			return err
		}},
		{"update with the owner's filter and an inactive threshold of 1s", func(ctx context.Context, _ *nats.Conn, js jetstream.JetStream) error {
			c := want
			c.InactiveThreshold, c.AckWait = time.Second, time.Second
			_, err := js.CreateOrUpdateConsumer(ctx, events.StreamChanges, c)
			return err
		}},
		{"legacy durable create", func(ctx context.Context, nc *nats.Conn, _ jetstream.JetStream) error {
			_, err := nc.RequestWithContext(ctx, "$JS.API.CONSUMER.DURABLE.CREATE.CHANGES.acme-billing",
				[]byte(`{"stream_name":"CHANGES","config":{"durable_name":"acme-billing","ack_policy":"explicit","inactive_threshold":1000000000}}`))
			return err
		}},
		{"fetch from it", func(ctx context.Context, _ *nats.Conn, js jetstream.JetStream) error {
			c, err := js.Consumer(ctx, events.StreamChanges, "acme-billing")
			if err != nil {
				return err
			}
			_, err = c.Next(jetstream.FetchMaxWait(time.Second))
			return err
		}},
		{"fetch from it by subject", func(ctx context.Context, nc *nats.Conn, _ jetstream.JetStream) error {
			_, err := nc.RequestWithContext(ctx, "$JS.API.CONSUMER.MSG.NEXT.CHANGES.acme-billing", []byte(`{"batch":1,"expires":500000000}`))
			return err
		}},
		{"delete it", func(ctx context.Context, _ *nats.Conn, js jetstream.JetStream) error {
			return js.DeleteConsumer(ctx, events.StreamChanges, "acme-billing")
		}},
		{"ack for it", func(ctx context.Context, nc *nats.Conn, _ jetstream.JetStream) error {
			if err := nc.Publish("$JS.ACK.CHANGES.acme-billing.1.1.1.1.0", []byte("+ACK")); err != nil {
				return err
			}
			if err := nc.FlushWithContext(ctx); err != nil {
				return err
			}
			return nc.LastError()
		}},
	}
	refused, tried := 0, 0
	for _, who := range []struct{ user, pw string }{{"eve", "eve-pw"}, {"bob", "bob-pw"}} {
		for _, tk := range takeovers {
			tried++
			t.Run(who.user+"/"+tk.name, func(t *testing.T) {
				errs := make(chan error, 8)
				nc := connectAs(t, srv.nats, who.user, who.pw, errs)
				js, _ := jetstream.New(nc)
				short, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
				defer cancel()
				err := tk.do(short, nc, js)
				if err == nil {
					t.Fatal("succeeded, want refused")
				}
				select {
				case aerr := <-errs:
					if !errors.Is(aerr, nats.ErrPermissionViolation) {
						t.Fatalf("async error %v, want a permission violation", aerr)
					}
					refused++
				case <-time.After(5 * time.Second):
					t.Fatalf("refused with %v but no permission violation reported", err)
				}
			})
		}
	}
	t.Logf("%d of %d takeover attempts refused", refused, tried)
	after := durable()
	if after.Config.FilterSubject != before.Config.FilterSubject || after.Config.AckWait != before.Config.AckWait ||
		after.Config.InactiveThreshold != before.Config.InactiveThreshold || !after.Created.Equal(before.Created) {
		t.Fatalf("the owner's durable changed: %+v, want %+v", after.Config, before.Config)
	}
	if after.NumAckPending != 0 || after.Delivered.Consumer != 0 {
		t.Fatalf("a stranger fetched from the owner's durable: delivered %d, ack pending %d", after.Delivered.Consumer, after.NumAckPending)
	}
	// Silly values are refused even to the owner, with a clear error.
	for _, silly := range []jetstream.ConsumerConfig{
		{Durable: "acme-billing", FilterSubject: events.TenantChanges("acme"), AckPolicy: jetstream.AckExplicitPolicy, AckWait: time.Millisecond},
		{Durable: "acme-billing", FilterSubject: events.TenantChanges("acme"), AckPolicy: jetstream.AckExplicitPolicy, AckWait: 30 * time.Second, InactiveThreshold: 100 * time.Millisecond},
	} {
		_, err := sjs.CreateOrUpdateConsumer(ctx, events.StreamChanges, silly)
		var apiErr *jetstream.APIError
		if !errors.As(err, &apiErr) || !strings.Contains(apiErr.Description, "is below") {
			t.Errorf("owner sets ack wait %s, inactive threshold %s: %v, want refused", silly.AckWait, silly.InactiveThreshold, err)
		}
	}
	if d := durable(); d.Config.AckWait != before.Config.AckWait || d.Config.InactiveThreshold != before.Config.InactiveThreshold {
		t.Fatalf("a silly value reached the durable: %+v", d.Config)
	}
	// The owner still uses it.
	c, err := sjs.Consumer(ctx, events.StreamChanges, "acme-billing")
	if err != nil {
		t.Fatal(err)
	}
	m, err := c.Next(jetstream.FetchMaxWait(5 * time.Second))
	if err != nil {
		t.Fatalf("owner fetches: %v", err)
	}
	if err := m.DoubleAck(ctx); err != nil {
		t.Fatalf("owner acks: %v", err)
	}
	if !strings.HasPrefix(m.Subject(), "ebb.chg.acme.") {
		t.Fatalf("owner got %s", m.Subject())
	}
}
