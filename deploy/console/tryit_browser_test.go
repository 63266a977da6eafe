package console_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/ebbsync/ebb/consumer"
	"github.com/ebbsync/ebb/deploy/embedded/embeddedtest"
	"github.com/ebbsync/ebb/events"
)

// browserDoc is a document as the try-it page's replica lists it.
type browserDoc struct {
	ID      string        `json:"id"`
	Version uint64        `json:"version"`
	Fields  events.Fields `json:"fields"`
	Pending int           `json:"pending"`
}

func browserList(t *testing.T, ctx context.Context) []browserDoc {
	t.Helper()
	raw := evalString(t, ctx, `window.ebbReplica ? window.ebbReplica.list("todos").then((l) => JSON.stringify(l)) : "[]"`)
	var docs []browserDoc
	if err := json.Unmarshal([]byte(raw), &docs); err != nil {
		t.Fatalf("browser list %q: %v", raw, err)
	}
	return docs
}

// TestTryIt_OfflineWriteSurvivesReloadAndConverges runs the try-it app in
// Chromium: with the server stopped it writes a to-do, reloads the page
// (the write must still be there, pending), then the server comes back and
// the write must reach the server and a Go replica, and the browser must
// receive what the Go replica wrote meanwhile: both end with the same
// documents at the same versions.
func TestTryIt_OfflineWriteSurvivesReloadAndConverges(t *testing.T) {
	st := newStack(t)
	ctx := mustBrowser(t)
	nc := embeddedtest.MustConnect(t, st.nats)
	goReplica, err := consumer.OpenReplica(t.Context(), consumer.ReplicaConfig{Dir: t.TempDir(), Tenant: "demo", Client: "go", Conn: nc})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = goReplica.Close() })

	run(t, ctx, "load try-it", chromedp.Navigate(st.url("/ui/try.html")))
	waitJS(t, ctx, "try-it online", `document.querySelector("#status").textContent === "online"`)
	run(t, ctx, "write online", chromedp.SetValue(chromedp.CSS("#title"), "written online"), chromedp.Click(chromedp.CSS("#add button")))
	waitJS(t, ctx, "online write synced", `[...document.querySelectorAll("#todos tr[data-id]")].some((r) => r.dataset.version === "1" && r.dataset.pending === "0")`)

	// The page reloads offline from its service worker's cache.
	waitJS(t, ctx, "service worker in control", `navigator.serviceWorker.controller !== null`)
	st.stop() // the server is gone: the browser is offline
	run(t, ctx, "write offline", chromedp.SetValue(chromedp.CSS("#title"), "written offline"), chromedp.Click(chromedp.CSS("#add button")))
	waitJS(t, ctx, "offline write pending", `[...document.querySelectorAll("#todos tr[data-id]")].some((r) => r.querySelector(".title").textContent === "written offline" && r.dataset.pending === "1")`)
	waitJS(t, ctx, "try-it offline", `document.querySelector("#status").textContent === "offline"`)
	if _, err := goReplica.Put(t.Context(), "todos", "from-go", events.Fields{"title": json.RawMessage(`"written by go"`), "done": json.RawMessage(`false`)}); err != nil {
		t.Fatal(err)
	}

	run(t, ctx, "reload offline", chromedp.Reload())
	waitJS(t, ctx, "offline write survives the reload", `[...document.querySelectorAll("#todos tr[data-id]")].some((r) => r.querySelector(".title").textContent === "written offline" && r.dataset.pending === "1")`)
	if got := textOf(t, ctx, "#pending"); got != "1" {
		t.Fatalf("pending after reload = %q, want 1", got)
	}
	screenshot(t, ctx, "tryit-offline-after-reload")

	st.start(t) // back online, same origin
	waitJS(t, ctx, "browser synced", `document.querySelector("#status").textContent === "online" && document.querySelector("#pending").textContent === "0" && document.querySelectorAll("#todos tr[data-id]").length === 3`)
	screenshot(t, ctx, "tryit-synced")

	var offlineID string
	for _, d := range browserList(t, ctx) {
		if string(d.Fields["title"]) == `"written offline"` {
			offlineID = d.ID
		}
	}
	if offlineID == "" {
		t.Fatal("the offline write is gone from the browser")
	}
	embeddedtest.WaitFor(t, 10*time.Second, "Go replica has the browser's offline write", func() bool {
		d, err := goReplica.Get(t.Context(), "todos", offlineID)
		return err == nil && d.Version == 1 && d.Pending == 0
	})
	server := st.get(t, "demo", "todos", offlineID)
	if server.Version != 1 || string(server.Fields["title"]) != `"written offline"` {
		t.Fatalf("server has %s at v%d %v, want the offline write at v1", offlineID, server.Version, server.Fields)
	}
	// Convergence: the browser and the Go replica hold the same documents
	// at the same versions.
	embeddedtest.WaitFor(t, 10*time.Second, "browser and Go replica converge", func() bool {
		goDocs, err := goReplica.List(t.Context(), "todos", false)
		if err != nil {
			return false
		}
		var a, b []string
		for _, d := range goDocs {
			a = append(a, fmt.Sprintf("%s@%d %s/%s", d.ID, d.Version, d.Fields["title"], d.Fields["done"]))
		}
		for _, d := range browserList(t, ctx) {
			b = append(b, fmt.Sprintf("%s@%d %s/%s", d.ID, d.Version, d.Fields["title"], d.Fields["done"]))
		}
		slices.Sort(a)
		slices.Sort(b)
		if len(a) == 3 && slices.Equal(a, b) {
			return true
		}
		t.Logf("go %s\nbrowser %s", strings.Join(a, "; "), strings.Join(b, "; "))
		return false
	})
}
