package projection

import (
	"context"
	"errors"
	"fmt"

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
// every holder learns of the delete from the copy.
func (p *Projector) seedHeader(ctx context.Context, d Doc, was []string) (map[string][]string, error) {
	if !p.cfg.Rules.Ruled(d.Collection) {
		return nil, nil
	}
	held, err := holders(ctx, p.cfg.Rules, d, p.store.Get)
	if err != nil {
		return nil, err
	}
	was = unionAudience(held, was)
	readers := was
	if d.Exists() {
		if readers, _, err = p.cfg.Rules.Audience(ctx, d.Collection, d.Fields, p.viewLookup(d.Tenant)); err != nil {
			return nil, err
		}
	}
	return withAudience(nil, readers, was), nil
}

// checkRules publishes every live document's change again when CHANGES'
// audiences were computed under other rules than Config.Rules
// (StreamMarks.Rules; rules added, changed or removed), so readers gain
// and lose documents as the new rules say: the same version, the new
// audience as readers and as was-readers everyone who may hold a copy
// (seedHeader) with the audience of the document's last message in
// CHANGES (its readers and was-readers: a user who read an earlier copy
// the view's Audience does not name still learns the document left), under
// Nats-Msg-Id "rules:<id>:<subject>:<version>" (a ULID per run).
// Tombstones keep their message. It then records the rules' fingerprint;
// a crash before that runs it again on the next start. It costs a read of
// CHANGES and a publish per live document of the projector's partition.
func (p *Projector) checkRules(ctx context.Context) error {
	fp := p.cfg.Rules.Fingerprint()
	if p.marks.Rules == fp {
		return nil
	}
	info, err := p.changesInfo(ctx)
	if err != nil || info == nil {
		return nil // the next start tries again
	}
	stream, err := p.js.Stream(ctx, events.StreamChanges)
	if err != nil {
		return nil
	}
	p.log.Info("sync rules changed since CHANGES' audiences were computed; publishing every live document again", "rules", fp, "recorded", p.marks.Rules)
	gen := events.NewIDSource(nil).New().String()
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
		if !d.Exists() || (!part.whole() && PartitionOfDoc(d.Address(), part.Count) != part.Index) {
			return nil
		}
		subject := events.ChangeSubject(d.Tenant, d.Collection, d.ID)
		var was []string
		if m, err := stream.GetLastMsgForSubject(ctx, subject); err == nil {
			r, _ := events.ParseAudience(m.Header.Get(events.HeaderReaders))
			w, _ := events.ParseAudience(m.Header.Get(events.HeaderWasReaders))
			was = unionAudience(r, w)
		} else if !errors.Is(err, jetstream.ErrMsgNotFound) {
			return fmt.Errorf("read the last change of %s: %w", subject, err)
		}
		h, err := p.seedHeader(ctx, d, was)
		if err != nil {
			return err
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
		return fmt.Errorf("publish changes again under new sync rules: %w", err)
	}
	p.marks.Rules = fp
	if m := &p.marks.Changes; !m.Created.IsZero() {
		m.LastSeq = max(m.LastSeq, p.changesSeq.Load()) // what the copies moved CHANGES to
	}
	if err := p.commitMarks(ctx); err != nil {
		return fmt.Errorf("publish changes again under new sync rules: %w", err)
	}
	p.log.Info("published every live document under the new sync rules", "documents", docs, "rules", fp)
	return nil
}
