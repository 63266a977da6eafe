package events

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

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
type StreamOptions struct {
	Replicas     int                   // copies in a cluster; default 1
	Storage      jetstream.StorageType // default file storage
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

// StreamManager is the part of jetstream.JetStream that EnsureStreams needs.
type StreamManager interface {
	CreateStream(ctx context.Context, cfg jetstream.StreamConfig) (jetstream.Stream, error)
	UpdateStream(ctx context.Context, cfg jetstream.StreamConfig) (jetstream.Stream, error)
	Stream(ctx context.Context, name string) (jetstream.Stream, error)
}

// EnsureStreams creates the four streams, or brings existing ones to the
// configuration of o. It is idempotent. A setting that cannot change in place
// (storage type, retention policy), or an update the server refuses, is an
// error wrapping ErrStreamMismatch that names the stream and the setting.
func EnsureStreams(ctx context.Context, m StreamManager, o StreamOptions) error {
	for _, want := range Streams(o) {
		if err := ensureStream(ctx, m, want); err != nil {
			return err
		}
	}
	return nil
}

func ensureStream(ctx context.Context, m StreamManager, want jetstream.StreamConfig) error {
	_, err := m.CreateStream(ctx, want)
	if err == nil {
		return nil
	}
	if !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		return fmt.Errorf("create stream %s: %w", want.Name, err)
	}
	s, err := m.Stream(ctx, want.Name)
	if err != nil {
		return fmt.Errorf("read stream %s: %w", want.Name, err)
	}
	have := s.CachedInfo().Config
	if have.Storage != want.Storage {
		return fmt.Errorf("%w: stream %s has storage %s, want %s (recreate it to change)", ErrStreamMismatch, want.Name, have.Storage, want.Storage)
	}
	if have.Retention != want.Retention {
		return fmt.Errorf("%w: stream %s has retention %s, want %s (recreate it to change)", ErrStreamMismatch, want.Name, have.Retention, want.Retention)
	}
	diff := StreamDiff(have, want)
	if len(diff) == 0 {
		return nil
	}
	if _, err := m.UpdateStream(ctx, want); err != nil {
		return fmt.Errorf("%w: stream %s differs in %v and the update failed: %w", ErrStreamMismatch, want.Name, diff, err)
	}
	return nil
}

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
	check("max_msgs_per_subject", have.MaxMsgsPerSubject != want.MaxMsgsPerSubject && !(want.MaxMsgsPerSubject == 0 && have.MaxMsgsPerSubject == -1))
	check("max_msg_size", have.MaxMsgSize != want.MaxMsgSize)
	check("discard", have.Discard != want.Discard)
	check("allow_direct", have.AllowDirect != want.AllowDirect)
	return d
}
