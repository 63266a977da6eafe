// Package pgtest starts a throwaway PostgreSQL server for a test: initdb into
// tb.TempDir(), the postgres server as a child process of the test listening
// on a free loopback port (its unix socket in a temporary directory, never
// the system's), stopped and removed in tb.Cleanup.
//
//	srv := pgtest.MustStart(t)
//	store, err := projection.OpenPostgres(ctx, srv.URL, projection.PostgresOptions{Schema: pgtest.Schema(t)})
//
// The binaries are found in $EBB_PG_BIN, else beside pg_ctl on PATH, else
// in the newest /usr/lib/postgresql/*/bin (Debian's layout). When they are
// missing the test is skipped with a message saying how to install them,
// unless CI=true: CI must never skip PostgreSQL, so there it fails.
//
// PostgreSQL refuses to run as root. When the test runs as root (CI does),
// initdb and the server run as the user $EBB_PG_USER, else "ebbtest" (which
// .ci/run creates), else "postgres" (which Debian's package creates); the
// test's directories are handed to that user.
//
// The database's default collation is ICU's "en" where PostgreSQL has ICU
// (not C), as in production, so a query that needs byte order must say so.
// The server is started with fsync and synchronous_commit on (PostgreSQL's
// defaults), so a commit is as durable as in production; it gets SIGQUIT
// (immediate shutdown) if the test process dies without cleaning up.
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// startTimeout bounds initdb plus the server's start; stopTimeout its stop.
const (
	startTimeout = 2 * time.Minute
	stopTimeout  = 30 * time.Second
	superuser    = "ebb"
)

// Server is a running throwaway PostgreSQL.
type Server struct {
	// URL connects to the "postgres" database as a superuser over TCP on
	// loopback, e.g. postgres://ebb@127.0.0.1:41234/postgres?sslmode=disable.
	URL string
	// Port is the loopback TCP port it listens on.
	Port int
	// Dir is its data directory.
	Dir string
	// SocketDir holds its unix socket.
	SocketDir string

	cmd    *exec.Cmd
	exited chan struct{}
	err    error // the process's exit, set before exited closes
}

// MustStart starts a server for tb and stops it in tb.Cleanup. It skips tb
// when PostgreSQL is not installed, unless CI=true, and fails tb when the
// server cannot be started.
func MustStart(tb testing.TB) *Server {
	tb.Helper()
	bin, err := findBin()
	if err != nil {
		if os.Getenv("CI") == "true" {
			tb.Fatalf("pgtest: CI=true and PostgreSQL is not installed: %v (.ci/run installs Debian's postgresql package)", err)
		}
		tb.Skipf("pgtest: PostgreSQL is not installed, skipping: %v (apt-get install postgresql, or set EBB_PG_BIN)", err)
	}
	cred, err := credential()
	if err != nil {
		tb.Fatalf("pgtest: %v", err)
	}
	dir := filepath.Join(tb.TempDir(), "data")
	sock := filepath.Dir(dir)
	// A unix socket path is limited to 107 bytes; test names make long
	// temporary paths, so fall back to a short directory of our own.
	if len(sock)+len("/.s.PGSQL.65535") > 100 {
		sock, err = os.MkdirTemp("", "ebbpg")
		if err != nil {
			tb.Fatalf("pgtest: socket directory: %v", err)
		}
		tb.Cleanup(func() { os.RemoveAll(sock) })
	}
	if err := handOver(cred, dir, sock); err != nil {
		tb.Fatalf("pgtest: %v", err)
	}
	ctx, cancel := context.WithTimeout(tb.Context(), startTimeout)
	defer cancel()
	if err := initdb(ctx, bin, cred, dir); err != nil {
		tb.Fatalf("pgtest: %v", err)
	}
	// A free port can be taken by someone else between our probe and the
	// server's bind: try a few.
	var s *Server
	for attempt := 0; ; attempt++ {
		s, err = start(ctx, bin, cred, dir, sock)
		if err == nil {
			break
		}
		if attempt == 4 || ctx.Err() != nil {
			tb.Fatalf("pgtest: %v", err)
		}
	}
	tb.Cleanup(func() {
		if err := s.stop(); err != nil {
			tb.Errorf("pgtest: %v", err)
		}
	})
	return s
}

var schemaSeq atomic.Uint64

// Schema returns a schema name unique within the test binary, derived from
// tb's name, for a store to isolate itself in on a shared server.
func Schema(tb testing.TB) string {
	var b strings.Builder
	for _, r := range strings.ToLower(tb.Name()) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	name := b.String()
	if len(name) > 40 {
		name = name[len(name)-40:]
	}
	return fmt.Sprintf("t%d_%s", schemaSeq.Add(1), name)
}

// findBin returns the directory holding initdb and postgres.
func findBin() (string, error) {
	has := func(dir string) bool {
		for _, n := range []string{"initdb", "postgres"} {
			if fi, err := os.Stat(filepath.Join(dir, n)); err != nil || fi.IsDir() {
				return false
			}
		}
		return true
	}
	if dir := os.Getenv("EBB_PG_BIN"); dir != "" {
		if !has(dir) {
			return "", fmt.Errorf("EBB_PG_BIN=%s holds no initdb and postgres", dir)
		}
		return dir, nil
	}
	if p, err := exec.LookPath("pg_ctl"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil && has(filepath.Dir(real)) {
			return filepath.Dir(real), nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return version(dirs[i]) > version(dirs[j]) })
	for _, d := range dirs {
		if has(d) {
			return d, nil
		}
	}
	return "", errors.New("no initdb and postgres in $EBB_PG_BIN, beside pg_ctl on PATH, or in /usr/lib/postgresql/*/bin")
}

func version(bin string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(bin)))
	return v
}

// credential returns whom to run PostgreSQL as: nil (ourselves) unless we
// are root.
func credential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	names := []string{"ebbtest", "postgres"}
	if n := os.Getenv("EBB_PG_USER"); n != "" {
		names = []string{n}
	}
	for _, n := range names {
		u, err := user.Lookup(n)
		if err != nil {
			continue
		}
		uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
		gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
		if err1 != nil || err2 != nil || uid == 0 {
			continue
		}
		return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}, nil
	}
	return nil, fmt.Errorf("running as root and none of the users %v exists to run PostgreSQL as (PostgreSQL refuses root): create one, e.g. useradd --system ebbtest", names)
}

// handOver makes dir's parent and sock usable by cred's user.
func handOver(cred *syscall.Credential, dir, sock string) error {
	if cred == nil {
		return nil
	}
	// testing makes its temporary root 0700: let the user through it
	// (only through: it lists nothing).
	parent := filepath.Dir(dir)
	if err := os.Chmod(filepath.Dir(parent), 0o711); err != nil {
		return fmt.Errorf("open the test directory to the postgres user: %w", err)
	}
	for _, d := range []string{parent, sock} {
		if err := os.Chown(d, int(cred.Uid), int(cred.Gid)); err != nil {
			return fmt.Errorf("hand %s to the postgres user: %w", d, err)
		}
	}
	return nil
}

func command(ctx context.Context, cred *syscall.Credential, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), "LC_ALL=C", "HOME="+os.TempDir())
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	return cmd
}

// initdb makes the cluster with ICU's "en" collation as the database
// default, as a production database often has (not C), so that code
// relying on byte order must say COLLATE "C" and tests catch it when it
// does not. A PostgreSQL without ICU gets the C locale.
func initdb(ctx context.Context, bin string, cred *syscall.Credential, dir string) error {
	args := []string{"-D", dir, "-U", superuser, "-A", "trust", "-E", "UTF8", "--no-sync", "--no-instructions"}
	out, err := command(ctx, cred, filepath.Join(bin, "initdb"), append(args, "--locale=C", "--locale-provider=icu", "--icu-locale=en")...).CombinedOutput()
	if err != nil && ctx.Err() == nil {
		if err := os.RemoveAll(dir); err != nil {
			return fmt.Errorf("initdb %s: clean up after the ICU attempt: %w", dir, err)
		}
		out, err = command(ctx, cred, filepath.Join(bin, "initdb"), append(args, "--no-locale")...).CombinedOutput()
	}
	if err != nil {
		return fmt.Errorf("initdb %s: %w\n%s", dir, err, out)
	}
	return nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// start runs the server and waits until it accepts connections.
func start(ctx context.Context, bin string, cred *syscall.Credential, dir, sock string) (*Server, error) {
	port, err := freePort()
	if err != nil {
		return nil, fmt.Errorf("find a free port: %w", err)
	}
	log, err := os.Create(filepath.Join(filepath.Dir(dir), "postgres.log"))
	if err != nil {
		return nil, err
	}
	defer log.Close()
	// Not CommandContext: the server outlives ctx, which bounds the start only.
	cmd := command(context.Background(), cred, filepath.Join(bin, "postgres"), "-D", dir,
		"-p", strconv.Itoa(port), "-k", sock, "-c", "listen_addresses=127.0.0.1",
		"-c", "shared_buffers=32MB", "-c", "max_connections=60", "-c", "fsync=on", "-c", "synchronous_commit=on")
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr.Pdeathsig = syscall.SIGQUIT
	cmd.SysProcAttr.Setpgid = true
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start postgres: %w", err)
	}
	s := &Server{
		URL:  fmt.Sprintf("postgres://%s@127.0.0.1:%d/postgres?sslmode=disable", superuser, port),
		Port: port, Dir: dir, SocketDir: sock, cmd: cmd, exited: make(chan struct{}),
	}
	go func() {
		s.err = cmd.Wait()
		close(s.exited)
	}()
	for {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		conn, err := pgx.Connect(cctx, s.URL)
		cancel()
		if err == nil {
			conn.Close(ctx)
			return s, nil
		}
		select {
		case <-s.exited:
			tail, _ := os.ReadFile(log.Name())
			return nil, fmt.Errorf("postgres on port %d exited while starting: %v\n%s", port, s.err, lastLines(tail, 20))
		case <-ctx.Done():
			s.stop()
			return nil, fmt.Errorf("postgres on port %d not ready: %w (last: %v)", port, ctx.Err(), err)
		case <-time.After(50 * time.Millisecond): // polling interval while it starts
		}
	}
}

// stop asks for a fast shutdown (SIGINT: disconnect clients, checkpoint)
// and waits, killing the process group after stopTimeout.
func (s *Server) stop() error {
	select {
	case <-s.exited:
		return nil
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-s.exited:
		return nil
	case <-time.After(stopTimeout):
		_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-s.exited
		return fmt.Errorf("postgres in %s did not stop within %v: killed", s.Dir, stopTimeout)
	}
}

func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
