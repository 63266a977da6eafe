package server

import (
	"errors"
	"net/url"
	"slices"
	"strings"

	"github.com/nats-io/nats.go"
)

// redacted replaces a password or a token in what RedactURL shows.
const redacted = "REDACTED"

// RedactURL returns s, one NATS URL or several separated by commas (as
// nats.Connect takes them, and in every form it takes: with or without a
// scheme, user and password, a token alone, or text that does not parse
// as a URL), with every secret replaced by "REDACTED": in each URL, whatever
// lies between the start (or the "//" after the scheme) and the last "@"
// is the user information; a user:password keeps its user, a token alone
// (no ":") is replaced whole. In the query (after the first "?" that
// follows the user information), the value of every parameter whose name
// says it holds a secret (password, pass, passwd, pwd, sslpassword,
// token, secret: case-insensitive; as pgx and libpq take a password in
// postgres://user@host/db?password=...) is replaced too. Any other part
// is shown as it is. It never parses, so a URL that does not parse is
// redacted all the same.
//
// A comma separates URLs only where it cannot belong to a secret: a piece
// after a query ("?"), or holding the "@" a piece before it lacks, is
// taken as part of that URL (a password or a query value with a comma)
// unless it starts a URL of its own ("://"). Where that is ambiguous it
// hides more, never less.
func RedactURL(s string) string {
	var urls []string
	for _, p := range strings.Split(s, ",") {
		if n := len(urls); n > 0 && !strings.Contains(p, "://") {
			prev := urls[n-1]
			if strings.Contains(prev, "?") || (!strings.Contains(prev, "@") && strings.Contains(p, "@")) {
				urls[n-1] = prev + "," + p
				continue
			}
		}
		urls = append(urls, p)
	}
	for i, u := range urls {
		urls[i] = redactOne(u)
	}
	return strings.Join(urls, ",")
}

// RedactURLs is RedactURL of urls joined with commas.
func RedactURLs(urls []string) string { return RedactURL(strings.Join(urls, ",")) }

// splitUserInfo cuts one URL into what precedes its user information
// (the scheme and "//", if any), the user information, and the rest
// (host, port, ...); userinfo is "" and ok false without an "@".
func splitUserInfo(s string) (prefix, userinfo, rest string, ok bool) {
	at := strings.LastIndex(s, "@")
	if at < 0 {
		return "", "", s, false
	}
	start := 0
	if i := strings.Index(s[:at], "//"); i >= 0 {
		start = i + 2
	}
	return s[:start], s[start:at], s[at+1:], true
}

func redactOne(s string) string {
	prefix, userinfo, rest, ok := splitUserInfo(s)
	if !ok {
		return redactQuery(s)
	}
	if user, _, hasPass := strings.Cut(userinfo, ":"); hasPass {
		return prefix + user + ":" + redacted + "@" + redactQuery(rest)
	}
	return prefix + redacted + "@" + redactQuery(rest)
}

// secretParams are the query parameters (lower case) whose value
// redactQuery replaces.
var secretParams = []string{"password", "pass", "passwd", "pwd", "sslpassword", "token", "secret"}

// redactQuery returns s (a URL without its user information) with the
// value of every secret query parameter (secretParams) replaced.
func redactQuery(s string) string {
	base, query, ok := strings.Cut(s, "?")
	if !ok {
		return s
	}
	params := strings.Split(query, "&")
	for i, p := range params {
		name, _, hasValue := strings.Cut(p, "=")
		if hasValue && slices.Contains(secretParams, strings.ToLower(unescape(name))) {
			params[i] = name + "=" + redacted
		}
	}
	return base + "?" + strings.Join(params, "&")
}

// withoutUserInfo returns the URL s with no user information.
func withoutUserInfo(s string) string {
	prefix, _, rest, ok := splitUserInfo(s)
	if !ok {
		return s
	}
	return prefix + rest
}

// credentials returns the nats.Options that log in as the first URL of
// urls holding user information does (a user and password, or a token),
// for a connection to a URL without it; none if no URL holds any.
func credentials(urls []string) []nats.Option {
	for _, u := range urls {
		for _, p := range strings.Split(u, ",") {
			_, userinfo, _, ok := splitUserInfo(strings.TrimSpace(p))
			if !ok || userinfo == "" {
				continue
			}
			user, pass, hasPass := strings.Cut(userinfo, ":")
			user, pass = unescape(user), unescape(pass)
			if hasPass {
				return []nats.Option{nats.UserInfo(user, pass)}
			}
			return []nats.Option{nats.Token(user)}
		}
	}
	return nil
}

func unescape(s string) string {
	if u, err := url.PathUnescape(s); err == nil {
		return u
	}
	return s
}

// redactError is an error whose text has every secret of the URLs it
// was made about removed; errors.Is and As still see the original.
type redactError struct {
	msg string
	err error
}

func (e *redactError) Error() string { return e.msg }
func (e *redactError) Unwrap() error { return e.err }

// RedactError returns err with the secrets of urls (each one or several
// separated by commas, as RedactURL takes them) out of its text: what
// redactErr does, for the commands that connect to a NATS URL a user
// gave. errors.Is and As still see err. nil for nil.
func RedactError(err error, urls ...string) error { return redactErr(err, urls) }

// redactErr returns err with each of urls (and the secret in each) taken
// out of its text: a URL as RedactURL shows it. An error of a URL that
// does not parse (*url.Error, whose text quotes the URL and the part of
// it that did not parse) says only that, and so does any error whose
// text would still show a secret. nil for nil.
func redactErr(err error, urls []string) error {
	if err == nil {
		return nil
	}
	if ue := (*url.Error)(nil); errors.As(err, &ue) {
		return &redactError{msg: "a NATS URL does not parse (" + ue.Op + "; not shown: it may hold a password)", err: err}
	}
	msg := err.Error()
	for _, u := range urls {
		for _, p := range strings.Split(u, ",") {
			p = strings.TrimSpace(p)
			if p == "" {
				continue
			}
			msg = strings.ReplaceAll(msg, p, redactOne(p))
			_, userinfo, _, ok := splitUserInfo(p)
			if !ok || userinfo == "" {
				continue
			}
			secret := userinfo
			if _, pass, hasPass := strings.Cut(userinfo, ":"); hasPass {
				secret = pass
			}
			for _, s := range []string{secret, unescape(secret)} {
				if s != "" && strings.Contains(msg, s) {
					return &redactError{msg: "NATS: an error whose text would show a password", err: err}
				}
			}
		}
	}
	return &redactError{msg: msg, err: err}
}
