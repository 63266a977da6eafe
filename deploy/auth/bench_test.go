package auth_test

import (
	"testing"

	"github.com/ebbsync/ebb/deploy/auth"
)

// BenchmarkAuthenticate is the price of the HTTP gateway's credential check
// per request.
func BenchmarkAuthenticate(b *testing.B) {
	u, err := auth.Parse([]byte(`users:
  - {name: plain, password: pw, tenant: acme, role: client}
  - {name: hashed, password_hash: "$2a$10$EvPDW2uN0tGENNJD5Ck4kOheLa7Ss69JhzWwiV8SC.roIY2adOoMa", tenant: acme, role: client}
`))
	if err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct{ name, user, pw string }{
		{"plain", "plain", "pw"},
		{"bcrypt-cached", "hashed", "alice-secret"},
		{"bcrypt-wrong", "hashed", "nope"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				_, _ = u.Authenticate(bc.user, bc.pw)
			}
		})
	}
}
