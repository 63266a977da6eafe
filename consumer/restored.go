package consumer

import (
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Stream metadata `ebb restore` sets on a stream it restored from a
// backup. A restore keeps every message at its sequence, but the server
// gives the stream a new creation time, which a cursor would take for a
// reset: these say which stream, up to which sequence, the restored one
// repeats exactly.
const (
	// MetaRestoredCreated is the creation time (RFC 3339, nanoseconds) of
	// the stream the backup was taken of.
	MetaRestoredCreated = "ebb.restored_from_created"
	// MetaRestoredLastSeq is the last sequence the backup held.
	MetaRestoredLastSeq = "ebb.restored_last_seq"
)

// cursorReset reports whether a stream (info, created its creation time
// in Unix ns) is not the one the cursor c was read from, or ends below
// it: the follower must start over. A stream restored from a backup of
// the cursor's stream (MetaRestoredCreated) holds the same messages up to
// MetaRestoredLastSeq, so a cursor at or below that sequence stays valid;
// one beyond it read messages the backup does not hold, and starts over.
func cursorReset(info *jetstream.StreamInfo, created int64, c cursor) bool {
	if c.Seq == 0 {
		return false
	}
	if info.State.LastSeq < c.Seq {
		return true
	}
	return c.Created != created && !restoredFrom(info, c)
}

// restoredFrom reports whether the stream was restored from a backup of
// the stream c was read from, holding c's sequence.
func restoredFrom(info *jetstream.StreamInfo, c cursor) bool {
	md := info.Config.Metadata
	from, err := time.Parse(time.RFC3339Nano, md[MetaRestoredCreated])
	if err != nil || createdNano(from) != c.Created {
		return false
	}
	last, err := strconv.ParseUint(md[MetaRestoredLastSeq], 10, 64)
	return err == nil && c.Seq <= last
}
