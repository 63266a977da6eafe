package main

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/ebbsync/ebb/deploy/gateway"
	"github.com/ebbsync/ebb/events"
)

// A view built under some policies is not served under others: verify
// would replay its history under the wrong ones.
func TestServe_RefusesPolicyChangeOnBuiltView(t *testing.T) {
	data := t.TempDir()
	serveOnce := func(args ...string) (run func(func(base string)) error) {
		return func(during func(base string)) error {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			stderr := &syncBuffer{}
			m := &Main{Stdout: io.Discard, Stderr: stderr, Getenv: func(string) string { return "" }}
			done := make(chan error, 1)
			go func() {
				done <- m.Run(ctx, append([]string{"serve", "--data", data, "--nats-listen", "127.0.0.1:-1",
					"--http-listen", "127.0.0.1:0", "--log-format", "json"}, args...))
			}()
			deadline := time.After(20 * time.Second)
			for {
				select {
				case err := <-done:
					return err
				case <-deadline:
					t.Fatal("serve neither got ready nor failed")
				case <-time.After(10 * time.Millisecond):
				}
				if _, base := readyAddrs(stderr.String()); base != "" {
					during(base)
					cancel()
					return <-done
				}
			}
		}
	}

	// Build a view under todos=manual: one event applied.
	err := serveOnce("--policy", "todos=manual")(func(base string) {
		p := newPhone(t, base, "c1")
		e := p.event(events.OpPut, "todos", "t1", 0, `{"title":"milk"}`)
		if st := p.push(e); st[0] != gateway.StatusAccepted {
			t.Fatalf("push: %v", st)
		}
		p.receipt(e.ID)
	})
	if err != nil {
		t.Fatalf("first serve: %v", err)
	}

	// Other policies: refused, naming both.
	err = serveOnce("--policy", "todos=lww")(func(string) { t.Fatal("serve started under changed policies") })
	if ExitCode(err) != 2 || !strings.Contains(err.Error(), "built under policies default=lww todos=manual") {
		t.Fatalf("changed policies: %v (exit %d)", err, ExitCode(err))
	}
	// The same policies: fine.
	if err := serveOnce("--policy", "todos=manual")(func(string) {}); err != nil {
		t.Fatalf("same policies: %v", err)
	}
	if pc := mustLoadPolicies(t, data); pc.Collections["todos"] != "manual" {
		t.Fatalf("recorded policies %+v", pc)
	}
}

func mustLoadPolicies(t *testing.T, dir string) policyConfig {
	t.Helper()
	pc, err := loadPolicies(dir)
	if err != nil {
		t.Fatal(err)
	}
	return pc
}
