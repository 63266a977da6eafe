package producer

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ebbsync/ebb/deploy/embedded/embeddedtest"
	"github.com/ebbsync/ebb/deploy/keys"
	"github.com/ebbsync/ebb/events"
)

const atRestMarker = "producer-atrest-marker-93ab"

func testCipher(t testing.TB, b byte) *keys.Cipher {
	t.Helper()
	var k keys.Key
	k[0] = b
	c, err := k.Cipher(keys.PurposeClient)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func withCipher(c *keys.Cipher) func(*LogConfig) { return func(cfg *LogConfig) { cfg.Cipher = c } }

// TestLog_EncryptedRoundTrip appends writes holding a marker to an
// encrypted log, publishes them (the publisher reads sealed entries),
// and checks the entries read back, the events reach JetStream intact,
// and the file holds no plaintext marker; a plaintext control does.
func TestLog_EncryptedRoundTrip(t *testing.T) {
	s := embeddedtest.MustStart(t)
	nc := embeddedtest.MustConnect(t, s)
	js := embeddedtest.MustJetStream(t, nc)
	mustEnsureStreams(t, js, events.StreamOptions{})

	for _, tc := range []struct {
		name       string
		c          *keys.Cipher
		wantMarker bool
	}{{"plaintext control", nil, true}, {"encrypted", testCipher(t, 1), false}} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "log.db")
			l := mustOpen(t, path, withCipher(tc.c))
			evs := mustAppend(t, l, put("notes", "n1", atRestMarker), put("notes", "n2", atRestMarker))
			p := mustPublisher(t, l, js, nc, PublisherConfig{})
			waitFor(t, 20*time.Second, "events published", func() bool {
				return stateOf(t, l, evs[0].ID) == StatePublished && stateOf(t, l, evs[1].ID) == StatePublished
			})
			if err := p.Close(); err != nil {
				t.Fatal(err)
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			raw, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if got := bytes.Contains(raw, []byte(atRestMarker)); got != tc.wantMarker {
				t.Fatalf("marker in the file: %v, want %v", got, tc.wantMarker)
			}
			l = mustOpen(t, path, withCipher(tc.c))
			e := entryByID(t, l, evs[1].ID)
			if !strings.Contains(string(e.Event.Fields["v"]), atRestMarker) || e.State != StatePublished || e.StreamSeq == 0 {
				t.Fatalf("entry after reopen: %+v", e)
			}
		})
	}
	found := 0
	for _, se := range readEvents(t, js) {
		if strings.Contains(string(se.Event.Fields["v"]), atRestMarker) {
			found++
		}
	}
	if found != 4 {
		t.Fatalf("%d events with the marker in EVENTS, want 4", found)
	}
}

// TestLog_WrongKeyRefused opens a log with the wrong key, without its key,
// and a plaintext log with a key: each fails at open with ErrWrongKey,
// naming the file, and leaves the log usable with the right key.
func TestLog_WrongKeyRefused(t *testing.T) {
	dir := t.TempDir()
	enc, plain := filepath.Join(dir, "enc.db"), filepath.Join(dir, "plain.db")
	for _, p := range []struct {
		path string
		c    *keys.Cipher
	}{{enc, testCipher(t, 1)}, {plain, nil}} {
		l := mustOpen(t, p.path, withCipher(p.c))
		mustAppend(t, l, put("notes", "n1", atRestMarker))
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name string
		path string
		c    *keys.Cipher
	}{
		{"wrong key", enc, testCipher(t, 2)},
		{"missing key", enc, nil},
		{"plaintext with key", plain, testCipher(t, 1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := Open(tt.path, LogConfig{Tenant: "t1", Cipher: tt.c})
			if err == nil {
				l.Close()
			}
			if !errors.Is(err, keys.ErrWrongKey) || !strings.Contains(err.Error(), tt.path) {
				t.Fatalf("open: %v, want ErrWrongKey naming %s", err, tt.path)
			}
		})
	}
	l := mustOpen(t, enc, withCipher(testCipher(t, 1)))
	if es, err := l.Entries(t.Context()); err != nil || len(es) != 1 {
		t.Fatalf("entries with the right key: %d, %v", len(es), err)
	}
}
