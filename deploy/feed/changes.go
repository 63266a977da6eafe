package feed

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/events"
)

// Sentinel errors of the package. Match them with errors.Is.
var (
	// ErrForeign marks a message whose payload is not about the subject it
	// was stored on: another tenant's, client's or document's, whoever
	// wrote it.
	ErrForeign = errors.New("payload does not match its subject")
	// ErrAudience marks a change whose audience headers (HeaderReaders,
	// HeaderWasReaders) do not parse: it is skipped, never served, since
	// who may read it is unknown.
	ErrAudience = errors.New("unreadable audience")
	// ErrBadRequest marks a Query (or a responder request) that is not
	// one: a bad collection name, a limit out of range.
	ErrBadRequest = errors.New("bad request")
)

// Entry is one change of a page, with its CHANGES sequence.
type Entry struct {
	Seq    uint64         `json:"seq"`
	Change *events.Change `json:"change"`
}

// Page is one page of a tenant's changes, the answer of the HTTP pull
// (GET /v1/{tenant}/changes) and of the NATS change responder. Pass
// LastSeq as the next request's after.
type Page struct {
	Changes []Entry `json:"changes"`
	LastSeq uint64  `json:"last_seq"`
	More    bool    `json:"more"` // more changes are waiting after LastSeq
	// Unfiltered: the page holds every readable change as stored (no
	// Query.Filtered), and Skipped names the sequences it stepped over as
	// unreadable. Only such a page may stand for the stream to a reader
	// that may read CHANGES directly; one without it (filtered, or from a
	// responder that predates the flag) holds what its reader may see.
	Unfiltered bool `json:"unfiltered,omitempty"`
	// Skipped, on an unfiltered page, lists the sequences of the messages
	// read and not served because they are unreadable (ReadChange: a
	// newer schema, a payload foreign to its subject), in order. A replica
	// reading directly keeps those for retry; one catching up through the
	// feed stops before the first and reads it directly.
	Skipped []uint64 `json:"skipped,omitempty"`
	StreamState
}

// Query asks for one page of a tenant's changes.
type Query struct {
	Tenant string
	// Collections names the collections to read; empty: every collection
	// of Tenant. Names repeat harmlessly.
	Collections []string
	After       uint64        // the cursor: read changes after this CHANGES sequence
	Limit       int           // most CHANGES messages read; at least 1
	Wait        time.Duration // with nothing visible after After, wait up to this long
	// Filtered turns the audience filter on for a reader with Principals
	// (events.Principals): a change is sent if it has no HeaderReaders or
	// a principal is in its readers; else, if a principal is in its
	// HeaderWasReaders, a Left notice is sent in its place; else it is
	// skipped. Without Filtered every change is sent as stored.
	Filtered   bool
	Principals []string
	// MaxBytes, if positive, bounds the stored size of the changes a page
	// sends: the page ends (More set) before the change that would cross
	// it, unless it is the first.
	MaxBytes int
}

// Verdict is what the audience filter makes of one change for one reader.
type Verdict int

// The verdicts.
const (
	Send Verdict = iota // the reader may read the change
	Left                // the reader may no longer read the document: send a Left notice
	Skip                // the reader never could: send nothing
)

// Judge applies the audience filter to a change's headers for a reader
// with principals (events.Principals): Send when h has no HeaderReaders
// (a collection no rule names) or a principal is among its readers, Left
// when a principal is among its HeaderWasReaders instead, Skip otherwise.
// An audience header that does not parse is an error wrapping ErrAudience.
func Judge(h nats.Header, principals []string) (Verdict, error) {
	rv := h.Values(events.HeaderReaders)
	if len(rv) == 0 {
		return Send, nil
	}
	if len(rv) > 1 {
		return Skip, fmt.Errorf("%w: %d %s headers", ErrAudience, len(rv), events.HeaderReaders)
	}
	readers, err := events.ParseAudience(rv[0])
	if err != nil {
		return Skip, fmt.Errorf("%w: %s: %w", ErrAudience, events.HeaderReaders, err)
	}
	if events.InAudience(readers, principals) {
		return Send, nil
	}
	wv := h.Values(events.HeaderWasReaders)
	if len(wv) > 1 {
		return Skip, fmt.Errorf("%w: %d %s headers", ErrAudience, len(wv), events.HeaderWasReaders)
	}
	if len(wv) == 0 {
		return Skip, nil
	}
	was, err := events.ParseAudience(wv[0])
	if err != nil {
		return Skip, fmt.Errorf("%w: %s: %w", ErrAudience, events.HeaderWasReaders, err)
	}
	if events.InAudience(was, principals) {
		return Left, nil
	}
	return Skip, nil
}

// LeftNotice returns the notice sent in place of c to a reader who may no
// longer read its document: its address, Version and Event, Left set, no
// fields.
func LeftNotice(c *events.Change) *events.Change {
	return &events.Change{Schema: c.Schema, Tenant: c.Tenant, Collection: c.Collection, Doc: c.Doc,
		Version: c.Version, Event: c.Event, Left: true}
}

// Filters returns the CHANGES filter subjects of a tenant's collections
// (the whole tenant when there are none), checking every name.
func Filters(tenant string, collections []string, limits events.Limits) ([]string, error) {
	limits = limits.WithDefaults()
	if err := events.ValidateName("tenant", tenant, limits.MaxNameBytes); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadRequest, err)
	}
	if len(collections) == 0 {
		return []string{events.TenantChanges(tenant)}, nil
	}
	cs := slices.Clone(collections)
	slices.Sort(cs)
	cs = slices.Compact(cs)
	if len(cs) > MaxCollections {
		return nil, fmt.Errorf("%w: %d collections, at most %d", ErrBadRequest, len(cs), MaxCollections)
	}
	out := make([]string, 0, len(cs))
	for _, c := range cs {
		if err := events.ValidateName("collection", c, limits.MaxNameBytes); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrBadRequest, err)
		}
		out = append(out, events.CollectionChanges(tenant, c))
	}
	return out, nil
}

// MaxCollections bounds the collections one query names.
const MaxCollections = 64

// Changes reads one page of q.Tenant's changes after q.After: each
// readable change of the collections asked for, through the audience
// filter when q.Filtered (see Query), once. A message that is not its
// subject's change, or whose audience does not parse, is skipped and told
// to s.Skipped. LastSeq moves past every message read, skipped ones too.
// With q.Wait, a page that would send nothing waits (within q.Wait in all)
// for a change the reader may see. The stream state is read after the
// page.
func (s *Source) Changes(ctx context.Context, q Query) (Page, error) {
	if q.Limit < 1 {
		return Page{}, fmt.Errorf("%w: limit %d: want at least 1", ErrBadRequest, q.Limit)
	}
	filters, err := Filters(q.Tenant, q.Collections, events.Limits{})
	if err != nil {
		return Page{}, err
	}
	page := Page{Changes: []Entry{}, LastSeq: q.After, Unfiltered: !q.Filtered}
	deadline := time.Now().Add(q.Wait)
	size := 0
	for {
		more, err := s.ReadAfter(ctx, events.StreamChanges, filters, page.LastSeq, q.Limit, q.Wait, func(seq uint64, m jetstream.Msg) error {
			c, err := ReadChange(m.Subject(), m.Data())
			if err != nil {
				s.skip(ctx, events.StreamChanges, seq, m.Subject(), err)
				page.LastSeq = seq
				if !q.Filtered {
					page.Skipped = append(page.Skipped, seq)
				}
				return nil
			}
			if q.Filtered {
				v, err := Judge(m.Headers(), q.Principals)
				switch {
				case err != nil:
					s.skip(ctx, events.StreamChanges, seq, m.Subject(), err)
					page.LastSeq = seq
					return nil
				case v == Skip:
					page.LastSeq = seq
					return nil
				case v == Left:
					c = LeftNotice(c)
				}
			}
			if q.MaxBytes > 0 && len(page.Changes) > 0 && size+len(m.Data()) > q.MaxBytes {
				return errStop
			}
			size += len(m.Data())
			page.Changes = append(page.Changes, Entry{Seq: seq, Change: c})
			page.LastSeq = seq
			return nil
		})
		if err != nil {
			return Page{}, err
		}
		page.More = more
		if len(page.Changes) > 0 || more || q.Wait <= 0 {
			break
		}
		// Everything read was skipped: wait on for a visible change.
		if q.Wait = time.Until(deadline); q.Wait < time.Millisecond {
			break
		}
	}
	page.StreamState, err = s.State(ctx, events.StreamChanges)
	if err != nil {
		return Page{}, err
	}
	return page, nil
}
