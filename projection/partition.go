package projection

import (
	"fmt"
	"hash/fnv"
	"strings"

	"github.com/ebbsync/ebb/events"
)

// Partition names the share of EVENTS one projector applies: the events
// of the documents that hash to Index out of Count. Every document is in
// exactly one partition, so its events keep their stream order
// (invariant 5); a writer's events may span partitions, so each
// partition keeps its own high-water marks (see PartitionedStore). The
// zero value, like Count 1, is the whole stream: the single projector.
type Partition struct {
	Index int // 0 <= Index < Count
	Count int // how many partitions; 0 or 1: one, the whole stream
}

// whole reports whether p is the whole stream.
func (p Partition) whole() bool { return p.Count <= 1 }

func (p Partition) String() string {
	if p.whole() {
		return "all"
	}
	return fmt.Sprintf("%d/%d", p.Index, p.Count)
}

func (p Partition) validate() error {
	switch {
	case p.Count < 0:
		return fmt.Errorf("%w: Partition.Count %d is negative", ErrInvalidConfig, p.Count)
	case p.Count > MaxPartitions:
		return fmt.Errorf("%w: Partition.Count %d is above %d", ErrInvalidConfig, p.Count, MaxPartitions)
	case p.Count > 1 && (p.Index < 0 || p.Index >= p.Count):
		return fmt.Errorf("%w: Partition.Index %d is not in [0, %d)", ErrInvalidConfig, p.Index, p.Count)
	case p.Count <= 1 && p.Index != 0:
		return fmt.Errorf("%w: Partition.Index %d without a Count", ErrInvalidConfig, p.Index)
	}
	return nil
}

// MaxPartitions bounds Partition.Count: each partition's consumer reads
// the whole of EVENTS (see doc.go), so many partitions cost reads.
const MaxPartitions = 256

// PartitionOfSubject returns the partition, of count, that an EVENTS
// subject (ebb.evt.<tenant>.<client>.<collection>.<doc>) belongs to: a
// hash (FNV-1a) of its tenant, collection and document tokens, the
// writing client left out, so all of a document's events, whoever writes
// them, are in one partition. A subject of another shape (garbage, which
// the projector dead-letters) belongs to partition 0. The mapping is
// part of the view's layout: changing count needs a new view.
func PartitionOfSubject(subject string, count int) int {
	if count <= 1 {
		return 0
	}
	t := strings.Split(subject, ".")
	if len(t) != 6 || t[0]+"."+t[1] != events.EventsPrefix {
		return 0
	}
	return partitionOf(t[2], t[4], t[5], count)
}

// PartitionOfDoc returns the partition, of count, of the document at a
// (the partition of its events' subjects).
func PartitionOfDoc(a events.DocAddress, count int) int {
	if count <= 1 {
		return 0
	}
	return partitionOf(events.EncodeToken(a.Tenant), events.EncodeToken(a.Collection), events.EncodeToken(a.Doc), count)
}

func partitionOf(tenant, collection, doc string, count int) int {
	h := fnv.New32a()
	h.Write([]byte(tenant))
	h.Write([]byte{0})
	h.Write([]byte(collection))
	h.Write([]byte{0})
	h.Write([]byte(doc))
	return int(h.Sum32() % uint32(count))
}
