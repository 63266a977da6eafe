package consumer

// Log attribute keys, kept in one place so every line of this package uses
// the same names.
const (
	logComponent = "component"
	logStream    = "stream"
	logSeq       = "seq"
	logPending   = "pending"
	logEvent     = "event"
	logDoc       = "doc"
	logErr       = "err"
	logReason    = "reason"
	logDurable   = "durable"
	logBackoff   = "backoff"
)
