package producer

import (
	"errors"
	"fmt"
	"os"
	"time"

	"go.etcd.io/bbolt"
)

// MarkerSuffix names the file beside a local store that says a store was
// made there: "<store>.made". OpenFile writes it when it creates the store
// and refuses to make a new store where it exists, so a store that went
// missing or was emptied is never silently replaced by a new identity with
// its pending writes gone.
const MarkerSuffix = ".made"

// FileOptions tune OpenFile; zero values are bbolt's defaults.
type FileOptions struct {
	Timeout         time.Duration // how long to wait for another process's lock; 0: 10s
	InitialMmapSize int
	AllocSize       int
}

// OpenFile opens the local store (a bbolt file) at path, creating it, and
// its marker, only if neither exists. It checks the file before bbolt maps
// it (CheckFile) and turns a bbolt panic on a damaged page into an error,
// so a bad store is refused with one line naming the file, what is wrong,
// and what to do, and the file is left as it was. Errors wrap
// ErrStoreMissing, ErrStoreEmpty or ErrStoreDamaged.
func OpenFile(path string, opts FileOptions) (db *bbolt.DB, err error) {
	marker := path + MarkerSuffix
	_, merr := os.Stat(marker)
	made := merr == nil
	switch err := CheckFile(path); {
	case err == nil:
	case errors.Is(err, ErrStoreMissing) && !made:
		// A new store; its marker follows once bbolt has written it.
	case errors.Is(err, ErrStoreMissing), errors.Is(err, ErrStoreEmpty) && made:
		return nil, fmt.Errorf("%w; %s shows a store was made here: restore %s from a backup, or run 'ebb doctor --reset' to start a new device (its unsent writes are lost)", err, marker, path)
	case errors.Is(err, ErrStoreEmpty):
		// Created by a crash before its first commit (bbolt writes its
		// header in Open): nothing was ever stored in it.
		if rerr := os.Remove(path); rerr != nil {
			return nil, fmt.Errorf("%w: remove it: %w", err, rerr)
		}
	default:
		return nil, fmt.Errorf("%w: keep the file, restore it from a backup, or run 'ebb doctor' to see what can be saved", err)
	}
	timeout := opts.Timeout
	if timeout == 0 {
		timeout = 10 * time.Second
	}
	defer func() {
		if p := recover(); p != nil {
			db, err = nil, fmt.Errorf("local store %s: %w: %v: keep the file and restore it from a backup", path, ErrStoreDamaged, p)
		}
	}()
	db, err = bbolt.Open(path, 0o600, &bbolt.Options{Timeout: timeout, InitialMmapSize: opts.InitialMmapSize})
	if err != nil {
		return nil, fmt.Errorf("local store %s: %w", path, err)
	}
	if opts.AllocSize > 0 {
		db.AllocSize = opts.AllocSize
	}
	// After bbolt has written (and synced) the new file: a crash before
	// this leaves a store without a marker, which the next open adopts.
	if !made {
		if err := writeMarker(marker); err != nil {
			_ = db.Close()
			return nil, fmt.Errorf("local store %s: write marker: %w", path, err)
		}
	}
	return db, nil
}

func writeMarker(path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.WriteString("an ebb local store was made here (see producer.OpenFile)\n"); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}
