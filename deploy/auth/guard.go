package auth

import (
	"fmt"
	"log/slog"
	"runtime/debug"

	"github.com/nats-io/nats.go"
)

// guarded runs h with a recover: a responder's handler runs on nats.go's
// callback goroutine, where a panic (a bug a request found) would end the
// whole server for every tenant. The request that caused it gets a
// JetStream-style API error 500, and the panic is logged with its stack;
// the responder goes on with the next request.
func guarded(name string, h nats.MsgHandler) nats.MsgHandler {
	return func(m *nats.Msg) {
		defer func() {
			if r := recover(); r != nil {
				slog.Error("ebb api responder panicked; request refused", "responder", name, "subject", m.Subject,
					"panic", fmt.Sprint(r), "stack", string(debug.Stack()))
				if m.Reply != "" {
					_ = m.Respond(apiError(500, fmt.Sprintf("ebb %s: internal error", name)))
				}
			}
		}()
		h(m)
	}
}
