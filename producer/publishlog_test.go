package producer

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
	"time"
)

// TestPublishedState_AsJSON: the state record publishedState writes for a
// pending entry is, byte for byte, what json.Marshal writes for the
// decoded record moved to published, and anything storeNew does not write
// is left to encoding/json.
func TestPublishedState_AsJSON(t *testing.T) {
	east := time.FixedZone("east", 5*3600+1800)
	times := []time.Time{
		time.Date(2026, 12, 1, 14, 12, 3, 123456789, time.UTC),
		time.Date(2026, 12, 1, 14, 12, 3, 0, time.UTC),
		time.Date(1999, 1, 2, 3, 4, 5, 600, east),
		time.Now(),
	}
	for _, appended := range times {
		for _, now := range times {
			for _, seq := range []uint64{0, 1, 1 << 40} {
				for _, dup := range []bool{false, true} {
					v, err := json.Marshal(stateRecord{State: StatePending, AppendedAt: appended})
					if err != nil {
						t.Fatal(err)
					}
					got, ok := publishedState([]byte("junk"), v, seq, dup, now)
					if !ok {
						t.Fatalf("%s: not taken", v)
					}
					var st stateRecord
					if err := json.Unmarshal(v, &st); err != nil {
						t.Fatal(err)
					}
					st.State, st.StreamSeq, st.PublishedAt, st.Duplicate = StatePublished, seq, now, dup
					want, err := json.Marshal(st)
					if err != nil {
						t.Fatal(err)
					}
					if !bytes.Equal(got[len("junk"):], want) {
						t.Fatalf("from %s:\n got %s\nwant %s", v, got[len("junk"):], want)
					}
				}
			}
		}
	}
	at := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	for _, st := range []stateRecord{
		{State: StatePublished, StreamSeq: 4, AppendedAt: at, PublishedAt: at},
		{State: StateFailed, Err: "refused", AppendedAt: at},
		{State: StateSettled, Outcome: "applied", AppendedAt: at, SettledAt: at},
		{State: StatePending, AppendedAt: at, Duplicate: true},
		{State: StatePending, StreamSeq: 3, AppendedAt: at},
	} {
		v, _ := json.Marshal(st)
		if got, ok := publishedState(nil, v, 7, false, at); ok {
			t.Errorf("%s: taken as pending, wrote %s", v, got)
		}
	}
	for _, v := range []string{``, `{}`, `{"state":"pending","appended_at":}`, `{"state":"pending","appended_at":"x\"y"}`} {
		if got, ok := publishedState(nil, []byte(v), 7, false, at); ok {
			t.Errorf("%q: taken as pending, wrote %s", v, got)
		}
	}
}

// TestDecodeOutbound_AsJSON: decodeOutbound reads every outbound record
// as encoding/json does.
func TestDecodeOutbound_AsJSON(t *testing.T) {
	for _, ob := range []outbound{
		{ID: "01KB000000000000000000000A", Subject: "ebb.evt.t1.c.d1"},
		{ID: "01KB000000000000000000000A", Subject: "ebb.evt.t1.c.~ZCBl"},
		{ID: "x", Subject: "ebb.evt.t1.c.<&>"},
		{ID: "x\"y", Subject: `a\b`},
		{ID: "x", Subject: "ebb.evt.t1.c.d", Trace: map[string]string{"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}},
		{},
	} {
		v, err := json.Marshal(ob)
		if err != nil {
			t.Fatal(err)
		}
		got, err := decodeOutbound(v)
		if err != nil {
			t.Fatalf("%s: %v", v, err)
		}
		if !reflect.DeepEqual(got, ob) {
			t.Errorf("%s: decoded %+v, want %+v", v, got, ob)
		}
	}
	if _, err := decodeOutbound([]byte(`{"id":"x","subject":"y"`)); err == nil {
		t.Error("a truncated record decoded")
	}
}
