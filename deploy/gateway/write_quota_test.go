package gateway_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ebbsync/ebb/deploy/auth"
	"github.com/ebbsync/ebb/deploy/embedded"
	"github.com/ebbsync/ebb/deploy/embedded/embeddedtest"
	"github.com/ebbsync/ebb/deploy/gateway"
	"github.com/ebbsync/ebb/events"
)

// newMeteredWriteEnv is newWriteEnv with users (eve of tenant evil) and
// the writer and gateway metered by m, as `ebb serve --auth` wires them.
func newMeteredWriteEnv(t *testing.T, m *auth.Meter) *writeEnv {
	t.Helper()
	users, err := auth.Parse([]byte(`users:
  - {name: eve, password: eve-pw, tenant: evil, role: client}
`))
	if err != nil {
		t.Fatal(err)
	}
	s := embeddedtest.MustStart(t, func(c *embedded.Config) { c.Sync.Interval = time.Minute })
	e := &writeEnv{s: s, dir: filepath.Join(t.TempDir(), "gateway"), view: filepath.Join(t.TempDir(), "view.db"), users: users}
	e.nc = embeddedtest.MustConnect(t, s)
	e.js = embeddedtest.MustJetStream(t, e.nc)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := events.EnsureStreams(ctx, e.js, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	e.startProjector(t)
	mjs := gateway.Metered(e.js, m)
	w, err := gateway.OpenWriter(ctx, gateway.WriterConfig{Dir: e.dir, JetStream: mjs, Conn: e.nc})
	if err != nil {
		t.Fatal(err)
	}
	g, err := gateway.New(gateway.Config{JetStream: mjs, Writer: w, WriteWait: 10 * time.Second, Users: users})
	if err != nil {
		t.Fatal(err)
	}
	e.w, e.srv = w, httptest.NewServer(g)
	t.Cleanup(func() { e.closeWriter(t) })
	return e
}

// TestWrite_OverPublishRateRefusedBeforeLog: document writes over the
// user's publish rate are answered 429 with Retry-After when they come,
// before anything is written into the server's write log, and every write
// accepted (2xx) is published and applied: 200 concurrent PUTs under a
// rate of 2 events/s (a burst of 4).
func TestWrite_OverPublishRateRefusedBeforeLog(t *testing.T) {
	m := auth.NewMeter(auth.Quotas{Publish: auth.PublishLimit{EventsPerSecond: 2}})
	e := newMeteredWriteEnv(t, m)
	var mu sync.Mutex
	codes := map[int]int{}
	var accepted []string // doc ids
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := fmt.Sprintf("d%d", i)
			req, _ := http.NewRequest("PUT", e.srv.URL+"/v1/evil/docs/todos/"+id, strings.NewReader(`{"pad":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}`))
			req.SetBasicAuth("eve", "eve-pw")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Errorf("PUT %s: %v", id, err)
				return
			}
			_ = resp.Body.Close()
			mu.Lock()
			defer mu.Unlock()
			codes[resp.StatusCode]++
			switch {
			case resp.StatusCode/100 == 2:
				accepted = append(accepted, id)
			case resp.StatusCode == http.StatusTooManyRequests:
				if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || s < 1 {
					t.Errorf("429 with Retry-After %q", resp.Header.Get("Retry-After"))
				}
			}
		}()
	}
	wg.Wait()
	t.Logf("status codes of 200 concurrent PUTs under a 2/s publish rate: %v", codes)
	if codes[http.StatusTooManyRequests] == 0 {
		t.Fatalf("no PUT refused by the publish rate quota: %v", codes)
	}
	if len(accepted)+codes[http.StatusTooManyRequests] != 200 {
		t.Fatalf("answers other than 2xx and 429: %v", codes)
	}
	// Every accepted write reaches CHANGES; nothing refused does.
	changes, err := e.js.Stream(t.Context(), events.StreamChanges)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range accepted {
		embeddedtest.WaitFor(t, 20*time.Second, "accepted write "+id+" in CHANGES", func() bool {
			_, err := changes.GetLastMsgForSubject(t.Context(), events.ChangeSubject("evil", "todos", id))
			return err == nil
		})
	}
	if n := e.countEvents(t); n != uint64(len(accepted)) {
		t.Fatalf("EVENTS holds %d events, %d writes were accepted", n, len(accepted))
	}
}

// TestWrite_OverTenantStorageRefusedBeforeLog: a document write of a
// tenant at its storage quota is answered 507 and never written; the
// writes before it were accepted and published.
func TestWrite_OverTenantStorageRefusedBeforeLog(t *testing.T) {
	m := auth.NewMeter(auth.Quotas{Storage: auth.StorageLimit{TenantBytes: 1500}})
	e := newMeteredWriteEnv(t, m)
	accepted := 0
	for i := range 10 {
		a := e.send(t, "PUT", fmt.Sprintf("/v1/evil/docs/todos/s%d", i), `{"pad":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}`, "user", "eve")
		if a.status == http.StatusInsufficientStorage {
			break
		}
		if a.status/100 != 2 {
			t.Fatalf("PUT %d: %d %s", i, a.status, a.raw)
		}
		accepted++
	}
	if accepted == 0 || accepted == 10 {
		t.Fatalf("%d of 10 writes accepted under a 1500-byte tenant quota, want some and not all", accepted)
	}
	embeddedtest.WaitFor(t, 10*time.Second, "the accepted writes in EVENTS", func() bool { return e.countEvents(t) >= uint64(accepted) })
	if n := e.countEvents(t); n != uint64(accepted) {
		t.Fatalf("EVENTS holds %d events, %d writes were accepted", n, accepted)
	}
}
