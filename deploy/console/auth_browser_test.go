package console_test

import (
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/ebbsync/ebb/deploy/auth"
	"github.com/ebbsync/ebb/deploy/embedded/embeddedtest"
)

// TestConsole_AuthLoginAndResolveAsClient runs the console under auth: the
// page asks for credentials with its own form, a client user sees only its
// tenant, and its resolve goes through the gateway as that user.
func TestConsole_AuthLoginAndResolveAsClient(t *testing.T) {
	users, err := auth.New([]auth.User{
		{Name: "root", Password: "rootpw", Role: auth.RoleAdmin},
		{Name: "alice", Password: "alicepw", Tenant: "acme", Role: auth.RoleClient},
		{Name: "bob", Password: "bobpw", Tenant: "acme", Role: auth.RoleClient},
		{Name: "carol", Password: "carolpw", Tenant: "acme", Role: auth.RoleClient},
		{Name: "gus", Password: "guspw", Tenant: "globex", Role: auth.RoleClient},
	})
	if err != nil {
		t.Fatal(err)
	}
	st := newStackWith(t, users)
	// The conflict is between bob and carol: alice (the browser) writes only
	// the resolve. (The projector in this tree deduplicates by client, not
	// by device, so a Go log of alice's and the browser's would both be
	// alice's sequence 1 and the second one a "duplicate".)
	carol, bob, gus := newWriter("carol"), newWriter("bob"), newWriter("gus")
	st.creds = [2]string{"gus", "guspw"}
	st.push(t, "globex", gus.put("globex", "notes", "secret", 0, `{"v":1}`))
	st.creds = [2]string{"carol", "carolpw"}
	st.push(t, "acme", carol.put("acme", "notes", "n1", 0, `{"title":"carol"}`))
	embeddedtest.WaitFor(t, 10*time.Second, "n1 at version 1", func() bool { return st.get(t, "acme", "notes", "n1").Version == 1 })
	st.creds = [2]string{"bob", "bobpw"}
	st.push(t, "acme", bob.put("acme", "notes", "n1", 0, `{"title":"bob"}`))
	embeddedtest.WaitFor(t, 10*time.Second, "n1 conflicted", func() bool { return len(st.get(t, "acme", "notes", "n1").Conflicts) == 1 })

	ctx := mustBrowser(t)
	run(t, ctx, "login form", chromedp.Navigate(st.url("/ui/#conflicts")), chromedp.WaitVisible(chromedp.CSS("#login-user")))
	screenshot(t, ctx, "console-login")
	run(t, ctx, "sign in as alice", chromedp.SetValue(chromedp.CSS("#login-user"), "alice"),
		chromedp.SetValue(chromedp.CSS("#login-password"), "alicepw"), chromedp.Click(chromedp.CSS("#login button")),
		chromedp.WaitVisible(chromedp.CSS(`#conflict-table button.resolve`)))
	if got := textOf(t, ctx, "#tenant"); strings.TrimSpace(got) != "acme" {
		t.Fatalf("alice's tenant list %q, want only acme", got)
	}
	run(t, ctx, "resolve as alice", chromedp.Click(chromedp.CSS(`#conflict-table button.resolve`)),
		chromedp.WaitVisible(chromedp.CSS(`#resolve-sides`)), chromedp.Click(chromedp.CSS(`#pick-incoming`)),
		chromedp.Click(chromedp.CSS(`#resolve-submit`)), chromedp.WaitVisible(chromedp.CSS(`#resolved`)))
	embeddedtest.WaitFor(t, 10*time.Second, "n1 resolved by alice", func() bool {
		d := st.get(t, "acme", "notes", "n1")
		return len(d.Conflicts) == 0 && d.Client == "alice" && string(d.Fields["title"]) == `"bob"`
	})
}
