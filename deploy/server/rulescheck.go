package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/deploy/auth"
	"github.com/ebbsync/ebb/deploy/feed"
	"github.com/ebbsync/ebb/events"
)

// DefaultRulesCheckInterval is Config.RulesCheckInterval's default.
const DefaultRulesCheckInterval = 10 * time.Second

// filteredCheckTimeout bounds the check of one NATS server (the
// connection to it included): one request answered on the same
// connection, refused at once ("no responders") without the marker.
const filteredCheckTimeout = 5 * time.Second

// ErrNATSConfiguredForRules is wrapped by Start's error when a server
// without Rules on NATSURLs (with Users or without) finds an external
// server whose
// accounts carry the marker of filtered reads mode (any fingerprint):
// those accounts are a sync-rules fleet's, and a server without rules
// would serve every client all of its tenant's changes.
var ErrNATSConfiguredForRules = errors.New("this NATS is configured for sync rules")

// rulesFix is what an operator does when the interlock fails.
const rulesFix = "write the accounts in filtered reads mode from the users file ebb serve runs with `ebb nats-config --auth USERS.yaml --rules RULES.yaml -o nats-auth.conf` " +
	"(auth.Users.WithFilteredReads(true).NATSConfig()), include that file in every NATS server's config and reload them (nats-server --signal reload)"

// eachServer runs check on a connection of its own to every server nc
// knows (nc.Servers(): the URLs it was given and the ones the cluster
// told it of), made with the credentials of the server's NATSURLs and,
// if nc uses TLS, over TLS; it returns the errors joined, each naming
// the server (its URL without credentials). A server it cannot connect
// to is an error too. Leaf nodes are not among them: no cluster tells of
// them.
func (s *Server) eachServer(ctx context.Context, nc *nats.Conn, check func(context.Context, *nats.Conn) error) error {
	var urls []string
	for _, u := range nc.Servers() {
		if u = withoutUserInfo(u); !slices.Contains(urls, u) {
			urls = append(urls, u)
		}
	}
	if len(urls) == 0 {
		return errors.New("nats: the connection knows no server to check")
	}
	opts := append(credentials(s.cfg.NATSURLs), nats.Name("ebb-serve-check"), nats.NoReconnect(), nats.DontRandomize(),
		nats.IgnoreDiscoveredServers(), nats.Timeout(filteredCheckTimeout))
	if _, err := nc.TLSConnectionState(); err == nil {
		opts = append(opts, nats.Secure())
	}
	var errs []error
	for _, u := range urls {
		cctx, cancel := context.WithTimeout(ctx, filteredCheckTimeout)
		node, err := nats.Connect(u, opts...)
		if err != nil {
			errs = append(errs, fmt.Errorf("NATS server %s cannot be checked: connect: %w", RedactURL(u), redactErr(err, s.cfg.NATSURLs)))
			cancel()
			continue
		}
		if err := check(cctx, node); err != nil {
			errs = append(errs, redactErr(err, s.cfg.NATSURLs))
		}
		node.Close()
		cancel()
	}
	return errors.Join(errs...)
}

// checkRulesAccounts fails unless every server of the cluster nc is
// connected to (eachServer) runs the accounts of the server's Users in
// filtered reads mode (auth.CheckFilteredReads: the marker with the
// fingerprint of those Users): without them a client reads every change
// of its tenant directly, whatever the rules. It also fails if a server
// holding a replica of one of ebb's streams was not among those checked
// (uncheckedPeers: a node that does not advertise itself and is not
// listed in NATSURLs). The error wraps auth.ErrNotFilteredReads,
// auth.ErrOtherUsersFile or ErrNodeNotChecked and names the fix.
func (s *Server) checkRulesAccounts(ctx context.Context, nc *nats.Conn) error {
	var checked []string
	err := s.eachServer(ctx, nc, func(ctx context.Context, node *nats.Conn) error {
		checked = append(checked, node.ConnectedServerName())
		return auth.CheckFilteredReads(ctx, node, s.cfg.Users)
	})
	if err == nil {
		err = uncheckedPeers(ctx, nc, checked)
	}
	if err == nil {
		return nil
	}
	hint := rulesFix
	if errors.Is(err, ErrNodeNotChecked) {
		hint = "list every NATS server in --nats (Config.NATSURLs) or let it advertise its client URL (no cluster no_advertise)"
	} else if errors.Is(err, auth.ErrOtherUsersFile) {
		hint = "the NATS accounts were generated from another users file: regenerate them with `ebb nats-config --auth USERS.yaml --rules RULES.yaml -o nats-auth.conf` from the users file ebb serve runs with, and reload every NATS server (nats-server --signal reload)"
	}
	return fmt.Errorf("sync rules on NATS %s: %w; %s", RedactURLs(s.cfg.NATSURLs), err, hint)
}

// ErrNodeNotChecked is wrapped by the sync-rules interlock's error when a
// NATS server holds a replica of one of ebb's streams but is not among the
// servers checked: it neither advertises its client URL (cluster
// no_advertise, or a cluster behind one load-balancer URL) nor is listed
// in NATSURLs, so its accounts cannot be checked.
var ErrNodeNotChecked = errors.New("a NATS server of the cluster is not checked")

// uncheckedPeers fails, wrapping ErrNodeNotChecked, naming each server
// (by server_name) that leads or holds a replica of one of ebb's streams
// and is not in checked. A stream it cannot read (not created yet, or
// JetStream not answering) is skipped: this finds only the nodes that
// hold ebb's streams, never one that holds none of them.
func uncheckedPeers(ctx context.Context, nc *nats.Conn, checked []string) error {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil
	}
	var missing []string
	add := func(name string) {
		if name != "" && !slices.Contains(checked, name) && !slices.Contains(missing, name) {
			missing = append(missing, name)
		}
	}
	for _, name := range []string{events.StreamEvents, events.StreamChanges, events.StreamReceipts, events.StreamDead} {
		cctx, cancel := context.WithTimeout(ctx, filteredCheckTimeout)
		st, err := js.Stream(cctx, name)
		cancel()
		if err != nil {
			continue
		}
		if cl := st.CachedInfo().Cluster; cl != nil {
			add(cl.Leader)
			for _, r := range cl.Replicas {
				if !r.Offline { // a node that is down serves no reads; nats.go stops listing it
					add(r.Name)
				}
			}
		}
	}
	if len(missing) == 0 {
		return nil
	}
	return fmt.Errorf("%w: NATS server %v holds ebb's streams but was not checked (checked: %v)", ErrNodeNotChecked, missing, checked)
}

// refuseRulesAccounts fails, wrapping ErrNATSConfiguredForRules, if any
// server of the cluster nc is connected to carries the marker of
// filtered reads mode: a server without rules must not serve a
// sync-rules fleet's NATS. A server it cannot check is only logged.
func (s *Server) refuseRulesAccounts(ctx context.Context, nc *nats.Conn) error {
	var marked []string
	err := s.eachServer(ctx, nc, func(ctx context.Context, node *nats.Conn) error {
		fp, err := auth.FilteredMarker(ctx, node)
		switch {
		case err == nil:
			marked = append(marked, fmt.Sprintf("%s (fingerprint %s)", node.ConnectedUrlRedacted(), fp))
			return nil
		case errors.Is(err, auth.ErrNotFilteredReads):
			return nil
		}
		return err
	})
	if len(marked) > 0 {
		return fmt.Errorf("%w: the accounts of NATS server %v are in filtered reads mode (written by `ebb nats-config --rules`); "+
			"run ebb serve with --rules (the same rules and users file as the fleet), or regenerate the accounts without --rules and reload", ErrNATSConfiguredForRules, marked)
	}
	if err != nil {
		s.cfg.Logger.Warn("could not check whether the NATS accounts are a sync-rules fleet's", "err", err)
	}
	return nil
}

// kickRulesCheck asks guardRules for a check now (after a reconnect);
// it never blocks.
func (s *Server) kickRulesCheck() {
	select {
	case s.rulesKick <- struct{}{}:
	default:
	}
}

// rulesGuard is the state of the sync-rules interlock on external NATS.
type rulesGuard struct {
	mu      sync.Mutex
	failing error           // the last check's failure; nil while it passes
	feed    *feed.Responder // the change feed; nil while stopped
	// directOff is set once this server turned CHANGES's allow_direct
	// off, until it has turned it back on.
	directOff bool
}

// rulesFailure returns why the interlock fails, nil while it passes (and
// without rules on external NATS).
func (s *Server) rulesFailure() error {
	s.rules.mu.Lock()
	defer s.rules.mu.Unlock()
	return s.rules.failing
}

// startFeed starts the change feed's responder unless it runs.
func (s *Server) startFeed() error {
	s.rules.mu.Lock()
	defer s.rules.mu.Unlock()
	if s.rules.feed != nil {
		return nil
	}
	ids := s.identities(&s.cfg)
	// Without rules every change goes to every reader as stored; without
	// auth too, nothing routes a request, so its body names the tenant.
	unfiltered := s.cfg.Rules == nil
	fr, err := feed.Serve(s.nc, s.js, feedIdentities(ids), feed.ResponderConfig{Logger: s.cfg.Logger.With("component", "feed"),
		Unfiltered: unfiltered, Open: unfiltered && ids == nil})
	if err != nil {
		return err
	}
	s.rules.feed = fr
	return nil
}

// stopFeed stops the change feed's responder if it runs.
func (s *Server) stopFeed() {
	s.rules.mu.Lock()
	fr := s.rules.feed
	s.rules.feed = nil
	s.rules.mu.Unlock()
	if fr != nil {
		_ = fr.Close()
	}
}

// guardRules re-checks the accounts of every NATS server
// (checkRulesAccounts) every interval and after every reconnect, until
// ctx ends. While the check fails the server is not ready (Ready,
// /readyz name the cause), every failed check is logged as an error, the
// change feed is stopped, HTTP change reads are refused (rulesGate) and
// CHANGES's direct get (which NATS itself serves, to whatever accounts
// import it) is turned off; once it passes again all of it comes back.
// allow_direct is one setting of the shared stream (applyRulesCheck):
// every failing check ensures it is off, and only the server that turned
// it off turns it back on, at its next passing check (retried at each
// one until the update succeeds). So the fleet fails closed while any
// server's check fails (a server that sees less never undoes another's
// turn-off); if the server that turned it off stops first, it stays off
// until an ebb serve starts (ReconcileStreams turns it on).
func (s *Server) guardRules(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.rulesKick:
		}
		err := s.checkRulesAccounts(ctx, s.nc)
		if ctx.Err() != nil {
			return
		}
		s.applyRulesCheck(ctx, err)
	}
}

// applyRulesCheck puts the server in the state a check's result asks,
// run after every check: a failing check stops the feed and ensures
// CHANGES's allow_direct is off; a passing one starts the feed (unless it
// runs) and, if this server turned allow_direct off, turns it back on. A
// failed stream update is logged and retried by the next check.
func (s *Server) applyRulesCheck(ctx context.Context, err error) {
	log := s.cfg.Logger
	s.rules.mu.Lock()
	was := s.rules.failing
	s.rules.failing = err
	s.rules.mu.Unlock()
	if err != nil {
		log.Error("sync rules interlock failed: clients' change reads are stopped and the server is not ready until the NATS accounts pass again", "err", err)
		s.stopFeed()
		changed, derr := s.setDirect(ctx, false)
		if derr != nil {
			log.Error("sync rules interlock: could not turn off CHANGES's direct get (retried at the next check)", "err", derr)
		}
		if changed {
			s.rules.mu.Lock()
			s.rules.directOff = true
			s.rules.mu.Unlock()
		}
		return
	}
	if ferr := s.startFeed(); ferr != nil {
		s.rules.mu.Lock()
		s.rules.failing = fmt.Errorf("change feed: %w", ferr)
		s.rules.mu.Unlock()
		log.Error("sync rules interlock passes but the change feed does not start", "err", ferr)
		return
	}
	s.rules.mu.Lock()
	mine := s.rules.directOff
	s.rules.mu.Unlock()
	if mine {
		if _, derr := s.setDirect(ctx, true); derr != nil {
			log.Error("sync rules interlock: could not turn CHANGES's direct get on (retried at the next check)", "err", derr)
		} else {
			s.rules.mu.Lock()
			s.rules.directOff = false
			s.rules.mu.Unlock()
		}
	}
	if was != nil {
		log.Info("sync rules interlock passes again: the change feed and HTTP change reads are back")
	}
}

// setDirect ensures CHANGES's allow_direct is on (true) or off, and
// reports whether it changed it: it reads the stream's configuration and
// updates it only if it differs. JetStream has no conditional update, so
// the configuration is read just before the update; the update runs only
// on the interlock's transitions.
func (s *Server) setDirect(ctx context.Context, on bool) (changed bool, err error) {
	cctx, cancel := context.WithTimeout(ctx, streamsTimeout)
	defer cancel()
	st, err := s.js.Stream(cctx, events.StreamChanges)
	if err != nil {
		return false, fmt.Errorf("stream %s: %w", events.StreamChanges, err)
	}
	cfg := st.CachedInfo().Config
	if cfg.AllowDirect == on {
		return false, nil
	}
	cfg.AllowDirect = on
	if _, err := s.js.UpdateStream(cctx, cfg); err != nil {
		return false, fmt.Errorf("update stream %s allow_direct %v: %w", events.StreamChanges, on, err)
	}
	return true, nil
}

// rulesGate refuses HTTP change reads while the sync-rules interlock
// fails (503) and passes them to next otherwise. It runs before
// authentication, so its body is generic (rulesGateBody): the cause, which
// names NATS servers, URLs and fingerprints, is in the server's log and
// Ready only.
func (s *Server) rulesGate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := s.rulesFailure(); err != nil {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusServiceUnavailable)
			_ = json.NewEncoder(w).Encode(map[string]string{"error": rulesGateBody})
			return
		}
		next.ServeHTTP(w, r)
	})
}

// rulesGateBody is rulesGate's 503 error.
const rulesGateBody = "change reads are stopped: sync rules interlock failing; see the server log"

// shortRulesCause is the interlock's failure err as /readyz (served
// without authentication) shows it: which kind of failure, wrapping its
// sentinel (auth.ErrNotFilteredReads, auth.ErrOtherUsersFile), without
// the servers, URLs or fingerprints err names.
func shortRulesCause(err error) error {
	switch {
	case errors.Is(err, auth.ErrNotFilteredReads):
		return fmt.Errorf("%w (a NATS server); see the server log", auth.ErrNotFilteredReads)
	case errors.Is(err, auth.ErrOtherUsersFile):
		return fmt.Errorf("%w (a NATS server); see the server log", auth.ErrOtherUsersFile)
	}
	return errors.New("a NATS server could not be checked, or the change feed does not start; see the server log")
}
