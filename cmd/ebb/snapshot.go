package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/nats-io/nats.go"
)

// The JetStream stream snapshot API ($JS.API.STREAM.SNAPSHOT and
// $JS.API.STREAM.RESTORE). Neither nats.go's jetstream package nor its
// legacy JetStreamContext wraps it, so this is the client side of the
// server's protocol: the snapshot is the server's own consistent copy of a
// stream (an s2-compressed archive of its state and messages), sent in chunks the receiver acks
// for flow control; a restore sends the same bytes back in chunks the
// server acks, and the stream comes back with its messages at their
// sequences, with their timestamps, and a new creation time.

const (
	snapshotChunk = 128 << 10 // bytes per chunk, the server's default
	// snapshotIdle bounds the wait for the server's next chunk or ack.
	snapshotIdle = 30 * time.Second
	// restoreFinish bounds the wait for the server to build the stream
	// from the chunks once the last one is sent.
	restoreFinish = 5 * time.Minute
)

// errSnapshot marks a snapshot or restore the server refused or broke off.
var errSnapshot = errors.New("stream snapshot")

// apiError is the error of a JetStream API response.
type apiError struct {
	Code        int    `json:"code"`
	ErrCode     int    `json:"err_code"`
	Description string `json:"description"`
}

// streamImage is what a snapshot says of its stream, kept raw so a restore
// hands the server back exactly what it gave.
type streamImage struct {
	Config json.RawMessage `json:"config"`
	State  json.RawMessage `json:"state"`
}

// snapshotStream writes a snapshot of stream (without its consumers) to w
// and returns the stream's configuration and state as the server gave them
// when the snapshot began. It works while the stream is being written.
func snapshotStream(ctx context.Context, nc *nats.Conn, stream string, w io.Writer) (streamImage, int64, error) {
	var img streamImage
	inbox := nc.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return img, 0, fmt.Errorf("snapshot %s: subscribe: %w", stream, err)
	}
	defer sub.Unsubscribe()
	_ = sub.SetPendingLimits(-1, -1) // the server's window bounds what is in flight
	req, _ := json.Marshal(map[string]any{"deliver_subject": inbox, "no_consumers": true, "chunk_size": snapshotChunk})
	var resp struct {
		streamImage
		Error *apiError `json:"error"`
	}
	if err := apiRequest(ctx, nc, "$JS.API.STREAM.SNAPSHOT."+stream, req, &resp); err != nil {
		return img, 0, fmt.Errorf("snapshot %s: %w", stream, err)
	}
	if resp.Error != nil {
		return img, 0, fmt.Errorf("snapshot %s: %w: %s (%d)", stream, errSnapshot, resp.Error.Description, resp.Error.ErrCode)
	}
	img = resp.streamImage
	var n int64
	for {
		mctx, cancel := context.WithTimeout(ctx, snapshotIdle)
		msg, err := sub.NextMsgWithContext(mctx)
		cancel()
		if err != nil {
			return img, n, fmt.Errorf("snapshot %s after %d bytes: %w", stream, n, err)
		}
		// The end is an empty message: with status 204, or no header at
		// all when the whole snapshot fitted in one chunk; another status
		// is the server's error.
		if status := msg.Header.Get("Status"); len(msg.Data) == 0 {
			if status == "" || status == "204" {
				return img, n, nil
			}
			return img, n, fmt.Errorf("snapshot %s after %d bytes: %w: server says %s %s", stream, n, errSnapshot, status, msg.Header.Get("Description"))
		}
		k, err := w.Write(msg.Data)
		n += int64(k)
		if err != nil {
			return img, n, fmt.Errorf("snapshot %s: write: %w", stream, err)
		}
		if msg.Reply != "" {
			if err := msg.Respond(nil); err != nil {
				return img, n, fmt.Errorf("snapshot %s: ack chunk: %w", stream, err)
			}
		}
	}
}

// restoreStream recreates stream from a snapshot: img as snapshotStream
// returned it and r the snapshot's bytes. The stream must not exist.
func restoreStream(ctx context.Context, nc *nats.Conn, stream string, img streamImage, r io.Reader) error {
	req, err := json.Marshal(img)
	if err != nil {
		return fmt.Errorf("restore %s: %w", stream, err)
	}
	var resp struct {
		DeliverSubject string    `json:"deliver_subject"`
		Error          *apiError `json:"error"`
	}
	if err := apiRequest(ctx, nc, "$JS.API.STREAM.RESTORE."+stream, req, &resp); err != nil {
		return fmt.Errorf("restore %s: %w", stream, err)
	}
	if resp.Error != nil {
		return fmt.Errorf("restore %s: %w: %s (%d)", stream, errSnapshot, resp.Error.Description, resp.Error.ErrCode)
	}
	buf := make([]byte, snapshotChunk)
	var sent int64
	for {
		n, rerr := io.ReadFull(r, buf)
		if n > 0 {
			cctx, cancel := context.WithTimeout(ctx, snapshotIdle)
			reply, err := nc.RequestWithContext(cctx, resp.DeliverSubject, buf[:n])
			cancel()
			if err != nil {
				return fmt.Errorf("restore %s after %d bytes: %w", stream, sent, err)
			}
			if len(reply.Data) > 0 {
				var e struct {
					Error *apiError `json:"error"`
				}
				if json.Unmarshal(reply.Data, &e) == nil && e.Error != nil {
					return fmt.Errorf("restore %s after %d bytes: %w: %s (%d)", stream, sent, errSnapshot, e.Error.Description, e.Error.ErrCode)
				}
			}
			sent += int64(n)
		}
		if errors.Is(rerr, io.EOF) || errors.Is(rerr, io.ErrUnexpectedEOF) {
			break
		}
		if rerr != nil {
			return fmt.Errorf("restore %s: read the snapshot: %w", stream, rerr)
		}
	}
	var done struct {
		Error *apiError `json:"error"`
	}
	fctx, cancel := context.WithTimeout(ctx, restoreFinish)
	defer cancel()
	reply, err := nc.RequestWithContext(fctx, resp.DeliverSubject, nil)
	if err != nil {
		return fmt.Errorf("restore %s: finish: %w", stream, err)
	}
	if err := json.Unmarshal(reply.Data, &done); err != nil {
		return fmt.Errorf("restore %s: finish: %w", stream, err)
	}
	if done.Error != nil {
		return fmt.Errorf("restore %s: %w: %s (%d)", stream, errSnapshot, done.Error.Description, done.Error.ErrCode)
	}
	return nil
}

// apiRequest sends a JetStream API request and decodes its JSON reply into v.
func apiRequest(ctx context.Context, nc *nats.Conn, subject string, req []byte, v any) error {
	rctx, cancel := context.WithTimeout(ctx, snapshotIdle)
	defer cancel()
	reply, err := nc.RequestWithContext(rctx, subject, req)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(reply.Data, v); err != nil {
		return fmt.Errorf("decode the reply of %s: %w", subject, err)
	}
	return nil
}
