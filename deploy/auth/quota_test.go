package auth_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ebbsync/ebb/deploy/auth"
	"github.com/ebbsync/ebb/deploy/embedded/embeddedtest"
	"github.com/ebbsync/ebb/events"
)

// TestMeter_MeasureCountsEachTenant: a measure counts each tenant's
// messages in EVENTS, CHANGES (the last per document only) and DEAD, by
// their subjects, headers and payload sizes, without reading payloads.
func TestMeter_MeasureCountsEachTenant(t *testing.T) {
	srv := embeddedtest.MustStart(t, embeddedtest.InProcess())
	js := embeddedtest.MustJetStream(t, embeddedtest.MustConnect(t, srv))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := events.EnsureStreams(ctx, js, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	payload := []byte(strings.Repeat("x", 1000))
	want := map[string]int64{}
	pub := func(tenant, subject string, counts bool) {
		t.Helper()
		if _, err := js.Publish(ctx, subject, payload); err != nil {
			t.Fatalf("publish %s: %v", subject, err)
		}
		if counts {
			want[tenant] += int64(len(subject) + len(payload))
		}
	}
	for i := range 20 {
		pub("acme", events.EventSubject("acme", "alice", "todos", fmt.Sprint(i)), true)
	}
	pub("acme", events.ChangeSubject("acme", "todos", "t1"), false) // replaced below
	pub("acme", events.ChangeSubject("acme", "todos", "t1"), true)
	pub("acme", events.DeadSubject("acme"), true)
	pub("evil", events.EventSubject("evil", "eve", "todos", "x"), true)

	m := auth.NewMeter(auth.Quotas{Storage: auth.StorageLimit{TenantBytes: 30000}})
	if err := m.Measure(ctx, js); err != nil {
		t.Fatal(err)
	}
	for tenant, w := range want {
		// Nats-Msg-Size itself is not counted; a plain publish has no
		// other headers.
		if got := m.Usage(tenant); got != w {
			t.Errorf("usage of %s: %d, want %d", tenant, got, w)
		}
	}
	if got := m.Usage("nobody"); got != 0 {
		t.Errorf("usage of a tenant with no messages: %d", got)
	}
	// acme keeps about 23 KB: under 30000 an event passes; a measure
	// that finds it over the limit refuses the next.
	if err := m.Allow("acme", "alice", 100); err != nil {
		t.Fatalf("under the quota: %v", err)
	}
	for i := range 8 {
		pub("acme", events.EventSubject("acme", "alice", "more", fmt.Sprint(i)), true)
	}
	if err := m.Measure(ctx, js); err != nil {
		t.Fatal(err)
	}
	if err := m.Allow("acme", "alice", 100); !errors.Is(err, auth.ErrTenantStorage) {
		t.Fatalf("after a measure over the quota (%d bytes): %v, want %v", m.Usage("acme"), err, auth.ErrTenantStorage)
	}
}

func TestParse_Quotas(t *testing.T) {
	u, err := auth.Parse([]byte(`limits:
  publish: {events_per_second: 5, bytes_per_second: 100, burst: 3s}
  storage: {tenant_bytes: 9000, rescan: 1m}
users:
  - {name: alice, password: pw, tenant: acme, role: client}
`))
	if err != nil {
		t.Fatal(err)
	}
	q := u.Limits().Quotas()
	if q.Publish != (auth.PublishLimit{EventsPerSecond: 5, BytesPerSecond: 100, Burst: 3 * time.Second}) ||
		q.Storage != (auth.StorageLimit{TenantBytes: 9000, Rescan: time.Minute}) || q.MaxPayload != auth.DefaultMaxPayload {
		t.Fatalf("quotas %+v", q)
	}
	_, err = auth.Parse([]byte("limits: {publish: {events_per_second: -1}, storage: {tenant_bytes: -5}}\nusers: [{name: a, password: p, tenant: t, role: client}]\n"))
	if !errors.Is(err, auth.ErrInvalidUsers) || !strings.Contains(err.Error(), "events_per_second") || !strings.Contains(err.Error(), "tenant_bytes") {
		t.Fatalf("negative quotas: %v, want both refused", err)
	}
}

// BenchmarkMeter_Measure: one storage measure of 20000 events of 300
// bytes in EVENTS (go test -run x -bench Measure ./deploy/auth); msgs/s
// is what sizes StorageLimit.Rescan for a large EVENTS.
func BenchmarkMeter_Measure(b *testing.B) {
	srv := embeddedtest.MustStart(b, embeddedtest.InProcess())
	js := embeddedtest.MustJetStream(b, embeddedtest.MustConnect(b, srv))
	ctx := context.Background()
	if err := events.EnsureStreams(ctx, js, events.StreamOptions{}); err != nil {
		b.Fatal(err)
	}
	const n = 20000
	payload := []byte(strings.Repeat("x", 300))
	for i := range n {
		if _, err := js.PublishAsync(events.EventSubject(fmt.Sprintf("t%d", i%10), "u", "c", fmt.Sprint(i)), payload); err != nil {
			b.Fatal(err)
		}
		if i%1000 == 999 {
			select {
			case <-js.PublishAsyncComplete():
			case <-time.After(time.Minute):
				b.Fatal("publishes not acknowledged")
			}
		}
	}
	m := auth.NewMeter(auth.Quotas{})
	b.ResetTimer()
	for b.Loop() {
		if err := m.Measure(ctx, js); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "msgs/s")
	if got := m.Usage("t0"); got < n/10*300 {
		b.Fatalf("usage of t0 %d, want at least %d", got, n/10*300)
	}
}
