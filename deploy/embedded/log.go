package embedded

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/nats-io/nats-server/v2/server"
)

// Log attribute keys and levels.
const (
	keyComponent  = "component"
	keyFatal      = "fatal"
	componentNATS = "nats"

	// levelTrace is the slog level for nats-server's protocol traces.
	levelTrace = slog.LevelDebug - 4
)

// logBridge adapts nats-server's Logger interface to slog. nats-server calls
// Fatalf when it expects the process to exit (for example it cannot listen);
// embedded we must not exit, so the bridge logs the line at error level and
// hands the first fatal error to Start through the fatal channel.
type logBridge struct {
	log   *slog.Logger
	debug bool
	trace bool
	fatal chan error
}

var _ server.Logger = (*logBridge)(nil)

func newLogBridge(l *slog.Logger) *logBridge {
	ctx := context.Background()
	return &logBridge{
		log:   l.With(keyComponent, componentNATS),
		debug: l.Enabled(ctx, slog.LevelDebug),
		trace: l.Enabled(ctx, levelTrace),
		fatal: make(chan error, 1),
	}
}

func (b *logBridge) logf(level slog.Level, format string, v []any, attrs ...any) {
	ctx := context.Background()
	if !b.log.Enabled(ctx, level) {
		return
	}
	b.log.Log(ctx, level, fmt.Sprintf(format, v...), attrs...)
}

// Noticef logs at info level.
func (b *logBridge) Noticef(format string, v ...any) { b.logf(slog.LevelInfo, format, v) }

// Warnf logs at warn level.
func (b *logBridge) Warnf(format string, v ...any) { b.logf(slog.LevelWarn, format, v) }

// Errorf logs at error level.
func (b *logBridge) Errorf(format string, v ...any) { b.logf(slog.LevelError, format, v) }

// Debugf logs at debug level.
func (b *logBridge) Debugf(format string, v ...any) { b.logf(slog.LevelDebug, format, v) }

// Tracef logs at levelTrace.
func (b *logBridge) Tracef(format string, v ...any) { b.logf(levelTrace, format, v) }

// Fatalf logs at error level with fatal=true and records the first fatal error.
func (b *logBridge) Fatalf(format string, v ...any) {
	b.logf(slog.LevelError, format, v, keyFatal, true)
	select {
	case b.fatal <- errors.New(fmt.Sprintf(format, v...)):
	default:
	}
}
