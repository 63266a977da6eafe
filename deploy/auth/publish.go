package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/events"
)

// publishSubject is where, in StreamAccount, the events of users arrive
// when a responder serves them: <publishSubject>.<event subject>.
const publishSubject = "_ebb.api.publish"

// pendingTTL is how long the publish responder waits for JetStream's
// answer to an event it forwarded before it forgets the client's reply
// subject (the client has given up by then: nats.go waits 5 s by default).
const pendingTTL = time.Minute

// publishResponder forwards the events of users to JetStream (see
// servePublish). nats-server does not let a client publish with a reply
// subject of another's request (_R_.…), so each forwarded event gets a
// reply subject below the responder's own inbox and the answer is passed
// back by hand.
type publishResponder struct {
	nc    *nats.Conn
	m     *Meter
	dir   Directory // nil: no writer groups
	inbox string    // <inbox>.<n> are the forwarded events' reply subjects

	mu      sync.Mutex
	n       uint64
	pending map[string]pendingReply // token -> the client's reply
}

type pendingReply struct {
	reply string
	at    time.Time
}

// servePublish forwards the events of users (the configuration of
// NATSUsers and NATSConfigWith(true) routes every client's
// ebb.evt.<tenant>.<user>.> here) to JetStream on nc, a connection in
// StreamAccount, if m allows them: the message goes on to its event
// subject with its headers and payload, and JetStream's answer (the
// PubAck, or an error) goes back to the client as it came. An event over
// a quota is not forwarded; its answer is a PubAck carrying a JetStream
// API error (code 429 with err_code ErrCodePublishRate, or 507 with
// ErrCodeTenantStorage) whose description is the *QuotaError's text. A
// queue group spreads the events over every ebb server running the
// responder. It returns the two subscriptions and a sweep to run
// periodically until they end.
func servePublish(nc *nats.Conn, m *Meter, dir Directory) ([]*nats.Subscription, func(ctx context.Context), error) {
	p := &publishResponder{nc: nc, m: m, dir: dir, inbox: nc.NewRespInbox(), pending: map[string]pendingReply{}}
	answers, err := nc.Subscribe(p.inbox+".*", guarded("publish answer", p.answer))
	if err != nil {
		return nil, nil, fmt.Errorf("serve publish: %w", err)
	}
	requests, err := nc.QueueSubscribe(publishSubject+".>", "ebb-api", guarded("publish", p.forward))
	if err != nil {
		_ = answers.Unsubscribe()
		return nil, nil, fmt.Errorf("serve publish: %w", err)
	}
	return []*nats.Subscription{requests, answers}, p.sweep, nil
}

func (p *publishResponder) forward(msg *nats.Msg) {
	out := &nats.Msg{Subject: strings.TrimPrefix(msg.Subject, publishSubject+"."), Header: clientHeaders(msg.Header), Data: msg.Data}
	if out.Header == nil {
		out.Header = nats.Header{}
	}
	StampWriterGroups(out.Header, p.writerGroups(out.Subject))
	if err := p.m.AllowMsg(out); err != nil {
		if msg.Reply != "" {
			_ = msg.Respond(quotaRefusal(err))
		}
		return
	}
	if msg.Reply != "" {
		p.mu.Lock()
		p.n++
		tok := strconv.FormatUint(p.n, 36)
		p.pending[tok] = pendingReply{reply: msg.Reply, at: time.Now()}
		p.mu.Unlock()
		out.Reply = p.inbox + "." + tok
	}
	_ = p.nc.PublishMsg(out)
}

// writerGroups returns the groups of the writer of an event on subject
// (ebb.evt.<tenant>.<user>.<collection>.<doc>; the user's import wrote
// the tenant and user tokens): the Directory's, if it knows that user of
// that tenant, else none.
func (p *publishResponder) writerGroups(subject string) []string {
	if p.dir == nil {
		return nil
	}
	tok := strings.Split(subject, ".")
	if len(tok) < 4 {
		return nil
	}
	tenant, terr := events.DecodeToken(tok[2])
	user, uerr := events.DecodeToken(tok[3])
	if terr != nil || uerr != nil {
		return nil
	}
	usr, ok := p.dir.Identity(user)
	if !ok || usr.Tenant != tenant {
		return nil
	}
	return usr.Groups
}

// clientNATSHeaders are the only Nats-* headers a client's event keeps
// (by their canonical spelling): the dedupe id producer.Publisher and the
// gateway send, and JetStream's optimistic checks, which only make the
// publish fail. Nats-Expected-Last-Subject-Sequence-Subject is not among
// them: it checks a subject other than the event's, another tenant's too.
var clientNATSHeaders = map[string]bool{
	jetstream.MsgIDHeader:               true,
	jetstream.ExpectedStreamHeader:      true,
	jetstream.ExpectedLastSeqHeader:     true,
	jetstream.ExpectedLastSubjSeqHeader: true,
	jetstream.ExpectedLastMsgIDHeader:   true,
}

// clientHeaders returns h without the headers the server owns: every key
// that starts with "Nats-" in any letter case (JetStream's and
// nats-server's: Nats-Msg-Size, which a headers-only read appends and the
// storage measure reads, Nats-Rollup, Nats-TTL, Nats-Incr, Nats-Stream,
// ...), except clientNATSHeaders spelled as nats.go spells them. Other
// headers (trace context) are kept. h is not modified.
func clientHeaders(h nats.Header) nats.Header {
	if len(h) == 0 {
		return h
	}
	out := make(nats.Header, len(h))
	for k, vs := range h {
		if len(k) >= 5 && strings.EqualFold(k[:5], "nats-") && !clientNATSHeaders[k] {
			continue
		}
		out[k] = vs
	}
	return out
}

// answer passes JetStream's answer (a PubAck, an API error, or a status
// message such as no responders) back to the client that sent the event.
func (p *publishResponder) answer(msg *nats.Msg) {
	tok := msg.Subject[strings.LastIndexByte(msg.Subject, '.')+1:]
	p.mu.Lock()
	pr, ok := p.pending[tok]
	delete(p.pending, tok)
	p.mu.Unlock()
	if ok {
		_ = p.nc.PublishMsg(&nats.Msg{Subject: pr.reply, Header: msg.Header, Data: msg.Data})
	}
}

// sweep forgets, every pendingTTL, the replies JetStream never answered,
// until ctx ends.
func (p *publishResponder) sweep(ctx context.Context) {
	t := time.NewTicker(pendingTTL)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			p.mu.Lock()
			for tok, pr := range p.pending {
				if now.Sub(pr.at) > pendingTTL {
					delete(p.pending, tok)
				}
			}
			p.mu.Unlock()
		}
	}
}

// quotaRefusal is the PubAck refusing an event for err.
func quotaRefusal(err error) []byte {
	code, errCode := 400, 0
	switch {
	case errors.Is(err, ErrPublishRate):
		code, errCode = 429, ErrCodePublishRate
	case errors.Is(err, ErrTenantStorage):
		code, errCode = 507, ErrCodeTenantStorage
	}
	b, _ := json.Marshal(map[string]any{"type": "io.nats.jetstream.api.v1.pub_ack_response",
		"error": map[string]any{"code": code, "err_code": errCode, "description": err.Error()}})
	return b
}
