// Package server runs an ebb server inside a Go program: what `ebb serve`
// runs, behind one Config, so a Go backend embeds ebb in a few lines and
// the binary's serve command is only flags and a config file that fill
// that Config.
//
//	s, err := server.Start(ctx, server.Config{Data: "ebb-data"})
//	if err != nil { ... }
//	defer s.Close(context.Background())
//	// clients sync over NATS at s.NATSURL(), or over HTTP at s.URL()
//
// A server is, in the order Start brings them up (and Close stops them in
// reverse): the data directory, locked (deploy/datadir) before anything in
// it is read or written and released last, only once nothing writes in
// it; NATS, embedded (deploy/embedded, storage in the data directory) or
// an existing server or cluster (Config.NATSURLs); the four streams,
// created or reconciled (events.ReconcileStreams: replicas raised when
// asked and never lowered, operator-set settings kept with a warning);
// OpenTelemetry (deploy/telemetry, Prometheus always collected for
// /metrics); the view store (bbolt in the data directory, or PostgreSQL)
// and the projector on it, one projection.Projector or, with
// Config.Partitions, a projection.Group whose partitions are applied by
// whichever server holds their KV lease; the stream and projector gauges;
// the HTTP gateway (deploy/gateway: health, readiness, metrics, the sync
// API and document writes, whose durable logs live in the data directory)
// with the console (deploy/console) at /ui.
//
// Contracts:
//
//   - Start returns once the server serves, or fails having stopped what it
//     started and released the data directory. Its ctx bounds the start
//     only: the server then runs until Close, or until its projector stops
//     on its own, in which case it stops itself and Done, Wait report why.
//   - Every goroutine the server starts is owned by it and stopped by Close
//     (or by the stop after its projector failed); Close is safe to call
//     twice and concurrently, and bounded by its ctx.
//   - Ready is /readyz: nil when every stream is present, the NATS
//     connection is up and the projector is making progress (a Group on
//     standby is ready); otherwise it names each cause.
//   - With Config.Rules and Config.NATSURLs, the external servers must run
//     the accounts of Config.Users written in filtered reads mode (`ebb
//     nats-config --rules`): Start checks the marker and its fingerprint
//     of Config.Users (auth.CheckFilteredReads) on every server its
//     connection knows (nc.Servers(): the URLs given and the ones the
//     cluster announces), each on a connection of its own with the same
//     credentials and TLS, before starting anything on it, and fails,
//     wrapping auth.ErrNotFilteredReads or auth.ErrOtherUsersFile, naming
//     the node and the fix; a node it cannot reach fails too. Every node
//     must be listed in Config.NATSURLs or advertise its client URL: ebb
//     cannot discover one that does neither (cluster no_advertise, a
//     cluster behind one load-balancer URL), except that a node leading or
//     holding a replica of one of ebb's streams but not checked fails the
//     check (ErrNodeNotChecked, named); one holding none of them is not
//     found. The fingerprint covers the NATS limits and password hashes,
//     not plain passwords (random salts). It checks
//     again every Config.RulesCheckInterval and after every reconnect;
//     while a check fails, Ready names the cause, each failure is logged
//     as an error, the change responder is stopped, GET
//     /v1/{tenant}/changes answers 503 (a generic body: the cause is in
//     the log and Ready; /readyz shows only its kind) and CHANGES's
//     allow_direct is off, until a check passes. Every failing check
//     ensures allow_direct is off; only the server that turned it off
//     turns it on again, at its next passing check (retried until the
//     update succeeds), so the fleet fails closed while any server's check
//     fails; if that server stops first, allow_direct stays off until an
//     ebb serve starts (it reconciles the streams). Leaf nodes are not announced and not
//     checked: they must carry the same accounts. Between a bad reload
//     and the next check, DIRECT.GET on CHANGES is NATS's own to serve.
//     Whatever the accounts say, the consumer create and fetch
//     responders refuse every client's CHANGES read (auth.APIConfig.Rules).
//     The change responder, the writer-group stamp and the
//     consumer create responder then run on that connection as on the
//     embedded server; NATS token logins (Config.TokenLogin) need the
//     embedded server, so there token users log in over HTTP only.
//   - With Config.NATSURLs but no Rules (with Users or without), Start
//     refuses (ErrNATSConfiguredForRules) a NATS whose accounts carry the
//     marker (any fingerprint) on a server its connection knows; a server
//     it cannot check is only logged.
//   - NATS URLs are shown (logs, errors, /readyz, NATSURL) only through
//     RedactURL, and connect errors through RedactError.
//   - Errors name what failed and on what; a Config refused before anything
//     is touched wraps ErrInvalidConfig; the data directory's lock, key
//     file and stream errors wrap those packages' sentinels
//     (datadir.ErrLocked, keys.ErrWrongKey, ...).
//
// Where the packages live: the repository's top level is fixed (cmd,
// events, producer, consumer, projection, deploy), and what runs a server
// process, rather than what a client or the projector is, already lives in
// deploy (embedded NATS, auth, keys). So the wiring is deploy/server and
// the parts it wires, which Go's internal rule used to hide in cmd/ebb,
// are its siblings deploy/gateway, deploy/console, deploy/telemetry and
// deploy/datadir. A program that wants only the HTTP gateway on its own
// connection imports deploy/gateway.
package server
