package auth

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ebbsync/ebb/events"
)

// Quota errors. Match them with errors.Is; the error itself is a
// *QuotaError naming the tenant, the user and the limit.
var (
	// ErrPublishRate means a user published events faster than its
	// PublishLimit allows. Retrying later succeeds.
	ErrPublishRate = errors.New("publish rate quota exceeded")
	// ErrTenantStorage means a tenant keeps as many bytes in EVENTS,
	// CHANGES and DEAD as its StorageLimit allows. Retrying succeeds once
	// the tenant's messages age out or an operator raises the limit.
	ErrTenantStorage = errors.New("tenant storage quota exceeded")
)

// JetStream API error codes (err_code) of the PubAck that refuses an event
// over a quota (see ServePublish). nats-server's own codes are below 11000.
const (
	ErrCodePublishRate   = 19001 // code 429
	ErrCodeTenantStorage = 19002 // code 507
)

// QuotaError is a refusal by a Meter: Err is ErrPublishRate or
// ErrTenantStorage, Limit says which limit and how high it is, and
// RetryAfter, for a rate, when the next event would pass.
type QuotaError struct {
	Tenant, User string
	Limit        string
	RetryAfter   time.Duration
	Err          error
}

func (e *QuotaError) Error() string {
	if e.User == "" {
		return fmt.Sprintf("tenant %q: %v: %s", e.Tenant, e.Err, e.Limit)
	}
	s := fmt.Sprintf("tenant %q user %q: %v: %s", e.Tenant, e.User, e.Err, e.Limit)
	if e.RetryAfter > 0 {
		s += fmt.Sprintf("; retry in %s", e.RetryAfter.Round(time.Millisecond))
	}
	return s
}

func (e *QuotaError) Unwrap() error { return e.Err }

// Defaults of PublishLimit and StorageLimit.
const (
	DefaultPublishEvents = 500     // events per second per user
	DefaultPublishBytes  = 4 << 20 // bytes per second per user
	DefaultPublishBurst  = 2 * time.Second
	DefaultTenantBytes   = 1 << 30 // bytes per tenant in EVENTS, CHANGES and DEAD
	DefaultStorageRescan = 5 * time.Minute
)

// PublishLimit is the rate at which one user may publish events into
// EVENTS, over NATS and over the HTTP gateway: EventsPerSecond events and
// BytesPerSecond bytes (subject, headers and payload), with up to Burst of
// unused rate saved for later (a token bucket holding Burst times the
// rate, and at least one largest message). Zero fields take their
// defaults; negative ones are invalid.
type PublishLimit struct {
	EventsPerSecond float64       `yaml:"events_per_second"`
	BytesPerSecond  int64         `yaml:"bytes_per_second"`
	Burst           time.Duration `yaml:"burst"`
}

// WithDefaults returns l with every zero field set to its default.
func (l PublishLimit) WithDefaults() PublishLimit {
	if l.EventsPerSecond == 0 {
		l.EventsPerSecond = DefaultPublishEvents
	}
	if l.BytesPerSecond == 0 {
		l.BytesPerSecond = DefaultPublishBytes
	}
	if l.Burst == 0 {
		l.Burst = DefaultPublishBurst
	}
	return l
}

// StorageLimit is how many bytes one tenant may keep in EVENTS, CHANGES
// and DEAD together (subjects, headers and payloads of its messages).
// Usage is measured by reading the three streams' headers (no payloads)
// every Rescan, plus the events accepted since the last measure began; a
// tenant at or over TenantBytes has its next events refused until its
// usage falls. Zero fields take their defaults; negative ones are invalid.
type StorageLimit struct {
	TenantBytes int64         `yaml:"tenant_bytes"`
	Rescan      time.Duration `yaml:"rescan"`
}

// WithDefaults returns l with every zero field set to its default.
func (l StorageLimit) WithDefaults() StorageLimit {
	if l.TenantBytes == 0 {
		l.TenantBytes = DefaultTenantBytes
	}
	if l.Rescan == 0 {
		l.Rescan = DefaultStorageRescan
	}
	return l
}

// Quotas are what a Meter enforces. Zero fields take their defaults.
type Quotas struct {
	Publish PublishLimit
	Storage StorageLimit
	// MaxPayload is the largest message a user may publish
	// (Limits.MaxPayload); the byte bucket always holds at least one.
	MaxPayload int
	// MaxConsumersPerUser is Limits.MaxConsumersPerUser, which the
	// consumer create responder keeps.
	MaxConsumersPerUser int
}

// Or returns q with every zero field taken from base: flags (q) over a
// users file (base).
func (q Quotas) Or(base Quotas) Quotas {
	if q.Publish.EventsPerSecond == 0 {
		q.Publish.EventsPerSecond = base.Publish.EventsPerSecond
	}
	if q.Publish.BytesPerSecond == 0 {
		q.Publish.BytesPerSecond = base.Publish.BytesPerSecond
	}
	if q.Publish.Burst == 0 {
		q.Publish.Burst = base.Publish.Burst
	}
	if q.Storage.TenantBytes == 0 {
		q.Storage.TenantBytes = base.Storage.TenantBytes
	}
	if q.Storage.Rescan == 0 {
		q.Storage.Rescan = base.Storage.Rescan
	}
	if q.MaxPayload == 0 {
		q.MaxPayload = base.MaxPayload
	}
	if q.MaxConsumersPerUser == 0 {
		q.MaxConsumersPerUser = base.MaxConsumersPerUser
	}
	return q
}

// Validate reports every negative field of q; each error wraps
// ErrInvalidUsers.
func (q Quotas) Validate() error {
	var errs []error
	p, s := q.Publish, q.Storage
	if p.EventsPerSecond < 0 || p.BytesPerSecond < 0 || p.Burst < 0 {
		errs = append(errs, fmt.Errorf("%w: limits: publish events_per_second %g, bytes_per_second %d and burst %s may not be negative",
			ErrInvalidUsers, p.EventsPerSecond, p.BytesPerSecond, p.Burst))
	}
	if s.TenantBytes < 0 || s.Rescan < 0 {
		errs = append(errs, fmt.Errorf("%w: limits: storage tenant_bytes %d and rescan %s may not be negative", ErrInvalidUsers, s.TenantBytes, s.Rescan))
	}
	if q.MaxPayload < 0 || q.MaxConsumersPerUser < 0 {
		errs = append(errs, fmt.Errorf("%w: limits: max_payload %d and max_consumers_per_user %d may not be negative", ErrInvalidUsers, q.MaxPayload, q.MaxConsumersPerUser))
	}
	return errors.Join(errs...)
}

// WithDefaults returns q with every zero field set to its default.
func (q Quotas) WithDefaults() Quotas {
	q.Publish = q.Publish.WithDefaults()
	q.Storage = q.Storage.WithDefaults()
	if q.MaxPayload == 0 {
		q.MaxPayload = DefaultMaxPayload
	}
	if q.MaxConsumersPerUser == 0 {
		q.MaxConsumersPerUser = DefaultMaxConsumersPerUser
	}
	return q
}

// Meter enforces Quotas: a token bucket per user for the publish rate and
// a byte count per tenant for storage. One Meter serves every path into
// EVENTS of one server (ServePublish over NATS, the HTTP gateway), so a
// user's budget is shared by both. It is safe for concurrent use; its
// storage measure runs inside StartAPI.
type Meter struct {
	q   Quotas // with defaults
	now func() time.Time

	mu      sync.Mutex
	buckets map[string]*bucket // tenant token "." client token
	scanned map[string]int64   // tenant token -> bytes, at the last finished measure
	since   map[string]int64   // tenant token -> bytes accepted since that measure began
	next    map[string]int64   // the same since the running measure began; nil if none runs
}

// bucket holds a user's unused rate.
type bucket struct {
	events, bytes float64
	at            time.Time
}

// NewMeter returns a Meter enforcing q (zero fields take their defaults).
func NewMeter(q Quotas) *Meter {
	return newMeterAt(q, time.Now)
}

func newMeterAt(q Quotas, now func() time.Time) *Meter {
	return &Meter{q: q.WithDefaults(), now: now, buckets: map[string]*bucket{}, scanned: map[string]int64{}, since: map[string]int64{}}
}

// Quotas returns what m enforces, with defaults filled in.
func (m *Meter) Quotas() Quotas { return m.q }

// AllowMsg is Allow for msg, published on an event subject
// (events.EventSubject) whose tenant and client tokens name the tenant
// and the user; its size is its subject, headers and payload. A message
// on any other subject is refused with an error that is no *QuotaError.
func (m *Meter) AllowMsg(msg *nats.Msg) error {
	tenant, client, ok := eventTokens(msg.Subject)
	if !ok {
		return fmt.Errorf("meter %q: not an event subject", msg.Subject)
	}
	n := len(msg.Subject) + len(msg.Data)
	for k, vs := range msg.Header {
		for _, v := range vs {
			n += len(k) + len(v) + 4 // "k: v\r\n"
		}
	}
	return m.allow(tenant, client, n)
}

// Allow reports whether user (a client id) of tenant may publish one more
// event of size bytes now, and if so counts it against the user's rate
// and the tenant's storage. A refusal is a *QuotaError wrapping
// ErrTenantStorage (the tenant is at its limit, checked first) or
// ErrPublishRate; a refused event counts against nothing.
func (m *Meter) Allow(tenant, user string, size int) error {
	return m.allow(events.EncodeToken(tenant), events.EncodeToken(user), size)
}

func (m *Meter) allow(tenant, client string, size int) error {
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	if used := m.scanned[tenant] + m.since[tenant]; used >= m.q.Storage.TenantBytes {
		return &QuotaError{Tenant: decoded(tenant), Err: ErrTenantStorage,
			Limit: fmt.Sprintf("it keeps %d bytes in EVENTS, CHANGES and DEAD, its limit is %d", used, m.q.Storage.TenantBytes)}
	}
	p := m.q.Publish
	maxEvents := max(p.EventsPerSecond*p.Burst.Seconds(), 1)
	maxBytes := max(float64(p.BytesPerSecond)*p.Burst.Seconds(), float64(m.q.MaxPayload))
	key := tenant + "." + client
	b := m.buckets[key]
	if b == nil {
		b = &bucket{events: maxEvents, bytes: maxBytes, at: now}
		m.buckets[key] = b
	}
	if dt := now.Sub(b.at).Seconds(); dt > 0 {
		b.events = min(maxEvents, b.events+dt*p.EventsPerSecond)
		b.bytes = min(maxBytes, b.bytes+dt*float64(p.BytesPerSecond))
		b.at = now
	}
	if b.events < 1 || b.bytes < float64(size) {
		wait := max((1-b.events)/p.EventsPerSecond, (float64(size)-b.bytes)/float64(p.BytesPerSecond))
		return &QuotaError{Tenant: decoded(tenant), User: decoded(client), Err: ErrPublishRate,
			RetryAfter: time.Duration(wait * float64(time.Second)),
			Limit:      fmt.Sprintf("over %g events/s or %d bytes/s (burst %s)", p.EventsPerSecond, p.BytesPerSecond, p.Burst)}
	}
	b.events--
	b.bytes -= float64(size)
	m.since[tenant] += int64(size)
	if m.next != nil {
		m.next[tenant] += int64(size)
	}
	return nil
}

// Usage returns the bytes m counts for tenant: its messages in EVENTS,
// CHANGES and DEAD at the last measure, plus the events accepted since.
func (m *Meter) Usage(tenant string) int64 {
	t := events.EncodeToken(tenant)
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.scanned[t] + m.since[t]
}

// beginMeasure starts counting accepted events for the measure about to
// run; endMeasure installs its result. Events accepted while it runs may
// be counted twice until the next one, never missed.
func (m *Meter) beginMeasure() {
	m.mu.Lock()
	m.next = map[string]int64{}
	m.mu.Unlock()
}

func (m *Meter) endMeasure(usage map[string]int64) {
	m.mu.Lock()
	m.scanned, m.since, m.next = usage, m.next, nil
	if m.since == nil {
		m.since = map[string]int64{}
	}
	m.mu.Unlock()
}

// eventTokens returns the tenant and client tokens of an event subject.
func eventTokens(subject string) (tenant, client string, ok bool) {
	rest, ok := strings.CutPrefix(subject, events.EventsPrefix+".")
	if !ok {
		return "", "", false
	}
	parts := strings.SplitN(rest, ".", 3)
	if len(parts) < 3 || parts[0] == "" || parts[1] == "" {
		return "", "", false
	}
	return parts[0], parts[1], true
}

// decoded returns the name a subject token stands for, or the token.
func decoded(tok string) string {
	if s, err := events.DecodeToken(tok); err == nil {
		return s
	}
	return tok
}
