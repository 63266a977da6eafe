package projection

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/projection/rules"
)

// viewLookup is the rules' view of a tenant's committed documents.
func (p *Projector) viewLookup(tenant string) rules.Lookup {
	return func(ctx context.Context, collection, id string) (events.Fields, bool, error) {
		d, err := p.store.Get(ctx, events.DocAddress{Tenant: tenant, Collection: collection, Doc: id})
		if err != nil {
			return nil, false, err
		}
		return d.Fields, d.Exists(), nil
	}
}

// seedHeader returns the audience headers of a copy of d's change that the
// projector publishes outside a batch (a reseed, a change of rules): nil
// when the rules do not decide its collection. The copy carries the
// headers apply gave the state: was-readers are everyone who may hold a
// copy (holders: d.Audience, the readers of d and a follower's parent's
// audience) with was, the audience of the message the copy replaces when
// known; readers are d's readers, a tombstone's its was-readers, so that
// every holder learns of the delete from the copy; nobody when d's
// readers would pass MaxAudienceBytes (boundReaders: counted in
// Stats.OverAudience and logged).
func (p *Projector) seedHeader(ctx context.Context, d Doc, was []string) (map[string][]string, error) {
	aud, ruled, err := p.seedAudience(ctx, d, was)
	if err != nil || !ruled {
		return nil, err
	}
	return withAudience(nil, aud.readers, aud.was), nil
}

// seedAudience is the audience seedHeader puts on a copy of d's change;
// ruled is false when the rules do not decide its collection.
func (p *Projector) seedAudience(ctx context.Context, d Doc, was []string) (aud audiences, ruled bool, err error) {
	if !p.cfg.Rules.Ruled(d.Collection) {
		return audiences{}, false, nil
	}
	held, err := holders(ctx, p.cfg.Rules, d, p.store.Get)
	if err != nil {
		return audiences{}, false, err
	}
	aud.was = unionAudience(held, was)
	aud.readers = aud.was
	if d.Exists() {
		if aud.readers, _, err = p.cfg.Rules.Audience(ctx, d.Collection, d.Fields, p.viewLookup(d.Tenant)); err != nil {
			return audiences{}, false, err
		}
		var over bool
		if aud.readers, over = boundReaders(aud.readers); over {
			p.overAudience.Add(1)
			p.metrics.overAud.Add(ctx, 1)
			p.log.WarnContext(ctx, "a document's readers under the sync rules would pass the readers bound: its change is published read by nobody until a write names fewer readers",
				"tenant", d.Tenant, "collection", d.Collection, "doc", d.ID, "version", d.Version, "max_audience_bytes", MaxAudienceBytes)
		}
	}
	return aud, true, nil
}

// lastAudience returns who may hold the message CHANGES holds on subject:
// its readers and was-readers, Everyone when it carries no readers header
// (published while no rule named its collection, which the feed sends to
// every user), nil when CHANGES holds none.
func lastAudience(ctx context.Context, stream jetstream.Stream, subject string) ([]string, error) {
	m, err := stream.GetLastMsgForSubject(ctx, subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the last change of %s: %w", subject, err)
	}
	if _, has := m.Header[events.HeaderReaders]; !has {
		return []string{events.Everyone}, nil
	}
	r, _ := events.ParseAudience(m.Header.Get(events.HeaderReaders))
	w, _ := events.ParseAudience(m.Header.Get(events.HeaderWasReaders))
	return unionAudience(r, w), nil
}

// checkRules publishes every document's change again when CHANGES'
// audiences were computed under other rules than Config.Rules
// (StreamMarks.Rules; rules added, changed or removed), so readers gain
// and lose documents as the new rules say: the same version, the new
// audience as readers and as was-readers everyone who may hold a copy
// (seedHeader) with who may hold the document's last message in CHANGES
// (lastAudience: its readers and was-readers, everyone for a message
// without a readers header), so that a user who read an earlier copy the
// view's Audience does not name still learns the document left, under
// Nats-Msg-Id "rules:<id>:<subject>:<version>" (a ULID per call). Live
// documents go, and tombstones of a collection the rules name (readers:
// their cumulative audience, everyone for one deleted before the rules);
// other tombstones keep their message. The view's cumulative Audience of
// each ruled document takes in the copy's readers and was-readers. It then
// records the rules' fingerprint; a crash before that runs it again on the
// next start. It does not return before that is done: a failure (CHANGES
// unreadable, a publish refused) is retried with backoff until ctx ends,
// and then returned (a commit refused by a fence, ErrFenced or
// ErrCheckpoint, at once), so the projector never serves under new rules the
// changes computed under the old ones. With no CHANGES stream there is
// nothing to serve and nothing is done. It costs a read of CHANGES and a
// publish per document of the projector's partition.
func (p *Projector) checkRules(ctx context.Context) error {
	fp := p.cfg.Rules.Fingerprint()
	if p.marks.Rules == fp {
		return nil
	}
	gen := events.NewIDSource(nil).New().String() // one per call: a retry's copies are duplicates
	backoff := 100 * time.Millisecond
	for {
		err := p.reemitRules(ctx, fp, gen)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil || errors.Is(err, ErrCheckpoint) || errors.Is(err, ErrFenced) || errors.Is(err, ErrClosed) {
			return fmt.Errorf("publish changes again under new sync rules: %w", err) // ended, or the view is another's now
		}
		p.log.Warn("publish changes again under new sync rules, retrying", "err", err, "backoff", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("publish changes again under new sync rules: %w", err)
		case <-t.C:
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// reemitRules is one attempt of checkRules.
func (p *Projector) reemitRules(ctx context.Context, fp, gen string) error {
	info, err := p.changesInfo(ctx)
	if err != nil {
		return fmt.Errorf("read stream %s: %w", events.StreamChanges, err)
	}
	if info == nil {
		return nil // no CHANGES: nothing is served under the old rules
	}
	stream, err := p.js.Stream(ctx, events.StreamChanges)
	if err != nil {
		return fmt.Errorf("read stream %s: %w", events.StreamChanges, err)
	}
	p.log.Info("sync rules changed since CHANGES' audiences were computed; publishing every document again", "rules", fp, "recorded", p.marks.Rules)
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
	grown := map[events.DocAddress][]string{} // the cumulative audiences that took in a copy's
	part := p.cfg.Partition
	err = p.store.Scan(ctx, func(d Doc) error {
		if !part.whole() && PartitionOfDoc(d.Address(), part.Count) != part.Index {
			return nil
		}
		if !d.Exists() && !(d.Version > 0 && p.cfg.Rules.Ruled(d.Collection)) {
			return nil // a tombstone the rules do not decide keeps its message
		}
		subject := events.ChangeSubject(d.Tenant, d.Collection, d.ID)
		was, err := lastAudience(ctx, stream, subject)
		if err != nil {
			return err
		}
		aud, ruled, err := p.seedAudience(ctx, d, was)
		if err != nil {
			return err
		}
		var h map[string][]string
		if ruled {
			h = withAudience(nil, aud.readers, aud.was)
			if cum := unionAudience(d.Audience, aud.was, aud.readers); !slices.Equal(cum, d.Audience) {
				grown[d.Address()] = cum
			}
		}
		data, err := p.ap.policies.EncodeChange(&d, nil)
		if err != nil {
			return fmt.Errorf("encode change of %s/%s/%s: %w", d.Tenant, d.Collection, d.ID, err)
		}
		chunk = append(chunk, OutboxEntry{Subject: subject, MsgID: fmt.Sprintf("rules:%s:%s:%d", gen, subject, d.Version), Header: h, Data: data})
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
		return err
	}
	if err := p.growAudiences(ctx, grown); err != nil {
		return err
	}
	recorded := p.marks.Rules
	p.marks.Rules = fp
	if m := &p.marks.Changes; !m.Created.IsZero() {
		m.LastSeq = max(m.LastSeq, p.changesSeq.Load()) // what the copies moved CHANGES to
	}
	if err := p.commitMarks(ctx); err != nil {
		p.marks.Rules = recorded // not recorded: the next attempt runs again
		return err
	}
	p.log.Info("published every document under the new sync rules", "documents", docs, "rules", fp)
	return nil
}

// growAudiences records in the view the cumulative audiences of grown,
// after the copies that gave them out were published (a crash before runs
// checkRules again, which computes them again).
func (p *Projector) growAudiences(ctx context.Context, grown map[events.DocAddress][]string) error {
	docs := make([]Doc, 0, min(len(grown), publishChunk))
	commit := func() error {
		if len(docs) == 0 {
			return nil
		}
		marks := p.marks // as recorded so far (the rules' fingerprint not yet): a re-anchor needs them
		b := &Batch{Checkpoint: p.checkpoint.Load(), Streams: &marks, Reanchor: p.reanchor, Docs: docs}
		if err := p.commit(ctx, b); err != nil {
			return fmt.Errorf("record the audiences of %d documents: %w", len(docs), err)
		}
		docs = docs[:0]
		return nil
	}
	for addr, aud := range grown {
		d, err := p.store.Get(ctx, addr)
		if err != nil {
			return fmt.Errorf("read %s/%s/%s: %w", addr.Tenant, addr.Collection, addr.Doc, err)
		}
		d.Audience = aud
		if docs = append(docs, d); len(docs) == publishChunk {
			if err := commit(); err != nil {
				return err
			}
		}
	}
	return commit()
}
