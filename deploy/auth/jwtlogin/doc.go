// Package jwtlogin logs users in with JWTs from the app's own identity
// provider, next to the users file of package deploy/auth: over HTTP (the
// gateway's "Authorization: Bearer <jwt>") and over NATS (a connection
// that presents the JWT as its token, nats.Token).
//
// # Verifying
//
// A Verifier checks a token's signature against the provider's JWKS
// (Config.JWKSURL) or configured public keys (Config.PublicKeyFile), then
// its claims: "iss" equal to Config.Issuer, Config.Audience among "aud",
// "exp" present and not past, "nbf" and "iat" not in the future, each
// with Config.Leeway of clock skew. Only asymmetric algorithms are
// accepted (a JWKS is public, so HMAC would let anyone sign). The claims
// named by Config.UserClaim, TenantClaim and RolesClaim (defaults "sub",
// "tenant", "roles") give the user name, its tenant and its role: "service"
// among the roles makes an auth.RoleService, anything else an
// auth.RoleClient; "admin" is refused, so a token never makes an operator.
// Config.GroupsClaim (default "groups"; a string or a list of strings,
// each a valid name) gives the user's groups, which sync rules name.
// Every refusal wraps ErrInvalidToken and a sentinel saying why
// (ErrExpired, ErrIssuer, ErrAudience, ErrSignature, ErrUnknownKey, ...).
//
// The JWKS is fetched when the Verifier is made (New fails if it cannot
// be), again every Config.Refresh, and again when a token names a key id
// the set lacks, at most once per Config.MinRefresh for all callers. So a
// key rotation needs no restart: a token signed with a new key is accepted
// as soon as the provider serves that key, and one signed with a key the
// provider dropped is refused once the set is refreshed. A failed refresh
// keeps the keys already known. A refresh runs on the Verifier's own
// context with its own timeout (DefaultFetchTimeout), never on the context
// of the Verify that caused it, so a caller that sends an unknown key id
// and goes away cannot abort it and burn the MinRefresh window; Verify
// waits for it only as long as its own context lasts. After a fetch that
// failed, an unknown key id may cause the next one FailedRefreshRetry (1 s)
// later rather than MinRefresh: sooner, so a passing IdP outage does not
// keep a new key out for MinRefresh, and still rate limited, so a flood of
// unknown key ids makes at most one fetch per second per server. Parsing, JWKS decoding and claim checks are
// go-jose's (github.com/go-jose/go-jose/v4); nothing here parses a token by
// hand.
//
// # The same rights as a users-file user
//
// A token's identity is an auth.User with no password, so its rights are
// the ones deploy/auth gives any user of that name, tenant and role:
// over HTTP the gateway's tenant checks (auth.User.CanRead and the
// others), over NATS the permissions of auth.Users.PermissionsOf and an
// account of its own (auth.AccountOf) linked to auth.StreamAccount by
// auth.Link: the imports of auth.Imports and the fetch routes of
// auth.FetchRoutesOf, as a users-file user's. A token whose user name the users file lists is
// refused (CheckName, ErrNameTaken): a token never acts as a listed user.
// Over NATS, the name is also refused if a token of another tenant or
// role already logged in as it on this server. A NATSLogin is the
// auth.Directory of its server (Identity): the users file's users, and
// each token user with the groups of its newest accepted login, which the
// publish responder stamps on the user's events and the change responder
// filters by. In the users' filtered reads mode (auth.Users.WithFilteredReads)
// a token user's account is made in that mode too (auth.Users.Link).
//
// # NATS: why not auth callout
//
// nats-server's auth callout (authorization { auth_callout { issuer,
// auth_users, account } }) does not fit ebb's layout, for two reasons
// found in nats-server v2.15's auth.go and auth_callout.go:
//
//   - The embedded server checks passwords with
//     server.Options.CustomClientAuthentication (auth.NATSAuthenticator,
//     for the login guard), and nats-server never runs the callout when
//     CustomClientAuthentication is set.
//   - In a configured (non-operator) server the callout's user JWT can
//     only place a user in an account the server already has (its "aud"
//     is looked up by name; without an account resolver nothing is
//     fetched), while ebb gives every user an account of its own and a
//     token's users are not known in advance. An external server's
//     configuration cannot gain accounts at run time; the embedded one
//     can (that is what NATSLogin does), but the first reason holds there.
//
// So the embedded server dispatches a login that carries a token and no
// user name to NATSLogin (embedded.Config.TokenLogin), in process and
// before the password check: it verifies the token, makes the user's
// account on the running server at its first login (the same imports as
// the configured ones), and registers the connection with the user's
// permissions until the token's expiry, when the server closes it. This
// is what a callout response would do, without the round trip. With an
// external server (ebb serve --nats) tokens work over HTTP only.
//
// Quotas: a token user's account has the users file's limits, as a
// users-file user's account has them from the configuration:
// max_connections (also counted at login), max_subscriptions and
// max_payload, refused with nats-server's own errors ("maximum account
// active connections exceeded", "maximum subscriptions exceeded",
// "maximum payload violation"). nats-server sets them on an account made
// at run time only through the account's claims, so auth.Link sets them
// there with the account's imports. The publish rate and storage quotas
// are the responders' (auth.Meter), per server (see deploy/auth).
//
// A refused NATS login is answered "Authorization Violation", the only
// error the protocol has for it; the reason is logged by the server, and
// the ebb client checks a token's expiry itself before connecting (Peek).
package jwtlogin
