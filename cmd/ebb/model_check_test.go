package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/ebbsync/ebb/consumer"
	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/producer"
	"github.com/ebbsync/ebb/projection"
)

// modelEvidence is everything gathered after a model run, with writes
// stopped and everyone synced, and the checker over it. Each check is one
// invariant of DESIGN.md; a violation names it and carries its evidence.
type modelEvidence struct {
	acked      map[string]string     // event id -> client: acknowledged writes
	dumps      map[string]*modelDump // client -> what the replica says after its final sync ("late": the fresh replica)
	syncErrs   map[string]string     // client -> why its final attach or sync failed
	seen       []modelSeen           // every change the live watcher read, in stream order
	heard      []modelSeen           // every change published while the observer was connected (no order)
	events     map[string][]*events.Event
	changesNow map[string]*events.Change // doc key -> the last change CHANGES holds
	view       map[string]projection.Doc // doc key -> the server's view (view.db)
	records    []projection.ConflictRecord
	// replayed maps each document version to the event that made it, as
	// a replay of EVENTS decides (projection.Rebuild, deterministic, which
	// ebb verify checks against the live view): the makers of versions no
	// watcher could see (published by a restarted server's outbox before
	// the observer reconnected, then compacted away by the next version).
	replayed  map[string]map[uint64]string
	receipts  map[string][]modelHeardReceipt // event id -> receipts heard published (while the observer was connected)
	began     time.Time                      // when the run began (the trace's times count from it)
	verifyOut string
	verifyErr error

	violations []string
}

func modelKey(coll, doc string) string { return coll + "/" + doc }

func (ev *modelEvidence) violate(invariant, format string, args ...any) {
	ev.violations = append(ev.violations, fmt.Sprintf("[%s] %s", invariant, fmt.Sprintf(format, args...)))
}

// readServerView reads the stopped server's view file.
func (ev *modelEvidence) readServerView(ctx context.Context, data string) error {
	st, err := projection.OpenBolt(filepath.Join(data, viewFile), projection.BoltOptions{Timeout: 5 * time.Second})
	if err != nil {
		return fmt.Errorf("open the server view: %w", err)
	}
	defer st.Close()
	ev.view = map[string]projection.Doc{}
	if err := st.Scan(ctx, func(d projection.Doc) error {
		if d.Tenant == modelTenant {
			ev.view[modelKey(d.Collection, d.ID)] = d
		}
		return nil
	}); err != nil {
		return fmt.Errorf("scan the server view: %w", err)
	}
	return st.ScanConflicts(ctx, func(c projection.ConflictRecord) error {
		ev.records = append(ev.records, c)
		return nil
	})
}

// modelReplayStore is a scratch view that records which event made each
// document version as a replay commits it.
type modelReplayStore struct {
	projection.Store
	made map[string]map[uint64]string
}

func (s *modelReplayStore) Commit(ctx context.Context, b *projection.Batch) error {
	if err := s.Store.Commit(ctx, b); err != nil {
		return err
	}
	for _, d := range b.Docs {
		if d.Tenant != modelTenant {
			continue
		}
		k := modelKey(d.Collection, d.ID)
		if s.made[k] == nil {
			s.made[k] = map[uint64]string{}
		}
		if _, ok := s.made[k][d.Version]; !ok { // a delete of a tombstone keeps its version
			s.made[k][d.Version] = d.Event
		}
	}
	return nil
}

// modelReplay replays EVENTS through upTo into a scratch view in dir under
// policies, as ebb verify does, and returns which event made each
// document version.
func modelReplay(ctx context.Context, js projection.JetStream, dir string, policies projection.Policies, upTo uint64) (map[string]map[uint64]string, error) {
	st, err := projection.OpenBolt(filepath.Join(dir, "replay.db"), projection.BoltOptions{})
	if err != nil {
		return nil, fmt.Errorf("open the replay's view: %w", err)
	}
	defer st.Close()
	rs := &modelReplayStore{Store: st, made: map[string]map[uint64]string{}}
	if err := projection.Rebuild(ctx, js, rs, projection.Config{Policies: policies}, upTo); err != nil {
		return nil, fmt.Errorf("replay EVENTS: %w", err)
	}
	return rs.made, nil
}

// modelVerify runs `ebb verify` on the stopped server's data, bounded.
func modelVerify(bin, data string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "verify", "--data", data).CombinedOutput()
	if ctx.Err() != nil {
		return string(out), fmt.Errorf("ebb verify did not finish in 90s: %w", ctx.Err())
	}
	return string(out), err
}

// modelEntry is one event of a replica's log and its writer.
type modelEntry struct {
	client string
	producer.Entry
}

func (ev *modelEvidence) check() {
	entries := map[string]modelEntry{} // event id -> log entry
	for _, c := range slices.Sorted(maps.Keys(ev.dumps)) {
		for _, e := range ev.dumps[c].Entries {
			entries[e.Event.ID] = modelEntry{client: c, Entry: e}
		}
	}
	makers := ev.makers()
	ev.checkSynced()
	ev.checkAcked(entries, makers)
	ev.checkFates(entries, makers)
	ev.checkOnce()
	ev.checkVersions(entries, makers)
	ev.checkSilentLoss(entries)
	ev.checkConverged()
	if ev.verifyErr != nil || !strings.HasPrefix(ev.verifyOut, "OK:") {
		ev.violate("determinism", "ebb verify: %v: %s", ev.verifyErr, strings.TrimSpace(ev.verifyOut))
	}
}

// makers maps each document version to the event that made it: as the
// replay of EVENTS decided, then as observed (by the watcher, in CHANGES,
// in the view), the first source that names a version winning, so a
// change observed with another maker than the replay's is reported by
// checkVersions.
func (ev *modelEvidence) makers() map[string]map[uint64]string {
	m := map[string]map[uint64]string{}
	add := func(key string, v uint64, id string) {
		if m[key] == nil {
			m[key] = map[uint64]string{}
		}
		if _, ok := m[key][v]; !ok {
			m[key][v] = id
		}
	}
	for k, vs := range ev.replayed {
		for v, id := range vs {
			add(k, v, id)
		}
	}
	for _, s := range append(slices.Clip(ev.seen), ev.heard...) {
		if s.Change != nil {
			add(modelKey(s.Change.Collection, s.Change.Doc), s.Change.Version, s.Change.Event)
		}
	}
	for k, c := range ev.changesNow {
		add(k, c.Version, c.Event)
	}
	for k, d := range ev.view {
		add(k, d.Version, d.Event)
	}
	return m
}

// checkSynced: writes stopped and everyone attached, every final sync
// completed and left nothing pending.
func (ev *modelEvidence) checkSynced() {
	for _, c := range slices.Sorted(maps.Keys(ev.syncErrs)) {
		ev.violate("sync", "%s: final %s", c, ev.syncErrs[c])
	}
	for _, c := range slices.Sorted(maps.Keys(ev.dumps)) {
		d := ev.dumps[c]
		if d.Pending != 0 {
			ev.violate("sync", "%s: %d writes still pending after its final sync (%d resyncs since it opened; last: %s)", c, d.Pending, d.Resyncs, d.LastResync)
		}
		if d.StatusErr != "" {
			ev.violate("sync", "%s: follower stopped: %s", c, d.StatusErr)
		}
	}
}

// checkAcked (invariant 1): an acknowledged write survives its writer's
// crashes (it is in the writer's log), reached the server (EVENTS) and has
// a fate; every event of the log did too, acknowledged or "maybe".
func (ev *modelEvidence) checkAcked(entries map[string]modelEntry, makers map[string]map[uint64]string) {
	made := map[string]string{}
	for k, vs := range makers {
		for v, id := range vs {
			made[id] = fmt.Sprintf("made %s v%d", k, v)
		}
	}
	for _, id := range slices.Sorted(maps.Keys(ev.acked)) {
		e, ok := entries[id]
		if !ok || e.client != ev.acked[id] {
			ev.violate("durable", "acknowledged write %s of %s is not in its writer's log", id, ev.acked[id])
		}
	}
	for _, id := range slices.Sorted(maps.Keys(entries)) {
		e := entries[id]
		if e.State != producer.StateSettled {
			fate := made[id]
			if fate == "" {
				fate = "made no change seen"
			}
			ev.violate("none vanished", "%s's event %s (%s %s/%s, seq %d) is %s after the final sync (err %q; in EVENTS %d times; %s; appended at +%s, published at +%s; %s)",
				e.client, id, e.Event.Op, e.Event.Collection, e.Event.Doc, e.Event.Seq, e.State, e.Err, len(ev.events[id]), fate,
				ev.since(e.AppendedAt), ev.since(e.PublishedAt), ev.receiptsHeard(id))
		}
		if len(ev.events[id]) == 0 {
			ev.violate("none vanished", "%s's event %s (%s %s/%s, %s %s) never reached EVENTS",
				e.client, id, e.Event.Op, e.Event.Collection, e.Event.Doc, e.State, e.Outcome)
		}
	}
	for _, id := range slices.Sorted(maps.Keys(ev.events)) {
		if _, ok := entries[id]; !ok {
			e := ev.events[id][0]
			ev.violate("none vanished", "EVENTS holds %s from %s that no replica's log has", id, e.Client)
		}
	}
}

// since is t as the trace shows times: since the run began.
func (ev *modelEvidence) since(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return fmt.Sprintf("%.3fs", t.Sub(ev.began).Seconds())
}

// receiptsHeard says which receipts of event id the observer heard, when.
func (ev *modelEvidence) receiptsHeard(id string) string {
	rs := ev.receipts[id]
	if len(rs) == 0 {
		return "no receipt heard"
	}
	var out []string
	for _, r := range rs {
		out = append(out, fmt.Sprintf("%s at +%s", r.Outcome, ev.since(r.At)))
	}
	return "receipts heard: " + strings.Join(out, ", ")
}

// checkFates (invariants 1, 6): every decided event's fate is one its
// writer can see: a rejection is listed, a conflict is recorded, a
// duplicate's fate is known or listed as a rejection.
func (ev *modelEvidence) checkFates(entries map[string]modelEntry, makers map[string]map[uint64]string) {
	caused := map[string]bool{}
	for _, vs := range makers {
		for _, id := range vs {
			caused[id] = true
		}
	}
	recorded := map[string]bool{}
	for _, r := range ev.records {
		recorded[r.Conflict.ID] = true
		if r.Conflict.Resolution != "" {
			recorded[r.Conflict.Resolution] = true
		}
	}
	for _, id := range slices.Sorted(maps.Keys(entries)) {
		e := entries[id]
		if e.State != producer.StateSettled {
			continue
		}
		rejected := slices.ContainsFunc(ev.dumps[e.client].Rejections, func(r consumer.Rejection) bool { return r.Event == id })
		switch e.Outcome {
		case events.OutcomeRejected, events.OutcomeInvalid:
			if !rejected {
				ev.violate("none vanished", "%s's event %s was %s (%s) but is not in its rejections", e.client, id, e.Outcome, e.Reason)
			}
		case events.OutcomeConflict:
			if !recorded[e.Conflict] {
				ev.violate("no silent loss", "%s's event %s: conflict %s has no conflict record on the server", e.client, id, e.Conflict)
			}
		case events.OutcomeDuplicate:
			if !rejected && !caused[id] && !recorded[id] {
				ev.violate("none vanished", "%s's event %s settled as duplicate with no known fate and no rejection listed", e.client, id)
			}
		}
	}
}

// checkOnce (invariant 2): an event made at most one version of one
// document.
func (ev *modelEvidence) checkOnce() {
	made := map[string]map[string]bool{} // event id -> "doc@version"
	note := func(id, key string, v uint64) {
		if made[id] == nil {
			made[id] = map[string]bool{}
		}
		made[id][fmt.Sprintf("%s@%d", key, v)] = true
	}
	for _, s := range append(slices.Clip(ev.seen), ev.heard...) {
		if s.Change != nil {
			note(s.Change.Event, modelKey(s.Change.Collection, s.Change.Doc), s.Change.Version)
		}
	}
	for k, d := range ev.view {
		note(d.Event, k, d.Version)
	}
	for _, id := range slices.Sorted(maps.Keys(made)) {
		if len(made[id]) > 1 {
			ev.violate("exactly once", "event %s made %d versions: %v", id, len(made[id]), slices.Sorted(maps.Keys(made[id])))
		}
	}
}

// checkVersions (invariant 5): in stream order a document's versions rise;
// no version is made by two events; the versions the receipts name and the
// watcher saw account for every version up to the view's.
func (ev *modelEvidence) checkVersions(entries map[string]modelEntry, makers map[string]map[uint64]string) {
	last := map[string]*events.Change{}
	for _, s := range ev.seen {
		c := s.Change
		if c == nil {
			ev.violate("changes", "CHANGES seq %d is undecodable", s.Seq)
			continue
		}
		k := modelKey(c.Collection, c.Doc)
		if p := last[k]; p != nil {
			switch {
			case c.Version == p.Version && c.Event == p.Event: // republished
			case c.Version <= p.Version:
				ev.violate("versions", "%s: CHANGES seq %d has version %d (event %s) after version %d (event %s)",
					k, s.Seq, c.Version, c.Event, p.Version, p.Event)
			}
		}
		last[k] = c
	}
	for _, s := range append(slices.Clip(ev.seen), ev.heard...) { // one version, one maker
		if c := s.Change; c != nil {
			if id := makers[modelKey(c.Collection, c.Doc)][c.Version]; id != c.Event {
				ev.violate("versions", "%s version %d made by both %s and %s", modelKey(c.Collection, c.Doc), c.Version, id, c.Event)
			}
		}
	}
	for k, c := range ev.changesNow {
		if id := makers[k][c.Version]; id != c.Event {
			ev.violate("versions", "%s version %d made by %s in CHANGES but by %s elsewhere", k, c.Version, c.Event, id)
		}
	}

	// What the writers' receipts say each event made.
	claims := map[string]map[uint64][]modelEntry{}
	unknown := map[string]int{} // doc key -> events whose version is unknown
	for _, id := range slices.Sorted(maps.Keys(entries)) {
		e := entries[id]
		k := modelKey(e.Event.Collection, e.Event.Doc)
		switch {
		case e.State != producer.StateSettled || e.Outcome == events.OutcomeDuplicate:
			unknown[k]++
		case e.Outcome == events.OutcomeApplied || e.Outcome == events.OutcomeMerged || e.Outcome == events.OutcomeConflict:
			if claims[k] == nil {
				claims[k] = map[uint64][]modelEntry{}
			}
			claims[k][e.Version] = append(claims[k][e.Version], e)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(claims)) {
		for _, v := range slices.Sorted(maps.Keys(claims[k])) {
			cs := claims[k][v]
			maker, known := makers[k][v]
			var real []modelEntry
			for _, e := range cs {
				// An applied delete of a deleted document makes no version:
				// its receipt names the current one.
				if e.Event.Op == events.OpDelete && (len(cs) > 1 || known && maker != e.Event.ID) {
					continue
				}
				real = append(real, e)
			}
			switch {
			case len(real) > 1:
				ids := make([]string, len(real))
				for i, e := range real {
					ids[i] = fmt.Sprintf("%s (%s %s %s)", e.Event.ID, e.client, e.Event.Op, e.Outcome)
				}
				ev.violate("versions", "%s version %d claimed by %d receipts: %s", k, v, len(real), strings.Join(ids, ", "))
			case len(real) == 1 && known && maker != real[0].Event.ID:
				ev.violate("versions", "%s version %d: %s's receipt for %s says it made it, the change says %s",
					k, v, real[0].client, real[0].Event.ID, maker)
			}
		}
	}
	for _, k := range slices.Sorted(maps.Keys(ev.view)) {
		final := ev.view[k].Version
		known := map[uint64]bool{}
		for v := range makers[k] {
			known[v] = true
		}
		for v := range claims[k] {
			known[v] = true
		}
		var missing []uint64
		for v := uint64(1); v <= final; v++ {
			if !known[v] {
				missing = append(missing, v)
			}
		}
		if len(missing) > unknown[k] {
			ev.violate("versions", "%s at version %d: versions %v were made by no event seen (only %d events of unknown outcome)",
				k, final, missing, unknown[k])
		}
		for v := range known {
			if v > final {
				ev.violate("versions", "%s: version %d seen, but the view is at %d", k, v, final)
			}
		}
	}
}

// checkSilentLoss (invariant 6): for each pair of consecutive versions the
// watcher saw, the event that made the second from the first was either
// fresh (its writer had seen the first, or built it on a pending
// predecessor applied exactly as written), or the collection's policy
// handled it as stale: reject refuses it, manual opens a conflict, lww
// records what it overwrote, merge keeps the fields its writer never saw
// and records the concurrent ones it overwrote. The record is the one the
// change carried (Settled) or, for a copy without it (a reseed of CHANGES
// republishes the current state without its record), the view's history.
func (ev *modelEvidence) checkSilentLoss(entries map[string]modelEntry) {
	history := map[string]*events.Conflict{} // doc key + "/" + conflict id -> the view's record
	for i := range ev.records {
		if r := &ev.records[i]; r.Address.Tenant == modelTenant {
			history[modelKey(r.Address.Collection, r.Address.Doc)+"/"+r.Conflict.ID] = &r.Conflict
		}
	}
	byVersion := map[string]map[uint64]*events.Change{}
	for _, s := range append(slices.Clip(ev.seen), ev.heard...) {
		if c := s.Change; c != nil {
			k := modelKey(c.Collection, c.Doc)
			if byVersion[k] == nil {
				byVersion[k] = map[uint64]*events.Change{}
			}
			if old := byVersion[k][c.Version]; old == nil || old.Settled == nil && c.Settled != nil {
				byVersion[k][c.Version] = c
			}
		}
	}
	for _, k := range slices.Sorted(maps.Keys(byVersion)) {
		for _, v := range slices.Sorted(maps.Keys(byVersion[k])) {
			c, p := byVersion[k][v], byVersion[k][v-1]
			if p == nil || len(ev.events[c.Event]) == 0 {
				continue
			}
			e := ev.events[c.Event][0]
			if e.Op == events.OpResolve {
				continue
			}
			stale, why := modelStale(e, p, entries)
			if !stale {
				continue
			}
			where := fmt.Sprintf("%s v%d->v%d by %s's %s %s (base %d, after %q): stale because %s", k, p.Version, c.Version,
				e.Client, e.Op, e.ID, e.BaseVersion, e.After, why)
			rec := c.Settled
			if rec == nil || rec.ID != e.ID {
				rec = history[k+"/"+e.ID] // a reseeded copy: the view's record, as it stands now
			}
			settled := rec != nil
			switch {
			case c.Settled == nil && rec == nil:
				where += " (the change seen carries no record, nor does the server's history)"
			case c.Settled == nil:
				where += fmt.Sprintf(" (the change seen carries no record; the server's is %s)", rec.Status)
			}
			switch pol := c.Collection; {
			case pol == "reject":
				ev.violate("no silent loss", "%s: applied under reject", where)
			case pol == "manual":
				opened := slices.ContainsFunc(c.Conflicts, func(o events.Conflict) bool { return o.ID == e.ID && o.Status == events.ConflictOpen })
				// Seen only as a reseeded copy, the server's record may since be resolved.
				if !opened && (!settled || rec.Status != events.ConflictOpen && (c.Settled != nil || rec.Status != events.ConflictResolved)) {
					ev.violate("no silent loss", "%s: replaced the document under manual without opening a conflict; %s",
						where, modelDiff(p, c))
				}
			case pol == "lww" || e.Op == events.OpDelete || p.Deleted:
				if !settled {
					ev.violate("no silent loss", "%s: won lww with no record of what it overwrote; %s", where, modelDiff(p, c))
				}
			case pol == "merge":
				for _, f := range slices.Sorted(maps.Keys(p.Fields)) {
					if _, touched := e.Fields[f]; touched {
						// A field its own writer set last is not another's write to lose.
						concurrent := p.Clocks[f].Version > e.BaseVersion && p.Clocks[f].Client != e.Client
						if concurrent && (!settled || !slices.Contains(rec.Lost, f)) {
							ev.violate("no silent loss", "%s: field %s changed concurrently (v%d) and overwritten with no record",
								where, f, p.Clocks[f].Version)
						}
						continue
					}
					if e.Op == events.OpPut && p.Clocks[f].Version <= e.BaseVersion {
						continue // the put's writer saw the field and dropped it
					}
					if !bytes.Equal(modelCompact(p.Fields[f]), modelCompact(c.Fields[f])) {
						ev.violate("no silent loss", "%s: field %s=%s (written at v%d, after the writer's base) became %q",
							where, f, p.Fields[f], p.Clocks[f].Version, c.Fields[f])
					}
				}
			}
		}
	}
}

// modelStale reports whether e, which made the version after p, was
// certainly stale against p, and why. It errs towards fresh: unknown
// predecessors' fates count as exact.
func modelStale(e *events.Event, p *events.Change, entries map[string]modelEntry) (bool, string) {
	if e.After == "" {
		if e.BaseVersion != p.Version {
			return true, fmt.Sprintf("base %d is not v%d", e.BaseVersion, p.Version)
		}
		return false, ""
	}
	if p.Event != e.After {
		return true, fmt.Sprintf("v%d was made by %s, not its predecessor", p.Version, p.Event)
	}
	pred, ok := entries[e.After]
	if !ok || pred.State != producer.StateSettled {
		return false, ""
	}
	switch {
	case pred.Outcome == events.OutcomeMerged || pred.Outcome == events.OutcomeConflict:
		return true, fmt.Sprintf("its predecessor %s was %s, not applied as written", e.After, pred.Outcome)
	case pred.Event.Op == events.OpPatch && p.Settled != nil:
		return true, fmt.Sprintf("its predecessor %s was a stale patch applied over writes its writer had not seen", e.After)
	}
	return false, ""
}

func modelDiff(p, c *events.Change) string {
	return fmt.Sprintf("v%d %s%s -> v%d %s%s", p.Version, modelDeleted(p.Deleted), modelFieldsString(p.Fields),
		c.Version, modelDeleted(c.Deleted), modelFieldsString(c.Fields))
}

func modelDeleted(d bool) string {
	if d {
		return "deleted "
	}
	return ""
}

func modelCompact(b []byte) []byte {
	if b == nil {
		return nil
	}
	var buf bytes.Buffer
	if json.Compact(&buf, b) != nil {
		return b
	}
	return buf.Bytes()
}

// modelState is what convergence compares: version, tombstone, fields and
// open conflicts.
func modelState(version uint64, deleted bool, fields events.Fields, conflicts []events.Conflict) string {
	var open []string
	for _, c := range conflicts {
		if c.Status == events.ConflictOpen || c.Status == "" {
			open = append(open, c.ID)
		}
	}
	slices.Sort(open)
	if fields == nil {
		fields = events.Fields{}
	}
	f, _ := json.Marshal(fields)
	return fmt.Sprintf("v%d deleted=%v %s conflicts=%v", version, deleted, f, open)
}

// checkConverged (invariant 3): every replica's view, the fresh replica's
// and CHANGES' last message per document equal the server's view.
func (ev *modelEvidence) checkConverged() {
	want := map[string]string{}
	for k, d := range ev.view {
		if d.Version > 0 {
			want[k] = modelState(d.Version, d.Deleted, d.Fields, d.Conflicts)
		}
	}
	compare := func(who string, got map[string]string) {
		for _, k := range slices.Sorted(maps.Keys(want)) {
			if g, ok := got[k]; !ok {
				ev.violate("convergence", "%s lacks %s, which the server view has at %s", who, k, want[k])
			} else if g != want[k] {
				ev.violate("convergence", "%s has %s at %s, the server view at %s", who, k, g, want[k])
			}
		}
		for _, k := range slices.Sorted(maps.Keys(got)) {
			if _, ok := want[k]; !ok {
				ev.violate("convergence", "%s has %s at %s, which the server view lacks", who, k, got[k])
			}
		}
	}
	for _, c := range slices.Sorted(maps.Keys(ev.dumps)) {
		got := map[string]string{}
		for _, d := range ev.dumps[c].Docs {
			got[modelKey(d.Collection, d.ID)] = modelState(d.Version, d.Deleted, d.Fields, d.Conflicts)
		}
		compare("replica "+c, got)
	}
	got := map[string]string{}
	for k, c := range ev.changesNow {
		got[k] = modelState(c.Version, c.Deleted, c.Fields, c.Conflicts)
	}
	compare("CHANGES", got)
}
