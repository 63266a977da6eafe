package embedded_test

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/deploy/auth"
	"github.com/ebbsync/ebb/deploy/embedded"
	"github.com/ebbsync/ebb/deploy/embedded/embeddedtest"
)

// benchUsers returns n client users of tenant acme (u0 ... u<n-1>, password
// "pw") as auth makes them: one account each.
func benchUsers(tb testing.TB, n int) []*server.User {
	tb.Helper()
	var b strings.Builder
	b.WriteString("users:\n")
	for i := range n {
		fmt.Fprintf(&b, "  - {name: u%d, password: pw, tenant: acme, role: client}\n", i)
	}
	u, err := auth.Parse([]byte(b.String()))
	if err != nil {
		tb.Fatal(err)
	}
	return u.NATSUsers()
}

// benchModes are the deployments compared: no auth (everyone in the
// global account with the streams), and auth with an account per user.
var benchModes = []struct {
	name  string
	users func(testing.TB) []*server.User
}{
	{"global", func(testing.TB) []*server.User { return nil }},
	{"account-per-user", func(tb testing.TB) []*server.User { return benchUsers(tb, 100) }},
}

func benchConnect(b *testing.B, s *embedded.Server, auth bool) *nats.Conn {
	b.Helper()
	opts := []nats.Option{nats.NoReconnect()}
	if auth {
		opts = append(opts, nats.UserInfo("u0", "pw"), nats.CustomInboxPrefix("_INBOX_u0"))
	}
	nc, err := nats.Connect(s.ClientURL(), opts...)
	if err != nil {
		b.Fatal(err)
	}
	return nc
}

// BenchmarkAccounts_Connect measures a client's connection setup (TCP,
// INFO/CONNECT, login check, account registration) over loopback.
//
//	go test -run x -bench Accounts -benchtime 2000x ./deploy/embedded/
func BenchmarkAccounts_Connect(b *testing.B) {
	for _, m := range benchModes {
		b.Run(m.name, func(b *testing.B) {
			users := m.users(b)
			s := embeddedtest.MustStart(b, func(c *embedded.Config) { c.Users = users; c.Login.Burst = 1 << 30 })
			b.ResetTimer()
			for b.Loop() {
				nc := benchConnect(b, s, users != nil)
				if err := nc.Flush(); err != nil {
					b.Fatal(err)
				}
				nc.Close()
			}
		})
	}
}

// BenchmarkAccounts_PublishAck measures one synchronous JetStream publish
// (event in, PubAck back): directly in the streams' account, or through the
// user account's service import.
func BenchmarkAccounts_PublishAck(b *testing.B) {
	for _, m := range benchModes {
		b.Run(m.name, func(b *testing.B) {
			users := m.users(b)
			s := embeddedtest.MustStart(b, func(c *embedded.Config) {
				c.Users = users
				c.Sync = embedded.SyncPolicy{Interval: embedded.NATSDefaultSyncInterval}
				// The path's cost, not the publish rate quota: no limit in reach.
				c.Meter = auth.NewMeter(auth.Quotas{Publish: auth.PublishLimit{EventsPerSecond: 1e9, BytesPerSecond: 1 << 50}})
			})
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if _, err := embeddedtest.MustJetStream(b, embeddedtest.MustConnect(b, s)).CreateStream(ctx,
				jetstream.StreamConfig{Name: "EVENTS", Subjects: []string{"ebb.evt.>"}}); err != nil {
				b.Fatal(err)
			}
			nc := benchConnect(b, s, users != nil)
			defer nc.Close()
			js, _ := jetstream.New(nc)
			msg := make([]byte, 256)
			b.ResetTimer()
			for b.Loop() {
				if _, err := js.Publish(ctx, "ebb.evt.acme.u0.todos.t1", msg); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkAccounts_Start measures starting the embedded server with n
// users, one account each, and the heap it holds for them.
func BenchmarkAccounts_Start(b *testing.B) {
	for _, n := range []int{10, 1000} {
		b.Run(fmt.Sprintf("users=%d", n), func(b *testing.B) {
			users := benchUsers(b, n)
			var before, after runtime.MemStats
			for b.Loop() {
				runtime.GC()
				runtime.ReadMemStats(&before)
				s, err := embedded.Start(b.Context(), embedded.Config{Dir: b.TempDir(), DontListen: true, Users: users})
				if err != nil {
					b.Fatal(err)
				}
				runtime.GC()
				runtime.ReadMemStats(&after)
				b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(n), "heap-B/user")
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				_ = s.Shutdown(ctx)
				cancel()
			}
		})
	}
}
