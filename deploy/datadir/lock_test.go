package datadir_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ebbsync/ebb/deploy/datadir"
)

func TestAcquire_SecondRefusedUntilReleased(t *testing.T) {
	dir := t.TempDir()
	l, err := datadir.Acquire(dir, datadir.Options{Command: "ebb serve"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = datadir.Acquire(dir, datadir.Options{Command: "ebb verify"})
	var le *datadir.LockedError
	if !errors.Is(err, datadir.ErrLocked) || !errors.As(err, &le) {
		t.Fatalf("second Acquire: %v, want ErrLocked", err)
	}
	if le.Holder.PID != os.Getpid() || le.Holder.Command != "ebb serve" || le.Holder.Since.IsZero() {
		t.Fatalf("holder %+v, want this process running ebb serve", le.Holder)
	}
	if msg := err.Error(); !strings.Contains(msg, dir) || !strings.Contains(msg, "(ebb serve)") {
		t.Fatalf("message %q must name the directory and the holder", msg)
	}
	if err := l.Release(); err != nil {
		t.Fatal(err)
	}
	if err := l.Release(); err != nil {
		t.Fatalf("second Release: %v", err)
	}
	l2, err := datadir.Acquire(dir, datadir.Options{})
	if err != nil {
		t.Fatalf("Acquire after Release: %v", err)
	}
	l2.Release()
	if _, err := os.Stat(filepath.Join(dir, datadir.LockFile)); err != nil {
		t.Fatalf("the lock file stays: %v", err)
	}
}

func TestAcquire_MissingDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b")
	if _, err := datadir.Acquire(dir, datadir.Options{}); !errors.Is(err, datadir.ErrNotExist) {
		t.Fatalf("Acquire of a missing directory: %v, want ErrNotExist", err)
	}
	if _, err := os.Stat(dir); err == nil {
		t.Fatal("Acquire without Create made the directory")
	}
	l, err := datadir.Acquire(dir, datadir.Options{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	if st, err := os.Stat(dir); err != nil || !st.IsDir() || st.Mode().Perm() != 0o700 {
		t.Fatalf("created directory: %v %v", st, err)
	}
}

func TestAcquire_NotADirectory(t *testing.T) {
	f := filepath.Join(t.TempDir(), "file")
	os.WriteFile(f, nil, 0o600)
	if _, err := datadir.Acquire(f, datadir.Options{Create: true}); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Fatalf("Acquire of a file: %v", err)
	}
}
