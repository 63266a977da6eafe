package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/deploy/embedded"
	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/projection"
)

// adminFlags are the flags of the operator commands that talk to a
// server's NATS (streams, dead, backup): where it is and who we are.
type adminFlags struct {
	nats string
	json bool
	conn connFlags
}

func (a *adminFlags) register(m *Main, fs *flag.FlagSet) {
	fs.StringVar(&a.nats, "nats", m.env("EBB_NATS", defaultNATSURL), "the server's NATS URL (env EBB_NATS)")
	fs.BoolVar(&a.json, "json", false, "print JSON")
	a.conn.register(m, fs, clientContext{})
}

// connect dials the server and returns its JetStream.
func (a *adminFlags) connect(name string) (*nats.Conn, jetstream.JetStream, error) {
	nc, err := a.conn.connect(a.nats, name)
	if err != nil {
		return nil, nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("jetstream on %s: %w", a.nats, err)
	}
	return nc, js, nil
}

// adminStreams are ebb's streams in the order operators read them.
var adminStreams = []string{events.StreamEvents, events.StreamChanges, events.StreamReceipts, events.StreamDead}

// streamRecord is one stream in `ebb streams --json`.
type streamRecord struct {
	Name      string    `json:"name"`
	Exists    bool      `json:"exists"`
	Messages  uint64    `json:"messages"`
	Bytes     uint64    `json:"bytes"`
	FirstSeq  uint64    `json:"first_seq"`
	LastSeq   uint64    `json:"last_seq"`
	FirstTime time.Time `json:"first_time,omitzero"`
	LastTime  time.Time `json:"last_time,omitzero"`
	Replicas  int       `json:"replicas"`
	Created   time.Time `json:"created,omitzero"`
	Leader    string    `json:"leader,omitempty"`
}

// projectorRecord is one projector durable on EVENTS in `ebb streams --json`.
type projectorRecord struct {
	Durable string `json:"durable"`
	// AckFloor is the last EVENTS sequence the projector acknowledged: it
	// acks a batch only once the batch is committed to the view and its
	// changes and receipts are stored, so everything up to here is in
	// CHANGES and RECEIPTS. The checkpoint in the view may be a batch ahead.
	AckFloor uint64 `json:"ack_floor"`
	// Lag is EVENTS' last sequence minus AckFloor.
	Lag uint64 `json:"lag"`
	// Pending is what the durable has not delivered yet (its own count).
	Pending uint64 `json:"pending"`
	// AckPending is what it delivered and the projector has not acked.
	AckPending int `json:"ack_pending"`
}

// streamsRecord is `ebb streams --json`.
type streamsRecord struct {
	Streams    []streamRecord    `json:"streams"`
	Projectors []projectorRecord `json:"projectors"`
	// Server is what one server's /metrics says of its projector, with --http.
	Server *serverProjector `json:"server,omitempty"`
}

// serverProjector is a server's own view of its projector, from its
// /metrics (ebb_projector_checkpoint, ebb_projector_lag): the checkpoint
// it committed (with --partitions, the lowest of the partitions it
// holds), which may be a batch ahead of the durable's ack floor.
type serverProjector struct {
	HTTP       string `json:"http"`
	Checkpoint uint64 `json:"checkpoint"`
	Lag        uint64 `json:"lag"`
	// Applying is false for a server applying no partition (standby): it
	// reports no checkpoint.
	Applying bool `json:"applying"`
}

// runStreams prints the state of ebb's four streams and the projector's
// lag, read from JetStream, so it works against a running server.
func runStreams(ctx context.Context, m *Main, args []string) error {
	var a adminFlags
	var base string
	fs := m.newFlagSet("streams")
	a.register(m, fs)
	fs.StringVar(&base, "http", "", "also read the projector's committed checkpoint from this server's /metrics (http://host:8080)")
	if err := m.parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("streams takes no arguments, got %q", fs.Args())
	}
	nc, js, err := a.connect("ebb-streams")
	if err != nil {
		return fmt.Errorf("streams: %w", err)
	}
	defer nc.Close()
	rec, err := readStreams(ctx, js)
	if err != nil {
		return fmt.Errorf("streams: %w", err)
	}
	if base != "" {
		if rec.Server, err = scrapeProjector(ctx, a.conn, base); err != nil {
			return fmt.Errorf("streams: %w", err)
		}
	}
	if a.json {
		return printJSON(m.Stdout, rec)
	}
	fmt.Fprintf(m.Stdout, "%-9s %10s %12s %10s %10s %8s  %s\n", "STREAM", "MESSAGES", "BYTES", "FIRST", "LAST", "REPLICAS", "LAST WRITE")
	for _, s := range rec.Streams {
		if !s.Exists {
			fmt.Fprintf(m.Stdout, "%-9s missing\n", s.Name)
			continue
		}
		last := "-"
		if !s.LastTime.IsZero() {
			last = s.LastTime.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(m.Stdout, "%-9s %10d %12d %10d %10d %8d  %s\n", s.Name, s.Messages, s.Bytes, s.FirstSeq, s.LastSeq, s.Replicas, last)
	}
	if sp := rec.Server; sp != nil && sp.Applying {
		fmt.Fprintf(m.Stdout, "\n%s: projector checkpoint %d, lag %d\n", sp.HTTP, sp.Checkpoint, sp.Lag)
	} else if sp != nil {
		fmt.Fprintf(m.Stdout, "\n%s: applies no partition (standby)\n", sp.HTTP)
	}
	if len(rec.Projectors) == 0 {
		fmt.Fprintln(m.Stdout, "\nno projector durable on EVENTS (no server has run its projector here)")
		return nil
	}
	fmt.Fprintf(m.Stdout, "\n%-28s %10s %8s %8s %11s\n", "PROJECTOR", "ACK FLOOR", "LAG", "PENDING", "ACK PENDING")
	for _, p := range rec.Projectors {
		fmt.Fprintf(m.Stdout, "%-28s %10d %8d %8d %11d\n", p.Durable, p.AckFloor, p.Lag, p.Pending, p.AckPending)
	}
	return nil
}

// readStreams reads the four streams' info and every projector durable on
// EVENTS (one, or one per partition).
func readStreams(ctx context.Context, js jetstream.JetStream) (*streamsRecord, error) {
	rec := &streamsRecord{Streams: []streamRecord{}, Projectors: []projectorRecord{}}
	var eventsLast uint64
	var eventsStream jetstream.Stream
	for _, name := range adminStreams {
		s, err := js.Stream(ctx, name)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			rec.Streams = append(rec.Streams, streamRecord{Name: name})
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read stream %s: %w", name, err)
		}
		info := s.CachedInfo()
		st := info.State
		r := streamRecord{Name: name, Exists: true, Messages: st.Msgs, Bytes: st.Bytes, FirstSeq: st.FirstSeq, LastSeq: st.LastSeq,
			FirstTime: st.FirstTime, LastTime: st.LastTime, Replicas: info.Config.Replicas, Created: info.Created}
		if info.Cluster != nil {
			r.Leader = info.Cluster.Leader
		}
		rec.Streams = append(rec.Streams, r)
		if name == events.StreamEvents {
			eventsLast, eventsStream = st.LastSeq, s
		}
	}
	if eventsStream == nil {
		return rec, nil
	}
	ps, err := projectorDurables(ctx, eventsStream)
	if err != nil {
		return nil, err
	}
	for _, ci := range ps {
		ack := ci.AckFloor.Stream
		rec.Projectors = append(rec.Projectors, projectorRecord{Durable: ci.Name, AckFloor: ack, Lag: eventsLast - min(ack, eventsLast),
			Pending: ci.NumPending, AckPending: ci.NumAckPending})
	}
	return rec, nil
}

// projectorDurables returns the info of every projector durable on EVENTS
// (projection.DefaultDurable, or its per-partition names), by name.
func projectorDurables(ctx context.Context, s jetstream.Stream) ([]*jetstream.ConsumerInfo, error) {
	var out []*jetstream.ConsumerInfo
	l := s.ListConsumers(ctx)
	for ci := range l.Info() {
		if ci.Name == projection.DefaultDurable || strings.HasPrefix(ci.Name, projection.DefaultDurable+"-p") {
			out = append(out, ci)
		}
	}
	if err := l.Err(); err != nil {
		return nil, fmt.Errorf("list the consumers of %s: %w", events.StreamEvents, err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// scrapeProjector reads a server's projector checkpoint and lag from its
// /metrics (Prometheus text).
func scrapeProjector(ctx context.Context, conn connFlags, base string) (*serverProjector, error) {
	tc, err := embedded.LoadClientTLS(conn.tlsCA, conn.tlsCert, conn.tlsKey)
	if err != nil {
		return nil, usagef("%v", err)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	u := strings.TrimRight(base, "/") + "/metrics"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, usagef("--http %q: %v", base, err)
	}
	resp, err := (&http.Client{Transport: &http.Transport{TLSClientConfig: tc}}).Do(req)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w: %w", u, errUnreachable, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("read %s: %s", u, resp.Status)
	}
	sp := &serverProjector{HTTP: base}
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 16<<20))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		if !ok || strings.HasPrefix(name, "#") {
			continue
		}
		name, _, _ = strings.Cut(name, "{")
		v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil || v < 0 {
			continue
		}
		switch name {
		case "ebb_projector_checkpoint":
			sp.Checkpoint, sp.Applying = uint64(v), true
		case "ebb_projector_lag":
			sp.Lag = uint64(v)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", u, err)
	}
	return sp, nil
}
