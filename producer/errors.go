package producer

import "errors"

// Sentinel errors. Match them with errors.Is.
var (
	// ErrInvalidConfig wraps every LogConfig and PublisherConfig validation
	// error; the message names the field.
	ErrInvalidConfig = errors.New("invalid producer config")
	// ErrLogMismatch means an existing log belongs to another tenant or
	// client than the LogConfig asks for.
	ErrLogMismatch = errors.New("log belongs to another tenant or client")
	// ErrNotDurable means the bbolt DB a log is opened in has NoSync set, so an
	// append would not survive a crash.
	ErrNotDurable = errors.New("bbolt db has NoSync set")
	// ErrClosed is returned by a Log or Publisher used after Close.
	ErrClosed = errors.New("producer closed")
	// ErrStarted is returned by a second Publisher.Start.
	ErrStarted = errors.New("publisher already started")
	// ErrAckTimeout is the retryable error recorded when JetStream did not
	// acknowledge a publish within PublisherConfig.AckTimeout.
	ErrAckTimeout = errors.New("no publish acknowledgement in time")
	// ErrStoreMissing means a local store file does not exist (CheckFile).
	ErrStoreMissing = errors.New("local store is missing")
	// ErrStoreEmpty means a local store file exists but holds no bytes: it
	// was truncated, or never written (CheckFile).
	ErrStoreEmpty = errors.New("local store is empty")
	// ErrStoreDamaged means a local store file is truncated or its header
	// is unreadable (CheckFile).
	ErrStoreDamaged = errors.New("local store is damaged")
)

// Log attribute keys, kept in one place so every line uses the same names.
const (
	keyComponent = "component"
	keyEvent     = "event"
	keySeq       = "seq"
	keySubject   = "subject"
	keyErr       = "err"
	keyAttempt   = "attempt"
	keyBackoff   = "backoff"
	keyDowntime  = "downtime"
	keyTenant    = "tenant"
	keyClient    = "client"
	keyDevice    = "device"
)
