package projection

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/events"
)

// checkChanges compares CHANGES with what the projector recorded of it
// (StreamMarks.Changes) and, when messages the projector published are
// gone, reseeds it from the view. It runs on start, after the outbox is
// published, and on every look of the running loop (watchStreams), on the
// goroutine that publishes, so nothing else is published meanwhile. Only
// the projector writes CHANGES, which keeps one message per document and
// has no age limit, so while it is intact it never holds fewer messages
// than before and keeps the last message the projector published. A
// missing CHANGES (deleted, not yet created again) is left to the next
// look; a failed read too.
func (p *Projector) checkChanges(ctx context.Context) error {
	info, err := p.changesInfo(ctx)
	if err != nil || info == nil {
		return nil
	}
	if why := p.changesLost(info); why != "" {
		return p.reseed(ctx, why)
	}
	p.changesSeq.Store(max(p.changesSeq.Load(), info.State.LastSeq))
	if m := &p.marks.Changes; m.LastSeq != p.changesSeq.Load() || m.Msgs != info.State.Msgs {
		m.LastSeq, m.Msgs = p.changesSeq.Load(), info.State.Msgs
		p.marksDirty = true // recorded by the next batch
	}
	return nil
}

// changesInfo reads CHANGES' info; nil, nil when it does not exist.
func (p *Projector) changesInfo(ctx context.Context) (*jetstream.StreamInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, gapCheck)
	defer cancel()
	s, err := p.js.Stream(ctx, events.StreamChanges)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return s.CachedInfo(), nil
}

// changesLost says why CHANGES no longer holds what the projector
// published into it, or "" when it does.
func (p *Projector) changesLost(info *jetstream.StreamInfo) string {
	m := p.marks.Changes
	seq := max(m.LastSeq, p.changesSeq.Load())
	st := info.State
	switch {
	case m.Created.IsZero():
		return "no CHANGES identity recorded yet (a new view, or one from before they were kept)"
	case !m.Created.Equal(info.Created):
		return fmt.Sprintf("CHANGES was created again (at %s; the view's changes went to the one created at %s)", info.Created, m.Created)
	case st.LastSeq < seq:
		return fmt.Sprintf("CHANGES ends at sequence %d, below %d, which the projector published", st.LastSeq, seq)
	case seq > 0 && st.FirstSeq > seq:
		return fmt.Sprintf("CHANGES was purged: it starts at sequence %d, beyond %d, the last the projector published", st.FirstSeq, seq)
	case st.Msgs < m.Msgs:
		return fmt.Sprintf("CHANGES holds %d messages, fewer than the %d it held: some were deleted or purged", st.Msgs, m.Msgs)
	case p.marks.DocsCounted && st.Msgs+p.unseeded < p.marks.Docs:
		// Only the projector writes CHANGES, one message per document:
		// this catches a purge however many changes were published since.
		return fmt.Sprintf("CHANGES holds %d messages for the view's %d documents: some were deleted or purged", st.Msgs, p.marks.Docs)
	}
	return ""
}

// countDocs counts the view's documents once, for a view whose marks do
// not have the count yet; the next batch records it.
func (p *Projector) countDocs(ctx context.Context) error {
	var n uint64
	if err := p.store.Scan(ctx, func(Doc) error { n++; return nil }); err != nil {
		return fmt.Errorf("count the view's documents: %w", err)
	}
	p.marks.Docs, p.marks.DocsCounted, p.marksDirty = n, true, true
	return nil
}

// reseed republishes every document's current change from the view, the
// authority for CHANGES, then records CHANGES' identity in the store. Each
// change is the one the projector publishes (Doc.Change, without the
// conflict record it settled, which the view keeps in its history), under
// Nats-Msg-Id "seed:<reseed id>:<subject>:<version>": the reseed id (a
// ULID per reseed) keeps JetStream from dropping it as a duplicate of an
// earlier copy still in its dedupe window. A crash in the middle leaves
// the old identity recorded, so the next start reseeds again.
func (p *Projector) reseed(ctx context.Context, why string) error {
	p.log.Warn("CHANGES lost the view's changes; reseeding it from the view", "cause", why)
	info, err := p.changesInfo(ctx)
	if err != nil || info == nil {
		return nil // gone again: the next look tries
	}
	gen := events.NewIDSource(nil).New().String()
	dead0 := p.dead.Load() // refused publishes dead-letter and count here
	chunk := make([]OutboxEntry, 0, publishChunk)
	flush := func() error {
		if len(chunk) == 0 {
			return nil
		}
		err := p.publish(ctx, chunk, false)
		chunk = chunk[:0]
		return err
	}
	docs := 0
	part := p.cfg.Partition
	err = p.store.Scan(ctx, func(d Doc) error {
		if !part.whole() && PartitionOfDoc(d.Address(), part.Count) != part.Index {
			return nil // another partition's projector reseeds it
		}
		data, err := p.ap.policies.EncodeChange(&d, nil)
		if err != nil {
			return fmt.Errorf("encode change of %s/%s/%s: %w", d.Tenant, d.Collection, d.ID, err)
		}
		subject := events.ChangeSubject(d.Tenant, d.Collection, d.ID)
		h, err := p.seedHeader(ctx, d, nil) // sync rules (rules_reemit.go)
		if err != nil {
			return err
		}
		chunk = append(chunk, OutboxEntry{Subject: subject, MsgID: fmt.Sprintf("seed:%s:%s:%d", gen, subject, d.Version), Header: h, Data: data})
		docs++
		if len(chunk) == publishChunk {
			return flush()
		}
		return nil
	})
	if err == nil {
		err = flush()
	}
	if err != nil {
		return fmt.Errorf("reseed %s: %w", events.StreamChanges, err)
	}
	after, err := p.changesInfo(ctx)
	if err != nil || after == nil || !after.Created.Equal(info.Created) {
		return nil // changed under the reseed: the next look tries again
	}
	// Exactly the new state: the acks counted so far may be of an earlier
	// incarnation, whose sequences ran higher.
	p.changesSeq.Store(after.State.LastSeq)
	p.marks.Changes = StreamMark{Created: after.Created, LastSeq: after.State.LastSeq, Msgs: after.State.Msgs}
	p.marks.Docs, p.marks.DocsCounted = uint64(docs), true
	p.marks.Rules = p.cfg.Rules.Fingerprint() // the copies' audiences are the current rules'
	// Documents whose change CHANGES refused even now (dead-lettered) are
	// not a reason to reseed again at every look. (Not Docs minus Msgs: a
	// purge while reseeding would hide itself that way.)
	p.unseeded = p.dead.Load() - dead0
	if p.unseeded > 0 {
		p.log.Error("CHANGES refused some documents' changes during a reseed (see DEAD)", "refused", p.unseeded)
	}
	p.marksDirty = true
	// Recorded now, so a restart does not reseed again; an empty view costs
	// nothing to reseed, and waits for the next batch.
	if docs > 0 {
		if err := p.commitMarks(ctx); err != nil {
			return fmt.Errorf("reseed %s: %w", events.StreamChanges, err)
		}
	}
	p.reseeds.Add(1)
	p.log.Info("reseeded CHANGES from the view", "documents", docs, "reseed", gen)
	return nil
}

// commitMarks records the stream marks now, in a transaction of their own
// at the current checkpoint.
func (p *Projector) commitMarks(ctx context.Context) error {
	marks := p.marks
	b := &Batch{Checkpoint: p.checkpoint.Load(), Streams: &marks, Reanchor: p.reanchor}
	if err := p.commit(ctx, b); err != nil {
		return fmt.Errorf("record stream marks: %w", err)
	}
	p.marksDirty, p.reanchor = false, false
	return nil
}
