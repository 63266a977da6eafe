package projection

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/deploy/keys"
	"github.com/ebbsync/ebb/events"
)

// VerifyReport is what Verify found.
type VerifyReport struct {
	Checkpoint  uint64 // the live view's checkpoint: the rebuild replayed EVENTS 1..Checkpoint (partitioned: the highest partition's)
	Docs        int    // documents in the live view
	LiveHash    string // hex SHA-256 of the live view (documents and conflict history)
	RebuiltHash string // the same of the rebuild
	Diff        string // the first difference, empty when the hashes agree
	// Partitions holds, for a partitioned view, each partition's
	// checkpoint, by index: partition i was rebuilt from EVENTS up to
	// Partitions[i]. Nil for a view that is not partitioned.
	Partitions []uint64
}

// PartitionCounter is a PartitionedStore that says into how many
// partitions its view was split (0: never partitioned), so Verify can
// rebuild every partition. PostgresStore is one.
type PartitionCounter interface {
	PartitionedStore
	PartitionCount(ctx context.Context) (int, error)
}

// Verify rebuilds the view by replaying EVENTS from sequence 1 up to the live
// store's checkpoint into a fresh bbolt store in a temporary directory, with
// the same cfg (policies, drift bound, limits), and compares it with live by
// hash (DESIGN.md invariant 4). On a difference it returns the report and an
// error wrapping ErrDiverged naming the first one (document address and
// field). Stop the live projector first, or live may move under the
// comparison. The rebuild publishes nothing.
//
// A partitioned view (live a PartitionCounter that counts 2 or more) is
// rebuilt as it was made: EVENTS up to the whole store's checkpoint into
// the whole rebuild (the history from before the view was partitioned, if
// any), which is then partitioned as the live one was, and each partition
// i from there up to its own checkpoint, applying only its documents'
// events, with its own writers' marks; every partition's stream marks are
// checked as the whole store's are. Every partition must be stopped: a
// Group's lease holders, on every server.
func Verify(ctx context.Context, js JetStream, live Store, cfg Config) (*VerifyReport, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	cfg = cfg.withDefaults()
	n := 0
	if pc, ok := live.(PartitionCounter); ok {
		var err error
		if n, err = pc.PartitionCount(ctx); err != nil {
			return nil, fmt.Errorf("verify: %w", err)
		}
	}
	cp, err := live.Checkpoint(ctx)
	if err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	if err := checkIdentity(ctx, js, live, cp); err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	dir, err := os.MkdirTemp("", "ebb-verify-*")
	if err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	defer os.RemoveAll(dir)
	// The rebuild is sealed under a random key that is never stored, so
	// the view never sits on disk in the clear, even for a moment.
	seal, err := keys.RandomCipher()
	if err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	rebuilt, err := OpenBolt(filepath.Join(dir, "view.db"), BoltOptions{NoSync: true, Cipher: seal})
	if err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	defer rebuilt.Close()
	if err := Rebuild(ctx, js, rebuilt, cfg, cp); err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	var parts []uint64
	if n > 1 {
		if parts, err = rebuildPartitions(ctx, js, live.(PartitionCounter), rebuilt, cfg, n, cp); err != nil {
			return nil, fmt.Errorf("verify: %w", err)
		}
		for _, pcp := range parts {
			cp = max(cp, pcp)
		}
	}
	rep, err := Compare(ctx, live, rebuilt)
	if rep != nil {
		rep.Checkpoint, rep.Partitions = cp, parts
	}
	if err != nil {
		return rep, fmt.Errorf("verify: %w", err)
	}
	return rep, nil
}

// rebuildPartitions continues the whole rebuild (EVENTS 1..from) in n
// partitions, as live was: each partition of rebuilt from from+1 up to
// the live partition's checkpoint. It returns those checkpoints.
func rebuildPartitions(ctx context.Context, js JetStream, live PartitionedStore, rebuilt *BoltStore, cfg Config, n int, from uint64) ([]uint64, error) {
	cps := make([]uint64, n)
	for i := range n {
		p := Partition{Index: i, Count: n}
		lp, err := live.Partition(ctx, p)
		if err != nil {
			return nil, err
		}
		cp, err := lp.Checkpoint(ctx)
		if err != nil {
			return nil, fmt.Errorf("partition %s: %w", p, err)
		}
		if err := checkIdentity(ctx, js, lp, cp); err != nil {
			return nil, fmt.Errorf("partition %s: %w", p, err)
		}
		rp, err := rebuilt.Partition(ctx, p)
		if err != nil {
			return nil, fmt.Errorf("partition %s of the rebuild: %w", p, err)
		}
		pcfg := cfg
		pcfg.Partition = p
		if err := replay(ctx, js, rp, pcfg, from, cp); err != nil {
			return nil, fmt.Errorf("partition %s: %w", p, err)
		}
		cps[i] = cp
	}
	return cps, nil
}

// checkIdentity fails with ErrHistoryGone when live's history is not in
// the current EVENTS: the view was re-anchored on a new incarnation, or
// EVENTS is not the incarnation its checkpoint counts in.
func checkIdentity(ctx context.Context, js JetStream, live Store, checkpoint uint64) error {
	marks, err := live.Streams(ctx)
	if err != nil {
		return err
	}
	if marks.Reanchors > 0 {
		return fmt.Errorf("%w: the view was re-anchored %d time(s) on a new %s (its events before the re-anchor are in a stream that is gone): a rebuild cannot reproduce it",
			ErrHistoryGone, marks.Reanchors, events.StreamEvents)
	}
	if marks.Events.Created.IsZero() {
		return nil
	}
	info, err := eventsInfo(ctx, js)
	if err != nil {
		return err
	}
	if !info.Created.Equal(marks.Events.Created) {
		return fmt.Errorf("%w: %s (created %s, sequences %d..%d) is not the stream the view's checkpoint %d counts in (created %s)",
			ErrHistoryGone, events.StreamEvents, info.Created.UTC().Format(time.RFC3339Nano), info.State.FirstSeq, info.State.LastSeq,
			checkpoint, marks.Events.Created.UTC().Format(time.RFC3339Nano))
	}
	return nil
}

// eventsInfo reads the info of EVENTS; a missing stream is ErrHistoryGone.
func eventsInfo(ctx context.Context, js JetStream) (*jetstream.StreamInfo, error) {
	s, err := js.Stream(ctx, events.StreamEvents)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("%w: stream %s does not exist", ErrHistoryGone, events.StreamEvents)
	}
	if err != nil {
		return nil, fmt.Errorf("read stream %s: %w", events.StreamEvents, err)
	}
	return s.CachedInfo(), nil
}

// Rebuild replays EVENTS from sequence 1 through upTo into store, which
// should be empty, deciding exactly as the projector does, without
// publishing anything. It never waits for events that are not there: when
// EVENTS is missing, no longer holds sequence 1, ends below upTo, or holds
// nothing more before upTo is reached (its last events deleted), it fails
// with an error wrapping ErrHistoryGone that says which sequences are
// missing.
func Rebuild(ctx context.Context, js JetStream, store Store, cfg Config, upTo uint64) error {
	if err := replay(ctx, js, store, cfg.withDefaults(), 0, upTo); err != nil {
		return fmt.Errorf("rebuild: %w", err)
	}
	return nil
}

// replay is Rebuild from sequence from+1 (store then holds the state at
// from): with cfg.Partition set, it applies only that partition's
// documents' events, letting the checkpoint pass the others', as the
// partition's projector does.
func replay(ctx context.Context, js JetStream, store Store, cfg Config, from, upTo uint64) error {
	if upTo <= from {
		return nil
	}
	info, err := eventsInfo(ctx, js)
	if err != nil {
		return err
	}
	switch st := info.State; {
	case st.Msgs == 0 && st.LastSeq >= upTo:
		return fmt.Errorf("%w: %s holds no events (it starts at sequence %d): events %d..%d are gone", ErrHistoryGone, events.StreamEvents, st.FirstSeq, from+1, upTo)
	case st.LastSeq < upTo:
		return fmt.Errorf("%w: %s ends at sequence %d, below the checkpoint %d: events %d..%d are missing",
			ErrHistoryGone, events.StreamEvents, st.LastSeq, upTo, st.LastSeq+1, upTo)
	case st.FirstSeq > from+1:
		return fmt.Errorf("%w: %s starts at sequence %d: events %d..%d are gone (a retention limit or a purge)",
			ErrHistoryGone, events.StreamEvents, st.FirstSeq, from+1, st.FirstSeq-1)
	}
	occ := jetstream.OrderedConsumerConfig{FilterSubjects: []string{events.EventsPrefix + ".>"}}
	if from > 0 {
		occ.DeliverPolicy, occ.OptStartSeq = jetstream.DeliverByStartSequencePolicy, from+1
	}
	cons, err := js.OrderedConsumer(ctx, events.StreamEvents, occ)
	if err != nil {
		return fmt.Errorf("ordered consumer on %s: %w", events.StreamEvents, err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(2 * cfg.BatchSize))
	if err != nil {
		return fmt.Errorf("read %s: %w", events.StreamEvents, err)
	}
	defer it.Stop()
	ap := cfg.applier(store, false)
	ap.reset(from)
	first := true
	for seq := from; seq < upTo; {
		m, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			return fmt.Errorf("read %s after %d: %w", events.StreamEvents, seq, err)
		}
		md, err := m.Metadata()
		if err != nil {
			return fmt.Errorf("metadata: %w", err)
		}
		seq = md.Sequence.Stream
		if first && seq != from+1 {
			return fmt.Errorf("%w: %s starts at sequence %d: events %d..%d are gone", ErrHistoryGone, events.StreamEvents, seq, from+1, seq-1)
		}
		first = false
		if seq > upTo {
			break
		}
		if cfg.Partition.whole() || PartitionOfSubject(m.Subject(), cfg.Partition.Count) == cfg.Partition.Index {
			if err := ap.add(ctx, rawMsg{Subject: m.Subject(), Header: m.Headers(), Data: m.Data(), Seq: seq, Time: md.Timestamp}); err != nil {
				return fmt.Errorf("apply event at %d: %w", seq, err)
			}
		}
		ap.batch.Checkpoint = max(ap.batch.Checkpoint, seq) // another partition's: only the checkpoint passes it
		if seq < upTo && md.NumPending == 0 {
			return fmt.Errorf("%w: %s holds nothing after sequence %d, below the checkpoint %d: events %d..%d are missing",
				ErrHistoryGone, events.StreamEvents, seq, upTo, seq+1, upTo)
		}
		if len(ap.docs) >= cfg.BatchSize*4 || seq == upTo {
			if err := store.Commit(ctx, &ap.batch); err != nil {
				return err
			}
			ap.reset(seq)
		}
	}
	if ap.batch.Checkpoint > from && len(ap.batch.Docs)+len(ap.batch.Conflicts)+len(ap.batch.HighWater) > 0 {
		if err := store.Commit(ctx, &ap.batch); err != nil {
			return err
		}
	}
	return nil
}

// viewDigest hashes every document and conflict record of a store.
type viewDigest struct {
	docs  map[events.DocAddress][32]byte
	confs map[string][32]byte // addr key + id
	all   [32]byte
}

func digest(ctx context.Context, s Store) (*viewDigest, error) {
	d := &viewDigest{docs: map[events.DocAddress][32]byte{}, confs: map[string][32]byte{}}
	h := sha256.New()
	err := s.Scan(ctx, func(doc Doc) error {
		b, err := events.EncodeChange(doc.encoded(nil))
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		d.docs[doc.Address()] = sum
		h.Write(addrKey(doc.Address()))
		h.Write(sum[:])
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("hash documents: %w", err)
	}
	err = s.ScanConflicts(ctx, func(r ConflictRecord) error {
		b, err := json.Marshal(r.Conflict)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		k := string(addrKey(r.Address)) + "\x00" + r.Conflict.ID
		d.confs[k] = sum
		h.Write([]byte(k))
		h.Write(sum[:])
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("hash conflicts: %w", err)
	}
	h.Sum(d.all[:0])
	return d, nil
}

// Hash returns the hex SHA-256 of a view: its documents and conflict
// history in key order. Equal views have equal hashes.
func Hash(ctx context.Context, s Store) (string, error) {
	d, err := digest(ctx, s)
	if err != nil {
		return "", err
	}
	return hex.EncodeToString(d.all[:]), nil
}

// Compare hashes live and other and, when they differ, names the first
// difference in the report's Diff and returns an error wrapping ErrDiverged.
func Compare(ctx context.Context, live, other Store) (*VerifyReport, error) {
	a, err := digest(ctx, live)
	if err != nil {
		return nil, err
	}
	b, err := digest(ctx, other)
	if err != nil {
		return nil, err
	}
	rep := &VerifyReport{Docs: len(a.docs), LiveHash: hex.EncodeToString(a.all[:]), RebuiltHash: hex.EncodeToString(b.all[:])}
	if a.all == b.all {
		return rep, nil
	}
	rep.Diff = firstDiff(ctx, live, other, a, b)
	return rep, fmt.Errorf("%w: %s", ErrDiverged, rep.Diff)
}

func firstDiff(ctx context.Context, live, other Store, a, b *viewDigest) string {
	addrs := slices.SortedFunc(maps.Keys(a.docs), cmpAddr)
	for _, extra := range slices.SortedFunc(maps.Keys(b.docs), cmpAddr) {
		if _, ok := a.docs[extra]; !ok {
			addrs = append(addrs, extra)
		}
	}
	slices.SortFunc(addrs, cmpAddr)
	for _, addr := range addrs {
		if a.docs[addr] == b.docs[addr] {
			continue
		}
		name := fmt.Sprintf("%s/%s/%s", addr.Tenant, addr.Collection, addr.Doc)
		x, err1 := live.Get(ctx, addr)
		y, err2 := other.Get(ctx, addr)
		if err := errors.Join(err1, err2); err != nil {
			return fmt.Sprintf("document %s: %v", name, err)
		}
		return fmt.Sprintf("document %s: %s", name, docDiff(x, y))
	}
	for _, k := range slices.Sorted(maps.Keys(a.confs)) {
		if a.confs[k] != b.confs[k] {
			return fmt.Sprintf("conflict record %q differs", bytes.ReplaceAll([]byte(k), []byte{0}, []byte("/")))
		}
	}
	for _, k := range slices.Sorted(maps.Keys(b.confs)) {
		if _, ok := a.confs[k]; !ok {
			return fmt.Sprintf("conflict record %q missing from the live view", bytes.ReplaceAll([]byte(k), []byte{0}, []byte("/")))
		}
	}
	return "hashes differ"
}

func cmpAddr(x, y events.DocAddress) int { return bytes.Compare(addrKey(x), addrKey(y)) }

// docDiff names the first field in which live x and rebuilt y differ.
func docDiff(x, y Doc) string {
	switch {
	case x.Version != y.Version:
		return fmt.Sprintf("version live %d, rebuilt %d", x.Version, y.Version)
	case x.Deleted != y.Deleted:
		return fmt.Sprintf("deleted live %v, rebuilt %v", x.Deleted, y.Deleted)
	}
	names := slices.Sorted(maps.Keys(x.Fields))
	for f := range y.Fields {
		if _, ok := x.Fields[f]; !ok {
			names = append(names, f)
		}
	}
	for _, f := range names {
		if !bytes.Equal(x.Fields[f], y.Fields[f]) {
			return fmt.Sprintf("field %q live %s, rebuilt %s", f, x.Fields[f], y.Fields[f])
		}
	}
	switch {
	case x.HLC != y.HLC:
		return fmt.Sprintf("hlc live %s, rebuilt %s", x.HLC, y.HLC)
	case x.Event != y.Event:
		return fmt.Sprintf("event live %s, rebuilt %s", x.Event, y.Event)
	case !reflect.DeepEqual(x.Clocks, y.Clocks):
		return "field clocks differ"
	case !reflect.DeepEqual(x.Conflicts, y.Conflicts):
		return "open conflicts differ"
	}
	return "encodings differ"
}
