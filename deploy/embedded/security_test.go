package embedded_test

import (
	"context"
	"crypto/rand"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/ebbsync/ebb/deploy/auth"
	"github.com/ebbsync/ebb/deploy/embedded"
	"github.com/ebbsync/ebb/deploy/embedded/embeddedtest"
)

func TestStart_TLSAndUsers(t *testing.T) {
	certs := embeddedtest.MustCerts(t)
	tc, err := embedded.LoadServerTLS(certs.ServerCert, certs.ServerKey, "")
	if err != nil {
		t.Fatal(err)
	}
	s := embeddedtest.MustStart(t, func(c *embedded.Config) {
		c.TLS = tc
		c.Users = []*server.User{{Username: "alice", Password: "pw"}}
	})
	if !strings.HasPrefix(s.ClientURL(), "tls://") {
		t.Fatalf("ClientURL %q, want tls://", s.ClientURL())
	}
	// The server's own connection: in process, internal user, no TLS.
	nc := embeddedtest.MustConnect(t, s)
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	ctc, err := embedded.LoadClientTLS(certs.CA, "", "")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		opts    []nats.Option
		wantErr bool
	}{
		{"no CA", []nats.Option{nats.UserInfo("alice", "pw")}, true},
		{"wrong password", []nats.Option{nats.Secure(ctc), nats.UserInfo("alice", "nope")}, true},
		{"internal user name, guessed password", []nats.Option{nats.Secure(ctc), nats.UserInfo("_ebbinternal", "")}, true},
		{"no credentials", []nats.Option{nats.Secure(ctc)}, true},
		{"CA and password", []nats.Option{nats.Secure(ctc), nats.UserInfo("alice", "pw")}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nc, err := nats.Connect(s.ClientURL(), append(tt.opts, nats.Timeout(5*time.Second))...)
			if err == nil {
				nc.Close()
			}
			if (err != nil) != tt.wantErr {
				t.Fatalf("connect: %v, want error %v", err, tt.wantErr)
			}
		})
	}
}

func TestStart_JetStreamKeyAndUserValidation(t *testing.T) {
	_, err := embedded.Start(t.Context(), embedded.Config{Dir: t.TempDir(), DontListen: true, JetStreamKey: []byte("short"),
		Users: []*server.User{{Username: "_ebbx"}, nil}, Login: auth.LoginLimit{Burst: -1}})
	if !errors.Is(err, embedded.ErrInvalidConfig) {
		t.Fatalf("err = %v, want ErrInvalidConfig", err)
	}
	for _, want := range []string{"JetStreamKey", "Users[0]", "Users[1]", "Login"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}

	key := make([]byte, 32)
	_, _ = rand.Read(key)
	s := embeddedtest.MustStart(t, embeddedtest.InProcess(), func(c *embedded.Config) { c.JetStreamKey = key })
	if got := s.NATS().JetStreamConfig(); got == nil {
		t.Fatal("JetStream off")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
}
