package server_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	natsserver "github.com/nats-io/nats-server/v2/server"

	"github.com/ebbsync/ebb/deploy/auth"
	"github.com/ebbsync/ebb/deploy/auth/jwtlogin"
	"github.com/ebbsync/ebb/deploy/embedded"
	"github.com/ebbsync/ebb/deploy/server"
)

// unknownLogin is a TokenLogin that does not say whether it links token
// users in filtered reads mode.
type unknownLogin struct{}

func (unknownLogin) Check(natsserver.ClientAuthentication) bool { return false }
func (unknownLogin) Bind(*natsserver.Server)                    {}

// TestStart_RulesNeedFilteredTokenLogin: under sync rules a TokenLogin
// must report filtered reads (jwtlogin.NATSLogin made from Users in
// filtered-reads mode): one made from unfiltered or no Users, or one that
// does not say, would link token users' accounts to read CHANGES
// directly, and is refused before anything starts.
func TestStart_RulesNeedFilteredTokenLogin(t *testing.T) {
	users, err := auth.New([]auth.User{{Name: "ann", Password: "ann-secret", Tenant: "acme", Role: auth.RoleClient}})
	if err != nil {
		t.Fatal(err)
	}
	filtered := users.WithFilteredReads(true)
	for _, tc := range []struct {
		name    string
		login   embedded.TokenLogin
		wantErr error
	}{
		{"from unfiltered users", jwtlogin.NewNATSLogin(nil, users, nil), server.ErrInvalidConfig},
		{"from no users", jwtlogin.NewNATSLogin(nil, nil, nil), server.ErrInvalidConfig},
		{"that does not say", unknownLogin{}, server.ErrInvalidConfig},
		{"from filtered users", jwtlogin.NewNATSLogin(nil, filtered, nil), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t)
			cfg.Users, cfg.Rules, cfg.TokenLogin = filtered, testRules(t), tc.login
			s, err := server.Start(t.Context(), cfg)
			if s != nil {
				defer s.Close(context.Background())
			}
			if !errors.Is(err, tc.wantErr) || (err != nil && !strings.Contains(err.Error(), "TokenLogin")) {
				t.Fatalf("start with rules and a TokenLogin %s: %v, want %v naming TokenLogin", tc.name, err, tc.wantErr)
			}
		})
	}
}
