package producer

import "go.etcd.io/bbolt"

// DB returns the bbolt database of l, for tests in this package that reach
// under the log's API (publisher_test.go's loseAck). It exists only in the
// test binary: the package's API exposes no *bbolt.DB.
func (l *Log) DB() *bbolt.DB { return l.db }
