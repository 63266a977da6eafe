package auth

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// API runs the responders a configuration made with them needs
// (NATSUsers, NATSConfigWith(true)): stream info (ServeStreamInfo),
// consumer create with every filter checked and under the per-user
// consumer bound, fetches (MSG.NEXT) from the asker's own consumers only
// (serveNext), both refusing a client's CHANGES reads in filtered reads
// mode, and the publish of events under a Meter's quotas, stamped with
// the writer's groups, whose storage measure it runs every
// StorageLimit.Rescan. The change responder of filtered reads
// (ChangesSubject) is not among them (package deploy/feed).
type API struct {
	nc     *nats.Conn
	js     jetstream.JetStream
	subs   []*nats.Subscription
	cancel context.CancelFunc
	ruled  func(user string) bool // APIConfig.Rules's refusal; nil without

	mu   sync.Mutex         // guards next
	next *nats.Subscription // the fetch responder (Resubscribe replaces it)

	wg   sync.WaitGroup
	once sync.Once
}

// APIConfig configures StartAPIWith; every field works left zero.
type APIConfig struct {
	// Meter keeps the publish and storage quotas; nil means a Meter with
	// the default Quotas.
	Meter *Meter
	// OnError, if not nil, hears of each failed storage measure (the
	// previous counts stay in force).
	OnError func(error)
	// Identities tells the publish responder who the writer of an event
	// is, so it stamps the writer's groups (events.HeaderWriterGroups,
	// StampWriterGroups) on it: the users file (*Users), or with token
	// logins the jwtlogin.NATSLogin. nil: no event carries writer groups
	// (a client's own value is dropped all the same).
	Identities Directory
	// Rules says the server runs sync rules: the consumer create and
	// fetch responders then refuse every CHANGES read of a user that
	// Identities does not know as a service (clients, token users,
	// unknown names), as filtered reads mode does, whatever the accounts
	// the NATS server runs say (an operator may have reloaded it with
	// accounts written without --rules). Clients read their changes
	// through the change feed only. Without Identities every such read
	// is refused.
	Rules bool
}

// ruledReader returns the check the responders refuse a user's CHANGES
// reads by under cfg.Rules: true for any user ids does not know as a
// service. nil without Rules.
func ruledReader(cfg APIConfig) func(user string) bool {
	if !cfg.Rules {
		return nil
	}
	ids := cfg.Identities
	return func(user string) bool {
		if ids == nil {
			return true
		}
		u, ok := ids.Identity(user)
		return !ok || u.Role != RoleService
	}
}

// StartAPI is StartAPIWith with m as Meter and onErr as OnError, and no
// Identities.
func StartAPI(nc *nats.Conn, m *Meter, onErr func(error)) (*API, error) {
	return StartAPIWith(nc, APIConfig{Meter: m, OnError: onErr})
}

// StartAPIWith starts the responders on nc, a connection in
// StreamAccount, as cfg says. Close stops them; closing nc stops the
// responders but not the measures.
func StartAPIWith(nc *nats.Conn, cfg APIConfig) (*API, error) {
	m, onErr := cfg.Meter, cfg.OnError
	if m == nil {
		m = NewMeter(Quotas{})
	}
	if onErr == nil {
		onErr = func(error) {}
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("start api: %w", err)
	}
	a := &API{nc: nc, js: js, ruled: ruledReader(cfg)}
	if a.next, err = serveNext(nc, js, a.ruled); err != nil {
		return nil, fmt.Errorf("start api: %w", err)
	}
	for _, serve := range []func() (*nats.Subscription, error){
		func() (*nats.Subscription, error) { return ServeStreamInfo(nc) },
		func() (*nats.Subscription, error) {
			return serveConsumerCreate(nc, js, m.q.MaxConsumersPerUser, a.ruled)
		},
	} {
		sub, err := serve()
		if err != nil {
			_ = a.Close()
			return nil, fmt.Errorf("start api: %w", err)
		}
		a.subs = append(a.subs, sub)
	}
	subs, sweep, err := servePublish(nc, m, cfg.Identities)
	if err != nil {
		_ = a.Close()
		return nil, fmt.Errorf("start api: %w", err)
	}
	a.subs = append(a.subs, subs...)
	if err := nc.Flush(); err != nil {
		_ = a.Close()
		return nil, fmt.Errorf("start api: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	a.cancel = cancel
	a.wg.Add(2)
	go func() {
		defer a.wg.Done()
		m.runMeasures(ctx, js, onErr)
	}()
	go func() {
		defer a.wg.Done()
		sweep(ctx)
	}()
	return a, nil
}

// Resubscribe makes the fetch responder subscribe anew and waits until
// the server has the new subscription, so that it hears the fetch routes
// of user accounts linked on a running server since (Link): nats-server
// routes a stream import only to the subscriptions made after it. The
// old subscription is drained: a fetch it holds is still answered.
// Call it after Link and before the user's connection is accepted.
func (a *API) Resubscribe() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.next == nil {
		return fmt.Errorf("resubscribe fetch responder: %w", nats.ErrBadSubscription) // closed
	}
	sub, err := serveNext(a.nc, a.js, a.ruled)
	if err != nil {
		return fmt.Errorf("resubscribe fetch responder: %w", err)
	}
	if err := a.nc.Flush(); err != nil {
		_ = sub.Unsubscribe()
		return fmt.Errorf("resubscribe fetch responder: %w", err)
	}
	old := a.next
	a.next = sub
	if err := old.Drain(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) && !errors.Is(err, nats.ErrBadSubscription) {
		return fmt.Errorf("resubscribe fetch responder: drain the old one: %w", err)
	}
	return nil
}

// Close stops the responders and the storage measures and waits for
// them. It is safe to call more than once.
func (a *API) Close() error {
	var errs []error
	a.once.Do(func() {
		if a.cancel != nil {
			a.cancel()
		}
		a.mu.Lock()
		subs := append(a.subs, a.next)
		a.next = nil
		a.mu.Unlock()
		for _, sub := range subs {
			if sub == nil {
				continue
			}
			if err := sub.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) && !errors.Is(err, nats.ErrBadSubscription) {
				errs = append(errs, err)
			}
		}
		a.wg.Wait()
	})
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close api: %w", err)
	}
	return nil
}
