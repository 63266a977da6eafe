package schema

import (
	"strings"
	"testing"
	"time"

	"github.com/ebbsync/ebb/events"
)

func TestValidate_CodecOutput(t *testing.T) {
	ids := events.NewIDSource(time.Now)
	ev := &events.Event{Schema: events.SchemaVersion, ID: ids.New().String(), Tenant: "acme", Collection: "todos", Doc: "a.b c",
		Op: events.OpPatch, Fields: events.Fields{"title": []byte(`"milk"`), "gone": []byte("null")}, BaseVersion: 3,
		HLC: events.HLC{Wall: time.Now().UnixMilli(), Logical: 2}, Client: "alice", Device: ids.New().String(), Seq: 9}
	b, err := events.EncodeEvent(ev)
	if err != nil {
		t.Fatal(err)
	}
	if err := Validate(Event, b); err != nil {
		t.Fatalf("a valid event: %v", err)
	}
	r := &events.Receipt{Schema: events.SchemaVersion, Event: ev.ID, Tenant: "acme", Client: "alice", Device: ev.Device, Seq: 9,
		Collection: "todos", Doc: "a.b c", Outcome: events.OutcomeConflict, Conflict: ev.ID, Version: 4, Stream: 17}
	if b, err = events.EncodeReceipt(r); err != nil {
		t.Fatal(err)
	}
	if err := Validate(Receipt, b); err != nil {
		t.Fatalf("a valid receipt: %v", err)
	}
	c := &events.Change{Schema: events.SchemaVersion, Tenant: "acme", Collection: "todos", Doc: "a.b c", Version: 4,
		Fields: events.Fields{"title": []byte(`"milk"`)}, HLC: ev.HLC, Event: ev.ID, Client: "alice", Seq: 9,
		Clocks:    map[string]events.FieldClock{"title": {Version: 4, HLC: ev.HLC, Client: "alice"}},
		Conflicts: []events.Conflict{{ID: ev.ID, Policy: events.PolicyManual, Status: events.ConflictOpen, Sides: []events.Side{{HLC: ev.HLC}, {HLC: ev.HLC}}}}}
	if b, err = events.EncodeChange(c); err != nil {
		t.Fatal(err)
	}
	if err := Validate(Change, b); err != nil {
		t.Fatalf("a valid change: %v", err)
	}
}

func TestValidate_Refuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		kind Kind
		data string
		want string
	}{
		{"unknown field", Event, `{"schema":1,"id":"01KDVDNAZ900000000000000Z9","tenant":"a","collection":"c","doc":"d","op":"put","base_version":0,"hlc":{"wall":1,"logical":0},"client":"x","seq":1,"extra":1}`, "extra"},
		{"seq past 2^53", Event, `{"schema":1,"id":"01KDVDNAZ900000000000000Z9","tenant":"a","collection":"c","doc":"d","op":"put","base_version":0,"hlc":{"wall":1,"logical":0},"client":"x","seq":9007199254740993}`, "seq"},
		{"patch without fields", Event, `{"schema":1,"id":"01KDVDNAZ900000000000000Z9","tenant":"a","collection":"c","doc":"d","op":"patch","base_version":0,"hlc":{"wall":1,"logical":0},"client":"x","seq":1}`, "fields"},
		{"null in a put", Event, `{"schema":1,"id":"01KDVDNAZ900000000000000Z9","tenant":"a","collection":"c","doc":"d","op":"put","fields":{"a":null},"base_version":0,"hlc":{"wall":1,"logical":0},"client":"x","seq":1}`, "fields"},
		{"resolve without resolves", Event, `{"schema":1,"id":"01KDVDNAZ900000000000000Z9","tenant":"a","collection":"c","doc":"d","op":"resolve","fields":{},"base_version":0,"hlc":{"wall":1,"logical":0},"client":"x","seq":1}`, "resolves"},
		{"unknown outcome", Receipt, `{"schema":1,"event":"e","tenant":"a","client":"x","seq":1,"outcome":"lost","stream_seq":1}`, "outcome"},
		{"schema 2", Change, `{"schema":2,"tenant":"a","collection":"c","doc":"d","version":1,"hlc":{"wall":1,"logical":0},"event":"e","client":"x","seq":1}`, "schema"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Validate(tc.kind, []byte(tc.data))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate: %v, want an error naming %q", err, tc.want)
			}
		})
	}
}
