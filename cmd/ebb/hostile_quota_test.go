package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/events"
)

// quotaUsersYAML is usersYAML with small limits, so a test can reach each.
const quotaUsersYAML = `limits: {max_connections: 3, max_subscriptions: 8, max_payload: 4096, max_consumers: 20, max_consumers_per_user: 6}
` + usersYAML

// TestHostile_Quotas: every per-user limit is reached by one user and
// answered with nats-server's own error (consumers per user: the consumer
// create responder's), while another user of the same tenant is not
// affected; the consumers of all users together meet JetStream's limit.
func TestHostile_Quotas(t *testing.T) {
	srv := serveInProcess(t, "", "--auth", writeFile(t, "users.yaml", quotaUsersYAML))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dial := func(user, pw string, errs chan<- error) (*nats.Conn, error) {
		opts := []nats.Option{nats.UserInfo(user, pw), nats.CustomInboxPrefix("_INBOX_" + user), nats.NoReconnect()}
		if errs != nil {
			opts = append(opts, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
				select {
				case errs <- err:
				default:
				}
			}))
		}
		return nats.Connect(srv.nats, opts...)
	}

	t.Run("connections", func(t *testing.T) {
		var conns []*nats.Conn
		defer func() {
			for _, nc := range conns {
				nc.Close()
			}
		}()
		var err error
		for i := 0; i < 4 && err == nil; i++ {
			var nc *nats.Conn
			if nc, err = dial("eve", "eve-pw", nil); err == nil {
				conns = append(conns, nc)
			}
		}
		if len(conns) != 3 || !errors.Is(err, nats.ErrMaxAccountConnectionsExceeded) {
			t.Fatalf("eve held %d connections, then %v; want 3, then %v", len(conns), err, nats.ErrMaxAccountConnectionsExceeded)
		}
		nc, err := dial("alice", "alice-pw", nil)
		if err != nil {
			t.Fatalf("alice connects while eve is at her limit: %v", err)
		}
		nc.Close()
	})

	t.Run("subscriptions", func(t *testing.T) {
		errs := make(chan error, 1)
		nc, err := dial("eve", "eve-pw", errs)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		for i := range 9 {
			if _, err := nc.SubscribeSync(fmt.Sprintf("_INBOX_eve.s%d", i)); err != nil {
				t.Fatal(err)
			}
		}
		if err := nc.FlushWithContext(ctx); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-errs:
			if !errors.Is(err, nats.ErrMaxSubscriptionsExceeded) {
				t.Fatalf("async error %v, want %v", err, nats.ErrMaxSubscriptionsExceeded)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("a 9th subscription was not refused")
		}
	})

	t.Run("payload", func(t *testing.T) {
		errs := make(chan error, 1)
		nc, err := dial("eve", "eve-pw", errs)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		js, _ := jetstream.New(nc)
		big := []byte(`{"pad":"` + strings.Repeat("x", 5000) + `"}`)
		_, perr := js.Publish(ctx, events.EventSubject("evil", "eve", "todos", "big"), big)
		if perr == nil {
			t.Fatal("a 5000-byte publish was accepted under a 4096-byte limit")
		}
		// nats.go refuses before sending once the server's INFO told it
		// the account's limit; before that, nats-server answers -ERR
		// 'Maximum Payload Violation' and closes the connection, which
		// nats.go keeps as the last error.
		if errors.Is(perr, nats.ErrMaxPayload) {
			return
		}
		waitFor(t, 5*time.Second, "the connection closed", nc.IsClosed)
		if last := nc.LastError(); last == nil || !strings.Contains(strings.ToLower(last.Error()), "maximum payload") {
			t.Fatalf("publish: %v, connection's last error %v; want a maximum payload violation", perr, last)
		}
	})

	create := func(ctx context.Context, user, pw, name, filter string) error {
		nc, err := dial(user, pw, nil)
		if err != nil {
			return err
		}
		defer nc.Close()
		js, _ := jetstream.New(nc)
		// One create request; no subscription held.
		_, err = js.CreateConsumer(ctx, events.StreamChanges, jetstream.ConsumerConfig{
			Name: name, FilterSubject: filter, InactiveThreshold: time.Minute})
		return err
	}
	t.Run("consumers per user", func(t *testing.T) {
		var cerr error
		n := 0
		for ; n < 30 && cerr == nil; n++ {
			cerr = create(ctx, "eve", "eve-pw", fmt.Sprintf("eve%d", n), events.TenantChanges("evil"))
		}
		var apiErr *jetstream.APIError
		if !errors.As(cerr, &apiErr) || apiErr.Code != 429 || !strings.Contains(apiErr.Description, `consumer quota: user "eve" holds 6 consumers`) ||
			!strings.Contains(apiErr.Description, "its limit is 6") || n != 7 {
			t.Fatalf("consumer %d: %v, want the 7th refused by the per-user consumer quota", n, cerr)
		}
		if err := create(ctx, "alice", "alice-pw", "alice0", events.TenantChanges("acme")); err != nil {
			t.Fatalf("alice's consumer while eve is at her limit: %v", err)
		}
	})

	t.Run("consumers in all", func(t *testing.T) {
		var cerr error
		n := 0
		// max_consumers is per stream: eve's 6 and alice's 1 on CHANGES so
		// far, then bob's 6 and svc's 6; alice's 3rd is the 21st, while she
		// is far from her own 6.
		for _, u := range []struct {
			user, pw string
			from     int
		}{{"bob", "bob-pw", 0}, {"svc", "svc-pw", 0}, {"alice", "alice-pw", 1}} {
			for i := u.from; i < 6 && cerr == nil; i++ {
				cerr = create(ctx, u.user, u.pw, fmt.Sprintf("%s%d", u.user, i), events.TenantChanges("acme"))
				n++
			}
		}
		var apiErr *jetstream.APIError
		if !errors.As(cerr, &apiErr) || !strings.Contains(apiErr.Description, "maximum consumers") {
			t.Fatalf("after %d more consumers: %v, want JetStream's maximum consumers error", n, cerr)
		}
	})
}

// TestHostile_OversizedEvent: with the default limits an event near
// nats-server's 1 MiB message limit (whose dead letter would outgrow it)
// is refused at the client's own connection and never reaches EVENTS.
func TestHostile_OversizedEvent(t *testing.T) {
	srv := serveInProcess(t, "", "--auth", writeFile(t, "users.yaml", usersYAML))
	root := connectAs(t, srv.nats, "root", "root-pw", nil)
	rjs, _ := jetstream.New(root)
	events0 := streamMsgs(t, rjs, events.StreamEvents)
	nc, err := nats.Connect(srv.nats, nats.UserInfo("eve", "eve-pw"), nats.CustomInboxPrefix("_INBOX_eve"), nats.NoReconnect())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	big := []byte(`{"pad":"` + strings.Repeat("x", 1000<<10) + `"}`)
	_, err = js.Publish(ctx, events.EventSubject("evil", "eve", "todos", "big"), big)
	// nats.go learns the account's limit from the server's INFO and
	// refuses before sending; if the publish beats that INFO, the server
	// refuses the message and closes the connection.
	if !errors.Is(err, nats.ErrMaxPayload) && !errors.Is(err, nats.ErrConnectionClosed) {
		t.Fatalf("publish of a 1000 KiB event: %v, want %v (or the connection closed by the server)", err, nats.ErrMaxPayload)
	}
	if n := streamMsgs(t, rjs, events.StreamEvents); n != events0 {
		t.Fatalf("EVENTS grew from %d to %d", events0, n)
	}
}
