// Package datadir guards an ebb server's data directory: one process at a
// time may use it.
//
// Lock takes an exclusive flock(2) on the file "ebb.lock" in the directory
// before anything else in it is read or written (JetStream's storage, the
// view, the policies, the key check), and holds it until Release or the
// process's exit, however it exits: the kernel drops the lock of a killed
// process, so no stale lock is ever left behind to clear by hand. The lock
// file records the holder's pid, command and start time, so a refused
// process can say who holds the directory. The lock file itself is never
// removed; removing it would let two processes lock two different files
// under one name.
//
// The lock is advisory: it stops ebb processes (`ebb serve`, `ebb verify`),
// not other programs. It protects one machine's local filesystem; flock on
// a network filesystem may not exclude a process on another machine.
package datadir
