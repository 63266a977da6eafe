// Package embedded runs nats-server inside the current process with JetStream
// on file storage in one directory. It is the default deployment of
// `ebb serve` (one command, no other service) and the server every ebb test
// runs against (see package embeddedtest).
//
// Start validates a Config, starts the server and returns once it accepts
// connections; Server.Connect dials it over loopback TCP or, with DontListen,
// in process; Server.Shutdown stops it and waits. nats-server's log lines go
// to a *slog.Logger with component=nats. Beyond one machine ebb points at an
// existing NATS cluster instead and this package is not used.
//
// # Restarting on the same storage and port
//
// Server.Config returns the effective config, with Listen set to the bound
// address, so a server started on a random port ("127.0.0.1:-1") can be shut
// down and started again on the same Dir and the same port:
//
//	cfg := s.Config()
//	err := s.Shutdown(ctx)
//	...
//	s, err = embedded.Start(ctx, cfg)
//
// Streams and their messages are recovered from Dir, and clients that dial
// the same URL with nats.MaxReconnects(-1) reconnect by themselves.
//
// # TLS, users and encryption
//
// Config.TLS (built by LoadServerTLS from PEM files) makes the client
// listener require TLS, and client certificates when it has ClientCAs.
// Config.Users (package deploy/auth makes them with auth.NATSUsers) turns
// on authentication: every account a user points at is configured, with
// its imports, exports, limits and JetStream; logins are checked by
// auth.NATSAuthenticator under Config.Login (rate limited per user and
// per source, failures of equal cost), not by nats-server's user list.
// The internal user, which only Server.Connect knows, gets a random
// password: the user named auth.InternalUser (in account auth.StreamAccount,
// where the streams then live) or, without one, an added user with every
// permission in the global account. With accounts, Start also answers
// users' stream info requests (auth.ServeStreamInfo) on an internal
// connection closed by Shutdown, and keeps the streams of a Dir first used
// without auth (or the reverse) by moving Dir/jetstream/$G to
// Dir/jetstream/EBB. Whenever TLS or Users is set, Server.Connect dials in
// process, so the server's own connection needs neither a certificate nor
// a password on the network.
// Config.JetStreamKey encrypts JetStream's files with AES-GCM; read and
// check the key with package deploy/keys first, since nats-server itself
// does not refuse a wrong key (it skips the streams it cannot decrypt).
//
// # Durability: fsync on every write by default
//
// ebb promises that a write acknowledged is never lost. A client keeps an
// event in its local log until JetStream's PubAck and then forgets it, so on a
// single node the ack must mean "on disk", not "in the OS page cache".
// nats-server's own default is to fsync in the background every two minutes;
// this package defaults to fsync before every ack (nats-server's SyncAlways),
// and SyncPolicy.Interval relaxes that. On a single node:
//
//   - SyncPolicy{} (default, fsync always): an acknowledged write survives a
//     crash of the process (panic, kill -9, OOM kill) and a crash of the
//     operating system or a power cut, as far as the disk honours fsync.
//   - SyncPolicy{Interval: d}: the message is written to the file before the
//     ack, so it survives a crash of the process, since the kernel still
//     holds it; but an OS crash or power cut can lose every write
//     acknowledged in the last d (up to two minutes with
//     NATSDefaultSyncInterval). Clients have already dropped those events.
//     Choose this only where that loss is acceptable, such as tests and
//     benchmarks.
//
// The price, measured with BenchmarkPublishSync (256-byte messages,
// PublishAsync with 256 acks in flight, file storage, loopback TCP; five runs
// of 20000 messages each on a shared, noisy 2-core VM with an ext4 virtual
// disk):
//
//	fsync always         6,400 –   7,400 msgs/s  (~140 µs per message)
//	interval=2m        140,000 – 168,000 msgs/s  (~6.5 µs per message)
//
// Fsync on every write is about 22 times slower here (range 19–26). The cost
// is one fsync per message, so it tracks the disk's fsync latency rather than
// the CPU: a disk with a slow cache flush will show a wider gap, and a VM
// whose host caches writes a narrower one. Several thousand events per second
// on one node is ample for the embedded deployment. Replicated streams on a
// NATS cluster are durable by replication instead, and nats-server relaxes
// the fsync per write there; that deployment is configured outside this
// package.
package embedded
