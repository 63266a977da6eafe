package feed

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/ebbsync/ebb/events"
)

// compactTestPage holds what a compact page must carry: two collections,
// two writers (the asker among them), a Left notice without a writer, a
// tombstone, merge clocks, an open conflict and a settled record.
func compactTestPage() Page {
	conflict := events.Conflict{ID: "01J00000000000000000000001", Policy: events.PolicyManual, Status: events.ConflictOpen,
		Sides: []events.Side{{Event: "e1", Client: "ann", HLC: events.HLC{Wall: 5, Logical: 1}, Fields: events.Fields{"a": json.RawMessage(`1`)}}}}
	return Page{LastSeq: 40, More: true, Unfiltered: true, Skipped: []uint64{4, 6}, StreamState: StreamState{FirstSeq: 1, StreamLastSeq: 99},
		Changes: []Entry{
			{Seq: 3, Change: &events.Change{Schema: 1, Tenant: "acme", Collection: "lists", Doc: "l1", Version: 2,
				Fields: events.Fields{"title": json.RawMessage(`"groceries"`), "n": json.RawMessage(`{"x":[1,2]}`)},
				HLC:    events.HLC{Wall: 1796152547992, Logical: 4294967295}, Event: "ev-1", Client: "ann", Device: "dev-a", Seq: 7, AsWritten: true}},
			{Seq: 5, Change: &events.Change{Schema: 1, Tenant: "acme", Collection: "todos", Doc: "t1", Version: 1,
				Fields: events.Fields{"done": json.RawMessage(`false`)}, HLC: events.HLC{Wall: 1796152547993},
				Clocks: map[string]events.FieldClock{"done": {Version: 1, HLC: events.HLC{Wall: 1796152547993}, Client: "bob"}},
				Event:  "ev-2", Client: "bob", Device: "dev-b", Seq: 3, Conflicts: []events.Conflict{conflict}, Settled: &conflict}},
			{Seq: 8, Change: &events.Change{Schema: 1, Tenant: "acme", Collection: "lists", Doc: "l2", Version: 4, Deleted: true,
				HLC: events.HLC{Wall: 1796152547999}, Event: "ev-3", Client: "ann", Seq: 9}},
			{Seq: 9, Change: &events.Change{Schema: 1, Tenant: "acme", Collection: "lists", Doc: "l3", Version: 6, Event: "ev-4", Left: true}},
		}}
}

// TestCompact_RoundTrip: a compact page expands to the page it was made
// of, but that a change's cause (event, device, sequence, as_written,
// settled record) travels only on the asker's own changes (none when the
// request names no client).
func TestCompact_RoundTrip(t *testing.T) {
	for _, asker := range []string{"ann", "bob", ""} {
		want := compactTestPage()
		p := compactTestPage()
		data, err := encodeReply(&p, "acme", asker, true)
		if err != nil {
			t.Fatal(err)
		}
		got, err := DecodeReply(data)
		if err != nil {
			t.Fatalf("asker %q: %v\n%s", asker, err, data)
		}
		for _, e := range want.Changes {
			if e.Change.Client != asker || asker == "" {
				e.Change.Event, e.Change.Device, e.Change.Seq, e.Change.AsWritten, e.Change.Settled = "", "", 0, false, nil
			}
		}
		if !reflect.DeepEqual(got, want) {
			g, _ := json.Marshal(got)
			w, _ := json.Marshal(want)
			t.Fatalf("asker %q: expanded\n%s\nwant\n%s", asker, g, w)
		}
	}
}

// TestCompact_AnOldResponderPageStillReads: a responder that ignores
// Compact answers a Page; DecodeReply reads both.
func TestCompact_AnOldResponderPageStillReads(t *testing.T) {
	p := compactTestPage()
	data, err := encodeReply(&p, "acme", "ann", false)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeReply(data)
	if err != nil || !reflect.DeepEqual(got, compactTestPage()) {
		t.Fatalf("%+v %v", got, err)
	}
}

// TestCompact_RefusesMalformed: a compact page that does not expand to
// changes is an error naming what is wrong, never a change without its
// address.
func TestCompact_RefusesMalformed(t *testing.T) {
	for name, tc := range map[string]struct{ data, want string }{
		"collection index": {`{"format":"compact","schema":1,"tenant":"t","collections":["c"],"changes":[{"s":1,"c":1,"d":"d","v":1,"h":[1,0]}]}`, "collection 1 of 1"},
		"negative index":   {`{"format":"compact","schema":1,"tenant":"t","collections":["c"],"changes":[{"s":1,"c":-1,"d":"d","v":1,"h":[1,0]}]}`, "collection -1"},
		"writer index":     {`{"format":"compact","schema":1,"tenant":"t","collections":["c"],"writers":["w"],"changes":[{"s":1,"c":0,"d":"d","v":1,"h":[1,0],"w":2}]}`, "writer 2 of 1"},
		"empty collection": {`{"format":"compact","schema":1,"tenant":"t","collections":[""],"changes":[{"s":1,"c":0,"d":"d","v":1,"h":[1,0]}]}`, "collection 0, which is empty"},
		"empty writer":     {`{"format":"compact","schema":1,"tenant":"t","collections":["c"],"writers":[""],"changes":[{"s":1,"c":0,"d":"d","v":1,"h":[1,0],"w":1}]}`, "writer 1, which is empty"},
		"no doc":           {`{"format":"compact","schema":1,"tenant":"t","collections":["c"],"changes":[{"s":1,"c":0,"v":1,"h":[1,0]}]}`, `doc ""`},
		"version 0":        {`{"format":"compact","schema":1,"tenant":"t","collections":["c"],"changes":[{"s":1,"c":0,"d":"d","h":[1,0]}]}`, "version 0"},
		"no tenant":        {`{"format":"compact","schema":1,"collections":["c"],"changes":[{"s":1,"c":0,"d":"d","v":1,"h":[1,0]}]}`, "no tenant"},
		"schema":           {`{"format":"compact","schema":2,"tenant":"t","changes":[]}`, "schema 2"},
		"logical":          {`{"format":"compact","schema":1,"tenant":"t","collections":["c"],"changes":[{"s":1,"c":0,"d":"d","v":1,"h":[1,4294967296]}]}`, "HLC"},
		"format":           {`{"format":"compact2","changes":[]}`, `format "compact2"`},
		"hlc shape":        {`{"format":"compact","schema":1,"tenant":"t","collections":["c"],"changes":[{"s":1,"c":0,"d":"d","v":1,"h":[1,0,3]}]}`, "HLC [1 0 3]"},
		"no hlc":           {`{"format":"compact","schema":1,"tenant":"t","collections":["c"],"changes":[{"s":1,"c":0,"d":"d","v":1}]}`, "HLC []"},
	} {
		_, err := DecodeReply([]byte(tc.data))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error containing %q", name, err, tc.want)
		}
	}
}

// TestCompact_SmallerThanChangeMessages: a compact page of typical
// changes is at most half the bytes of the same changes as stored (their
// payloads alone, without subjects or headers).
func TestCompact_SmallerThanChangeMessages(t *testing.T) {
	var p Page
	stored := 0
	for i := range 200 {
		c := &events.Change{Schema: 1, Tenant: "bench-catchup-1796152547992000000", Collection: "bench", Doc: "doc-" + strings.Repeat("0", 5-len(itoa(i))) + itoa(i),
			Version: 1, Fields: events.Fields{"n": json.RawMessage(itoa(i)), "v": json.RawMessage(`"` + strings.Repeat("x", 54) + `"`)},
			HLC: events.HLC{Wall: 1796152547992 + int64(i)}, Event: "01M8SGHPMRTBE22R80W2Z8CR9Z", Client: "01M8SGHPMDQB5K39HDZT1E5XBF",
			Device: "01M8SGHPMDQB5K39HDZW4QT697", Seq: uint64(i + 1), AsWritten: true}
		b, err := events.EncodeChange(c)
		if err != nil {
			t.Fatal(err)
		}
		stored += len(b)
		p.Changes = append(p.Changes, Entry{Seq: uint64(i + 1), Change: c})
	}
	data, err := encodeReply(&p, "bench-catchup-1796152547992000000", "someone-else", true)
	if err != nil {
		t.Fatal(err)
	}
	if len(data)*2 > stored {
		t.Fatalf("compact page %d bytes for %d changes stored in %d bytes: want at most half", len(data), len(p.Changes), stored)
	}
	t.Logf("compact %d B/change, stored payload %d B/change", len(data)/len(p.Changes), stored/len(p.Changes))
}

func itoa(i int) string { b, _ := json.Marshal(i); return string(b) }

// TestCompact_RefusesForeignChange: a page holding another tenant's
// change is not compacted under this one's name.
func TestCompact_RefusesForeignChange(t *testing.T) {
	p := compactTestPage()
	if _, err := encodeReply(&p, "other", "", true); err == nil {
		t.Fatal("compacted acme's changes as tenant other")
	}
}

// FuzzDecodeReply: any reply decodes to a page or an error, never a
// panic, and every change of a page has its address and a version.
func FuzzDecodeReply(f *testing.F) {
	p := compactTestPage()
	if data, err := encodeReply(&p, "acme", "ann", true); err == nil {
		f.Add(data)
	}
	if data, err := encodeReply(&p, "acme", "ann", false); err == nil {
		f.Add(data)
	}
	f.Add([]byte(`{"error":"x","status":403}`))
	f.Add([]byte(`{"format":"compact","schema":1,"tenant":"t","collections":["c"],"writers":["w"],"changes":[{"s":1,"c":0,"d":"d","v":1,"h":[1,0],"w":1}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		pg, err := DecodeReply(data)
		var re *ReplyError
		if err != nil || errors.As(err, &re) {
			return
		}
		var probe struct {
			Format string `json:"format"`
		}
		_ = json.Unmarshal(data, &probe)
		if probe.Format != CompactFormat {
			return // a Page is taken as sent, as before
		}
		for _, e := range pg.Changes {
			c := e.Change
			if c == nil || c.Tenant == "" || c.Collection == "" || c.Doc == "" || c.Version == 0 {
				t.Fatalf("compact page expanded to a change without address or version: %+v", c)
			}
		}
	})
}
