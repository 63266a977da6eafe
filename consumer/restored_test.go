package consumer

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

func TestCursorReset_RestoredStream(t *testing.T) {
	orig := time.Date(2026, 12, 1, 10, 0, 0, 123456789, time.UTC)
	restored := orig.Add(time.Hour)
	info := func(last uint64, md map[string]string) *jetstream.StreamInfo {
		return &jetstream.StreamInfo{Config: jetstream.StreamConfig{Metadata: md}, State: jetstream.StreamState{LastSeq: last}}
	}
	from := map[string]string{MetaRestoredCreated: orig.Format(time.RFC3339Nano), MetaRestoredLastSeq: "35"}
	tests := []struct {
		name string
		info *jetstream.StreamInfo
		c    cursor
		want bool
	}{
		{"same stream", info(40, nil), cursor{Seq: 30, Created: orig.UnixNano()}, false},
		{"nothing read yet", info(0, nil), cursor{}, false},
		{"recreated", info(40, nil), cursor{Seq: 30, Created: orig.UnixNano()}, true},
		{"ends below the cursor", info(20, nil), cursor{Seq: 30, Created: orig.UnixNano()}, true},
		{"restored, cursor within the backup", info(40, from), cursor{Seq: 35, Created: orig.UnixNano()}, false},
		{"restored, cursor past the backup", info(40, from), cursor{Seq: 36, Created: orig.UnixNano()}, true},
		{"restored from another stream", info(40, from), cursor{Seq: 30, Created: orig.Add(time.Nanosecond).UnixNano()}, true},
		{"restored, no last sequence", info(40, map[string]string{MetaRestoredCreated: from[MetaRestoredCreated]}), cursor{Seq: 30, Created: orig.UnixNano()}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			created := restored.UnixNano()
			if tt.name == "same stream" {
				created = orig.UnixNano()
			}
			if got := cursorReset(tt.info, created, tt.c); got != tt.want {
				t.Fatalf("cursorReset = %v, want %v", got, tt.want)
			}
		})
	}
}
