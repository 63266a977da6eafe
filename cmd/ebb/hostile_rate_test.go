package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/deploy/auth"
	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/producer"
)

// hostileEvent returns a valid event of client in tenant on document doc,
// encoded, with a payload of about pad bytes more.
func hostileEvent(t *testing.T, tenant, client, doc string, seq uint64, pad int) (*events.Event, []byte) {
	t.Helper()
	ev := &events.Event{Schema: 1, ID: events.NewIDSource(nil).New().String(), Tenant: tenant, Collection: "todos",
		Doc: doc, Op: events.OpPut, Fields: events.Fields{"pad": []byte(`"` + strings.Repeat("x", pad) + `"`)},
		HLC: events.NewClock(nil, 0).Now(), Client: client, Seq: seq}
	data, err := events.EncodeEvent(ev)
	if err != nil {
		t.Fatal(err)
	}
	return ev, data
}

// eventsOf counts the messages of one client in EVENTS (as an admin).
func eventsOf(t *testing.T, js jetstream.JetStream, tenant, client string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, events.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(events.ClientEvents(tenant, client)))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, c := range info.State.Subjects {
		n += int(c)
	}
	return n
}

// quotaRefused reports whether err is the PubAck refusal of a quota with
// the given JetStream err_code, and checks that it names what it must.
func quotaRefused(t *testing.T, err error, errCode jetstream.ErrorCode, mustSay ...string) bool {
	t.Helper()
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) || apiErr.ErrorCode != errCode {
		return false
	}
	for _, s := range mustSay {
		if !strings.Contains(apiErr.Description, s) {
			t.Errorf("refusal %q does not say %q", apiErr.Description, s)
		}
	}
	return true
}

// TestHostile_PublishRateFlood: with the default quotas, a user flooding
// EVENTS over NATS as fast as its connection allows has most events
// refused with a PubAck naming the quota, only what the quota allows is
// stored, and a well-behaved user publishing at the same time loses
// nothing.
func TestHostile_PublishRateFlood(t *testing.T) {
	srv := serveInProcess(t, "", "--auth", writeFile(t, "users.yaml", usersYAML))
	root := connectAs(t, srv.nats, "root", "root-pw", nil)
	rjs, _ := jetstream.New(root)
	eve := connectAs(t, srv.nats, "eve", "eve-pw", nil)
	ejs, _ := jetstream.New(eve)
	alice := connectAs(t, srv.nats, "alice", "alice-pw", nil)
	ajs, _ := jetstream.New(alice)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// Alice: 40 events/s, well under the quota, for as long as eve floods.
	stop := make(chan struct{})
	type aliceResult struct {
		sent int
		err  error
	}
	aliceDone := make(chan aliceResult, 1)
	go func() {
		tick := time.NewTicker(25 * time.Millisecond)
		defer tick.Stop()
		var r aliceResult
		for {
			select {
			case <-stop:
				aliceDone <- r
				return
			case <-tick.C:
			}
			doc := fmt.Sprintf("a%d", r.sent)
			_, data := hostileEvent(t, "acme", "alice", doc, uint64(r.sent+1), 10)
			if _, err := ajs.Publish(ctx, events.EventSubject("acme", "alice", "todos", doc), data); err != nil && r.err == nil {
				r.err = fmt.Errorf("alice's event %d: %w", r.sent, err)
			}
			r.sent++
		}
	}()

	// Eve: batches of 500 as fast as their PubAcks come, for 2 s and until
	// 100 are refused (or 20000 sent: never refused).
	start := time.Now()
	accepted, refused, sent := 0, 0, 0
	for (refused < 100 || time.Since(start) < 2*time.Second) && sent < 20000 {
		futures := make([]jetstream.PubAckFuture, 0, 500)
		for range 500 {
			ev, data := hostileEvent(t, "evil", "eve", fmt.Sprintf("f%d", sent), uint64(sent+1), 10)
			sent++
			msg := nats.NewMsg(ev.Subject())
			msg.Data = data
			msg.Header.Set(jetstream.MsgIDHeader, ev.ID)
			f, err := ejs.PublishMsgAsync(msg)
			if err != nil {
				t.Fatalf("flood event %d: %v", sent, err)
			}
			futures = append(futures, f)
		}
		for i, f := range futures {
			select {
			case <-f.Ok():
				accepted++
			case err := <-f.Err():
				if !quotaRefused(t, err, auth.ErrCodePublishRate, `tenant "evil" user "eve"`, "publish rate quota exceeded", "500 events/s") {
					t.Fatalf("flood event %d: %v, want a publish rate refusal", sent-len(futures)+i, err)
				}
				refused++
			case <-ctx.Done():
				t.Fatalf("flood event %d: no answer", sent-len(futures)+i)
			}
		}
	}
	elapsed := time.Since(start)
	close(stop)
	al := <-aliceDone
	t.Logf("flood of %d in %s: %d accepted, %d refused; alice sent %d meanwhile", sent, elapsed, accepted, refused, al.sent)
	// The bucket holds 2 s of rate (1000 events) and refills at 500/s.
	if allowed := 1000 + int(500*elapsed.Seconds()) + 1; refused < 100 || accepted > allowed {
		t.Fatalf("%d accepted and %d refused in %s; want 100 refused and at most %d accepted", accepted, refused, elapsed, allowed)
	}
	if al.err != nil {
		t.Fatalf("a well-behaved user was affected by the flood: %v", al.err)
	}
	if n := eventsOf(t, rjs, "evil", "eve"); n != accepted {
		t.Fatalf("EVENTS holds %d of eve's events, %d were accepted", n, accepted)
	}
	if n := eventsOf(t, rjs, "acme", "alice"); n != al.sent || n == 0 {
		t.Fatalf("EVENTS holds %d of alice's events, she sent %d", n, al.sent)
	}
}

// TestHostile_PublishRateProducerKeepsWrites: a device writing faster than
// its quota has events refused, and its local log keeps each one and
// retries it with backoff until all are in EVENTS: nothing accepted by the
// log is lost.
func TestHostile_PublishRateProducerKeepsWrites(t *testing.T) {
	srv := serveInProcess(t, "", "--auth", writeFile(t, "users.yaml", usersYAML), "--publish-rate", "40")
	root := connectAs(t, srv.nats, "root", "root-pw", nil)
	rjs, _ := jetstream.New(root)
	eve := connectAs(t, srv.nats, "eve", "eve-pw", nil)
	ejs, _ := jetstream.New(eve)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	log, err := producer.Open(filepath.Join(t.TempDir(), "eve.db"), producer.LogConfig{Tenant: "evil", Client: "eve"})
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	const n = 200 // the bucket holds 80 (2 s at 40/s): the rest waits for the rate
	for i := range n {
		if _, err := log.Append(ctx, producer.Write{Collection: "todos", Doc: fmt.Sprintf("d%d", i), Op: events.OpPut,
			Fields: events.Fields{"i": json.RawMessage(fmt.Sprint(i))}}); err != nil {
			t.Fatal(err)
		}
	}
	pub, err := producer.NewPublisher(log, ejs, eve, producer.PublisherConfig{BackoffInitial: 50 * time.Millisecond, BackoffMax: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := pub.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	sawRefusal := false
	waitFor(t, 45*time.Second, "every logged event published", func() bool {
		st := pub.Status()
		if strings.Contains(st.LastError, "publish rate quota exceeded") {
			sawRefusal = true
		}
		return st.Pending == 0
	})
	st := pub.Status()
	if st.Failed != 0 {
		t.Fatalf("%d events failed for good; a quota refusal must be retried", st.Failed)
	}
	if !sawRefusal && !strings.Contains(st.LastError, "publish rate quota exceeded") {
		t.Fatalf("no refusal seen (last error %q); the test did not reach the quota", st.LastError)
	}
	if got := eventsOf(t, rjs, "evil", "eve"); got != n {
		t.Fatalf("EVENTS holds %d of eve's events, want all %d", got, n)
	}
}

// TestHostile_PublishRateHTTP: the HTTP push keeps the user's quota: a
// push over it is answered 429 with Retry-After and the quota named, the
// user's NATS connection shares the same budget, and another user's push
// is unaffected.
func TestHostile_PublishRateHTTP(t *testing.T) {
	srv := serveInProcess(t, "", "--auth", writeFile(t, "users.yaml", usersYAML), "--publish-rate", "10")
	root := connectAs(t, srv.nats, "root", "root-pw", nil)
	rjs, _ := jetstream.New(root)
	batch := func(tenant, client string, n int) string {
		var parts []string
		for i := range n {
			_, data := hostileEvent(t, tenant, client, fmt.Sprintf("h%d", i), uint64(i+1), 10)
			parts = append(parts, string(data))
		}
		return "[" + strings.Join(parts, ",") + "]"
	}
	eve := connectAs(t, srv.nats, "eve", "eve-pw", nil)
	ejs, _ := jetstream.New(eve)
	// 20 in the bucket (2 s at 10/s), plus what it refills while a batch
	// runs: pushing batches until one is refused must stop near 20.
	accepted := 0
	var code int
	var body string
	var retryAfter string
	for round := 0; round < 10; round++ {
		req, err := http.NewRequest("POST", srv.http+"/v1/evil/events", strings.NewReader(batch("evil", "eve", 10)))
		if err != nil {
			t.Fatal(err)
		}
		req.SetBasicAuth("eve", "eve-pw")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		code, body, retryAfter = resp.StatusCode, string(b), resp.Header.Get("Retry-After")
		accepted += strings.Count(body, `"status":"accepted"`)
		if code != http.StatusOK {
			break
		}
	}
	if code != http.StatusTooManyRequests || retryAfter == "" ||
		!strings.Contains(body, `tenant \"evil\" user \"eve\": publish rate quota exceeded`) {
		t.Fatalf("after %d accepted: %d (Retry-After %q) %s; want 429 naming the quota", accepted, code, retryAfter, body)
	}
	if accepted < 20 || accepted > 30 {
		t.Fatalf("%d events accepted over HTTP under a quota of 10/s with 2 s of burst", accepted)
	}
	// One budget for both paths: 15 events at once over NATS fit in a
	// bucket of 20 of its own, but not in the one HTTP just emptied.
	var futures []jetstream.PubAckFuture
	for i := range 15 {
		ev, data := hostileEvent(t, "evil", "eve", fmt.Sprintf("n%d", i), uint64(1000+i), 10)
		msg := nats.NewMsg(ev.Subject())
		msg.Data = data
		f, err := ejs.PublishMsgAsync(msg)
		if err != nil {
			t.Fatal(err)
		}
		futures = append(futures, f)
	}
	natsRefused := 0
	for _, f := range futures {
		select {
		case <-f.Ok():
			accepted++
		case err := <-f.Err():
			if !quotaRefused(t, err, auth.ErrCodePublishRate, "publish rate quota exceeded") {
				t.Fatalf("eve over NATS: %v", err)
			}
			natsRefused++
		case <-time.After(10 * time.Second):
			t.Fatal("no PubAck")
		}
	}
	if natsRefused < 10 {
		t.Fatalf("%d of 15 NATS events refused right after eve's HTTP budget ran out; want at least 10 (one budget)", natsRefused)
	}
	if n := eventsOf(t, rjs, "evil", "eve"); n != accepted {
		t.Fatalf("EVENTS holds %d of eve's events, %d were accepted", n, accepted)
	}
	code, body = httpDo(t, "POST", srv.http+"/v1/acme/events", "alice", "alice-pw", batch("acme", "alice", 5))
	if code != 200 || strings.Count(body, `"status":"accepted"`) != 5 {
		t.Fatalf("alice's push while eve is over her quota: %d %s", code, body)
	}
}

// TestHostile_TenantStorageQuota: a tenant at its storage quota has its
// next events refused, over NATS and HTTP, with an error naming the tenant
// and the limit, while another tenant keeps writing.
func TestHostile_TenantStorageQuota(t *testing.T) {
	srv := serveInProcess(t, "", "--auth", writeFile(t, "users.yaml", usersYAML), "--tenant-storage", "40000")
	eve := connectAs(t, srv.nats, "eve", "eve-pw", nil)
	ejs, _ := jetstream.New(eve)
	alice := connectAs(t, srv.nats, "alice", "alice-pw", nil)
	ajs, _ := jetstream.New(alice)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	accepted := 0
	var err error
	for i := 0; i < 100 && err == nil; i++ {
		_, data := hostileEvent(t, "evil", "eve", fmt.Sprintf("s%d", i), uint64(i+1), 1000)
		if _, err = ejs.Publish(ctx, events.EventSubject("evil", "eve", "todos", fmt.Sprintf("s%d", i)), data); err == nil {
			accepted++
		}
	}
	if !quotaRefused(t, err, auth.ErrCodeTenantStorage, `tenant "evil"`, "tenant storage quota exceeded", "its limit is 40000") {
		t.Fatalf("after %d events of 1 KiB: %v, want the tenant storage refusal", accepted, err)
	}
	if accepted < 30 || accepted > 40 {
		t.Fatalf("%d events of 1 KiB accepted under a 40000-byte quota", accepted)
	}
	if _, data := hostileEvent(t, "acme", "alice", "ok", 1, 1000); true {
		if _, err := ajs.Publish(ctx, events.EventSubject("acme", "alice", "todos", "ok"), data); err != nil {
			t.Fatalf("another tenant's event while evil is at its quota: %v", err)
		}
	}
	_, data := hostileEvent(t, "evil", "eve", "http", 500, 10)
	code, body := httpDo(t, "POST", srv.http+"/v1/evil/events", "eve", "eve-pw", "["+string(data)+"]")
	if code != http.StatusInsufficientStorage || !strings.Contains(body, `"status":"failed"`) || !strings.Contains(body, "tenant storage quota exceeded") {
		t.Fatalf("push over the storage quota: %d %s, want failed by the quota", code, body)
	}
}
