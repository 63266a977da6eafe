// Package bench holds the workloads of `ebb bench`: each measures one path
// of ebb (push, projector, catch-up, online writes, write-to-visible
// latency, reads and writes over a backlog, group-committed local writes)
// beside its baseline in the same run: raw JetStream on the same server,
// or, for the local-store rows, the same call without the backlog, or
// bbolt committing one write per transaction on the same disk. It reports
// the ratio of the two against the target of issue 15.
//
// Absolute figures on a shared machine are noise; the ratio of two runs
// made side by side is not. So every workload alternates its raw and its
// ebb run over Config.Rounds rounds (raw first in odd rounds, ebb first in
// even ones) and reports the medians, and the ratio is the median of the
// per-round ratios.
//
// The workloads use only the public APIs an app or the server uses
// (producer.Log and producer.Publisher, consumer.Replica,
// projection.Projector) and the jetstream package for the baselines; they
// copy no internals. Against an embedded server (the default) each
// workload gets a fresh server per sync mode (fsync per write, and
// nats-server's default background interval), in a temporary directory
// removed afterwards. With Config.NATSURL they run once against that
// server as it is configured: it must be a scratch server, since the
// workloads create the ebb streams there, write into them and run a
// projector over every event EVENTS holds.
//
// Run measures; it asserts nothing about speed. Whether a row meets its
// target is reported, never enforced.
package bench
