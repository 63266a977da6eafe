package gateway

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"unicode"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"

	"github.com/ebbsync/ebb/deploy/auth"
	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/producer"
)

// WriteResponse answers a document write (PUT, PATCH, DELETE) and a
// GET /v1/{tenant}/writes/{event}: the event the server wrote and, once
// its receipt came, its outcome.
type WriteResponse struct {
	Event      string `json:"event"`
	Collection string `json:"collection"`
	ID         string `json:"id"`
	// Status is the receipt's outcome (applied, merged, rejected,
	// conflict, duplicate, invalid, reused), or, without a receipt yet,
	// the log entry's state: pending (not yet in EVENTS), published (in
	// EVENTS, not yet applied) or failed (NATS refused it for good).
	Status    string `json:"status"`
	Version   uint64 `json:"version,omitempty"`  // the document's version after the event
	Conflict  string `json:"conflict,omitempty"` // the open conflict it raised
	Reason    string `json:"reason,omitempty"`
	StreamSeq uint64 `json:"stream_seq,omitempty"`
	Replayed  bool   `json:"replayed,omitempty"` // answered from an earlier request with the same Idempotency-Key
	Error     string `json:"error,omitempty"`    // on every answer that is not 2xx
}

// precondition is a write's If-Match / If-None-Match.
type precondition struct {
	ifMatch     bool   // If-Match present
	anyVersion  bool   // If-Match: *
	version     uint64 // If-Match: "<version>"
	ifNoneMatch bool   // If-None-Match: *
}

func (p precondition) conditional() bool { return p.ifMatch || p.ifNoneMatch }

func (p precondition) String() string {
	switch {
	case p.anyVersion:
		return "if-match:*"
	case p.ifMatch:
		return "if-match:" + strconv.FormatUint(p.version, 10)
	case p.ifNoneMatch:
		return "if-none-match:*"
	}
	return "none"
}

var (
	errPreconditionRequired = errors.New("precondition required")
	errPreconditionFailed   = errors.New("precondition failed")
	errWritesOff            = errors.New("document writes are off: this server runs without a gateway writer")
)

// etag is a document version as a strong entity tag.
func etag(version uint64) string { return `"` + strconv.FormatUint(version, 10) + `"` }

// parsePrecondition reads If-Match and If-None-Match. PATCH and DELETE
// need If-Match (428 without): a change made against an unknown version
// is what the header exists to prevent.
func parsePrecondition(r *http.Request, op events.Op) (precondition, error) {
	var p precondition
	im, inm := r.Header.Values("If-Match"), r.Header.Values("If-None-Match")
	if len(im) > 0 && len(inm) > 0 {
		return p, bad("If-Match and If-None-Match together: send one")
	}
	if len(im) > 1 || len(inm) > 1 {
		return p, bad("one If-Match or If-None-Match header, with one value")
	}
	if len(inm) == 1 {
		if strings.TrimSpace(inm[0]) != "*" {
			return p, bad("If-None-Match %q: writes take only *, create if the document does not exist", inm[0])
		}
		if op != events.OpPut {
			return p, bad("If-None-Match: * is for PUT (create); %s needs an existing document and If-Match", methodOf(op))
		}
		p.ifNoneMatch = true
		return p, nil
	}
	if len(im) == 0 {
		if op != events.OpPut {
			return p, fmt.Errorf("%w: %s needs If-Match with the document's version (its ETag), or If-Match: *", errPreconditionRequired, methodOf(op))
		}
		return p, nil
	}
	v := strings.TrimSpace(im[0])
	p.ifMatch = true
	if v == "*" {
		p.anyVersion = true
		return p, nil
	}
	if strings.HasPrefix(v, "W/") {
		return p, bad("If-Match %q: a weak entity tag never matches (RFC 9110); send the version as the ETag gave it", v)
	}
	n, err := strconv.ParseUint(strings.Trim(v, `"`), 10, 64)
	if err != nil || n == 0 || strings.Contains(v, ",") {
		return p, bad("If-Match %q: want one document version, such as \"3\" (the ETag of a GET)", v)
	}
	p.version = n
	return p, nil
}

func methodOf(op events.Op) string {
	switch op {
	case events.OpPatch:
		return http.MethodPatch
	case events.OpDelete:
		return http.MethodDelete
	}
	return http.MethodPut
}

// writeIdentity is the client id the server writes a request's event
// under: the authenticated user (a client or service of the tenant, or an
// admin), or DefaultWriteClient without authentication.
func writeIdentity(r *http.Request, tenant string) (string, error) {
	u, ok := userOf(r.Context())
	if !ok {
		return DefaultWriteClient, nil
	}
	switch {
	case u.Role == auth.RoleAdmin,
		(u.Role == auth.RoleClient || u.Role == auth.RoleService) && u.Tenant == tenant:
		return u.Name, nil
	}
	return "", fmt.Errorf("forbidden: user %s may not write documents of this tenant", u.Name)
}

// idempotencyKey reads the Idempotency-Key header ("" when absent).
func idempotencyKey(r *http.Request) (string, error) {
	vs := r.Header.Values("Idempotency-Key")
	switch {
	case len(vs) == 0:
		return "", nil
	case len(vs) > 1:
		return "", bad("one Idempotency-Key header")
	}
	k := strings.Trim(strings.TrimSpace(vs[0]), `"`)
	if k == "" || len(k) > maxIdempotencyKey {
		return "", bad("Idempotency-Key: want 1 to %d characters", maxIdempotencyKey)
	}
	for _, c := range k {
		if c > unicode.MaxASCII || !unicode.IsPrint(c) {
			return "", bad("Idempotency-Key: printable ASCII only")
		}
	}
	return k, nil
}

// fingerprint identifies a write request, to tell a retry from another
// request under the same Idempotency-Key.
func fingerprint(method, coll, id string, p precondition, body []byte) string {
	h := sha256.New()
	for _, s := range []string{method, coll, id, p.String()} {
		fmt.Fprintf(h, "%d:%s\n", len(s), s)
	}
	h.Write(body)
	return hex.EncodeToString(h.Sum(nil))
}

// readFields reads a PUT or PATCH body: one JSON object of fields.
func (g *Gateway) readFields(r *http.Request, op events.Op) (events.Fields, []byte, error) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return nil, nil, err
	}
	if op == events.OpDelete {
		if len(bytes.TrimSpace(body)) > 0 {
			return nil, nil, bad("DELETE takes no body")
		}
		return nil, nil, nil
	}
	var fields events.Fields
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&fields); err != nil || fields == nil {
		return nil, nil, bad("request body: want a JSON object of the document's fields")
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, nil, bad("request body: trailing data after the JSON object")
	}
	if err := events.ValidateFields(fields, op == events.OpPatch, g.cfg.Limits); err != nil {
		return nil, nil, err
	}
	return fields, body, nil
}

// current reads the document's last change, nil if it never existed (or
// its last message is not a readable change of it, as GET answers 404).
func (g *Gateway) current(ctx context.Context, tenant, coll, id string) (*events.Change, error) {
	c, err := g.lastChange(ctx, tenant, coll, id)
	if errors.Is(err, errNotFound) {
		return nil, nil
	}
	return c, err
}

func (g *Gateway) writeDoc(w http.ResponseWriter, r *http.Request) {
	op := map[string]events.Op{http.MethodPut: events.OpPut, http.MethodPatch: events.OpPatch, http.MethodDelete: events.OpDelete}[r.Method]
	tenant, coll, id, ok := g.docPath(w, r)
	if !ok {
		return
	}
	if g.cfg.Writer == nil {
		writeError(w, http.StatusNotImplemented, errWritesOff)
		return
	}
	client, err := writeIdentity(r, tenant)
	if err != nil {
		writeError(w, http.StatusForbidden, err)
		return
	}
	pre, err := parsePrecondition(r, op)
	if err != nil {
		g.failWrite(w, r, err)
		return
	}
	key, err := idempotencyKey(r)
	if err != nil {
		g.fail(w, r, err)
		return
	}
	fields, body, err := g.readFields(r, op)
	if err != nil {
		g.failWrite(w, r, err)
		return
	}
	fp := fingerprint(r.Method, coll, id, pre, body)

	ctx, span := g.startSpan(r, spanWrite)
	status := http.StatusInternalServerError
	defer func() {
		span.SetAttributes(attribute.Int("http.response.status_code", status), attribute.String("ebb.collection", coll),
			attribute.String("ebb.doc", id), attribute.String("ebb.op", string(op)))
		if status >= 500 {
			span.SetStatus(codes.Error, http.StatusText(status))
		}
		span.End()
	}()
	jsCtx, cancel := context.WithTimeout(ctx, g.cfg.Timeout)
	defer cancel()
	wl, release, err := g.cfg.Writer.acquire(jsCtx, logKey{tenant, client}, true)
	if err != nil {
		status = g.failWrite(w, r, err)
		return
	}
	defer release() // after the answer: the log stays open while the request waits for its receipt
	// A retry of a request already written answers from its event, before
	// any precondition: the version has moved on because of it.
	if key != "" {
		if rec, ok, err := wl.find(jsCtx, key); err != nil {
			status = g.failWrite(w, r, err)
			return
		} else if ok {
			if rec.Fingerprint != fp {
				status = g.failWrite(w, r, fmt.Errorf("%w: key %q wrote event %s for %s of %s/%s", errKeyReused, key, rec.Event, rec.Op, rec.Collection, rec.Doc))
				return
			}
			status = g.answerWrite(w, r, tenant, wl, written{ID: rec.Event, Replayed: true, Conditional: rec.Conditional})
			return
		}
	}
	cur, err := g.current(jsCtx, tenant, coll, id)
	if err != nil {
		status = g.failWrite(w, r, err)
		return
	}
	st, err := g.stateFor(jsCtx, coll, id, cur)
	if err != nil {
		status = g.failWrite(w, r, err)
		return
	}
	base, err := checkPrecondition(w, pre, st)
	if err != nil {
		status = g.failWrite(w, r, err)
		return
	}
	// The quotas are kept here, before the write enters the log: once
	// there, its log publishes it whatever it takes.
	if err := g.cfg.Writer.admit(tenant, client, coll, id, body); err != nil {
		status = g.failWrite(w, r, err)
		return
	}
	if u, ok := userOf(r.Context()); ok {
		v := g.writerGroups(u)
		wl.groups.Store(&v)
	}
	wr, err := wl.write(ctx, producer.Write{Collection: coll, Doc: id, Op: op, Fields: fields, BaseVersion: base}, key, fp, pre.conditional())
	if err != nil {
		status = g.failWrite(w, r, err)
		return
	}
	status = g.answerWrite(w, r, tenant, wl, wr)
}

// docState is what a write's precondition is judged on: the document's
// last change as the request's user may see it.
type docState struct {
	collection, doc string
	exists          bool   // its last change is not a tombstone
	version         uint64 // the last change's version (a tombstone's too)
	hidden          bool   // sync rules: the user may not read the current state
}

// stateFor is the state of the document coll/id, whose last change is cur
// (nil if none), as the request's user may see it: under sync rules a live
// document the user may not read is hidden.
func (g *Gateway) stateFor(ctx context.Context, coll, id string, cur *events.Change) (docState, error) {
	st := docState{collection: coll, doc: id}
	if cur == nil {
		return st, nil
	}
	st.exists, st.version = !cur.Deleted, cur.Version
	p, filtered := g.principals(ctx)
	if !st.exists {
		// A tombstone's version is never answered (checkPrecondition);
		// under rules it keeps no fields to judge a reader by, so it is
		// hidden as GET hides it: a precondition on it is 404.
		st.hidden = filtered
		return st, nil
	}
	ok, err := g.visible(ctx, p, filtered, cur)
	if err != nil {
		return docState{}, err
	}
	st.hidden = !ok
	return st, nil
}

// checkPrecondition checks pre against the document's state and returns
// the base version to write on. A failed precondition is 412 with the
// current ETag. On a hidden state every precondition, whatever its value,
// is errNotFound worded as GET's (404, no ETag, no version): the user may
// not compare anything with a state it may not read. A write without a
// precondition is written on the current version for the projector to
// judge (its receipt then hides the state too: PROTOCOL.md, Sync rules).
func checkPrecondition(w http.ResponseWriter, pre precondition, st docState) (uint64, error) {
	switch {
	case st.hidden && (pre.ifMatch || pre.ifNoneMatch):
		return 0, fmt.Errorf("document %s/%s: %w", st.collection, st.doc, errNotFound)
	case st.hidden:
		return st.version, nil
	}
	if st.exists {
		w.Header().Set("ETag", etag(st.version))
	}
	switch {
	case pre.ifMatch && !st.exists:
		return 0, fmt.Errorf("%w: If-Match: the document does not exist", errPreconditionFailed)
	case pre.ifMatch && !pre.anyVersion && pre.version != st.version:
		return 0, fmt.Errorf("%w: If-Match %s: the document is at version %d", errPreconditionFailed, etag(pre.version), st.version)
	case pre.ifNoneMatch && st.exists:
		return 0, fmt.Errorf("%w: If-None-Match: *: the document exists at version %d", errPreconditionFailed, st.version)
	}
	w.Header().Del("ETag")
	return st.version, nil
}

// failWrite answers the errors of the write routes, and returns the status.
func (g *Gateway) failWrite(w http.ResponseWriter, r *http.Request, err error) int {
	var tooBig *http.MaxBytesError
	var quota *auth.QuotaError
	status := 0
	switch {
	case errors.As(err, &quota):
		status = quotaStatus(w, quota) // 429 with Retry-After, or 507
	case errors.As(err, &tooBig):
		status = http.StatusRequestEntityTooLarge
		err = fmt.Errorf("request body over %d bytes", tooBig.Limit)
	case errors.Is(err, errPreconditionRequired):
		status = http.StatusPreconditionRequired
	case errors.Is(err, errPreconditionFailed):
		status = http.StatusPreconditionFailed
	case errors.Is(err, errKeyReused):
		status = http.StatusUnprocessableEntity
	case errors.Is(err, errWriterClosed), errors.Is(err, producer.ErrClosed):
		status = http.StatusServiceUnavailable // shutting down; retry with the same Idempotency-Key
	case errors.Is(err, errTooManyLogs):
		w.Header().Set("Retry-After", "1")
		status = http.StatusServiceUnavailable // nothing written; retry with the same Idempotency-Key
	}
	if status != 0 {
		writeError(w, status, err)
		return status
	}
	rec := &statusRecorder{ResponseWriter: w}
	g.fail(rec, r, err)
	return rec.status
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(status int) {
	s.status = status
	s.ResponseWriter.WriteHeader(status)
}

// answerWrite waits (at most Config.WriteWait) for the receipt of wr's
// event and answers with its outcome; it returns the status.
func (g *Gateway) answerWrite(w http.ResponseWriter, r *http.Request, tenant string, wl *writerLog, wr written) int {
	ctx, cancel := context.WithTimeout(r.Context(), g.cfg.WriteWait)
	defer cancel()
	e, err := wl.await(ctx, wr.ID)
	if err != nil {
		return g.failWrite(w, r, err)
	}
	resp := responseOf(e)
	resp.Replayed = wr.Replayed
	status := http.StatusOK
	switch e.State {
	case producer.StateSettled:
		switch e.Outcome {
		case events.OutcomeApplied, events.OutcomeMerged, events.OutcomeDuplicate:
			if e.Event.Op == events.OpPut && e.Version == 1 {
				status = http.StatusCreated
				w.Header().Set("Location", docPath(tenant, e.Event.Collection, e.Event.Doc))
			}
			if e.Event.Op != events.OpDelete && e.Version > 0 {
				w.Header().Set("ETag", etag(e.Version))
			}
		case events.OutcomeRejected:
			status = http.StatusConflict
			if wr.Conditional {
				// The precondition held when the request came, but a
				// concurrent write got there first.
				status = http.StatusPreconditionFailed
			}
		case events.OutcomeConflict:
			status = http.StatusConflict
		case events.OutcomeInvalid:
			status = http.StatusUnprocessableEntity
		default:
			status = http.StatusInternalServerError
		}
		if status >= 300 {
			resp.Error = fmt.Sprintf("%s: %s", e.Outcome, e.Reason)
		}
	case producer.StateFailed:
		status = http.StatusBadGateway
		resp.Error = "NATS refused the event for good: " + e.Err
	default:
		status = http.StatusAccepted
		w.Header().Set("Location", writePath(tenant, e.Event.ID))
	}
	writeJSON(w, status, resp)
	return status
}

func responseOf(e producer.Entry) WriteResponse {
	resp := WriteResponse{Event: e.Event.ID, Collection: e.Event.Collection, ID: e.Event.Doc, Status: string(e.State),
		StreamSeq: e.StreamSeq}
	switch e.State {
	case producer.StateSettled:
		resp.Status, resp.Version, resp.Conflict, resp.Reason = string(e.Outcome), e.Version, e.Conflict, e.Reason
	case producer.StateFailed:
		resp.Reason = e.Err
	}
	return resp
}

func docPath(tenant, coll, id string) string {
	return "/v1/" + url.PathEscape(tenant) + "/docs/" + url.PathEscape(coll) + "/" + url.PathEscape(id)
}

func writePath(tenant, event string) string {
	return "/v1/" + url.PathEscape(tenant) + "/writes/" + url.PathEscape(event)
}

// getWrite answers GET /v1/{tenant}/writes/{event}: where one of the
// caller's own writes stands, 200 whatever its outcome; 404 for an event
// the caller's identity did not write through this server.
func (g *Gateway) getWrite(w http.ResponseWriter, r *http.Request) {
	tenant, err := g.tenant(r)
	if err != nil {
		g.fail(w, r, err)
		return
	}
	if g.cfg.Writer == nil {
		writeError(w, http.StatusNotImplemented, errWritesOff)
		return
	}
	client, err := writeIdentity(r, tenant)
	if err != nil {
		writeError(w, http.StatusForbidden, err)
		return
	}
	id := r.PathValue("event")
	wl, release, err := g.cfg.Writer.acquire(r.Context(), logKey{tenant, client}, false)
	if err != nil {
		g.failWrite(w, r, err)
		return
	}
	defer release()
	if wl == nil {
		g.fail(w, r, fmt.Errorf("write %s: %w", id, errNotFound))
		return
	}
	e, ok, err := wl.current(r.Context(), id)
	if err != nil {
		g.fail(w, r, err)
		return
	}
	if !ok {
		g.fail(w, r, fmt.Errorf("write %s: %w", id, errNotFound))
		return
	}
	writeJSON(w, http.StatusOK, responseOf(e))
}
