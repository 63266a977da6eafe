package jwtlogin

import (
	"fmt"
	"time"

	"github.com/go-jose/go-jose/v4/jwt"
)

// Peek reads the user claim (userClaim; empty means DefaultUserClaim) and
// the expiry of token WITHOUT verifying its signature: for a client,
// which must know the name it logs in as (its client id and inbox) and
// can say at once that its token has expired. Nothing that grants access
// may rely on it; the server verifies. The expiry is zero if the token
// has none. Errors wrap ErrMalformed.
func Peek(token, userClaim string) (user string, expiry time.Time, err error) {
	if userClaim == "" {
		userClaim = DefaultUserClaim
	}
	tok, err := jwt.ParseSigned(token, DefaultAlgorithms)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	var std jwt.Claims
	var custom map[string]any
	if err := tok.UnsafeClaimsWithoutVerification(&std, &custom); err != nil {
		return "", time.Time{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	user, _ = custom[userClaim].(string)
	if std.Expiry != nil {
		expiry = std.Expiry.Time()
	}
	return user, expiry, nil
}
