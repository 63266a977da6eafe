package producer

import (
	"sync"
	"testing"
	"time"

	"github.com/ebbsync/ebb/events"
)

// TestPrecheck_NoRaceWithAFork: a receipt that forks the log (a new
// device, written under appendMu) may arrive while Puts are appended;
// precheck, which runs outside appendMu, must not read the device (it
// did: a data race under go test -race).
func TestPrecheck_NoRaceWithAFork(t *testing.T) {
	l := tempLog(t)
	mustAppend(t, l, put("c", "d0", 1))
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < 50; i++ {
			dev := l.Device()
			if _, err := l.ObserveReceipt(t.Context(), &events.Receipt{Event: events.NewIDSource(time.Now).New().String(),
				Tenant: "t1", Client: l.Client(), Device: dev, Seq: 1 << 40}); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	for i := 0; i < 50; i++ {
		if _, err := l.Append(t.Context(), put("c", "d", i)); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
}
