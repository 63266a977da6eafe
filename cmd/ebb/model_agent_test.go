package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ebbsync/ebb/consumer"
	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/producer"
	"github.com/ebbsync/ebb/projection"
)

// A model agent is one replica of the model test (model_test.go) in its own
// process: the test binary re-executed with modelAgentEnv set, running
// TestModelAgent, which opens a consumer.Replica and obeys one JSON command
// per stdin line, answering one JSON line on stdout (prefixed with
// modelReplyPrefix so the testing framework's own output is never taken for
// a reply). A process per replica is what lets the test SIGKILL a replica
// in the middle of a write and learn, per event, whether the write was
// acknowledged: a reply carrying its event id arrived before the kill.

const (
	modelAgentEnv    = "EBB_MODEL_AGENT"
	modelReplyPrefix = "MODEL-REPLY "
)

// modelCmd is one command to an agent.
type modelCmd struct {
	Cmd       string        `json:"cmd"` // write, resolve, attach, detach, sync, dump, quit
	Op        events.Op     `json:"op,omitempty"`
	Coll      string        `json:"coll,omitempty"`
	Doc       string        `json:"doc,omitempty"`
	Fields    events.Fields `json:"fields,omitempty"`
	TimeoutMS int           `json:"timeout_ms,omitempty"`
}

// modelReply is an agent's answer to one command.
type modelReply struct {
	OK      bool       `json:"ok"`
	Err     string     `json:"err,omitempty"`
	Event   string     `json:"event,omitempty"`   // write, resolve: the appended event
	Skipped bool       `json:"skipped,omitempty"` // resolve with no open conflict: nothing written
	Dump    *modelDump `json:"dump,omitempty"`
}

// modelDump is everything a replica can tell about itself.
type modelDump struct {
	Client     string               `json:"client"`
	Docs       []consumer.Doc       `json:"docs"`
	Conflicts  []consumer.Conflict  `json:"conflicts"`
	Rejections []consumer.Rejection `json:"rejections"`
	Entries    []producer.Entry     `json:"entries"`
	Pending    int                  `json:"pending"`
	Online     bool                 `json:"online"`
	StatusErr  string               `json:"status_err,omitempty"`
	Resyncs    int                  `json:"resyncs"`
	LastResync string               `json:"last_resync,omitempty"`
}

// modelAgentConfig is passed to an agent in its environment.
type modelAgentConfig struct {
	Dir         string            `json:"dir"`
	Client      string            `json:"client"`
	Tenant      string            `json:"tenant"`
	NATS        string            `json:"nats"`
	Attach      bool              `json:"attach"`
	Policies    map[string]string `json:"policies"`
	Collections []string          `json:"collections"`
}

// TestModelAgent is not a test: it is the body of a model agent process.
func TestModelAgent(t *testing.T) {
	raw := os.Getenv(modelAgentEnv)
	if raw == "" {
		t.Skip("the replica process of TestModel; runs only as its child")
	}
	var cfg modelAgentConfig
	if err := json.Unmarshal([]byte(raw), &cfg); err != nil {
		fmt.Fprintf(os.Stderr, "agent config: %v\n", err)
		os.Exit(3)
	}
	if err := runModelAgent(cfg, os.Stdin, os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "agent %s: %v\n", cfg.Client, err)
		os.Exit(1)
	}
	// Exit here so the testing framework prints nothing after the replies.
	os.Exit(0)
}

func runModelAgent(cfg modelAgentConfig, in io.Reader, out io.Writer) error {
	ctx := context.Background()
	pol, err := projection.NewRegistry().Policies("lww", cfg.Policies)
	if err != nil {
		return err
	}
	// Info: resyncs, republishes and rejections are what a failing seed's
	// report needs (modelAgent.logs); a run writes only a few hundred lines.
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	r, err := consumer.OpenReplica(ctx, consumer.ReplicaConfig{Dir: cfg.Dir, Tenant: cfg.Tenant, Client: cfg.Client,
		Policies: pol, Logger: log})
	if err != nil {
		return fmt.Errorf("open replica: %w", err)
	}
	defer r.Close()
	// RetryOnFailedConnect: the server may be down now; nats.Conn keeps
	// trying, and Attach succeeds once it answers.
	nc, err := nats.Connect(cfg.NATS, nats.MaxReconnects(-1), nats.RetryOnFailedConnect(true),
		nats.ReconnectWait(100*time.Millisecond), nats.Timeout(time.Second),
		nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}))
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer nc.Close()
	attach := func() error {
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		return r.Attach(actx, nc)
	}
	if cfg.Attach {
		_ = attach() // offline if the server is down; the test attaches again later
	}
	reply := func(rep modelReply) error {
		b, err := json.Marshal(rep)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(out, "%s%s\n", modelReplyPrefix, b)
		return err
	}
	fail := func(err error) error { return reply(modelReply{Err: err.Error()}) }

	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		var c modelCmd
		if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
			return fmt.Errorf("command %q: %w", sc.Text(), err)
		}
		var rerr error
		switch c.Cmd {
		case "write", "resolve":
			id, skipped, err := modelAgentWrite(ctx, r, c)
			if err != nil {
				rerr = fail(err)
			} else {
				rerr = reply(modelReply{OK: true, Event: id, Skipped: skipped})
			}
		case "attach":
			if err := attach(); err != nil {
				rerr = fail(err)
			} else {
				rerr = reply(modelReply{OK: true})
			}
		case "detach":
			r.Detach()
			rerr = reply(modelReply{OK: true})
		case "sync":
			sctx, cancel := context.WithTimeout(ctx, time.Duration(c.TimeoutMS)*time.Millisecond)
			_, err := r.Sync(sctx)
			cancel()
			if err != nil {
				rerr = fail(err)
			} else {
				rerr = reply(modelReply{OK: true})
			}
		case "dump":
			d, err := modelAgentDump(ctx, r, cfg.Collections)
			if err != nil {
				rerr = fail(err)
			} else {
				rerr = reply(modelReply{OK: true, Dump: d})
			}
		case "quit":
			if err := r.Close(); err != nil {
				return reply(modelReply{Err: err.Error()})
			}
			return reply(modelReply{OK: true})
		default:
			rerr = fail(fmt.Errorf("unknown command %q", c.Cmd))
		}
		if rerr != nil {
			return rerr
		}
	}
	return sc.Err()
}

// modelAgentWrite performs one write and returns its event id: the last
// entry of the log, as the agent runs one command at a time.
func modelAgentWrite(ctx context.Context, r *consumer.Replica, c modelCmd) (string, bool, error) {
	var err error
	switch {
	case c.Cmd == "resolve":
		d, gerr := r.Get(ctx, c.Coll, c.Doc)
		if gerr != nil && !errors.Is(gerr, consumer.ErrNotFound) {
			return "", false, gerr
		}
		if len(d.Conflicts) == 0 {
			return "", true, nil
		}
		_, err = r.Resolve(ctx, c.Coll, c.Doc, d.Conflicts[0].ID, c.Fields)
	case c.Op == events.OpPut:
		_, err = r.Put(ctx, c.Coll, c.Doc, c.Fields)
	case c.Op == events.OpPatch:
		_, err = r.Patch(ctx, c.Coll, c.Doc, c.Fields)
	case c.Op == events.OpDelete:
		_, err = r.Delete(ctx, c.Coll, c.Doc)
	default:
		return "", false, fmt.Errorf("unknown op %q", c.Op)
	}
	if err != nil {
		return "", false, err
	}
	es, err := r.Log().Entries(ctx)
	if err != nil || len(es) == 0 {
		return "", false, fmt.Errorf("read back the appended event: %v (%d entries)", err, len(es))
	}
	return es[len(es)-1].Event.ID, false, nil
}

func modelAgentDump(ctx context.Context, r *consumer.Replica, colls []string) (*modelDump, error) {
	st := r.Status()
	d := &modelDump{Client: r.Client(), Pending: st.Pending, Online: st.Online, Resyncs: st.Resyncs}
	if st.Err != nil {
		d.StatusErr = st.Err.Error()
	}
	if st.LastResync != nil {
		d.LastResync = st.LastResync.Error()
	}
	for _, coll := range colls {
		ds, err := r.List(ctx, coll, true)
		if err != nil {
			return nil, err
		}
		d.Docs = append(d.Docs, ds...)
	}
	var err error
	if d.Conflicts, err = r.Conflicts(ctx); err != nil {
		return nil, err
	}
	if d.Rejections, err = r.Rejections(ctx); err != nil {
		return nil, err
	}
	if d.Entries, err = r.Log().Entries(ctx); err != nil {
		return nil, err
	}
	return d, nil
}

// modelAgent is the test's handle on one agent process.
type modelAgent struct {
	t       testing.TB
	cfg     modelAgentConfig
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	replies chan modelReply
	exited  chan struct{} // closed when the process has exited and its output is read
	stderr  *syncBuffer
	waitErr error
}

// modelLines splits an agent's stdout into replies.
type modelLines struct {
	mu      sync.Mutex
	buf     []byte
	replies chan<- modelReply
}

func (w *modelLines) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := strings.IndexByte(string(w.buf), '\n')
		if i < 0 {
			return len(p), nil
		}
		line := string(w.buf[:i])
		w.buf = w.buf[i+1:]
		if rest, ok := strings.CutPrefix(line, modelReplyPrefix); ok {
			var rep modelReply
			if err := json.Unmarshal([]byte(rest), &rep); err != nil {
				rep = modelReply{Err: fmt.Sprintf("undecodable reply %q: %v", rest, err)}
			}
			w.replies <- rep
		}
	}
}

// startModelAgent starts the agent process for cfg.
func startModelAgent(t testing.TB, cfg modelAgentConfig) *modelAgent {
	t.Helper()
	raw, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	a := &modelAgent{t: t, cfg: cfg, replies: make(chan modelReply, 4096), exited: make(chan struct{}), stderr: &syncBuffer{}}
	a.cmd = exec.Command(os.Args[0], "-test.run=^TestModelAgent$", "-test.count=1")
	a.cmd.Env = append(os.Environ(), modelAgentEnv+"="+string(raw))
	a.cmd.Stdout = &modelLines{replies: a.replies}
	a.cmd.Stderr = a.stderr
	if a.stdin, err = a.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := a.cmd.Start(); err != nil {
		t.Fatalf("start agent %s: %v", cfg.Client, err)
	}
	go func() {
		a.waitErr = a.cmd.Wait() // returns once stdout and stderr are copied
		close(a.exited)
	}()
	return a
}

// send writes one command without waiting for its reply.
func (a *modelAgent) send(c modelCmd) error {
	b, err := json.Marshal(c)
	if err != nil {
		return err
	}
	_, err = a.stdin.Write(append(b, '\n'))
	return err
}

// call sends c and waits up to timeout for its reply.
func (a *modelAgent) call(c modelCmd, timeout time.Duration) (modelReply, error) {
	if err := a.send(c); err != nil {
		return modelReply{}, fmt.Errorf("agent %s: send %s: %w", a.cfg.Client, c.Cmd, err)
	}
	select {
	case rep := <-a.replies:
		return rep, nil
	case <-a.exited:
		select {
		case rep := <-a.replies:
			return rep, nil
		default:
		}
		return modelReply{}, fmt.Errorf("agent %s exited during %s: %v\n%s", a.cfg.Client, c.Cmd, a.waitErr, a.stderr.String())
	case <-time.After(timeout):
		return modelReply{}, fmt.Errorf("agent %s: no reply to %s within %v; its goroutines:\n%s", a.cfg.Client, c.Cmd, timeout, a.stacks())
	}
}

// stacks makes a hung agent print its goroutines (SIGQUIT) and returns
// those that run ebb code, for the failure report.
func (a *modelAgent) stacks() string {
	_ = a.cmd.Process.Signal(syscall.SIGQUIT)
	select {
	case <-a.exited:
	case <-time.After(10 * time.Second):
		a.kill()
	}
	var keep []string
	for _, g := range strings.Split(a.stderr.String(), "\n\n") {
		if strings.Contains(g, "github.com/ebbsync/ebb/") {
			keep = append(keep, g)
		}
	}
	return strings.Join(keep, "\n\n")
}

// logs returns the agent's log lines (its stderr), for a failure report.
func (a *modelAgent) logs() string { return a.stderr.String() }

// kill SIGKILLs the agent and returns the replies it sent that nobody read.
func (a *modelAgent) kill() []modelReply {
	_ = a.cmd.Process.Signal(syscall.SIGKILL)
	<-a.exited
	var out []modelReply
	for {
		select {
		case rep := <-a.replies:
			out = append(out, rep)
		default:
			return out
		}
	}
}

// quit closes the replica cleanly and waits for the process to end.
func (a *modelAgent) quit() error {
	rep, err := a.call(modelCmd{Cmd: "quit"}, 30*time.Second)
	if err == nil && !rep.OK {
		err = errors.New(rep.Err)
	}
	select {
	case <-a.exited:
	case <-time.After(30 * time.Second):
		a.kill()
		return fmt.Errorf("agent %s did not exit after quit", a.cfg.Client)
	}
	return err
}

func modelAgentDir(root, client string) string { return filepath.Join(root, "replica-"+client) }
