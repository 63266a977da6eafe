package auth

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// consumerCreateSubject is where, in StreamAccount, the consumer create
// requests of users arrive when a responder serves them:
// <consumerCreateSubject>.<stream>.<name>.<filter>, the same tokens as
// after $JS.API.CONSUMER.CREATE.
const consumerCreateSubject = "_ebb.api.consumer-create"

// Bounds a user's consumer must keep (see ServeConsumerCreate).
const (
	MinAckWait           = time.Second
	MinInactiveThreshold = time.Second
)

// consumerRequest is the part of a consumer create request the responder
// checks; the request itself is passed on unchanged.
type consumerRequest struct {
	Config struct {
		DeliverSubject    string        `json:"deliver_subject"`
		AckWait           time.Duration `json:"ack_wait"`
		InactiveThreshold time.Duration `json:"inactive_threshold"`
	} `json:"config"`
}

// ServeConsumerCreate answers the consumer create requests of users on
// nc, a connection in StreamAccount, for a configuration made with a
// responder (NATSUsers; see NATSConfigWith). The subject (stream, name,
// filter) is the one the user's import allowed; the responder refuses,
// with a JetStream API error, a push consumer (a deliver subject is a
// subject JetStream publishes the consumer's messages to, in
// StreamAccount: it would write one tenant's changes into another's
// streams), an ack wait below MinAckWait and an inactive threshold below
// MinInactiveThreshold; anything else is passed to JetStream as it came.
// The subscription lives as long as nc or until it is unsubscribed.
func ServeConsumerCreate(nc *nats.Conn) (*nats.Subscription, error) {
	sub, err := nc.Subscribe(consumerCreateSubject+".>", func(m *nats.Msg) {
		var req consumerRequest
		if err := json.Unmarshal(m.Data, &req); err != nil {
			_ = m.Respond(consumerError(400, "consumer create: unreadable request: "+err.Error()))
			return
		}
		c := req.Config
		switch {
		case c.DeliverSubject != "":
			_ = m.Respond(consumerError(400, "consumer create: push consumers (deliver_subject) are not allowed; use a pull consumer"))
			return
		case c.AckWait > 0 && c.AckWait < MinAckWait:
			_ = m.Respond(consumerError(400, fmt.Sprintf("consumer create: ack_wait %s is below %s", c.AckWait, MinAckWait)))
			return
		case c.InactiveThreshold > 0 && c.InactiveThreshold < MinInactiveThreshold:
			_ = m.Respond(consumerError(400, fmt.Sprintf("consumer create: inactive_threshold %s is below %s", c.InactiveThreshold, MinInactiveThreshold)))
			return
		}
		api := jsAPI + "CONSUMER.CREATE." + strings.TrimPrefix(m.Subject, consumerCreateSubject+".")
		resp, err := nc.Request(api, m.Data, streamInfoTimeout)
		if err != nil {
			_ = m.Respond(consumerError(503, "consumer create: "+err.Error()))
			return
		}
		_ = m.Respond(resp.Data)
	})
	if err != nil {
		return nil, fmt.Errorf("serve consumer create: %w", err)
	}
	return sub, nil
}

func consumerError(code int, desc string) []byte {
	b, _ := json.Marshal(map[string]any{"type": "io.nats.jetstream.api.v1.consumer_create_response",
		"error": map[string]any{"code": code, "description": desc}})
	return b
}
