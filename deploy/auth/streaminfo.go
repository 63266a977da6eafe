package auth

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// streamInfoSubject is where, in StreamAccount, the stream info requests
// of users arrive when a StreamInfoResponder serves them:
// <streamInfoSubject>.<stream>.
const streamInfoSubject = "_ebb.api.stream-info"

// streamInfoTimeout bounds the responder's own request to JetStream.
const streamInfoTimeout = 5 * time.Second

// ServeStreamInfo answers the stream info requests of users (CHANGES and
// RECEIPTS) on nc, a connection in StreamAccount, for a configuration
// made with a responder (NATSUsers; see NATSConfigWith). It asks
// JetStream itself with an empty request, whatever the user sent, and
// drops the per-subject lists from the answer: a user's subjects_filter
// would otherwise list every tenant's subjects (login names in RECEIPTS,
// document ids in CHANGES). The subscription lives as long as nc or until
// it is unsubscribed; its handler runs on nc's delivery goroutine.
func ServeStreamInfo(nc *nats.Conn) (*nats.Subscription, error) {
	sub, err := nc.QueueSubscribe(streamInfoSubject+".*", "ebb-api", guarded("stream info", func(m *nats.Msg) {
		stream := m.Subject[strings.LastIndexByte(m.Subject, '.')+1:]
		resp, err := nc.Request("$JS.API.STREAM.INFO."+stream, nil, streamInfoTimeout)
		if err != nil {
			_ = m.Respond(apiError(503, "stream info: "+err.Error()))
			return
		}
		_ = m.Respond(withoutSubjects(resp.Data))
	}))
	if err != nil {
		return nil, fmt.Errorf("serve stream info: %w", err)
	}
	return sub, nil
}

// withoutSubjects removes state.subjects and state.deleted from a stream
// info response; anything it cannot parse becomes an API error.
func withoutSubjects(data []byte) []byte {
	var info map[string]json.RawMessage
	if err := json.Unmarshal(data, &info); err != nil {
		return apiError(500, "stream info: unreadable answer")
	}
	if raw, ok := info["state"]; ok {
		var state map[string]json.RawMessage
		if err := json.Unmarshal(raw, &state); err != nil {
			return apiError(500, "stream info: unreadable state")
		}
		delete(state, "subjects")
		delete(state, "deleted")
		info["state"], _ = json.Marshal(state)
	}
	out, _ := json.Marshal(info)
	return out
}

func apiError(code int, desc string) []byte {
	b, _ := json.Marshal(map[string]any{"type": "io.nats.jetstream.api.v1.stream_info_response",
		"error": map[string]any{"code": code, "description": desc}})
	return b
}
