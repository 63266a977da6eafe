package feed

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/ebbsync/ebb/events"
)

// CompactFormat is the "format" of a compact page, the responder's answer
// to a Request with Compact set. A responder that predates it ignores the
// field and answers a Page; DecodeReply reads either.
//
// A compact page names its tenant, its collections and the writers of its
// changes once; each entry then carries its CHANGES sequence, an index
// into the collections, the document id, version, fields, HLC and a
// 1-based index into the writers (0: none, as on a Left notice); clocks
// and open conflicts travel as in a change. The cause of a change (event,
// device, sequence, as_written, the settled record) travels only on the
// asking client's own changes (Request.Client): a replica settles its own
// writes by them and judges its own next write's freshness by them
// (events.Event.After names its own earlier write); of another writer's
// change it needs the state, the clock and the writer (the lww
// tie-break).
// A typical small change costs about half its stored payload, and a page
// has no subject, header or consumer framing per change.
const CompactFormat = "compact"

// compactSlack is what a compact page may need beyond its changes' stored
// size: its cursor, stream state and tables (names of the collections and
// writers, each also in the changes it came from).
const compactSlack = 4 << 10

// compactPage is the wire form of a compact page.
type compactPage struct {
	Format      string         `json:"format"`
	Schema      int            `json:"schema"` // of the changes it expands to
	Tenant      string         `json:"tenant"`
	Collections []string       `json:"collections,omitempty"`
	Writers     []string       `json:"writers,omitempty"`
	Changes     []compactEntry `json:"changes"`
	LastSeq     uint64         `json:"last_seq"`
	More        bool           `json:"more"`
	Unfiltered  bool           `json:"unfiltered,omitempty"`
	Skipped     []uint64       `json:"skipped,omitempty"`
	StreamState
}

// compactEntry is one change of a compact page.
type compactEntry struct {
	Seq        uint64                       `json:"s"`
	Collection int                          `json:"c"`
	Doc        string                       `json:"d"`
	Version    uint64                       `json:"v"`
	Deleted    bool                         `json:"x,omitempty"`
	Fields     events.Fields                `json:"f,omitempty"`
	HLC        []int64                      `json:"h"` // wall ms, logical
	Writer     int                          `json:"w,omitempty"`
	Event      string                       `json:"e,omitempty"`
	Device     string                       `json:"dv,omitempty"`
	WriterSeq  uint64                       `json:"q,omitempty"`
	AsWritten  bool                         `json:"a,omitempty"`
	Left       bool                         `json:"l,omitempty"`
	Clocks     map[string]events.FieldClock `json:"k,omitempty"`
	Conflicts  []events.Conflict            `json:"o,omitempty"`
	Settled    *events.Conflict             `json:"st,omitempty"`
}

// compact returns page in compact form for asker, the client named by the
// request (empty: none), with tenant's name once.
func compact(page *Page, tenant, asker string) (*compactPage, error) {
	cp := &compactPage{Format: CompactFormat, Schema: events.SchemaVersion, Tenant: tenant,
		Changes: make([]compactEntry, 0, len(page.Changes)), LastSeq: page.LastSeq, More: page.More, Unfiltered: page.Unfiltered, Skipped: page.Skipped, StreamState: page.StreamState}
	colls := map[string]int{}
	writers := map[string]int{}
	for _, e := range page.Changes {
		c := e.Change
		if c == nil {
			return nil, fmt.Errorf("compact page: no change at %d", e.Seq)
		}
		if c.Tenant != tenant || c.Schema != events.SchemaVersion {
			return nil, fmt.Errorf("compact page: change at %d is tenant %q schema %d, the page's is %q schema %d",
				e.Seq, c.Tenant, c.Schema, tenant, events.SchemaVersion)
		}
		ci, ok := colls[c.Collection]
		if !ok {
			ci = len(cp.Collections)
			colls[c.Collection] = ci
			cp.Collections = append(cp.Collections, c.Collection)
		}
		ce := compactEntry{Seq: e.Seq, Collection: ci, Doc: c.Doc, Version: c.Version, Deleted: c.Deleted, Fields: c.Fields,
			HLC: []int64{c.HLC.Wall, int64(c.HLC.Logical)}, Left: c.Left, Clocks: c.Clocks, Conflicts: c.Conflicts}
		if c.Client != "" {
			wi, ok := writers[c.Client]
			if !ok {
				cp.Writers = append(cp.Writers, c.Client)
				wi = len(cp.Writers)
				writers[c.Client] = wi
			}
			ce.Writer = wi
			if asker != "" && c.Client == asker {
				ce.Event, ce.Device, ce.WriterSeq, ce.AsWritten, ce.Settled = c.Event, c.Device, c.Seq, c.AsWritten, c.Settled
			}
		}
		cp.Changes = append(cp.Changes, ce)
	}
	return cp, nil
}

// errCompact marks a compact page that does not expand to changes.
var errCompact = errors.New("malformed compact page")

// expand returns the Page cp stands for: each entry as the change it was,
// but the cause where the page left it out.
func (cp *compactPage) expand() (Page, error) {
	if cp.Schema != events.SchemaVersion {
		return Page{}, fmt.Errorf("%w: schema %d, this code reads %d", errCompact, cp.Schema, events.SchemaVersion)
	}
	if cp.Tenant == "" && len(cp.Changes) > 0 {
		return Page{}, fmt.Errorf("%w: no tenant", errCompact)
	}
	p := Page{Changes: make([]Entry, 0, len(cp.Changes)), LastSeq: cp.LastSeq, More: cp.More, Unfiltered: cp.Unfiltered, Skipped: cp.Skipped, StreamState: cp.StreamState}
	for i, ce := range cp.Changes {
		if ce.Collection < 0 || ce.Collection >= len(cp.Collections) {
			return Page{}, fmt.Errorf("%w: change %d names collection %d of %d", errCompact, i, ce.Collection, len(cp.Collections))
		}
		if cp.Collections[ce.Collection] == "" {
			return Page{}, fmt.Errorf("%w: change %d names collection %d, which is empty", errCompact, i, ce.Collection)
		}
		if ce.Writer < 0 || ce.Writer > len(cp.Writers) {
			return Page{}, fmt.Errorf("%w: change %d names writer %d of %d", errCompact, i, ce.Writer, len(cp.Writers))
		}
		if ce.Doc == "" || ce.Version == 0 {
			return Page{}, fmt.Errorf("%w: change %d has doc %q version %d", errCompact, i, ce.Doc, ce.Version)
		}
		if len(ce.HLC) != 2 || ce.HLC[0] < 0 || ce.HLC[1] < 0 || ce.HLC[1] > 1<<32-1 {
			return Page{}, fmt.Errorf("%w: change %d has HLC %v, want [wall, logical]", errCompact, i, ce.HLC)
		}
		c := &events.Change{Schema: cp.Schema, Tenant: cp.Tenant, Collection: cp.Collections[ce.Collection], Doc: ce.Doc,
			Version: ce.Version, Deleted: ce.Deleted, Fields: ce.Fields, HLC: events.HLC{Wall: ce.HLC[0], Logical: uint32(ce.HLC[1])},
			Clocks: ce.Clocks, Event: ce.Event, Device: ce.Device, Seq: ce.WriterSeq, Conflicts: ce.Conflicts, Settled: ce.Settled,
			AsWritten: ce.AsWritten, Left: ce.Left}
		if ce.Writer > 0 {
			if c.Client = cp.Writers[ce.Writer-1]; c.Client == "" {
				return Page{}, fmt.Errorf("%w: change %d names writer %d, which is empty", errCompact, i, ce.Writer)
			}
		}
		p.Changes = append(p.Changes, Entry{Seq: ce.Seq, Change: c})
	}
	return p, nil
}

// encodeReply encodes page for a request: compact for asker if compact
// is set, else as a Page.
func encodeReply(page *Page, tenant, asker string, compactForm bool) ([]byte, error) {
	if !compactForm {
		return json.Marshal(page)
	}
	cp, err := compact(page, tenant, asker)
	if err != nil {
		return nil, err
	}
	return json.Marshal(cp)
}
