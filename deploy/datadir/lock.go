package datadir

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// LockFile is the name of the lock file in a data directory.
const LockFile = "ebb.lock"

// Errors of Lock. Match them with errors.Is.
var (
	// ErrLocked means another process holds the data directory; the error
	// is a *LockedError naming it.
	ErrLocked = errors.New("data directory in use")
	// ErrNotExist means the data directory does not exist and Options.Create
	// was not set.
	ErrNotExist = errors.New("data directory does not exist")
)

// LockedError is the error Lock returns when another process holds the
// directory. Holder is what that process wrote in the lock file, empty
// if it could not be read.
type LockedError struct {
	Dir    string
	Holder Holder
}

func (e *LockedError) Error() string {
	who := "another process"
	if e.Holder.PID != 0 {
		who = fmt.Sprintf("pid %d", e.Holder.PID)
		if e.Holder.Command != "" {
			who += " (" + e.Holder.Command + ")"
		}
		if !e.Holder.Since.IsZero() {
			who += " since " + e.Holder.Since.UTC().Format(time.RFC3339)
		}
	}
	return fmt.Sprintf("data directory %s is in use by %s: stop it first, or use another --data", e.Dir, who)
}

// Is makes errors.Is(err, ErrLocked) true.
func (e *LockedError) Is(target error) bool { return target == ErrLocked }

// Holder describes the process holding a lock, as recorded in the file.
type Holder struct {
	PID     int
	Command string // such as "ebb serve"
	Since   time.Time
}

// Options are Lock's settings; the zero value works.
type Options struct {
	// Create makes the directory (mode 0700, with parents) if it is missing.
	// Without it a missing directory is ErrNotExist.
	Create bool
	// Command is recorded in the lock file for a refused process to show,
	// for example "ebb serve".
	Command string
}

// Lock is a held data directory lock.
type Lock struct {
	f *os.File
}

// Acquire locks the data directory dir without waiting: it returns a
// *LockedError (ErrLocked) at once if another process, or another Lock in
// this process, holds it. The caller must hold the returned Lock for as
// long as it uses anything in dir.
func Acquire(dir string, opts Options) (*Lock, error) {
	st, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist) && opts.Create:
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("create data directory %s: %w", dir, err)
		}
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("%w: %s", ErrNotExist, dir)
	case err != nil:
		return nil, fmt.Errorf("data directory %s: %w", dir, err)
	case !st.IsDir():
		return nil, fmt.Errorf("data directory %s: not a directory", dir)
	}
	path := filepath.Join(dir, LockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open lock file %s: %w", path, err)
	}
	held, err := tryLock(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if !held {
		h := readHolder(f)
		f.Close()
		return nil, &LockedError{Dir: dir, Holder: h}
	}
	if err := writeHolder(f, opts.Command); err != nil {
		unlock(f)
		f.Close()
		return nil, fmt.Errorf("write lock file %s: %w", path, err)
	}
	return &Lock{f: f}, nil
}

// Release drops the lock. It is safe to call more than once.
func (l *Lock) Release() error {
	if l == nil || l.f == nil {
		return nil
	}
	f := l.f
	l.f = nil
	// Closing the file releases the flock; unlock first so the release does
	// not depend on no other descriptor of this open file existing.
	err := unlock(f)
	return errors.Join(err, f.Close())
}

// writeHolder replaces the lock file's content with this process's record:
// one line "pid=<pid> since=<RFC3339> command=<command>".
func writeHolder(f *os.File, command string) error {
	line := fmt.Sprintf("pid=%d since=%s command=%s\n", os.Getpid(), time.Now().UTC().Format(time.RFC3339), command)
	if err := f.Truncate(0); err != nil {
		return err
	}
	if _, err := f.WriteAt([]byte(line), 0); err != nil {
		return err
	}
	return f.Sync()
}

// readHolder parses what writeHolder wrote; fields it cannot read stay zero.
func readHolder(f *os.File) Holder {
	buf := make([]byte, 512)
	n, _ := f.ReadAt(buf, 0)
	line, _, _ := strings.Cut(string(buf[:n]), "\n")
	var h Holder
	rest := line
	for rest != "" {
		var field string
		field, rest, _ = strings.Cut(rest, " ")
		key, val, _ := strings.Cut(field, "=")
		switch key {
		case "pid":
			h.PID, _ = strconv.Atoi(val)
		case "since":
			h.Since, _ = time.Parse(time.RFC3339, val)
		case "command":
			// The command is last and may contain spaces.
			h.Command = strings.TrimSpace(val + " " + rest)
			rest = ""
		}
	}
	return h
}
