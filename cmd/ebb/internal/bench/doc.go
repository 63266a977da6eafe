// Package bench holds the workloads of `ebb bench`: each measures one path
// of ebb (push, projector, catch-up, online writes, write-to-visible
// latency, reads and writes over a backlog, group-committed local writes,
// bytes pulled after a small change, fsyncs per write) beside its baseline
// in the same run: raw JetStream on the same server, or, for the
// local-store rows, the same call without the backlog, or bbolt committing
// one write per transaction on the same disk, or, for the size and fsync
// rows, a full-state download and the target itself. It reports the ratio
// of the two against the target of issue 15.
//
// Absolute figures on a shared machine are noise; the ratio of two runs
// made side by side is not. So every timed workload alternates its raw and
// its ebb run over Config.Rounds rounds (raw first in odd rounds, ebb first
// in even ones) and reports the medians, and the ratio is the median of the
// per-round ratios. The projector has two baselines in each round: a
// durable consumer that only fetches and acks, and the same with the two
// publishes per event (a change and a receipt) the projector makes, which
// is what bounds it. The delta and fsync rows are counts, measured once.
//
// The fsync rows count system calls, which needs a process of its own: the
// workload starts Config.Self again under `strace -f -y` (`ebb bench` passes
// its own executable; see RunFsyncChild) and counts the fsync and fdatasync
// calls on the replica's files and on the server's between two marker
// files. Without strace on PATH, without Config.Self, or against
// Config.NATSURL it reports no rows.
//
// The workloads use only the public APIs an app or the server uses
// (producer.Log and producer.Publisher, consumer.Replica,
// projection.Projector) and the jetstream package for the baselines; they
// copy no internals. Against an embedded server (the default) each
// workload gets a fresh server per sync mode (fsync per write, and
// nats-server's default background interval; Config.Sync picks one), in a
// temporary directory removed afterwards. With Config.NATSURL they run once
// against that server as it is configured: it must be a scratch server,
// since the workloads create the ebb streams there, write into them and
// run a projector over every event EVENTS holds.
//
// Run measures; it asserts nothing about speed. Whether a row meets its
// target is reported, never enforced.
package bench
