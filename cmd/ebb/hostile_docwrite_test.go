package main

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/events"
)

// TestHostile_DocWritesOverPublishRate: under --publish-rate 2 (a burst of
// 4), 200 concurrent HTTP PUTs of one user are not all kept on the
// server's disk to be published later: the ones over the rate are answered
// 429 when they come, and every write answered 2xx is in EVENTS and
// reaches CHANGES (review rev-s2).
func TestHostile_DocWritesOverPublishRate(t *testing.T) {
	srv := serveInProcess(t, "", "--auth", writeFile(t, "users.yaml", usersYAML), "--publish-rate", "2")
	var mu sync.Mutex
	codes := map[int]int{}
	var accepted []string
	var wg sync.WaitGroup
	start := time.Now()
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := fmt.Sprintf("d%d", i)
			code, _ := httpDo(t, "PUT", srv.http+"/v1/evil/docs/todos/"+id, "eve", "eve-pw", `{"pad":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}`)
			mu.Lock()
			defer mu.Unlock()
			codes[code]++
			if code/100 == 2 {
				accepted = append(accepted, id)
			}
		}()
	}
	wg.Wait()
	t.Logf("status codes of 200 concurrent PUTs under a 2/s publish rate, answered in %s: %v", time.Since(start).Round(time.Millisecond), codes)
	if codes[http.StatusTooManyRequests] == 0 {
		t.Fatalf("no PUT refused by the publish rate quota: %v", codes)
	}
	if len(accepted) == 0 || len(accepted)+codes[http.StatusTooManyRequests] != 200 {
		t.Fatalf("want some 2xx and the rest 429: %v", codes)
	}
	root := connectAs(t, srv.nats, "root", "root-pw", nil)
	rjs, _ := jetstream.New(root)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	changes, err := rjs.Stream(ctx, events.StreamChanges)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range accepted {
		waitFor(t, 20*time.Second, "accepted write "+id+" in CHANGES", func() bool {
			_, err := changes.GetLastMsgForSubject(ctx, events.ChangeSubject("evil", "todos", id))
			return err == nil
		})
	}
	if n := eventsOf(t, rjs, "evil", "eve"); n != len(accepted) {
		t.Fatalf("EVENTS holds %d of eve's events, %d writes were accepted", n, len(accepted))
	}
}
