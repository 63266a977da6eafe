package consumer

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// A request no one answers (a stream with no leader) is tried again with a
// fresh attempt, so the answer of a later attempt (the new leader) arrives
// long before the caller's context ends; before, one attempt waited for
// the whole context.
func TestRequest_RetriesUnansweredAttempts(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	calls := 0
	start := time.Now()
	got, err := request(ctx, 100*time.Millisecond, "stream info CHANGES", func(ctx context.Context) (int, error) {
		calls++
		if calls < 3 {
			<-ctx.Done() // unanswered: only the attempt's bound ends it
			return 0, ctx.Err()
		}
		return 42, nil
	})
	if err != nil || got != 42 {
		t.Fatalf("request = %d, %v; want 42, nil", got, err)
	}
	if calls != 3 {
		t.Errorf("calls = %d, want 3", calls)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("request took %s: the attempts were not bounded", d)
	}
}

func TestRequest_Errors(t *testing.T) {
	tests := []struct {
		name    string
		err     error
		wantErr error
		calls   int
	}{
		{name: "not found is an answer", err: jetstream.ErrStreamNotFound, wantErr: jetstream.ErrStreamNotFound, calls: 1},
		{name: "no response until the context ends", err: jetstream.ErrNoStreamResponse, wantErr: context.DeadlineExceeded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			calls := 0
			_, err := request(ctx, 50*time.Millisecond, "stream info X", func(context.Context) (struct{}, error) {
				calls++
				return struct{}{}, tt.err
			})
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if tt.calls > 0 && calls != tt.calls {
				t.Errorf("calls = %d, want %d", calls, tt.calls)
			}
			if tt.calls == 0 && calls < 2 {
				t.Errorf("calls = %d, want retries", calls)
			}
		})
	}
}
