package events

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Stream names.
const (
	StreamEvents   = "EVENTS"
	StreamChanges  = "CHANGES"
	StreamReceipts = "RECEIPTS"
	StreamDead     = "DEAD"
)

// StreamOptions tune the four streams. The zero value gives the embedded
// single-node defaults.
//
// A field left zero asks for nothing: a new stream gets the default, an
// existing stream keeps the value it has (an operator may have set it by
// hand). A field that is set asks for its value, and EnsureStreams applies it
// to existing streams too, except that it never lowers Replicas.
type StreamOptions struct {
	// Replicas is the number of copies of each stream in a cluster; default
	// 1. EnsureStreams raises an existing stream's replicas to it and
	// refuses to lower them (ErrReplicasLowered).
	Replicas     int
	Storage      jetstream.StorageType // default (and zero value) file storage
	DedupeWindow time.Duration         // JetStream Nats-Msg-Id window on every stream; default 2m
	// EventsMaxAge bounds how long EVENTS keeps events; default 0, forever.
	// A bound makes `ebb verify` unable to rebuild the view from the start.
	EventsMaxAge   time.Duration
	EventsMaxBytes int64         // default -1, unlimited
	ReceiptsMaxAge time.Duration // default 7 days
	DeadMaxAge     time.Duration // default 30 days
	MaxMsgSize     int32         // largest message a stream accepts; default 1 MiB
}

// Default stream settings.
const (
	DefaultDedupeWindow   = 2 * time.Minute
	DefaultReceiptsMaxAge = 7 * 24 * time.Hour
	DefaultDeadMaxAge     = 30 * 24 * time.Hour
	DefaultMaxMsgSize     = 1 << 20
)

func (o StreamOptions) withDefaults() StreamOptions {
	if o.Replicas <= 0 {
		o.Replicas = 1
	}
	if o.DedupeWindow <= 0 {
		o.DedupeWindow = DefaultDedupeWindow
	}
	if o.EventsMaxBytes == 0 {
		o.EventsMaxBytes = -1
	}
	if o.ReceiptsMaxAge <= 0 {
		o.ReceiptsMaxAge = DefaultReceiptsMaxAge
	}
	if o.DeadMaxAge <= 0 {
		o.DeadMaxAge = DefaultDeadMaxAge
	}
	if o.MaxMsgSize <= 0 {
		o.MaxMsgSize = DefaultMaxMsgSize
	}
	return o
}

// Streams returns the configuration of the four streams under o.
func Streams(o StreamOptions) []jetstream.StreamConfig {
	o = o.withDefaults()
	base := func(name, desc, subject string) jetstream.StreamConfig {
		return jetstream.StreamConfig{
			Name:        name,
			Description: desc,
			Subjects:    []string{subject + ".>"},
			Retention:   jetstream.LimitsPolicy,
			Storage:     o.Storage,
			Replicas:    o.Replicas,
			Duplicates:  o.DedupeWindow,
			MaxMsgSize:  o.MaxMsgSize,
			MaxMsgs:     -1,
			MaxBytes:    -1,
			Discard:     jetstream.DiscardOld,
		}
	}
	evt := base(StreamEvents, "ebb client events (intents), applied in order by the projector", EventsPrefix)
	evt.MaxAge = o.EventsMaxAge
	evt.MaxBytes = o.EventsMaxBytes
	chg := base(StreamChanges, "ebb compacted document state: the last change of every document", ChangesPrefix)
	chg.MaxMsgsPerSubject = 1
	chg.AllowDirect = true
	rcpt := base(StreamReceipts, "ebb receipts: the fate of each event, per writing client", ReceiptsPrefix)
	rcpt.MaxAge = o.ReceiptsMaxAge
	dead := base(StreamDead, "ebb dead letters: messages the projector could not apply, with reasons", DeadPrefix)
	dead.MaxAge = o.DeadMaxAge
	return []jetstream.StreamConfig{evt, chg, rcpt, dead}
}

// Sentinel errors of EnsureStreams, beside ErrStreamMismatch (errors.go).
var (
	// ErrReplicasLowered marks a StreamOptions.Replicas below the replicas
	// an existing stream has. EnsureStreams never lowers replicas: an
	// operator who means it does it by hand (nats stream edit --replicas).
	ErrReplicasLowered = errors.New("stream replicas would be lowered")
	// ErrJetStreamUnavailable marks a JetStream that did not answer, or
	// answered that it cannot serve requests: no JetStream on the server,
	// or a cluster without a meta leader (no quorum). The error wrapping it
	// names the last cause seen.
	ErrJetStreamUnavailable = errors.New("jetstream unavailable")
)

// StreamManager is the part of jetstream.JetStream that EnsureStreams needs.
type StreamManager interface {
	CreateStream(ctx context.Context, cfg jetstream.StreamConfig) (jetstream.Stream, error)
	UpdateStream(ctx context.Context, cfg jetstream.StreamConfig) (jetstream.Stream, error)
	Stream(ctx context.Context, name string) (jetstream.Stream, error)
}

// A StreamChange is one thing EnsureStreams did to a stream, or one
// difference it found and left alone.
type StreamChange struct {
	Stream string // EVENTS, CHANGES, RECEIPTS or DEAD
	// Setting is named as StreamDiff names it ("replicas", "max_age", ...),
	// or "stream" when the stream was created.
	Setting string
	Have    string // the stream's value before; "" for a created stream
	Want    string // the value of ebb's configuration (asked for, or the default)
	// Kept says the stream keeps Have: the options do not ask for this
	// setting, so a value an operator set stays. Callers log it as a
	// warning. When Kept is false the stream now has Want.
	Kept bool
}

func (c StreamChange) String() string {
	switch {
	case c.Setting == "stream":
		return fmt.Sprintf("stream %s: created (%s)", c.Stream, c.Want)
	case c.Kept:
		return fmt.Sprintf("stream %s: %s is %s, ebb's default is %s: kept (set StreamOptions to change it)", c.Stream, c.Setting, c.Have, c.Want)
	default:
		return fmt.Sprintf("stream %s: %s changed from %s to %s", c.Stream, c.Setting, c.Have, c.Want)
	}
}

// EnsureStreams is ReconcileStreams for callers that do not report changes.
func EnsureStreams(ctx context.Context, m StreamManager, o StreamOptions) error {
	_, err := ReconcileStreams(ctx, m, o)
	return err
}

// ReconcileStreams creates the four streams that are missing and brings
// existing ones to what o asks for, and returns what it changed and what
// differences it kept. It is idempotent. Its rules:
//
//   - What the protocol needs is always applied: subjects, one message per
//     subject on CHANGES, direct get on CHANGES. A retention policy other
//     than limits cannot change in place and is an error wrapping
//     ErrStreamMismatch.
//   - A setting o asks for (a non-zero field) is applied, except that
//     replicas are only raised: asking for fewer than a stream has is an
//     error wrapping ErrReplicasLowered. Asking for a storage type other
//     than the stream's is an error wrapping ErrStreamMismatch.
//   - Any other difference (a field of o left zero, or a setting o has no
//     field for: max_msgs, discard) is kept and reported with Kept set.
//     Settings ebb does not manage (placement, compression, metadata, ...)
//     are never touched.
//
// Every stream is read and every refusal decided before anything is
// created or updated, so a refused call changes nothing. An update the
// server refuses is an error wrapping ErrStreamMismatch naming the stream
// and settings; the changes made before it are returned with it. While
// JetStream does not answer, or answers that it is unavailable (a cluster
// without quorum), reads are retried until ctx ends; the error then wraps
// ErrJetStreamUnavailable and names the last cause.
func ReconcileStreams(ctx context.Context, m StreamManager, o StreamOptions) ([]StreamChange, error) {
	wants := Streams(o)
	plans := make([]streamPlan, 0, len(wants))
	var refused []error
	for _, want := range wants {
		have, found, err := readStream(ctx, m, want.Name)
		if err != nil {
			return nil, err
		}
		p, err := planStream(have, found, want, o)
		if err != nil {
			refused = append(refused, err)
			continue
		}
		plans = append(plans, p)
	}
	if err := errors.Join(refused...); err != nil {
		return nil, err
	}
	var done []StreamChange
	for _, p := range plans {
		switch {
		case p.create:
			if _, err := m.CreateStream(ctx, p.cfg); err != nil {
				return done, fmt.Errorf("create stream %s: %w", p.cfg.Name, unavailable(err))
			}
		case p.update:
			if _, err := m.UpdateStream(ctx, p.cfg); err != nil {
				err = unavailable(err)
				if !errors.Is(err, ErrJetStreamUnavailable) {
					err = fmt.Errorf("%w: %w", ErrStreamMismatch, err)
				}
				return done, fmt.Errorf("update stream %s (%s): %w", p.cfg.Name, p.applied(), err)
			}
		}
		done = append(done, p.changes...)
	}
	return done, nil
}

// streamPlan is what ReconcileStreams will do to one stream.
type streamPlan struct {
	cfg     jetstream.StreamConfig // to create, or the stream's own config with the applied changes
	create  bool
	update  bool
	changes []StreamChange
}

func (p streamPlan) applied() string {
	var s []string
	for _, c := range p.changes {
		if !c.Kept {
			s = append(s, c.Setting)
		}
	}
	return fmt.Sprint(s)
}

// planStream decides what to do to a stream that has config have (when
// found) for ebb's want under o.
func planStream(have jetstream.StreamConfig, found bool, want jetstream.StreamConfig, o StreamOptions) (streamPlan, error) {
	if !found {
		return streamPlan{cfg: want, create: true, changes: []StreamChange{{Stream: want.Name, Setting: "stream",
			Want: fmt.Sprintf("replicas %d, storage %s", want.Replicas, want.Storage)}}}, nil
	}
	name := want.Name
	if have.Retention != want.Retention {
		return streamPlan{}, fmt.Errorf("%w: stream %s has retention %s, want %s (recreate it to change)", ErrStreamMismatch, name, have.Retention, want.Retention)
	}
	if have.Storage != want.Storage && o.Storage != 0 {
		return streamPlan{}, fmt.Errorf("%w: stream %s has storage %s, want %s (recreate it to change)", ErrStreamMismatch, name, have.Storage, want.Storage)
	}
	if o.Replicas > 0 && o.Replicas < have.Replicas {
		return streamPlan{}, fmt.Errorf("%w: stream %s has %d replicas, asked for %d (lower them by hand if you mean it)", ErrReplicasLowered, name, have.Replicas, o.Replicas)
	}
	p := streamPlan{cfg: have}
	// setting records a difference: apply says whether to change it.
	setting := func(setting string, differs, apply bool, hv, wv any, set func(*jetstream.StreamConfig)) {
		if !differs {
			return
		}
		p.changes = append(p.changes, StreamChange{Stream: name, Setting: setting, Have: show(hv), Want: show(wv), Kept: !apply})
		if apply {
			set(&p.cfg)
			p.update = true
		}
	}
	setting("subjects", !slices.Equal(have.Subjects, want.Subjects), true, have.Subjects, want.Subjects,
		func(c *jetstream.StreamConfig) { c.Subjects = want.Subjects })
	setting("max_msgs_per_subject", perSubjectDiffers(have, want), true, have.MaxMsgsPerSubject, want.MaxMsgsPerSubject,
		func(c *jetstream.StreamConfig) { c.MaxMsgsPerSubject = want.MaxMsgsPerSubject })
	setting("allow_direct", have.AllowDirect != want.AllowDirect && want.AllowDirect, true, have.AllowDirect, want.AllowDirect,
		func(c *jetstream.StreamConfig) { c.AllowDirect = want.AllowDirect })
	setting("storage", have.Storage != want.Storage, false, have.Storage, want.Storage, nil)
	setting("replicas", have.Replicas != want.Replicas, o.Replicas > have.Replicas, have.Replicas, want.Replicas,
		func(c *jetstream.StreamConfig) { c.Replicas = want.Replicas })
	setting("duplicate_window", have.Duplicates != want.Duplicates, o.DedupeWindow > 0, have.Duplicates, want.Duplicates,
		func(c *jetstream.StreamConfig) { c.Duplicates = want.Duplicates })
	setting("max_age", have.MaxAge != want.MaxAge, maxAgeAsked(name, o), have.MaxAge, want.MaxAge,
		func(c *jetstream.StreamConfig) { c.MaxAge = want.MaxAge })
	setting("max_bytes", have.MaxBytes != want.MaxBytes, name == StreamEvents && o.EventsMaxBytes != 0, have.MaxBytes, want.MaxBytes,
		func(c *jetstream.StreamConfig) { c.MaxBytes = want.MaxBytes })
	setting("max_msg_size", have.MaxMsgSize != want.MaxMsgSize, o.MaxMsgSize > 0, have.MaxMsgSize, want.MaxMsgSize,
		func(c *jetstream.StreamConfig) { c.MaxMsgSize = want.MaxMsgSize })
	setting("max_msgs", have.MaxMsgs != want.MaxMsgs, false, have.MaxMsgs, want.MaxMsgs, nil)
	setting("discard", have.Discard != want.Discard, false, have.Discard, want.Discard, nil)
	return p, nil
}

// maxAgeAsked says whether o sets the max age of stream name.
func maxAgeAsked(name string, o StreamOptions) bool {
	switch name {
	case StreamEvents:
		return o.EventsMaxAge > 0
	case StreamReceipts:
		return o.ReceiptsMaxAge > 0
	case StreamDead:
		return o.DeadMaxAge > 0
	}
	return false
}

func perSubjectDiffers(have, want jetstream.StreamConfig) bool {
	return have.MaxMsgsPerSubject != want.MaxMsgsPerSubject && !(want.MaxMsgsPerSubject == 0 && have.MaxMsgsPerSubject == -1)
}

func show(v any) string {
	switch v := v.(type) {
	case time.Duration:
		if v == 0 {
			return "unlimited"
		}
		return v.String()
	case int64:
		if v < 0 {
			return "unlimited"
		}
		return strconv.FormatInt(v, 10)
	case int32:
		if v < 0 {
			return "unlimited"
		}
		return strconv.FormatInt(int64(v), 10)
	}
	return fmt.Sprint(v)
}

// attemptTimeout bounds one JetStream API request of ReconcileStreams
// inside the caller's deadline, so an unanswered request is retried and
// its cause named before the deadline passes.
const attemptTimeout = 3 * time.Second

// readStream returns the config of stream name, found false when it does not
// exist. It retries while JetStream is unavailable, until ctx ends.
func readStream(ctx context.Context, m StreamManager, name string) (jetstream.StreamConfig, bool, error) {
	start := time.Now()
	for {
		actx, cancel := context.WithTimeout(ctx, attemptTimeout)
		s, err := m.Stream(actx, name)
		cancel()
		switch {
		case err == nil:
			return s.CachedInfo().Config, true, nil
		case errors.Is(err, jetstream.ErrStreamNotFound):
			return jetstream.StreamConfig{}, false, nil
		}
		err = unavailable(err)
		if !errors.Is(err, ErrJetStreamUnavailable) {
			return jetstream.StreamConfig{}, false, fmt.Errorf("read stream %s: %w", name, err)
		}
		if ctx.Err() != nil {
			return jetstream.StreamConfig{}, false, fmt.Errorf("read stream %s: no answer for %s: %w", name, time.Since(start).Round(time.Second), err)
		}
		t := time.NewTimer(200 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
		case <-t.C:
		}
	}
}

// unavailable wraps err with ErrJetStreamUnavailable when it says JetStream
// cannot answer: no reply in time, no responders, or a cluster that reports
// it has no meta leader.
func unavailable(err error) error {
	var apiErr *jetstream.APIError
	switch {
	case errors.As(err, &apiErr) && apiErr.ErrorCode == jsErrCodeClusterNotAvailable:
		return fmt.Errorf("%w: the cluster has no meta leader (fewer than a quorum of its servers are up?): %w", ErrJetStreamUnavailable, err)
	case errors.As(err, &apiErr) && apiErr.ErrorCode == jsErrCodeNoPeers:
		return fmt.Errorf("no servers to place the stream's replicas on (fewer servers up, or in the cluster, than replicas): %w", err)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout):
		return fmt.Errorf("%w: no answer from the JetStream API (a cluster still electing a leader, or without quorum?): %w", ErrJetStreamUnavailable, err)
	case errors.Is(err, jetstream.ErrJetStreamNotEnabled), errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount), errors.Is(err, nats.ErrNoResponders):
		return fmt.Errorf("%w: %w", ErrJetStreamUnavailable, err)
	}
	return err
}

// jsErrCodeClusterNotAvailable is nats-server's JSClusterNotAvailErr
// ("JetStream system temporarily unavailable"), which a clustered server
// answers once its meta group has been without a leader for a while.
const jsErrCodeClusterNotAvailable jetstream.ErrorCode = 10008

// jsErrCodeNoPeers is nats-server's JSClusterNoPeersErrF: no set of servers
// to place a stream's replicas on.
const jsErrCodeNoPeers jetstream.ErrorCode = 10005

// StreamDiff names the settings ebb manages in which have differs from want.
func StreamDiff(have, want jetstream.StreamConfig) []string {
	var d []string
	check := func(name string, differs bool) {
		if differs {
			d = append(d, name)
		}
	}
	check("subjects", !slices.Equal(have.Subjects, want.Subjects))
	check("storage", have.Storage != want.Storage)
	check("retention", have.Retention != want.Retention)
	check("replicas", have.Replicas != want.Replicas)
	check("duplicate_window", have.Duplicates != want.Duplicates)
	check("max_age", have.MaxAge != want.MaxAge)
	check("max_bytes", have.MaxBytes != want.MaxBytes)
	check("max_msgs", have.MaxMsgs != want.MaxMsgs)
	check("max_msgs_per_subject", perSubjectDiffers(have, want))
	check("max_msg_size", have.MaxMsgSize != want.MaxMsgSize)
	check("discard", have.Discard != want.Discard)
	check("allow_direct", have.AllowDirect != want.AllowDirect)
	return d
}
