package gateway

import (
	"sync/atomic"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/producer"
)

// stamping is the JetStream a writing identity's log publishes through:
// every event it publishes carries the identity's writer groups
// (events.HeaderWriterGroups) as its last authenticated request named them
// (writerLog.groups), replacing any other value. Before the first such
// request since the log opened (an event left unpublished by a restart,
// published before its identity writes again) the header is left unset,
// which write rules read as a writer of no group: the write may be
// refused, never allowed by a group it does not have.
type stamping struct {
	producer.JetStream
	groups *atomic.Pointer[string]
}

func (s stamping) PublishMsgAsync(m *nats.Msg, opts ...jetstream.PublishOpt) (jetstream.PubAckFuture, error) {
	if v := s.groups.Load(); v != nil {
		if m.Header == nil {
			m.Header = nats.Header{}
		}
		m.Header.Set(events.HeaderWriterGroups, *v)
	}
	return s.JetStream.PublishMsgAsync(m, opts...)
}
