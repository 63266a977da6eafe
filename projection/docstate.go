package projection

import (
	"encoding/json"
	"slices"

	"github.com/ebbsync/ebb/events"
)

// storedDoc is how both view stores encode a document state (BoltStore's
// bucketDocs values, PostgresStore's docs.state): the change the state
// makes (Settled nil) with, beside its members, the state's cumulative
// audience (Doc.Audience) under "ebb_audience", which the change on the
// wire never carries. A state written before the audience was kept reads
// with none.
type storedDoc struct {
	*events.Change
	Audience []string `json:"ebb_audience,omitempty"`
	// Kept is Doc.Kept: a pointer, so that an empty map (kept, none of
	// the fields) is told from nothing kept.
	Kept *events.Fields `json:"ebb_kept,omitempty"`
}

// encodeDocState returns the stored form of d: the bytes json.Marshal
// writes for its storedDoc (appendDocState, jsonenc.go; jsonenc_test.go
// checks them).
func encodeDocState(d *Doc) ([]byte, error) {
	return appendDocState(make([]byte, 0, 512), d)
}

// decodeDocState reads a state written by encodeDocState (or, before the
// audience was kept, by events.EncodeChange).
func decodeDocState(state []byte) (Doc, error) {
	var s storedDoc
	if err := json.Unmarshal(state, &s); err != nil {
		return Doc{}, err
	}
	if s.Change == nil {
		s.Change = &events.Change{}
	}
	d := DocFromChange(s.Change)
	d.Audience = slices.Clone(s.Audience)
	if s.Kept != nil {
		d.Kept = *s.Kept
		if d.Kept == nil {
			d.Kept = events.Fields{}
		}
	}
	return d, nil
}
