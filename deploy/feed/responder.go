package feed

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/events"
)

// Subjects of the change responder. A client requests RequestSubject; the
// server's auth imports it into each client account, routed to the stream
// account as RequestSubject.<EncodeToken(user)>.<EncodeToken(tenant)> in
// filtered reads mode and as AllSubject.<user>.<tenant> without, so who
// asks is named by the server, never by the client, and a filtering
// responder and an unfiltered one never answer each other's requests. The
// responder serves ServeSubject (filtering) or AllServeSubject
// (Unfiltered) in QueueGroup.
const (
	RequestSubject  = "_ebb.api.changes"
	ServeSubject    = RequestSubject + ".>"
	AllSubject      = "_ebb.api.changes-all"
	AllServeSubject = AllSubject + ".>"
	QueueGroup      = "ebb-api"
)

// UserSubject returns the subject a request of user of tenant arrives on
// at a filtering responder.
func UserSubject(user, tenant string) string {
	return RequestSubject + "." + events.EncodeToken(user) + "." + events.EncodeToken(tenant)
}

// AllUserSubject returns the subject a request of user of tenant arrives
// on at an unfiltered responder.
func AllUserSubject(user, tenant string) string {
	return AllSubject + "." + events.EncodeToken(user) + "." + events.EncodeToken(tenant)
}

// Request is the JSON body of a change request. Collections empty: every
// collection of the tenant. Limit 0: the responder's MaxPage. Compact asks
// for the page in CompactFormat, with the device and sequence of the
// changes written by Client (the asker's client id) and of no others.
type Request struct {
	After       uint64   `json:"after"`
	Limit       int      `json:"limit,omitempty"`
	WaitMS      int64    `json:"wait_ms,omitempty"`
	Collections []string `json:"collections,omitempty"`
	Compact     bool     `json:"compact,omitempty"`
	Client      string   `json:"client,omitempty"`
	// Tenant names the tenant of a request on the bare RequestSubject,
	// which only a responder in Open mode serves; on a routed request the
	// subject names it and this is ignored.
	Tenant string `json:"tenant,omitempty"`
}

// ErrorReply is the JSON body of a refused request; Status is the HTTP
// status the gateway would answer (400, 403, 429, 500, 503).
type ErrorReply struct {
	Error  string `json:"error"`
	Status int    `json:"status"`
}

// Identities looks up a user of tenant at request time: its groups, and
// whether tenant has such a user (ok false: the request is refused 403).
type Identities func(tenant, user string) (groups []string, ok bool)

// ResponderConfig configures a Responder. Zero fields take the defaults
// noted.
type ResponderConfig struct {
	MaxPage int           // changes in one page; default 4000
	MaxWait time.Duration // longest long-poll; default 60s
	Timeout time.Duration // JetStream calls per request; default DefaultTimeout
	// MaxLongPolls and MaxLongPollsPerUser cap the long-polls served at
	// once in all and for one user; default 1024 and 16. One more is
	// refused with status 429.
	MaxLongPolls, MaxLongPollsPerUser int
	// MaxInFlight caps the requests without wait served at once; one more
	// is refused with status 503. Default 64.
	MaxInFlight int
	Logger      *slog.Logger // nil discards
	// Skipped, if set, is told of every change not served because it is
	// unreadable (see Source.Skipped).
	Skipped func(ctx context.Context, stream string, seq uint64, subject string, err error)
	// Unfiltered serves every change as stored, to every asker, without
	// the audience filter: a server without sync rules, whose users may
	// read their tenant's CHANGES directly anyway. Its pages say
	// Unfiltered.
	Unfiltered bool
	// Open also serves the bare RequestSubject, the tenant and the asker
	// named by the request's body (Tenant, Client): a server without
	// auth, where nothing routes a request or names who asks. It needs
	// Unfiltered: an asker a body names cannot be trusted with a filter;
	// and it refuses long-polls there (wait_ms), which a per-user cap
	// could not bound. Whoever may publish the bare subject reads any
	// tenant's changes: ebb confines nobody without its users file.
	Open bool
}

func (c *ResponderConfig) validate() error {
	if c.MaxPage < 0 || c.MaxWait < 0 || c.Timeout < 0 || c.MaxLongPolls < 0 || c.MaxLongPollsPerUser < 0 || c.MaxInFlight < 0 {
		return errors.New("feed responder config: limits must not be negative")
	}
	if c.MaxPage == 0 {
		c.MaxPage = 4000
	}
	if c.MaxWait == 0 {
		c.MaxWait = 60 * time.Second
	}
	if c.MaxLongPolls == 0 {
		c.MaxLongPolls = 1024
	}
	if c.MaxLongPollsPerUser == 0 {
		c.MaxLongPollsPerUser = 16
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = 64
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Open && !c.Unfiltered {
		return errors.New("feed responder config: Open needs Unfiltered (a request's body cannot vouch for who asks)")
	}
	return nil
}

// Responder answers change requests (ServeSubject) with the filtered page
// of the asking user: the same Page the HTTP pull answers, always through
// the audience filter (its askers are client users; services read CHANGES
// directly), each request in its own goroutine. Close stops it.
type Responder struct {
	nc        *nats.Conn
	cfg       ResponderConfig
	src       *Source
	ids       Identities
	log       *slog.Logger
	subs      []*nats.Subscription
	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	longPolls *LongPolls
	inFlight  chan struct{}
	closeOnce sync.Once
}

// Serve starts a Responder on nc, a connection in the account that holds
// the streams, reading through js. ids names each asking user's groups.
func Serve(nc *nats.Conn, js JetStream, ids Identities, cfg ResponderConfig) (*Responder, error) {
	var errs []error
	if nc == nil {
		errs = append(errs, errors.New("feed responder: nil connection"))
	}
	if js == nil {
		errs = append(errs, errors.New("feed responder: nil JetStream"))
	}
	if ids == nil {
		errs = append(errs, errors.New("feed responder: nil Identities"))
	}
	errs = append(errs, cfg.validate())
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &Responder{nc: nc, cfg: cfg, ids: ids, log: cfg.Logger.With("component", "feed.responder"),
		src: &Source{JetStream: js, Timeout: cfg.Timeout, Skipped: cfg.Skipped},
		ctx: ctx, cancel: cancel,
		longPolls: NewLongPolls(cfg.MaxLongPolls, cfg.MaxLongPollsPerUser),
		inFlight:  make(chan struct{}, cfg.MaxInFlight)}
	subjects := []string{ServeSubject}
	if cfg.Unfiltered {
		subjects = []string{AllServeSubject}
	}
	if cfg.Open {
		subjects = append(subjects, RequestSubject)
	}
	for _, subj := range subjects {
		sub, err := nc.QueueSubscribe(subj, QueueGroup, r.handle)
		if err != nil {
			r.unsubscribe()
			cancel()
			return nil, fmt.Errorf("feed responder: subscribe %s: %w", subj, err)
		}
		r.subs = append(r.subs, sub)
	}
	if err := nc.Flush(); err != nil {
		r.unsubscribe()
		cancel()
		return nil, fmt.Errorf("feed responder: subscribe %s: %w", strings.Join(subjects, ", "), err)
	}
	return r, nil
}

// unsubscribe ends every subscription of r, returning the first failure
// other than a connection already closed.
func (r *Responder) unsubscribe() error {
	var first error
	for _, sub := range r.subs {
		err := sub.Unsubscribe()
		if errors.Is(err, nats.ErrConnectionClosed) || errors.Is(err, nats.ErrBadSubscription) {
			err = nil
		}
		if first == nil {
			first = err
		}
	}
	return first
}

// Close stops answering, ends the long-polls in flight and waits for every
// request being served. Safe to call twice.
func (r *Responder) Close() error {
	var err error
	r.closeOnce.Do(func() {
		err = r.unsubscribe()
		r.cancel()
		r.wg.Wait()
	})
	return err
}

// ActiveLongPolls returns how many long-polls are being served now.
func (r *Responder) ActiveLongPolls() int { return r.longPolls.Active() }

// handle runs on the subscription's goroutine: it admits the request and
// serves it on a goroutine of its own.
func (r *Responder) handle(m *nats.Msg) {
	if m.Reply == "" {
		return
	}
	var req Request
	if len(bytes.TrimSpace(m.Data)) > 0 {
		// Fields this responder does not know are ignored, so a newer
		// client's request is still served.
		if err := json.Unmarshal(m.Data, &req); err != nil {
			r.refuse(m, http.StatusBadRequest, fmt.Errorf("change request: want {\"after\", \"limit\", \"wait_ms\", \"collections\"}: %w", err))
			return
		}
	}
	var user, tenant string
	if m.Subject == RequestSubject {
		// Only subscribed in Open mode: the body names both.
		if err := events.ValidateName("tenant", req.Tenant, events.DefaultLimits.MaxNameBytes); err != nil {
			r.refuse(m, http.StatusBadRequest, fmt.Errorf("change request on %s: %w", RequestSubject, err))
			return
		}
		user, tenant = req.Client, req.Tenant
	} else {
		var err error
		if user, tenant, err = parseSubject(m.Subject, r.prefix()); err != nil {
			r.refuse(m, http.StatusBadRequest, err)
			return
		}
	}
	switch {
	case req.Limit < 0 || req.Limit > r.cfg.MaxPage:
		r.refuse(m, http.StatusBadRequest, fmt.Errorf("change request: limit %d: want 1 to %d (0: %d)", req.Limit, r.cfg.MaxPage, r.cfg.MaxPage))
		return
	case req.WaitMS < 0:
		r.refuse(m, http.StatusBadRequest, fmt.Errorf("change request: wait_ms %d is negative", req.WaitMS))
		return
	case req.WaitMS > 0 && m.Subject == RequestSubject:
		// Nobody vouches for who asks on the bare subject, so no
		// per-user cap could hold: it serves catch-up pages, not waits.
		r.refuse(m, http.StatusBadRequest, fmt.Errorf("change request on %s: wait_ms needs a routed request (a server with auth); this one serves pages without waiting", RequestSubject))
		return
	}
	if req.Limit == 0 {
		req.Limit = r.cfg.MaxPage
	}
	wait := min(time.Duration(req.WaitMS)*time.Millisecond, r.cfg.MaxWait)
	var (
		release func()
		err     error
	)
	if wait > 0 {
		if release, err = r.longPolls.Acquire("user " + user + " of " + tenant); err != nil {
			r.refuse(m, http.StatusTooManyRequests, err)
			return
		}
	} else {
		select {
		case r.inFlight <- struct{}{}:
			release = func() { <-r.inFlight }
		default:
			r.refuse(m, http.StatusServiceUnavailable, fmt.Errorf("change request: %d requests in flight; retry shortly", r.cfg.MaxInFlight))
			return
		}
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		defer release()
		r.serve(m, user, tenant, req, wait)
	}()
}

func (r *Responder) serve(m *nats.Msg, user, tenant string, req Request, wait time.Duration) {
	q := Query{Tenant: tenant, Collections: req.Collections, After: req.After, Limit: req.Limit, Wait: wait, Filtered: !r.cfg.Unfiltered}
	if q.Filtered {
		groups, ok := r.ids(tenant, user)
		if !ok {
			r.refuse(m, http.StatusForbidden, fmt.Errorf("change request: tenant %q has no user %q", tenant, user))
			return
		}
		q.Principals = events.Principals(user, groups)
	} else if !r.cfg.Open {
		if _, ok := r.ids(tenant, user); !ok {
			r.refuse(m, http.StatusForbidden, fmt.Errorf("change request: tenant %q has no user %q", tenant, user))
			return
		}
	}
	// The changes' stored size bounds the page: a full page adds its
	// entries' framing (half of max leaves room for it); a compact one is
	// smaller than what it holds, so it may hold up to max of it. Either
	// is cut to fit after encoding (encodePage).
	max := r.nc.MaxPayload()
	q.MaxBytes = int(max / 2)
	if req.Compact && max > 2*compactSlack {
		q.MaxBytes = int(max - compactSlack)
	}
	page, err := r.src.Changes(r.ctx, q)
	if err != nil {
		r.refuse(m, statusOf(err), err)
		return
	}
	data, err := encodePage(&page, max, func(p *Page) ([]byte, error) { return encodeReply(p, tenant, req.Client, req.Compact) })
	if err != nil {
		r.refuse(m, http.StatusInternalServerError, err)
		return
	}
	if err := m.Respond(data); err != nil {
		r.log.Warn("answer change request", "user", user, "tenant", tenant, "err", err)
	}
}

// encodePage encodes page with enc, dropping changes from its end (and
// moving LastSeq back before them, More set) until it fits in max bytes.
func encodePage(page *Page, max int64, enc func(*Page) ([]byte, error)) ([]byte, error) {
	for {
		data, err := enc(page)
		if err != nil {
			return nil, fmt.Errorf("encode page: %w", err)
		}
		if int64(len(data)) <= max {
			return data, nil
		}
		n := len(page.Changes)
		if n <= 1 {
			return nil, fmt.Errorf("encode page: %d bytes, over the connection's max payload of %d", len(data), max)
		}
		page.LastSeq = page.Changes[n-1].Seq - 1
		page.Changes = page.Changes[:n-1]
		page.More = true
	}
}

func statusOf(err error) int {
	switch {
	case errors.Is(err, ErrBadRequest), errors.Is(err, events.ErrInvalid):
		return http.StatusBadRequest
	case errors.Is(err, ErrTooManyLongPolls):
		return http.StatusTooManyRequests
	case errors.Is(err, nats.ErrTimeout), errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled),
		errors.Is(err, nats.ErrNoResponders), errors.Is(err, nats.ErrConnectionClosed), errors.Is(err, jetstream.ErrNoStreamResponse):
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

func (r *Responder) refuse(m *nats.Msg, status int, err error) {
	if status >= 500 {
		r.log.Warn("change request failed", "subject", m.Subject, "status", status, "err", err)
	}
	data, _ := json.Marshal(ErrorReply{Error: err.Error(), Status: status})
	if err := m.Respond(data); err != nil {
		r.log.Debug("answer change request", "subject", m.Subject, "err", err)
	}
}

// prefix is the subject r's routed requests arrive below.
func (r *Responder) prefix() string {
	if r.cfg.Unfiltered {
		return AllSubject
	}
	return RequestSubject
}

// parseSubject reads the user and tenant a request's subject below prefix
// names.
func parseSubject(subject, prefix string) (user, tenant string, err error) {
	rest, ok := strings.CutPrefix(subject, prefix+".")
	tok := strings.Split(rest, ".")
	if !ok || len(tok) != 2 {
		return "", "", fmt.Errorf("change request on %s: want %s.<user>.<tenant>", subject, prefix)
	}
	if user, err = events.DecodeToken(tok[0]); err != nil {
		return "", "", fmt.Errorf("change request on %s: user: %w", subject, err)
	}
	if tenant, err = events.DecodeToken(tok[1]); err != nil {
		return "", "", fmt.Errorf("change request on %s: tenant: %w", subject, err)
	}
	return user, tenant, nil
}

// DecodeReply reads a responder's answer: the page (a Page, or a compact
// page expanded to one), or the refusal as a *ReplyError.
func DecodeReply(data []byte) (Page, error) {
	var probe struct {
		Error  *string `json:"error"`
		Status int     `json:"status"`
		Format string  `json:"format"`
	}
	if err := json.Unmarshal(data, &probe); err != nil {
		return Page{}, fmt.Errorf("decode change reply: %w", err)
	}
	if probe.Error != nil {
		return Page{}, &ReplyError{Status: probe.Status, Msg: *probe.Error}
	}
	switch probe.Format {
	case "":
	case CompactFormat:
		var cp compactPage
		if err := json.Unmarshal(data, &cp); err != nil {
			return Page{}, fmt.Errorf("decode change reply: %w", err)
		}
		p, err := cp.expand()
		if err != nil {
			return Page{}, fmt.Errorf("decode change reply: %w", err)
		}
		return p, nil
	default:
		return Page{}, fmt.Errorf("decode change reply: format %q, this code reads %q or none", probe.Format, CompactFormat)
	}
	var p Page
	if err := json.Unmarshal(data, &p); err != nil {
		return Page{}, fmt.Errorf("decode change reply: %w", err)
	}
	return p, nil
}

// ReplyError is a request the responder refused.
type ReplyError struct {
	Status int
	Msg    string
}

func (e *ReplyError) Error() string {
	return fmt.Sprintf("change feed refused (%d): %s", e.Status, e.Msg)
}
