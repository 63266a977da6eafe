package auth

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/events"
)

// nextSubject is where, in StreamAccount, the fetch (MSG.NEXT) requests
// of users arrive when a responder serves them:
// <nextSubject>.<user token>.<tenant token>.<stream>.<consumer>: the
// user's name and tenant (events.EncodeToken), written by the import
// mapping (importsOf), then the tokens after $JS.API.CONSUMER.MSG.NEXT.
const nextSubject = "_ebb.api.next"

// Status answers of the fetch responder, as JetStream answers a fetch: a
// message with no payload and these Status and Description headers, which
// the jetstream client turns into an error (a JSON body would be taken
// for a message).
const (
	nextStatusRefused = "403" // the consumer is not the asker's
	nextStatusGone    = "409" // no such consumer, said as JetStream says a deleted one
)

// nextDeleted is JetStream's own description of a fetch from a consumer
// that is gone; the jetstream client maps it to ErrConsumerDeleted and an
// ordered consumer then makes a new one.
const nextDeleted = "Consumer Deleted"

// serveNext answers the fetch requests of users on nc, a connection in
// StreamAccount, for a configuration made with a responder (NATSUsers;
// see NATSConfigWith). For each request it reads the consumer's info and
// forwards the request, unchanged and with the asker's (mapped) reply
// subject, to JetStream, whose messages then stream back into the
// asker's account, only if the consumer is the asker's: its OwnerMetadata
// is the asker's name, or it has none (made by an admin or ebb itself),
// and in both cases every filter subject lies within the asker's scope
// (its tenant's changes on CHANGES, its own receipts on RECEIPTS; no
// filter is the whole stream). A consumer of someone else, or outside
// the scope, is refused with status nextStatusRefused naming it; a
// consumer that does not exist with nextStatusGone. Neither is
// forwarded. With a non-nil ruled (APIConfig.Rules), a fetch on CHANGES
// by a user ruled refuses is refused as in filtered reads mode, whatever
// the subject says. The subscription lives as long as nc or until it is
// unsubscribed; its handler runs on nc's delivery goroutine.
func serveNext(nc *nats.Conn, js jetstream.JetStream, ruled func(user string) bool) (*nats.Subscription, error) {
	sub, err := nc.QueueSubscribe(nextSubject+".>", "ebb-api", guarded("fetch", func(m *nats.Msg) {
		rest := strings.TrimPrefix(m.Subject, nextSubject+".")
		userTok, _, _ := strings.Cut(rest, ".")
		user, err := events.DecodeToken(userTok)
		if err != nil {
			return // not a subject the imports make
		}
		inbox, ok := strings.CutPrefix(m.Reply, InboxPrefix(user)+".")
		if !ok || inbox == "" {
			return // nowhere in the user's inbox to stream to; nothing can reach it
		}
		reply := deliverPrefix + "." + userTok + "." + inbox
		ctx, cancel := context.WithTimeout(context.Background(), streamInfoTimeout)
		defer cancel()
		status, desc, forward := nextDecision(ctx, js, rest, ruled)
		if status != "" {
			refusal := nats.NewMsg(reply)
			refusal.Header.Set("Status", status)
			refusal.Header.Set("Description", desc)
			_ = nc.PublishMsg(refusal)
			return
		}
		_ = nc.PublishMsg(&nats.Msg{Subject: forward, Reply: reply, Header: m.Header, Data: m.Data})
	}))
	if err != nil {
		return nil, fmt.Errorf("serve fetch: %w", err)
	}
	return sub, nil
}

// nextDecision returns the JetStream subject to forward a fetch to, for
// rest (<user>.<tenant>.<stream>.<consumer> tokens), or the status and
// description of its refusal.
func nextDecision(ctx context.Context, js jetstream.JetStream, rest string, ruled func(user string) bool) (status, desc, forward string) {
	tok := strings.Split(rest, ".")
	if len(tok) != 4 {
		return nextStatusRefused, "ebb: fetch: malformed request subject", ""
	}
	user, uerr := events.DecodeToken(tok[0])
	tenant, terr := events.DecodeToken(tok[1])
	stream, name := tok[2], tok[3]
	if uerr != nil || terr != nil {
		return nextStatusRefused, "ebb: fetch: no user in the request subject", ""
	}
	if stream == ruledChanges || (stream == events.StreamChanges && ruled != nil && ruled(user)) {
		return nextStatusRefused, "ebb: fetch: " + filteredReadsRefusal, ""
	}
	scope := fetchScope(user, tenant, stream)
	if scope == nil {
		return nextStatusRefused, fmt.Sprintf("ebb: fetch: stream %s is not readable", stream), ""
	}
	c, err := js.Consumer(ctx, stream, name)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nextStatusGone, nextDeleted, ""
	}
	if err != nil {
		return "503", fmt.Sprintf("ebb: fetch: consumer %s on %s: %v", name, stream, err), ""
	}
	cfg := c.CachedInfo().Config
	refused := func(why string) (string, string, string) {
		return nextStatusRefused, fmt.Sprintf("ebb: fetch: consumer %s on %s is not yours: %s", name, stream, why), ""
	}
	if owner := cfg.Metadata[OwnerMetadata]; owner != "" && owner != user {
		return refused("another user made it")
	}
	filters := cfg.FilterSubjects
	if cfg.FilterSubject != "" {
		filters = append(filters, cfg.FilterSubject)
	}
	if len(filters) == 0 {
		return refused("it reads the whole stream")
	}
	for _, f := range filters {
		if !withinAny(f, scope) {
			return refused("its filter " + f + " is outside your scope")
		}
	}
	return "", "", jsAPI + "CONSUMER.MSG.NEXT." + stream + "." + name
}

// fetchScope returns the subjects a user of tenant may read on stream
// (the filters its consumer create imports allow), nil for a stream it
// may not read.
func fetchScope(user, tenant, stream string) []string {
	switch stream {
	case events.StreamChanges:
		return []string{events.TenantChanges(tenant)}
	case events.StreamReceipts:
		r := events.ReceiptSubject(tenant, user)
		return []string{r, r + ".>"}
	}
	return nil
}

func withinAny(filter string, scope []string) bool {
	for _, s := range scope {
		if subjectWithin(filter, s) {
			return true
		}
	}
	return false
}

// subjectWithin reports whether every subject filter matches also
// matches scope (both may hold the wildcards * and >).
func subjectWithin(filter, scope string) bool {
	f, s := strings.Split(filter, "."), strings.Split(scope, ".")
	for i, st := range s {
		if i >= len(f) {
			return false
		}
		switch {
		case st == ">":
			return true
		case f[i] == ">":
			return false
		case st == "*":
			continue
		case f[i] != st:
			return false
		}
	}
	return len(f) == len(s)
}
