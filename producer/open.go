package producer

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"go.etcd.io/bbolt"
)

// MarkerSuffix names the file beside a local store that says a store was
// made there: "<store>.made". OpenStore writes it when it creates the store
// and refuses to make a new store where it exists, so a store that went
// missing or was emptied is never silently replaced by a new identity with
// its pending writes gone.
const MarkerSuffix = ".made"

// FileOptions tune OpenStore; zero values are bbolt's defaults.
type FileOptions struct {
	Timeout         time.Duration // how long to wait for another process's lock; 0: 10s
	InitialMmapSize int
	AllocSize       int
}

// OpenStore opens the local store (a bbolt file) at path with the log in
// it, creating the file, and its marker, only if neither exists. The Log
// owns the file: every other package that keeps state in it does so
// through Log.View and Log.Update; Close closes it. See openFile for the
// checks made before bbolt maps the file. Errors wrap ErrStoreMissing,
// ErrStoreEmpty or ErrStoreDamaged, or are Open's.
func OpenStore(path string, cfg LogConfig, opts FileOptions) (*Log, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("open log %s: %w", path, err)
	}
	db, err := openFile(path, opts)
	if err != nil {
		return nil, err
	}
	l, err := openDB(db, cfg)
	if err != nil {
		_ = db.Close()
		return nil, err
	}
	l.ownsDB = true
	return l, nil
}

// openFile opens the local store (a bbolt file) at path, creating it, and
// its marker, only if neither exists. It checks the file before bbolt maps
// it (CheckFile) and turns a bbolt panic while opening into an error, so
// a bad store is refused with one line naming the file, what is wrong, and
// what to do, and the file is left as it was. Damage deeper in the file
// shows when a transaction reads it; 'ebb doctor' (Diagnose) checks every
// page. A store with no marker whose header is damaged is refused too,
// though it may be a first run that crashed inside its creation: without
// the marker it cannot be told from a store made before markers existed. Errors wrap
// ErrStoreMissing, ErrStoreEmpty or ErrStoreDamaged.
func openFile(path string, opts FileOptions) (db *bbolt.DB, err error) {
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
		// Nothing was ever stored in it: a crash before bbolt's first
		// header write, or another opener creating it right now. bbolt
		// takes the file's lock before it initialises an empty file, so it
		// is opened, never removed (removing it could unlink a store
		// another process is creating).
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
		// The new store's and marker's names must survive a power loss
		// too, or a store with acknowledged writes could vanish with them.
		if err := syncDir(filepath.Dir(path)); err != nil {
			_ = db.Close()
			return nil, fmt.Errorf("local store %s: sync its directory: %w", path, err)
		}
	}
	return db, nil
}

func writeMarker(path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.WriteString("an ebb local store was made here (see producer.OpenStore)\n"); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

// syncDir fsyncs a directory, so the names created in it are durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	if err := d.Sync(); err != nil {
		_ = d.Close()
		return err
	}
	return d.Close()
}
