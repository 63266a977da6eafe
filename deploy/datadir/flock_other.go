//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package datadir

import (
	"errors"
	"os"
)

// tryLock refuses: without flock a data directory cannot be guarded, and
// running unguarded is what destroys a running server's streams.
func tryLock(*os.File) (bool, error) {
	return false, errors.New("locking a data directory is not supported on this platform")
}

func unlock(*os.File) error { return nil }
