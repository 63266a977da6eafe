package storetest

import (
	"reflect"
	"testing"

	"github.com/ebbsync/ebb/projection"
)

// testDeviceWriters: the devices of one client are separate writers, and
// device "" is the client's legacy log, the one HighWater reads.
func testDeviceWriters(t *testing.T, s projection.Store) {
	legacy := projection.ClientKey{Tenant: "t", Client: "c"}
	phone := projection.ClientKey{Tenant: "t", Client: "c", Device: "01JPHONE00000000000000000A"}
	laptop := projection.ClientKey{Tenant: "t", Client: "c", Device: "01JLAPTOP0000000000000000B"}
	must(t, s.Commit(ctx, &projection.Batch{Checkpoint: 1, HighWater: map[projection.ClientKey]projection.HighWater{
		legacy: {Seq: 3}, phone: {Seq: 7, Holes: []projection.SeqRange{{From: 2, To: 2}}},
	}}))
	for k, want := range map[projection.ClientKey]projection.HighWater{
		legacy: {Seq: 3}, phone: {Seq: 7, Holes: []projection.SeqRange{{From: 2, To: 2}}}, laptop: {},
	} {
		got, err := s.WriterHighWater(ctx, k)
		must(t, err)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("WriterHighWater(%v) = %+v, want %+v", k, got, want)
		}
	}
	old, err := s.HighWater(ctx, "t", "c")
	must(t, err)
	if old.Seq != 3 {
		t.Errorf("HighWater(t, c) = %+v, want the legacy log's mark 3", old)
	}
}

// testSeqEvents: an id remembered at a writer's sequence reads back, per
// writer, across commits; a later commit replaces it; ForgetSeqEvents drops
// the ids at or below its sequence and keeps the rest.
func testSeqEvents(t *testing.T, s projection.Store) {
	phone := projection.ClientKey{Tenant: "t", Client: "c", Device: "01JPHONE00000000000000000A"}
	legacy := projection.ClientKey{Tenant: "t", Client: "c"}
	check := func(k projection.ClientKey, seq uint64, want string) {
		t.Helper()
		got, err := s.SeqEvent(ctx, k, seq)
		must(t, err)
		if got != want {
			t.Errorf("SeqEvent(%v, %d) = %q, want %q", k, seq, got, want)
		}
	}
	check(phone, 1, "") // nothing yet, not even the bucket
	var b projection.Batch
	b.Checkpoint = 1
	for seq := uint64(1); seq <= 5; seq++ {
		b.SeqEvents = append(b.SeqEvents, projection.SeqEvent{Writer: phone, Seq: seq, Event: "P" + string(rune('0'+seq))})
	}
	b.SeqEvents = append(b.SeqEvents, projection.SeqEvent{Writer: legacy, Seq: 1, Event: "L1"})
	must(t, s.Commit(ctx, &b))
	check(phone, 1, "P1")
	check(phone, 5, "P5")
	check(phone, 6, "")
	check(legacy, 1, "L1")
	check(legacy, 2, "")
	check(projection.ClientKey{Tenant: "u", Client: "c", Device: phone.Device}, 1, "")
	must(t, s.Commit(ctx, &projection.Batch{Checkpoint: 2,
		SeqEvents:       []projection.SeqEvent{{Writer: phone, Seq: 6, Event: "P6"}},
		ForgetSeqEvents: map[projection.ClientKey]uint64{phone: 3, projection.ClientKey{Tenant: "t", Client: "nobody"}: 9},
	}))
	for seq, want := range map[uint64]string{1: "", 2: "", 3: "", 4: "P4", 5: "P5", 6: "P6"} {
		check(phone, seq, want)
	}
	check(legacy, 1, "L1")
}
