package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/events"
)

// consumerCreateSubject is where, in StreamAccount, the consumer create
// requests of users arrive when a responder serves them:
// <consumerCreateSubject>.<user token>.<tenant token>.<stream>.<name>[.<filter>]:
// the user's name and tenant (events.EncodeToken), written by the import
// mapping, then the same tokens as after $JS.API.CONSUMER.CREATE (with
// no filter for a create whose filters travel in the body).
const consumerCreateSubject = "_ebb.api.consumer-create"

// Bounds a user's consumer must keep (see serveConsumerCreate).
const (
	MinAckWait           = time.Second
	MinInactiveThreshold = time.Second
)

// OwnerMetadata is the consumer metadata key the consumer create responder
// sets to the creating user's name; the per-user consumer count reads it.
const OwnerMetadata = "ebb_user"

// consumerRecount is how old the per-user consumer counts may get before
// a create request counts again (consumers that expired are then gone).
const consumerRecount = 5 * time.Second

// consumerRequest is the part of a consumer create request the responder
// checks; the request itself is passed on with only its owner set
// (withOwner), and checked as it is passed on (checkConsumerRequest).
type consumerRequest struct {
	Config struct {
		DeliverSubject    string        `json:"deliver_subject"`
		AckWait           time.Duration `json:"ack_wait"`
		InactiveThreshold time.Duration `json:"inactive_threshold"`
	} `json:"config"`
}

// consumerCounter counts the consumers each user holds on CHANGES and
// RECEIPTS, by their OwnerMetadata: listed at most every consumerRecount,
// plus the ones created since.
type consumerCounter struct {
	js  jetstream.JetStream
	max int

	mu     sync.Mutex
	counts map[string]int
	at     time.Time
}

// admit refuses, with the description to answer, a new consumer of user
// (a name) if it holds max already.
func (c *consumerCounter) admit(ctx context.Context, user string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.counts == nil || time.Since(c.at) > consumerRecount {
		counts := map[string]int{}
		for _, stream := range []string{events.StreamChanges, events.StreamReceipts} {
			s, err := c.js.Stream(ctx, stream)
			if errors.Is(err, jetstream.ErrStreamNotFound) {
				continue
			}
			if err != nil {
				return fmt.Errorf("count consumers: %w", err)
			}
			l := s.ListConsumers(ctx)
			for info := range l.Info() {
				if owner := info.Config.Metadata[OwnerMetadata]; owner != "" {
					counts[owner]++
				}
			}
			if err := l.Err(); err != nil {
				return fmt.Errorf("count consumers: %w", err)
			}
		}
		c.counts, c.at = counts, time.Now()
	}
	if n := c.counts[user]; n >= c.max {
		return fmt.Errorf("consumer quota: user %q holds %d consumers on %s and %s, its limit is %d (max_consumers_per_user); delete one or let one expire",
			user, n, events.StreamChanges, events.StreamReceipts, c.max)
	}
	return nil
}

func (c *consumerCounter) created(user string) {
	c.mu.Lock()
	if c.counts != nil {
		c.counts[user]++
	}
	c.mu.Unlock()
}

// serveConsumerCreate answers the consumer create requests of users on
// nc, a connection in StreamAccount, for a configuration made with a
// responder (NATSUsers; see NATSConfigWith). The subject (user, tenant,
// stream, name, filter if any) is the one the user's import allowed; the
// responder refuses, with a JetStream API error, a request whose filter
// subjects (the subject's, the config's filter_subject and every one of
// its filter_subjects) are not all within the user's scope, or that has
// none (code 403, naming the filter: checkFilters), a request any of whose JSON objects
// holds two keys equal under encoding/json's case folding (unambiguousJSON:
// JetStream and the check could each read another of the two), a config
// or metadata that is no JSON object, a push consumer (a deliver subject
// is a subject JetStream publishes the consumer's messages to, in
// StreamAccount: it would write one tenant's changes into another's
// streams), an ack wait below MinAckWait, an inactive threshold below
// MinInactiveThreshold, and a new consumer of a user that holds
// maxPerUser (Limits.MaxConsumersPerUser) on CHANGES and RECEIPTS
// already (code 429). Anything else is passed to JetStream with the
// user's name as OwnerMetadata; the checks read the very bytes JetStream
// gets. The subscription lives as long as nc or
// until it is unsubscribed.
//
// With a non-nil ruled (APIConfig.Rules), a create on CHANGES by a user
// ruled refuses is refused as in filtered reads mode (403), whatever the
// subject says: the accounts the server runs may have been written
// without filtered reads.
func serveConsumerCreate(nc *nats.Conn, js jetstream.JetStream, maxPerUser int, ruled func(user string) bool) (*nats.Subscription, error) {
	count := &consumerCounter{js: js, max: maxPerUser}
	sub, err := nc.QueueSubscribe(consumerCreateSubject+".>", "ebb-api", guarded("consumer create", func(m *nats.Msg) {
		tok := strings.SplitN(strings.TrimPrefix(m.Subject, consumerCreateSubject+"."), ".", 5)
		if len(tok) < 4 {
			_ = m.Respond(consumerError(400, "consumer create: malformed request subject"))
			return
		}
		user, uerr := events.DecodeToken(tok[0])
		tenant, terr := events.DecodeToken(tok[1])
		if uerr != nil || terr != nil {
			_ = m.Respond(consumerError(400, "consumer create: no user in the request subject"))
			return
		}
		stream, name, subjectFilter := tok[2], tok[3], ""
		if len(tok) == 5 {
			subjectFilter = tok[4]
		}
		rest := strings.Join(tok[2:], ".")
		// The bytes checked are the bytes JetStream gets: the request with
		// its owner set, refused if any of its objects holds a key twice
		// under encoding/json's case folding (the responder and JetStream
		// could each take another of the two).
		if err := unambiguousJSON(m.Data); err != nil {
			_ = m.Respond(consumerError(400, "consumer create: "+err.Error()))
			return
		}
		data, err := withOwner(m.Data, user)
		if err != nil {
			_ = m.Respond(consumerError(400, "consumer create: unreadable request: "+err.Error()))
			return
		}
		if desc := checkConsumerRequest(data); desc != "" {
			_ = m.Respond(consumerError(400, desc))
			return
		}
		if stream == ruledChanges || (stream == events.StreamChanges && ruled != nil && ruled(user)) {
			_ = m.Respond(consumerError(403, "consumer create: "+filteredReadsRefusal))
			return
		}
		scope := fetchScope(user, tenant, stream)
		if scope == nil {
			_ = m.Respond(consumerError(403, fmt.Sprintf("consumer create: no consumers on %s", stream)))
			return
		}
		if code, desc := checkFilters(data, subjectFilter, scope); code != 0 {
			_ = m.Respond(consumerError(code, desc))
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), streamInfoTimeout)
		defer cancel()
		if code, desc := takeover(ctx, js, user, stream, name, scope); code != 0 {
			_ = m.Respond(consumerError(code, desc))
			return
		}
		if err := count.admit(ctx, user); err != nil {
			_ = m.Respond(consumerError(429, err.Error()))
			return
		}
		resp, err := nc.Request(jsAPI+"CONSUMER.CREATE."+rest, data, streamInfoTimeout)
		if err != nil {
			_ = m.Respond(consumerError(503, "consumer create: "+err.Error()))
			return
		}
		var answer struct {
			Error json.RawMessage `json:"error"`
		}
		if json.Unmarshal(resp.Data, &answer) == nil && answer.Error == nil {
			count.created(user)
		}
		_ = m.Respond(resp.Data)
	}))
	if err != nil {
		return nil, fmt.Errorf("serve consumer create: %w", err)
	}
	return sub, nil
}

// takeover refuses (with an API error code and description) a create
// that would update a consumer someone else made: JetStream's create is
// "create or update", and an update would make the asker its owner (and
// give it the fetches the fetch responder allows an owner), or change the
// filter under a pull another user has parked on it. scope is what user
// may read on stream (fetchScope). An existing consumer may be updated by
// its owner, or, when it has no owner (made by an admin or by an ebb
// before owners were recorded), by a user whose scope holds every one of
// its filters. Returns 0 when the create may go.
func takeover(ctx context.Context, js jetstream.JetStream, user, stream, name string, scope []string) (int, string) {
	c, err := js.Consumer(ctx, stream, name)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return 0, ""
	}
	if err != nil {
		return 503, fmt.Sprintf("consumer create: look up consumer %s on %s: %v", name, stream, err)
	}
	cfg := c.CachedInfo().Config
	switch owner := cfg.Metadata[OwnerMetadata]; {
	case owner == user:
		return 0, ""
	case owner != "":
		return 403, fmt.Sprintf("consumer create: consumer %s on %s exists and belongs to another user; choose another name", name, stream)
	}
	filters := cfg.FilterSubjects
	if cfg.FilterSubject != "" {
		filters = append(filters, cfg.FilterSubject)
	}
	for _, f := range filters {
		if !withinAny(f, scope) {
			return 403, fmt.Sprintf("consumer create: consumer %s on %s exists with a filter outside your scope; choose another name", name, stream)
		}
	}
	if len(filters) == 0 {
		return 403, fmt.Sprintf("consumer create: consumer %s on %s exists and reads the whole stream; choose another name", name, stream)
	}
	return 0, ""
}

// consumerFilters is the part of a consumer create request that says
// what the consumer reads.
type consumerFilters struct {
	Config struct {
		FilterSubject  string   `json:"filter_subject"`
		FilterSubjects []string `json:"filter_subjects"`
	} `json:"config"`
}

// checkFilters refuses (with an API error code and description naming
// the filter) a consumer create request data whose filter subjects, the
// one in the request subject (subjectFilter, "" if none) and every one
// of the config's filter_subject and filter_subjects, are not all within
// scope, or that has none (it would read the whole stream). data must be
// unambiguousJSON: encoding/json then reads the same filters JetStream
// does. Returns 0 when they are.
func checkFilters(data []byte, subjectFilter string, scope []string) (int, string) {
	var req consumerFilters
	if err := json.Unmarshal(data, &req); err != nil {
		return 400, "consumer create: unreadable request: " + err.Error()
	}
	var filters []string
	if subjectFilter != "" {
		filters = append(filters, subjectFilter)
	}
	if f := req.Config.FilterSubject; f != "" {
		filters = append(filters, f)
	}
	filters = append(filters, req.Config.FilterSubjects...)
	if len(filters) == 0 {
		return 403, "consumer create: no filter subject: the consumer would read the whole stream; name your scope (" + strings.Join(scope, ", ") + ")"
	}
	for _, f := range filters {
		if !withinAny(f, scope) {
			return 403, fmt.Sprintf("consumer create: filter subject %q is outside your scope (%s)", f, strings.Join(scope, ", "))
		}
	}
	return 0, ""
}

// checkConsumerRequest returns why the consumer create request data is
// refused, or "": it must be unambiguous JSON (unambiguousJSON) and ask
// for a pull consumer whose ack wait and inactive threshold, if set, are
// at least MinAckWait and MinInactiveThreshold.
func checkConsumerRequest(data []byte) string {
	if err := unambiguousJSON(data); err != nil {
		return "consumer create: " + err.Error()
	}
	var req consumerRequest
	if err := json.Unmarshal(data, &req); err != nil {
		return "consumer create: unreadable request: " + err.Error()
	}
	c := req.Config
	switch {
	case c.DeliverSubject != "":
		return "consumer create: push consumers (deliver_subject) are not allowed; use a pull consumer"
	case c.AckWait > 0 && c.AckWait < MinAckWait:
		return fmt.Sprintf("consumer create: ack_wait %s is below %s", c.AckWait, MinAckWait)
	case c.InactiveThreshold > 0 && c.InactiveThreshold < MinInactiveThreshold:
		return fmt.Sprintf("consumer create: inactive_threshold %s is below %s", c.InactiveThreshold, MinInactiveThreshold)
	}
	return ""
}

// withOwner returns the consumer create request data with the config's
// metadata OwnerMetadata set to user, whatever the request said. The
// config and its metadata are found under any spelling encoding/json
// would match ("Config", "METADATA") and written back as "config" and
// "metadata"; data must be unambiguousJSON, so there is one of each. A
// config or metadata that is present but no JSON object (null included)
// is an error.
func withOwner(data []byte, user string) ([]byte, error) {
	var req map[string]json.RawMessage
	if err := json.Unmarshal(data, &req); err != nil {
		return nil, err
	}
	if req == nil {
		return nil, errors.New("the request is no JSON object")
	}
	cfg := map[string]json.RawMessage{}
	if k, raw, ok := foldLookup(req, "config"); ok {
		if err := json.Unmarshal(raw, &cfg); err != nil || cfg == nil {
			return nil, fmt.Errorf("config: want a JSON object, got %.40s", raw)
		}
		delete(req, k)
	}
	md := map[string]string{}
	if k, raw, ok := foldLookup(cfg, "metadata"); ok {
		if err := json.Unmarshal(raw, &md); err != nil || md == nil {
			return nil, fmt.Errorf("config metadata: want a JSON object of strings, got %.40s", raw)
		}
		delete(cfg, k)
	}
	md[OwnerMetadata] = user
	var err error
	if cfg["metadata"], err = json.Marshal(md); err != nil {
		return nil, err
	}
	if req["config"], err = json.Marshal(cfg); err != nil {
		return nil, err
	}
	return json.Marshal(req)
}

// foldLookup returns the key of m that encoding/json would match to name
// (equal under its case folding) and its value.
func foldLookup(m map[string]json.RawMessage, name string) (string, json.RawMessage, bool) {
	f := foldKey(name)
	for k, v := range m {
		if foldKey(k) == f {
			return k, v, true
		}
	}
	return "", nil, false
}

func consumerError(code int, desc string) []byte {
	b, _ := json.Marshal(map[string]any{"type": "io.nats.jetstream.api.v1.consumer_create_response",
		"error": map[string]any{"code": code, "description": desc}})
	return b
}
