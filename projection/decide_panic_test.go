package projection

import (
	"errors"
	"strings"
	"testing"

	"github.com/ebbsync/ebb/events"
)

// panicky is a custom resolver with a bug.
var panicky = ResolverFunc(func(cur Doc, ev *events.Event) (Decision, error) {
	var m map[string]int
	m["boom"]++ // assignment to entry in nil map
	return Decision{}, nil
})

// Issue 11 item 11: a custom resolver that panics crash-looped the server
// (the event was redelivered forever). Decide turns the panic into an
// ErrResolver error naming it.
func TestDecide_ResolverPanicIsAnError(t *testing.T) {
	cur := steps(t, only(panicky), mkEvent(events.OpPut, 0, 0, "A", "v", "1"))
	_, err := Decide(only(panicky), cur, mkEvent(events.OpPut, 0, 0, "B", "v", "2"))
	if !errors.Is(err, ErrResolver) || !strings.Contains(err.Error(), "nil map") {
		t.Fatalf("Decide with a panicking resolver: %v, want ErrResolver naming the panic", err)
	}
}

// The applier dead-letters the event with the panic's message, answers
// its writer, and goes on with the next event.
func TestApplier_ResolverPanicDeadLettered(t *testing.T) {
	r := newApplierRun(t, Config{Policies: only(panicky)})
	r.event(seqEvent("A", 1, "d", "v", "1"))
	stale := seqEvent("B", 1, "d", "v", "2")
	s := r.event(stale)
	if dl := r.dead[s]; dl == nil || !strings.Contains(dl.Reason, "panic") || !strings.Contains(dl.Reason, "nil map") {
		t.Fatalf("dead letter %+v, want one naming the panic", dl)
	}
	if o := r.outcome(stale.ID); o != events.OutcomeInvalid {
		t.Fatalf("receipt of the event that made the resolver panic: %q, want invalid", o)
	}
	next := seqEvent("C", 1, "e", "v", "3")
	r.event(next)
	if o := r.outcome(next.ID); o != events.OutcomeApplied {
		t.Fatalf("next event: %q, want applied", o)
	}
}
