package producer

import "go.etcd.io/bbolt"

// Stats counts what the log has committed since it was opened.
type Stats struct {
	// Commits is how many read-write transactions the log committed on its
	// file: group commits, Update calls, device changes. Each is one bbolt
	// commit, which fdatasyncs the file twice (data, then meta page).
	Commits int64
	// Requests is how many appends and batches those commits held; with
	// group commit Requests/Commits is the mean group size.
	Requests int64
}

// Stats returns the log's counters; O(1), no transaction.
func (l *Log) Stats() Stats {
	return Stats{Commits: l.commits.Load(), Requests: l.requests.Load()}
}

// update runs fn in a read-write transaction of the log's file and counts
// the commit.
func (l *Log) update(fn func(tx *bbolt.Tx) error) error {
	err := l.db.Update(fn)
	if err == nil {
		l.commits.Add(1)
	}
	return err
}
