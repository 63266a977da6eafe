package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/ebbsync/ebb/deploy/auth/jwtlogin"
	"github.com/ebbsync/ebb/deploy/embedded"
	"github.com/ebbsync/ebb/deploy/gateway"
)

// jwtFetchTimeout bounds the first JWKS fetch at start.
const jwtFetchTimeout = 15 * time.Second

// verifier returns the login token verifier c configures, or nil if c
// sets none of issuer, audience, JWKS URL and public key (claim names and
// durations alone turn nothing on). Tokens need the users file (withUsers): it is what turns
// authentication on, and its names are never given to a token.
func (c jwtConfig) verifier(withUsers bool) (*jwtlogin.Verifier, error) {
	if c.Issuer == "" && c.Audience == "" && c.JWKSURL == "" && c.PublicKeyFile == "" {
		return nil, nil
	}
	if !withUsers {
		return nil, usagef("--jwt-*: login tokens need --auth (a users file, with at least the admins)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), jwtFetchTimeout)
	defer cancel()
	v, err := jwtlogin.New(ctx, jwtlogin.Config{
		Issuer: c.Issuer, Audience: c.Audience, JWKSURL: c.JWKSURL, PublicKeyFile: c.PublicKeyFile,
		UserClaim: c.UserClaim, TenantClaim: c.TenantClaim, RolesClaim: c.RolesClaim,
		Leeway: time.Duration(c.Leeway), Refresh: time.Duration(c.Refresh),
	})
	if err != nil {
		return nil, usagef("--jwt-*: %v", err)
	}
	return v, nil
}

// tokenVerifier is v as the gateway's TokenVerifier: nil stays nil.
func tokenVerifier(v *jwtlogin.Verifier) gateway.TokenVerifier {
	if v == nil {
		return nil
	}
	return v
}

// tokenLogin is the embedded server's token login, if tokens are on.
func tokenLogin(sec security, log *slog.Logger) embedded.TokenLogin {
	if sec.tokens == nil || sec.users == nil {
		return nil
	}
	return jwtlogin.NewNATSLogin(sec.tokens, sec.users, log.With("component", "login"))
}
