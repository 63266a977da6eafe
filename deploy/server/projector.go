package server

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/ebbsync/ebb/deploy/keys"
	"github.com/ebbsync/ebb/projection"
)

// runningProjector is the projector a server runs: one Projector, or with
// Config.Partitions a Group of them (exactly one of the two is set).
type runningProjector struct {
	proj  *projection.Projector
	group *projection.Group
}

// ready is the projector's part of readiness, by c's checks.
func (r runningProjector) ready(c *Config) error {
	if r.group != nil {
		return c.GroupReady(r.group)
	}
	return c.ProjectorReady(r.proj)
}

// checkpoint is the checkpoint the lag gauge counts from: a group's
// lowest over the partitions it holds. ok is false when this server
// applies nothing (a group on standby): it has no lag of its own.
func (r runningProjector) checkpoint() (cp uint64, ok bool) {
	if r.group != nil {
		st := r.group.Stats()
		return st.Checkpoint, len(st.Held) > 0
	}
	return r.proj.Stats().Checkpoint, true
}

func (r runningProjector) done() <-chan struct{} {
	if r.group != nil {
		return r.group.Done()
	}
	return r.proj.Done()
}

func (r runningProjector) err() error {
	if r.group != nil {
		return errors.New("projector group stopped")
	}
	return r.proj.Err()
}

// ViewStore is what the server needs of the view: the projector's Store,
// closed when done.
// ViewStore is the view a server projects into: the projector's Store,
// closed when done.
type ViewStore interface {
	projection.Store
	Close() error
}

// OpenView opens the view: the bbolt file at view, or the PostgreSQL
// database it names. A PostgreSQL view refuses a cipher
// (projection.ErrPostgresCipher): its documents stay queryable JSONB, and
// encryption at rest is the database's. The URL, which may hold a
// password, is never part of an error.
func OpenView(ctx context.Context, view string, cipher *keys.Cipher, timeout time.Duration) (ViewStore, error) {
	if IsPostgresURL(view) {
		s, err := projection.OpenPostgres(ctx, view, projection.PostgresOptions{Cipher: cipher})
		if err != nil {
			return nil, fmt.Errorf("open the PostgreSQL view: %w", err)
		}
		return s, nil
	}
	s, err := projection.OpenBolt(view, projection.BoltOptions{Timeout: timeout, Cipher: cipher})
	if err != nil {
		return nil, fmt.Errorf("open view %s: %w", view, err)
	}
	return s, nil
}

// providers are the telemetry providers the server's parts are given.
type providers struct {
	tracer     trace.TracerProvider
	meter      metric.MeterProvider
	propagator propagation.TextMapPropagator
}

// startProjector opens the view store (sealed with view unless it is nil),
// calls c.BeforeProject on it, and starts the projector on it: with
// c.Partitions a projection.Group, which competes for the partitions'
// leases and applies those it holds. ctx bounds the start; runCtx, once
// cancelled, stops the projector.
func (s *Server) startProjector(ctx, runCtx context.Context, c *Config, view *keys.Cipher, js jetstream.JetStream, tel providers) (runningProjector, projection.Store, error) {
	var none runningProjector
	store, err := OpenView(ctx, c.View, view, 2*time.Second)
	if err != nil {
		return none, nil, err
	}
	s.stops = append(s.stops, func(context.Context) error { return store.Close() })
	if c.BeforeProject != nil {
		if err := c.BeforeProject(ctx, store); err != nil {
			return none, nil, err
		}
	}
	cfg := projection.Config{Policies: c.Policies, Rules: c.Rules, Logger: c.Logger,
		TracerProvider: tel.tracer, MeterProvider: tel.meter, Propagator: tel.propagator}
	if c.Partitions > 0 {
		g, err := projection.NewGroup(js, store, cfg, projection.GroupConfig{Partitions: c.Partitions, LeaseTTL: c.LeaseTTL, Replicas: c.Replicas})
		if err != nil {
			return none, nil, err
		}
		if err := g.Start(runCtx); err != nil {
			return none, nil, err
		}
		s.stops = append(s.stops, func(context.Context) error { return g.Close() })
		return runningProjector{group: g}, store, nil
	}
	proj, err := projection.New(js, store, cfg)
	if err != nil {
		return none, nil, err
	}
	if err := proj.Start(runCtx); err != nil {
		return none, nil, fmt.Errorf("start projector: %w", err)
	}
	s.stops = append(s.stops, func(context.Context) error { return proj.Close() })
	return runningProjector{proj: proj}, store, nil
}
