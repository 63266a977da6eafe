package console_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/ebbsync/ebb/deploy/embedded/embeddedtest"
	"github.com/ebbsync/ebb/events"
)

const traceHex = "4bf92f3577b34da6a3ce929d0e0e4736"

type writer struct {
	client string
	seq    uint64
	ids    *events.IDSource
	clk    *events.Clock
}

func newWriter(client string) *writer {
	return &writer{client: client, ids: events.NewIDSource(nil), clk: events.NewClock(nil, 0)}
}

func (w *writer) put(tenant, coll, doc string, base uint64, fields string) events.Event {
	w.seq++
	var f events.Fields
	if err := json.Unmarshal([]byte(fields), &f); err != nil {
		panic(err)
	}
	return events.Event{Schema: 1, ID: w.ids.New().String(), Tenant: tenant, Collection: coll, Doc: doc, Op: events.OpPut,
		Fields: f, BaseVersion: base, HLC: w.clk.Now(), Client: w.client, Device: "dev-" + w.client, Seq: w.seq}
}

// TestConsole_ResolveConflictInBrowser loads the console in Chromium, opens
// a manual conflict, takes the incoming side and resolves it: the server
// view must then hold the incoming side with the conflict resolved by an
// event the browser wrote. It also visits and screenshots every page.
func TestConsole_ResolveConflictInBrowser(t *testing.T) {
	st := newStack(t)
	alice, bob := newWriter("alice"), newWriter("bob")
	first := alice.put("acme", "notes", "n1", 0, `{"title":"from alice","tags":"a"}`)
	st.pushTraced(t, "acme", "00-"+traceHex+"-00f067aa0ba902b7-01", first)
	embeddedtest.WaitFor(t, 10*time.Second, "n1 at version 1", func() bool { return st.get(t, "acme", "notes", "n1").Version == 1 })
	stale := bob.put("acme", "notes", "n1", 0, `{"title":"from bob","extra":true}`)
	st.push(t, "acme", stale, alice.put("acme", "notes", "n2", 0, `{"title":"plain"}`))
	embeddedtest.WaitFor(t, 10*time.Second, "n1 conflicted", func() bool { return len(st.get(t, "acme", "notes", "n1").Conflicts) == 1 })
	// A refused write (a patch of no document) and a dead letter (a payload
	// that is no event, published straight to EVENTS).
	patch := alice.put("acme", "notes", "missing", 0, `{"x":1}`)
	patch.Op = events.OpPatch
	st.push(t, "acme", patch)
	if _, err := st.js.Publish(t.Context(), events.EventSubject("acme", "mallory", "notes", "x"), []byte(`{"not":"an event"}`)); err != nil {
		t.Fatal(err)
	}
	ctx := mustBrowser(t)

	run(t, ctx, "load conflicts", chromedp.Navigate(st.url("/ui/#conflicts")),
		chromedp.WaitVisible(chromedp.CSS(`#conflict-table button.resolve`)))
	screenshot(t, ctx, "console-conflicts")
	run(t, ctx, "click resolve", chromedp.Click(chromedp.CSS(`#conflict-table button.resolve`)))
	run(t, ctx, "open resolve dialog",
		chromedp.WaitVisible(chromedp.CSS(`#resolve-sides`)))
	screenshot(t, ctx, "console-resolve-dialog")
	run(t, ctx, "resolve with the incoming side", chromedp.Click(chromedp.CSS(`#pick-incoming`)),
		chromedp.Click(chromedp.CSS(`#resolve-submit`)),
		chromedp.WaitVisible(chromedp.CSS(`#resolved`)))

	embeddedtest.WaitFor(t, 10*time.Second, "n1 resolved on the server", func() bool {
		d := st.get(t, "acme", "notes", "n1")
		return len(d.Conflicts) == 0 && d.Version == 3
	})
	d := st.get(t, "acme", "notes", "n1")
	if got := string(d.Fields["title"]); got != `"from bob"` || string(d.Fields["extra"]) != "true" || d.Fields["tags"] != nil {
		t.Fatalf("resolved state = %v, want bob's side", d.Fields)
	}
	if d.Client != "console" {
		t.Fatalf("resolved by client %q, want the console's own log", d.Client)
	}
	records, err := st.store.Conflicts(t.Context(), d.Address())
	if err != nil {
		t.Fatal(err)
	}
	if len(records) != 1 || records[0].Status != events.ConflictResolved || records[0].Resolution != d.Event {
		t.Fatalf("conflict records = %+v, want one resolved by %s", records, d.Event)
	}

	run(t, ctx, "documents page", chromedp.Navigate(st.url("/ui/#docs")),
		chromedp.WaitVisible(chromedp.CSS(`#doc-table tr[data-id="n2"]`)))
	screenshot(t, ctx, "console-docs")
	run(t, ctx, "document page", chromedp.Navigate(st.url("/ui/#doc/notes/n1")),
		chromedp.WaitVisible(chromedp.CSS(`.badge.resolved`)))
	screenshot(t, ctx, "console-doc")
	run(t, ctx, "journey page", chromedp.Navigate(st.url("/ui/#journey/"+first.ID)),
		chromedp.WaitVisible(chromedp.CSS(`#journey-outcome`)))
	if out := textOf(t, ctx, "#journey-outcome"); !strings.Contains(out, "applied") {
		t.Fatalf("journey outcome %q, want applied", out)
	}
	screenshot(t, ctx, "console-journey")
	if tr := textOf(t, ctx, "#journey-trace"); !strings.Contains(tr, traceHex) {
		t.Fatalf("journey trace %q, want %s", tr, traceHex)
	}
	run(t, ctx, "rejections page", chromedp.Navigate(st.url("/ui/#rejections")),
		chromedp.WaitVisible(chromedp.CSS(`#rejection-table td`)))
	if out := textOf(t, ctx, "#rejection-table"); !strings.Contains(out, "alice") || !strings.Contains(out, "patch of a document that does not exist") {
		t.Fatalf("rejections page %q, want alice's refused patch", out)
	}
	screenshot(t, ctx, "console-rejections")
	run(t, ctx, "dead letters page", chromedp.Navigate(st.url("/ui/#dead")),
		chromedp.WaitVisible(chromedp.CSS(`#dead-table td.error`)))
	if out := textOf(t, ctx, "#dead-table"); !strings.Contains(out, "mallory") {
		t.Fatalf("dead letters page %q, want mallory's message", out)
	}
	screenshot(t, ctx, "console-dead")
	run(t, ctx, "streams page", chromedp.Navigate(st.url("/ui/#streams")),
		chromedp.WaitVisible(chromedp.CSS(`#lag-plot`)))
	screenshot(t, ctx, "console-streams")
}
