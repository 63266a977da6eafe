package server

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/ebbsync/ebb/deploy/auth"
	"github.com/ebbsync/ebb/deploy/embedded"
	"github.com/ebbsync/ebb/deploy/feed"
)

// connect starts the embedded NATS server (unless c.NATSURLs names
// external ones) and connects to it; jsKey encrypts the embedded
// server's storage unless it is nil. It returns the connection and the
// URL it was made to. While an embedded server runs, s.natsStopped is
// false.
func (s *Server) connect(ctx context.Context, c *Config, jsKey []byte, meter *auth.Meter) (*nats.Conn, string, error) {
	// No reconnect buffer: a publish made while the link is down fails
	// (the projector and the gateway's writer retry it) instead of going
	// out whenever the link is back, when a partition's lease may be
	// another server's.
	opts := []nats.Option{nats.Name("ebb-serve"), nats.MaxReconnects(-1), nats.ReconnectBufSize(-1),
		// A reconnect may land on another node, or on a server reloaded
		// since: the sync-rules interlock checks again (see guardRules).
		nats.ReconnectHandler(func(*nats.Conn) { s.kickRulesCheck() })}
	if len(c.NATSURLs) > 0 {
		// The URLs may hold the admin's password: the server shows them
		// (logs, errors, /readyz, NATSURL) only redacted (RedactURL).
		url := RedactURLs(c.NATSURLs)
		nc, err := nats.Connect(strings.Join(c.NATSURLs, ","), opts...)
		if err != nil {
			return nil, "", fmt.Errorf("connect to %s: %w", url, redactErr(err, c.NATSURLs))
		}
		s.stops = append(s.stops, func(context.Context) error { nc.Close(); return nil })
		if c.Rules != nil {
			if err := s.checkRulesAccounts(ctx, nc); err != nil {
				return nil, "", err
			}
		} else {
			// Users or not: a server without rules must not serve a
			// sync-rules fleet's NATS (its HTTP gateway would hand out
			// every change).
			if err := s.refuseRulesAccounts(ctx, nc); err != nil {
				return nil, "", err
			}
		}
		if c.Users != nil {
			// The answers the external server's config (auth.NATSConfigWith)
			// routes to ebb: stream info without other tenants' subjects,
			// consumer creation that refuses push consumers, and events
			// under the publish and storage quotas; under sync rules the
			// consumer creation and fetches refuse every client's CHANGES
			// read, whatever the accounts say.
			api, err := auth.StartAPIWith(nc, auth.APIConfig{Meter: meter, Identities: s.identities(c), Rules: c.Rules != nil, OnError: func(err error) {
				c.Logger.Warn("tenant storage measure failed; the previous counts stay", "err", err)
			}})
			if err != nil {
				return nil, "", err
			}
			s.stops = append(s.stops, func(context.Context) error { return api.Close() })
		}
		return nc, url, nil
	}
	var users []*server.User
	var login auth.LoginLimit
	if c.Users != nil {
		users = c.Users.NATSUsers()
		login = c.Users.Limits().Login
	}
	srv, err := embedded.Start(ctx, embedded.Config{
		Dir:          filepath.Join(c.Data, "jetstream"),
		Listen:       c.NATSListen,
		Sync:         embedded.SyncPolicy{Interval: c.FsyncInterval},
		Logger:       c.Logger,
		TLS:          c.TLS,
		Users:        users,
		Login:        login,
		TokenLogin:   c.TokenLogin,
		Meter:        meter,
		Identities:   s.identities(c),
		JetStreamKey: jsKey,
	})
	if err != nil {
		return nil, "", err
	}
	s.natsStopped.Store(false)
	s.stops = append(s.stops, func(ctx context.Context) error {
		err := srv.Shutdown(ctx)
		s.natsStopped.Store(err == nil)
		return err
	})
	nc, err := srv.Connect(opts...)
	if err != nil {
		return nil, "", fmt.Errorf("connect to embedded nats: %w", err)
	}
	s.stops = append(s.stops, func(context.Context) error { nc.Close(); return nil })
	return nc, srv.ClientURL(), nil
}

// identities is who the server's responders ask for a user's tenant and
// groups (the writer-groups stamp, the change feed): the token login when
// it knows users beyond the file (jwtlogin.NATSLogin does), else the
// users file; nil without Users.
func (s *Server) identities(c *Config) auth.Directory {
	if c.Users == nil {
		return nil
	}
	if d, ok := c.TokenLogin.(auth.Directory); ok {
		return d
	}
	return c.Users
}

// feedIdentities adapts a Directory to the change feed's lookup: a user
// is known only in its own tenant.
func feedIdentities(d auth.Directory) feed.Identities {
	return func(tenant, user string) ([]string, bool) {
		if d == nil {
			return nil, false
		}
		u, ok := d.Identity(user)
		if !ok || u.Tenant != tenant {
			return nil, false
		}
		return u.Groups, true
	}
}
