package bus

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"

	"github.com/nats-io/nats-server/v2/server"
)

// tokenAuth is the server's client authentication when
// Config.Authenticate is set: the node's own in-process connection by its
// random token, every other client by Authenticate.
type tokenAuth struct {
	self  string
	check func(token string) (*Permissions, bool)
}

// Check is called by the server for each new client connection, on that
// connection's goroutine, and for every open one on a reload of the
// server's options (Reauthorize), on the reloading goroutine.
func (a *tokenAuth) Check(c server.ClientAuthentication) bool {
	if c.Kind() != server.CLIENT {
		return false
	}
	tok := c.GetOpts().Token
	if tok == "" {
		return false
	}
	if subtle.ConstantTimeCompare([]byte(tok), []byte(a.self)) == 1 {
		// No Username: on a reload (Reauthorize, SetRoutes) the server
		// closes a client whose username is not among its configured
		// users (reload.go, clientHasMovedToDifferentAccount), and there
		// are none with custom authentication.
		c.RegisterUser(&server.User{})
		return true
	}
	perms, ok := a.check(tok)
	if !ok {
		return false
	}
	u := &server.User{}
	if perms != nil {
		u.Permissions = &server.Permissions{
			Publish:   &server.SubjectPermission{Allow: perms.PublishAllow, Deny: perms.PublishDeny},
			Subscribe: &server.SubjectPermission{Allow: perms.SubscribeAllow, Deny: perms.SubscribeDeny},
		}
	}
	c.RegisterUser(u)
	return true
}

func randomToken() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return hex.EncodeToString(b[:]), nil
}
