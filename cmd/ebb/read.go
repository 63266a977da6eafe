package main

import (
	"context"
	"time"

	"errors"
	"fmt"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"sort"
	"strings"

	"github.com/ebbsync/ebb/consumer"
	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/producer"
)

func runGet(ctx context.Context, m *Main, args []string) error {
	var c clientFlags
	pos, err := parseClient(m, "get", &c, args, nil, "COLLECTION", "ID")
	if err != nil {
		return err
	}
	s, err := openClient(ctx, m, c, false)
	if err != nil {
		return err
	}
	defer s.Close()
	d, err := s.r.Get(ctx, pos[0], pos[1])
	if errors.Is(err, consumer.ErrNotFound) {
		return &exitError{code: 1, err: fmt.Errorf("%s/%s: not found", pos[0], pos[1])}
	}
	if err != nil {
		return usageIfInvalid(fmt.Errorf("get %s/%s: %w", pos[0], pos[1], err))
	}
	if c.json {
		return printJSON(m.Stdout, recordOf(d))
	}
	return printJSON(m.Stdout, recordOf(d).Doc)
}

func runList(ctx context.Context, m *Main, args []string) error {
	var c clientFlags
	pos, err := parseClient(m, "ls", &c, args, nil, "COLLECTION")
	if err != nil {
		return err
	}
	s, err := openClient(ctx, m, c, false)
	if err != nil {
		return err
	}
	defer s.Close()
	docs, err := s.r.List(ctx, pos[0], false)
	if err != nil {
		return usageIfInvalid(fmt.Errorf("ls %s: %w", pos[0], err))
	}
	if c.json {
		recs := make([]docRecord, 0, len(docs))
		for _, d := range docs {
			recs = append(recs, recordOf(d))
		}
		return printJSON(m.Stdout, recs)
	}
	for _, d := range docs {
		fmt.Fprintln(m.Stdout, d.ID)
	}
	return nil
}

// conflictRecord is one open conflict in `ebb conflicts --json`.
type conflictRecord struct {
	Collection string        `json:"collection"`
	ID         string        `json:"id"`
	Conflict   string        `json:"conflict"`
	Values     []events.Side `json:"values"`
}

func runConflicts(ctx context.Context, m *Main, args []string) error {
	var c clientFlags
	pos, err := parseClient(m, "conflicts", &c, args, nil, "COLLECTION?")
	if err != nil {
		return err
	}
	s, err := openClient(ctx, m, c, false)
	if err != nil {
		return err
	}
	defer s.Close()
	all, err := s.r.Conflicts(ctx)
	if err != nil {
		return fmt.Errorf("conflicts: %w", err)
	}
	recs := []conflictRecord{}
	for _, cf := range all {
		if len(pos) == 1 && cf.Collection != pos[0] {
			continue
		}
		recs = append(recs, conflictRecord{Collection: cf.Collection, ID: cf.Doc, Conflict: cf.Conflict.ID, Values: cf.Conflict.Sides})
	}
	if c.json {
		return printJSON(m.Stdout, recs)
	}
	for _, r := range recs {
		vals := make([]string, 0, len(r.Values))
		for _, v := range r.Values {
			vals = append(vals, sideString(v))
		}
		fmt.Fprintf(m.Stdout, "%s/%s: conflict %s: %s\n", r.Collection, r.ID, r.Conflict, strings.Join(vals, " vs "))
	}
	return nil
}

// sideString prints one competing value compactly.
func sideString(s events.Side) string {
	if s.Deleted {
		return "(deleted by " + s.Client + ")"
	}
	keys := make([]string, 0, len(s.Fields))
	for k := range s.Fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%q:%s", k, s.Fields[k]))
	}
	return "{" + strings.Join(parts, ",") + "} (" + s.Client + ")"
}

// statusRecord is `ebb status --json`.
type statusRecord struct {
	Tenant     string  `json:"tenant"`
	Client     string  `json:"client"`
	Pending    int     `json:"pending"`
	Failed     int     `json:"failed"`
	Rejections int     `json:"rejections"`
	Conflicts  int     `json:"conflicts"`
	LastSeq    uint64  `json:"last_synced_seq"`
	Lag        *uint64 `json:"lag"` // null: unknown, the server was not reached
	Reachable  bool    `json:"reachable"`
}

func runStatus(ctx context.Context, m *Main, args []string) error {
	var c clientFlags
	if _, err := parseClient(m, "status", &c, args, nil); err != nil {
		return err
	}
	s, err := openClient(ctx, m, c, true)
	if err != nil {
		return err
	}
	defer s.Close()
	st := s.r.Status()
	failed, err := s.r.Log().Entries(ctx, producer.StateFailed)
	if err != nil {
		return fmt.Errorf("status: %w", err)
	}
	conflicts, err := s.r.Conflicts(ctx)
	if err != nil {
		return fmt.Errorf("status: %w", err)
	}
	rec := statusRecord{Tenant: c.tenant, Client: st.Client, Pending: st.Pending, Failed: len(failed),
		Rejections: st.Rejections, Conflicts: len(conflicts), LastSeq: st.Changes.Seq, Reachable: s.online()}
	if s.online() {
		lag, err := changesAfter(ctx, s.nc, c.tenant, rec.LastSeq)
		if err != nil {
			return fmt.Errorf("status: %w", err)
		}
		rec.Lag = &lag
	}
	if c.json {
		return printJSON(m.Stdout, rec)
	}
	reach := "no"
	if rec.Reachable {
		reach = "yes (" + c.nats + ")"
	}
	lag := "unknown (server not reached)"
	if rec.Lag != nil {
		lag = fmt.Sprint(*rec.Lag)
	}
	fmt.Fprintf(m.Stdout, "tenant:          %s\nclient:          %s\npending:         %d\nfailed:          %d\nrejections:      %d\nconflicts:       %d\nlast synced seq: %d\nlag:             %s\nreachable:       %s\n",
		rec.Tenant, rec.Client, rec.Pending, rec.Failed, rec.Rejections, rec.Conflicts, rec.LastSeq, lag, reach)
	return nil
}

// changesAfter counts the tenant's changes in CHANGES after seq: how far the
// replica is behind.
func changesAfter(ctx context.Context, nc *nats.Conn, tenant string, seq uint64) (uint64, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	cons, err := js.CreateConsumer(ctx, events.StreamChanges, jetstream.ConsumerConfig{
		FilterSubject:     events.TenantChanges(tenant),
		DeliverPolicy:     jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:       seq + 1,
		AckPolicy:         jetstream.AckNonePolicy,
		InactiveThreshold: 5 * time.Second,
	})
	if err != nil {
		return 0, fmt.Errorf("measure lag after %d: %w", seq, err)
	}
	info := cons.CachedInfo()
	// Best effort: the server drops it after InactiveThreshold anyway.
	_ = js.DeleteConsumer(ctx, events.StreamChanges, info.Name)
	return info.NumPending, nil
}
