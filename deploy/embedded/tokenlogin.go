package embedded

import "github.com/nats-io/nats-server/v2/server"

// TokenLogin checks the logins that present a token; see Config.TokenLogin.
type TokenLogin interface {
	server.Authentication
	// Bind hands it the server, before the server accepts connections.
	Bind(*server.Server)
}

// tokenFirst sends a login with a token to token, any other to rest.
type tokenFirst struct {
	token server.Authentication
	rest  server.Authentication
}

func (t tokenFirst) Check(c server.ClientAuthentication) bool {
	if o := c.GetOpts(); o != nil && o.Token != "" && o.Username == "" {
		return t.token.Check(c)
	}
	return t.rest.Check(c)
}
