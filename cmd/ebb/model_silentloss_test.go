package main

import (
	"strings"
	"testing"

	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/projection"
)

// TestModelCheck_ReseededChangeKeepsItsRecord: a reseed of CHANGES
// republishes a document's current state without the conflict record its
// change carried (projection.Projector.reseed), and the watcher may read
// only that copy (the original was compacted away behind it). The record
// is still in the view's history, so a stale write the policy recorded is
// no silent loss; one the history does not hold is.
func TestModelCheck_ReseededChangeKeepsItsRecord(t *testing.T) {
	const key = "lww/d0"
	addr := events.DocAddress{Tenant: modelTenant, Collection: "lww", Doc: "d0"}
	hlc := events.HLC{Wall: 1}
	p := &events.Change{Tenant: modelTenant, Collection: "lww", Doc: "d0", Version: 2, Event: "e2", Client: "r1",
		Fields: events.Fields{"a": []byte("2")}, HLC: hlc, AsWritten: true}
	e := &events.Event{ID: "e3", Tenant: modelTenant, Collection: "lww", Doc: "d0", Op: events.OpPatch,
		Fields: events.Fields{"b": []byte("5")}, BaseVersion: 1, Client: "r0", HLC: events.HLC{Wall: 2}}
	// The copy the reseed published: the state e made, Settled nil.
	c := &events.Change{Tenant: modelTenant, Collection: "lww", Doc: "d0", Version: 3, Event: "e3", Client: "r0",
		Fields: events.Fields{"a": []byte("2"), "b": []byte("5")}, HLC: e.HLC}
	record := projection.ConflictRecord{Address: addr, Conflict: events.Conflict{ID: "e3", Policy: events.PolicyLWW,
		Status: events.ConflictOverwritten, Lost: []string{"b"}}}

	for _, tc := range []struct {
		name    string
		records []projection.ConflictRecord
		wantErr bool
	}{
		{name: "recorded in the view's history", records: []projection.ConflictRecord{record}},
		{name: "recorded nowhere", wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ev := &modelEvidence{
				seen:    []modelSeen{{Seq: 1, Change: p}, {Seq: 2, Change: c}},
				events:  map[string][]*events.Event{"e3": {e}},
				records: tc.records,
			}
			ev.checkSilentLoss(map[string]modelEntry{})
			got := strings.Join(ev.violations, "\n")
			if tc.wantErr != (len(ev.violations) > 0) || (tc.wantErr && !strings.Contains(got, key)) {
				t.Errorf("violations %q, want some naming %s: %v", got, key, tc.wantErr)
			}
		})
	}
}
