package main

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// consoleSpan is the part of a span the console exporter prints (one JSON
// object a line) that the test reads.
type consoleSpan struct {
	Name        string
	SpanContext struct{ TraceID, SpanID string }
	Parent      struct{ TraceID, SpanID string }
	Attributes  []struct {
		Key   string
		Value struct{ Value any }
	}
}

func (s consoleSpan) attr(key string) string {
	for _, a := range s.Attributes {
		if a.Key == key {
			return fmt.Sprint(a.Value.Value)
		}
	}
	return ""
}

// consoleSpans parses the span lines of a process's stdout.
func consoleSpans(out string) []consoleSpan {
	var spans []consoleSpan
	for _, line := range lines(out) {
		var s consoleSpan
		if json.Unmarshal([]byte(line), &s) == nil && s.Name != "" && s.SpanContext.TraceID != "" {
			spans = append(spans, s)
		}
	}
	return spans
}

func spanNamed(t *testing.T, spans []consoleSpan, name, subjectPrefix string) consoleSpan {
	t.Helper()
	for _, s := range spans {
		if s.Name == name && strings.HasPrefix(s.attr("messaging.destination.name"), subjectPrefix) {
			return s
		}
	}
	t.Fatalf("no span %s (subject %s*) in %+v", name, subjectPrefix, spans)
	return consoleSpan{}
}

// TestE2E_ConsoleTracesJoinAcrossProcesses runs the built binary as two
// processes with OTEL_TRACES_EXPORTER=console: `ebb serve` and a client
// `ebb put`. The spans each prints must form one trace: the client's
// append and publish, the server's apply and change publish, and the
// client's own apply of the change, each the child of the one before.
func TestE2E_ConsoleTracesJoinAcrossProcesses(t *testing.T) {
	e := newE2E(t)
	t.Setenv("OTEL_TRACES_EXPORTER", "console")
	serverOut := &syncBuffer{}
	e.logs = &syncBuffer{}
	cmd := exec.Command(e.bin, "serve", "--data", filepath.Join(e.dir, "server"),
		"--nats-listen", fmt.Sprintf("127.0.0.1:%d", e.port), "--http-listen", "127.0.0.1:0", "--log-format", "json")
	cmd.Stdout, cmd.Stderr = serverOut, e.logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	e.serve = cmd
	waitFor(t, 30*time.Second, "the server's ready line", func() bool { return readyURL(e.logs.String()) != "" })

	out := e.ok("a", "synced", "put", "todos", "t1", `{"title":"milk"}`)
	client := consoleSpans(out)

	// The server prints its spans when it flushes them, at shutdown.
	_ = cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("serve exited with %v:\n%s", err, e.logs.String())
	}
	e.serve = nil
	server := consoleSpans(serverOut.String())

	appendSpan := spanNamed(t, client, "ebb.producer.append", "")
	publish := spanNamed(t, client, "ebb.producer.publish", "ebb.evt.")
	apply := spanNamed(t, server, "ebb.projector.apply", "ebb.evt.")
	change := spanNamed(t, server, "ebb.projector.publish", "ebb.chg.")
	replica := spanNamed(t, client, "ebb.replica.apply", "ebb.chg.")
	trace := appendSpan.SpanContext.TraceID
	for _, c := range []struct{ span, parent consoleSpan }{
		{publish, appendSpan}, {apply, publish}, {change, apply}, {replica, change},
	} {
		if c.span.SpanContext.TraceID != trace {
			t.Errorf("%s: trace %s, want the client's append's %s", c.span.Name, c.span.SpanContext.TraceID, trace)
		}
		if c.span.Parent.SpanID != c.parent.SpanContext.SpanID {
			t.Errorf("%s: parent %s, want %s (%s)", c.span.Name, c.span.Parent.SpanID, c.parent.SpanContext.SpanID, c.parent.Name)
		}
	}
	if id := appendSpan.attr("ebb.event.id"); id == "" || apply.attr("ebb.event.id") != id {
		t.Errorf("event id: append %q, projector %q", id, apply.attr("ebb.event.id"))
	}
	if got := apply.attr("ebb.outcome"); got != "applied" {
		t.Errorf("projector outcome %q, want applied", got)
	}
}
