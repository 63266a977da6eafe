package bench

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/deploy/embedded"
	"github.com/ebbsync/ebb/deploy/feed"
	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/projection"
)

// syncMode is a server fsync policy a workload runs under.
type syncMode struct {
	name   string
	policy embedded.SyncPolicy
}

// syncs are the fsync policies of the embedded servers; against an
// external server there is one, the server's own.
func (r *runner) syncs() []syncMode {
	if r.cfg.NATSURL != "" {
		return []syncMode{{name: "server's"}}
	}
	all := []syncMode{
		{name: "always", policy: embedded.SyncPolicy{}},
		{name: "interval", policy: embedded.SyncPolicy{Interval: embedded.NATSDefaultSyncInterval}},
	}
	if r.cfg.Sync == "" {
		return all
	}
	for _, sm := range all {
		if sm.name == r.cfg.Sync {
			return []syncMode{sm}
		}
	}
	return nil // refused by newRunner
}

// rawStream is the stream the baselines publish to: EVENTS' configuration
// under another name and subject, so raw messages are stored exactly as
// events are and never reach a projector.
const (
	rawStream  = "EBB_BENCH_RAW"
	rawSubject = "ebbbench.raw"
)

// rawOutStreams are where the projector's second baseline publishes its
// two messages per event: CHANGES' and RECEIPTS' configurations under
// other names and subjects.
var rawOutStreams = []struct{ of, name, subject string }{
	{events.StreamChanges, "EBB_BENCH_RAW_CHG", "ebbbench.chg"},
	{events.StreamReceipts, "EBB_BENCH_RAW_RCPT", "ebbbench.rcpt"},
}

// env is one server with the ebb streams and the raw stream.
type env struct {
	nc   *nats.Conn
	js   jetstream.JetStream
	url  string
	stop func()
}

// newEnv starts an embedded server with sync (or connects to the
// external one) and ensures the streams. On the embedded server it runs
// the change responder as `ebb serve` does without auth or rules (an
// external server has whatever its ebb serve runs).
func (r *runner) newEnv(ctx context.Context, sync syncMode) (*env, error) {
	e := &env{}
	var stops []func()
	e.stop = func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
	}
	url := r.cfg.NATSURL
	if url == "" {
		dir, err := r.tempDir()
		if err != nil {
			return nil, err
		}
		srv, err := embedded.Start(ctx, embedded.Config{Dir: dir, Listen: "127.0.0.1:-1", Sync: sync.policy, Logger: r.log})
		if err != nil {
			return nil, fmt.Errorf("start embedded server: %w", err)
		}
		stops = append(stops, func() {
			sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = srv.Shutdown(sctx)
		})
		url = srv.ClientURL()
	}
	e.url = url
	nc, err := r.connect(url)
	if err != nil {
		e.stop()
		return nil, err
	}
	stops = append(stops, nc.Close)
	e.nc = nc
	if e.js, err = jetstream.New(nc); err != nil {
		e.stop()
		return nil, fmt.Errorf("jetstream on %s: %w", url, err)
	}
	if err := events.EnsureStreams(ctx, e.js, events.StreamOptions{}); err != nil {
		e.stop()
		return nil, fmt.Errorf("ensure streams on %s: %w", url, err)
	}
	raws := []jetstream.StreamConfig{rawStreamConfig(events.StreamEvents, rawStream, rawSubject)}
	for _, o := range rawOutStreams {
		raws = append(raws, rawStreamConfig(o.of, o.name, o.subject))
	}
	for _, raw := range raws {
		if _, err := e.js.CreateOrUpdateStream(ctx, raw); err != nil {
			e.stop()
			return nil, fmt.Errorf("create stream %s on %s: %w", raw.Name, url, err)
		}
	}
	if r.cfg.NATSURL == "" {
		fr, err := feed.Serve(nc, e.js, func(string, string) ([]string, bool) { return nil, true },
			feed.ResponderConfig{Unfiltered: true, Open: true, Logger: r.log})
		if err != nil {
			e.stop()
			return nil, fmt.Errorf("change responder on %s: %w", url, err)
		}
		stops = append(stops, func() { _ = fr.Close() })
	}
	return e, nil
}

// connect opens a connection to url.
func (r *runner) connect(url string) (*nats.Conn, error) {
	nc, err := nats.Connect(url, nats.Name("ebb-bench"), nats.MaxReconnects(-1))
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", url, err)
	}
	return nc, nil
}

// rawStreamConfig is the configuration of ebb's stream of under name,
// with subjects subject.>.
func rawStreamConfig(of, name, subject string) jetstream.StreamConfig {
	for _, c := range events.Streams(events.StreamOptions{}) {
		if c.Name == of {
			c.Name = name
			c.Subjects = []string{subject + ".>"}
			c.Description = "ebb bench: raw JetStream baselines (" + of + ")"
			return c
		}
	}
	panic("events.Streams has no " + of)
}

// rawSubjectOf maps an ebb subject ("ebb.evt.t.c.d") into the raw stream,
// so baselines publish to as many subjects as ebb does.
func rawSubjectOf(subject string) string {
	_, rest, _ := strings.Cut(subject, ".")
	return rawSubject + "." + rest
}

// publishAll publishes msgs with PublishMsgAsync (the client's default
// window) and waits for every ack.
func publishAll(ctx context.Context, js jetstream.JetStream, msgs []*nats.Msg) error {
	futures := make([]jetstream.PubAckFuture, 0, len(msgs))
	for _, m := range msgs {
		f, err := js.PublishMsgAsync(m, jetstream.WithStallWait(time.Minute))
		if err != nil {
			return fmt.Errorf("publish to %s: %w", m.Subject, err)
		}
		futures = append(futures, f)
	}
	select {
	case <-js.PublishAsyncComplete():
		for _, f := range futures {
			select {
			case err := <-f.Err():
				return fmt.Errorf("publish to %s: %w", f.Msg().Subject, err)
			default:
			}
		}
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(5 * time.Minute):
		return fmt.Errorf("publish: %d acks missing after 5m", js.PublishAsyncPending())
	}
}

// waitUntil polls cond every millisecond until it holds, ctx ends or
// timeout passes.
func waitUntil(ctx context.Context, timeout time.Duration, what string, cond func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	t := time.NewTicker(time.Millisecond)
	defer t.Stop()
	for {
		ok, err := cond()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not done after %v", what, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// withStall lets an async publish wait for room in the window.
var withStall = jetstream.WithStallWait(time.Minute)

// startProjector starts a projector under durable on a fresh bolt view in
// a temporary directory, untimed setup for the workloads that need the
// server's side running; stop closes the projector, then the view.
func (r *runner) startProjector(ctx context.Context, e *env, durable string) (_ *projection.Projector, stop func(), err error) {
	d, err := r.tempDir()
	if err != nil {
		return nil, nil, err
	}
	store, err := projection.OpenBolt(filepath.Join(d, "view.db"), projection.BoltOptions{})
	if err != nil {
		return nil, nil, fmt.Errorf("open view: %w", err)
	}
	p, err := projection.New(e.js, store, projection.Config{Durable: durable, Logger: r.log})
	if err != nil {
		_ = store.Close()
		return nil, nil, fmt.Errorf("new projector: %w", err)
	}
	if err := p.Start(ctx); err != nil {
		_ = p.Close()
		_ = store.Close()
		return nil, nil, fmt.Errorf("start projector: %w", err)
	}
	return p, func() { _ = p.Close(); _ = store.Close() }, nil
}
