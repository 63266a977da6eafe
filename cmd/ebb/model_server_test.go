package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/events"
)

// modelServer is the model test's `ebb serve`: a child process of the built
// binary on a fixed loopback port (so replicas reconnect to the same URL
// after a restart), its data in one directory for the whole run. It runs
// with the default --fsync-interval (0: JetStream syncs every write before
// acking it): with an interval, nats-server acks writes it still holds in
// its own buffers, which a SIGKILL loses, a loss ebb does not promise to
// survive.
type modelServer struct {
	t      testing.TB
	bin    string
	data   string
	port   int
	args   []string
	cmd    *exec.Cmd
	exited chan struct{}
	logs   *syncBuffer
	// all is every start's log, for a failure report.
	all []*syncBuffer
}

func (s *modelServer) url() string { return fmt.Sprintf("nats://127.0.0.1:%d", s.port) }

func (s *modelServer) up() bool { return s.cmd != nil }

// start runs `ebb serve` and waits for its ready line.
func (s *modelServer) start() error {
	s.logs = &syncBuffer{}
	s.all = append(s.all, s.logs)
	args := append([]string{"serve", "--data", s.data, "--nats-listen", fmt.Sprintf("127.0.0.1:%d", s.port),
		"--http-listen", "127.0.0.1:0", "--log-format", "json"}, s.args...)
	cmd := exec.Command(s.bin, args...)
	cmd.Stderr, cmd.Stdout = s.logs, io.Discard
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start ebb serve: %w", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	s.cmd, s.exited = cmd, exited
	deadline := time.Now().Add(60 * time.Second)
	for readyURL(s.logs.String()) == "" {
		select {
		case <-exited:
			s.cmd = nil
			return fmt.Errorf("ebb serve exited before ready:\n%s", s.logs.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.kill()
			return fmt.Errorf("ebb serve not ready after 60s:\n%s", s.logs.String())
		}
	}
	return nil
}

// kill SIGKILLs the server and waits for it to be gone.
func (s *modelServer) kill() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGKILL)
	<-s.exited
	s.cmd = nil
}

// stop sends SIGTERM and waits; a server that does not stop in 30s is
// killed and reported.
func (s *modelServer) stop() error {
	if s.cmd == nil {
		return nil
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
		err := s.cmd.ProcessState
		s.cmd = nil
		if !err.Success() {
			return fmt.Errorf("ebb serve exited with %v on SIGTERM", err)
		}
		return nil
	case <-time.After(30 * time.Second):
		s.kill()
		return errors.New("ebb serve did not stop within 30s of SIGTERM")
	}
}

// modelObserver is the test's own NATS view of the server: a live watcher
// of CHANGES recording every change it sees, and the operator's hands
// (purges, reading whole streams).
type modelObserver struct {
	nc     *nats.Conn
	js     jetstream.JetStream
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	changes []modelSeen // in the order read
	last    uint64      // stream sequence of the last change read
	// published is every change published while the observer was
	// connected, read by a core NATS subscription: it sees what the
	// stream compacts away before the watcher reads it, and also
	// publishes JetStream then drops as duplicates, so it tells which
	// event made which version, never stream order (Seq 0).
	published []modelSeen
	sub       *nats.Subscription
	// receipts is when a core subscription heard each receipt published
	// while the observer was connected, by event id, with its outcome.
	receipts map[string][]modelHeardReceipt
	rsub     *nats.Subscription
}

// modelHeardReceipt is one receipt the observer heard.
type modelHeardReceipt struct {
	At      time.Time
	Outcome events.Outcome
}

// modelSeen is one change the watcher read.
type modelSeen struct {
	Seq    uint64
	Change *events.Change
}

func newModelObserver(url string) (*modelObserver, error) {
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.RetryOnFailedConnect(true),
		nats.ReconnectWait(100*time.Millisecond), nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}))
	if err != nil {
		return nil, fmt.Errorf("observer connect: %w", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	o := &modelObserver{nc: nc, js: js, cancel: cancel}
	o.sub, err = nc.Subscribe(events.TenantChanges(modelTenant), func(m *nats.Msg) {
		c, err := events.DecodeChange(m.Data)
		if err != nil {
			c = nil
		}
		o.mu.Lock()
		o.published = append(o.published, modelSeen{Change: c})
		o.mu.Unlock()
	})
	if err != nil {
		cancel()
		nc.Close()
		return nil, fmt.Errorf("observer subscribe: %w", err)
	}
	o.receipts = map[string][]modelHeardReceipt{}
	o.rsub, err = nc.Subscribe(events.ReceiptsPrefix+"."+events.EncodeToken(modelTenant)+".>", func(m *nats.Msg) {
		rc, err := events.DecodeReceipt(m.Data)
		if err != nil {
			return
		}
		o.mu.Lock()
		o.receipts[rc.Event] = append(o.receipts[rc.Event], modelHeardReceipt{At: time.Now(), Outcome: rc.Outcome})
		o.mu.Unlock()
	})
	if err != nil {
		cancel()
		nc.Close()
		return nil, fmt.Errorf("observer subscribe: %w", err)
	}
	o.wg.Add(1)
	go func() { defer o.wg.Done(); o.watch(ctx) }()
	return o, nil
}

// watch follows CHANGES from the start, recording each change, until ctx
// ends. When the ordered consumer fails (the server was down too long), it
// starts a new one after the last sequence read.
func (o *modelObserver) watch(ctx context.Context) {
	for ctx.Err() == nil {
		o.mu.Lock()
		from := o.last + 1
		o.mu.Unlock()
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		cons, err := o.js.OrderedConsumer(cctx, events.StreamChanges, jetstream.OrderedConsumerConfig{
			DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: from})
		cancel()
		if err != nil {
			select {
			case <-ctx.Done():
				return
			case <-time.After(100 * time.Millisecond): // retry pacing, not synchronisation
			}
			continue
		}
		it, err := cons.Messages()
		if err != nil {
			continue
		}
		stop := context.AfterFunc(ctx, it.Stop)
		for {
			m, err := it.Next()
			if err != nil {
				break
			}
			md, err := m.Metadata()
			if err != nil {
				continue
			}
			c, err := events.DecodeChange(m.Data())
			if err != nil {
				c = nil // recorded as unreadable; the checker reports it
			}
			o.mu.Lock()
			if md.Sequence.Stream > o.last {
				o.last = md.Sequence.Stream
				o.changes = append(o.changes, modelSeen{Seq: md.Sequence.Stream, Change: c})
			}
			o.mu.Unlock()
		}
		stop()
		it.Stop()
	}
}

// seen returns the changes read so far and the last sequence.
func (o *modelObserver) seen() ([]modelSeen, uint64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]modelSeen(nil), o.changes...), o.last
}

// heard returns the changes the core subscription received.
func (o *modelObserver) heard() []modelSeen {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]modelSeen(nil), o.published...)
}

// heardReceipts returns the receipts the observer heard, by event id.
func (o *modelObserver) heardReceipts() map[string][]modelHeardReceipt {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := make(map[string][]modelHeardReceipt, len(o.receipts))
	for id, rs := range o.receipts {
		out[id] = slices.Clone(rs)
	}
	return out
}

func (o *modelObserver) close() {
	_ = o.sub.Unsubscribe()
	_ = o.rsub.Unsubscribe()
	o.cancel()
	o.wg.Wait()
	o.nc.Close()
}

// purge removes every message of stream, as an operator (or retention) would.
func (o *modelObserver) purge(ctx context.Context, stream string) error {
	st, err := o.js.Stream(ctx, stream)
	if err != nil {
		return fmt.Errorf("purge %s: %w", stream, err)
	}
	if err := st.Purge(ctx); err != nil {
		return fmt.Errorf("purge %s: %w", stream, err)
	}
	return nil
}

// expire removes the older half of stream's messages, as age-based
// retention does (oldest first, every subject alike), and returns the
// first sequence kept.
func (o *modelObserver) expire(ctx context.Context, stream string) (uint64, error) {
	st, err := o.js.Stream(ctx, stream)
	if err != nil {
		return 0, fmt.Errorf("expire %s: %w", stream, err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("expire %s: %w", stream, err)
	}
	if info.State.Msgs == 0 {
		return info.State.FirstSeq, nil
	}
	keep := info.State.FirstSeq + (info.State.LastSeq-info.State.FirstSeq)/2 + 1
	if err := st.Purge(ctx, jetstream.WithPurgeSequence(keep)); err != nil {
		return 0, fmt.Errorf("expire %s below %d: %w", stream, keep, err)
	}
	return keep, nil
}

// lastSeq returns the last sequence of stream.
func (o *modelObserver) lastSeq(ctx context.Context, stream string) (uint64, error) {
	st, err := o.js.Stream(ctx, stream)
	if err != nil {
		return 0, fmt.Errorf("stream %s: %w", stream, err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("stream %s: %w", stream, err)
	}
	return info.State.LastSeq, nil
}

// readAll returns every message stream holds now, in sequence order.
func (o *modelObserver) readAll(ctx context.Context, stream string) ([]*jetstream.RawStreamMsg, error) {
	st, err := o.js.Stream(ctx, stream)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", stream, err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", stream, err)
	}
	var out []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read %s seq %d: %w", stream, seq, err)
		}
		out = append(out, m)
	}
	return out, nil
}

func modelServerData(root string) string { return filepath.Join(root, "server") }

// changesLacking returns the documents the projector published a change of
// (heard) that CHANGES holds no message for now, sorted.
func (o *modelObserver) changesLacking(ctx context.Context) ([]string, error) {
	msgs, err := o.readAll(ctx, events.StreamChanges)
	if err != nil {
		return nil, err
	}
	have := map[string]bool{}
	for _, m := range msgs {
		if c, err := events.DecodeChange(m.Data); err == nil {
			have[modelKey(c.Collection, c.Doc)] = true
		}
	}
	var lack []string
	for _, s := range o.heard() {
		if c := s.Change; c != nil && !have[modelKey(c.Collection, c.Doc)] && !slices.Contains(lack, modelKey(c.Collection, c.Doc)) {
			lack = append(lack, modelKey(c.Collection, c.Doc))
		}
	}
	slices.Sort(lack)
	return lack, nil
}
