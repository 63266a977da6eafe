package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/ebbsync/ebb/consumer"
)

func runSync(ctx context.Context, m *Main, args []string) error {
	var c clientFlags
	var timeout time.Duration
	if _, err := parseClient(m, "sync", &c, args, func(fs *flag.FlagSet) {
		fs.DurationVar(&timeout, "timeout", 30*time.Second, "give up when the server cannot be reached or caught up with within this long")
	}); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	s, err := openClient(ctx, m, c, true)
	if err != nil {
		return err
	}
	defer s.Close()
	if !s.online() {
		return fmt.Errorf("sync: %w at %s (pending writes stay queued)", errUnreachable, c.nats)
	}

	stopBar := startProgress(m.Stderr, s.r)
	rep, err := s.r.Sync(ctx)
	stopBar()
	if err != nil {
		return fmt.Errorf("sync: %w", err)
	}
	if c.json {
		return printJSON(m.Stdout, struct {
			Pushed    int  `json:"pushed"`
			Pulled    int  `json:"pulled"`
			Rejected  int  `json:"rejected"`
			Conflicts int  `json:"conflicts"`
			Resynced  bool `json:"resynced"`
		}{rep.Pushed, rep.Pulled, rep.Rejected, rep.Conflicts, rep.Resynced})
	}
	fmt.Fprintf(m.Stdout, "pushed %d, pulled %d, rejected %d, conflicts %d\n", rep.Pushed, rep.Pulled, rep.Rejected, rep.Conflicts)
	if rep.Rejected > 0 {
		rs, err := s.r.Rejections(ctx)
		if err != nil {
			return fmt.Errorf("sync: list rejections: %w", err)
		}
		for _, r := range rs {
			fmt.Fprintf(m.Stdout, "rejected: %s %s/%s: %s\n", r.Op, r.Collection, r.Doc, r.Reason)
		}
	}
	if rep.Resynced {
		fmt.Fprintf(m.Stdout, "resynced: %v\n", s.r.Status().LastResync)
	}
	return nil
}

// startProgress draws a catch-up progress bar on w while a sync runs, when w
// is a terminal and the catch-up is long enough to be worth one. The
// returned func stops it and clears the line.
func startProgress(w io.Writer, r *consumer.Replica) func() {
	if !isTerminal(w) {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		drawn := false
		for {
			select {
			case <-done:
				if drawn {
					fmt.Fprint(w, "\r\033[K")
				}
				return
			case <-t.C:
				p := r.Status().Changes
				total := p.Applied + p.Pending
				if total < 1000 && !drawn {
					continue
				}
				fmt.Fprintf(w, "\r%s", bar(p.Applied, total, 30))
				drawn = true
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

// bar renders "[=====>    ] applied/total changes".
func bar(done, total uint64, width int) string {
	if total == 0 {
		total = 1
	}
	fill := int(float64(width) * float64(min(done, total)) / float64(total))
	return fmt.Sprintf("[%s%s] %d/%d changes", strings.Repeat("=", fill), strings.Repeat(" ", width-fill), done, total)
}
