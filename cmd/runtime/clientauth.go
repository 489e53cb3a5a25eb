package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"

	"github.com/spf13/cobra"

	"github.com/troupe-dev/troupe/cluster/node"
)

// clientAuth is how the CLI authenticates to a node: the bearer token of
// --token (TROUPE_TOKEN) and the CA of --tls-ca (TROUPE_TLS_CA) that
// signed the node's certificate. It travels in the command's context, so
// that commands run side by side (tests call run concurrently) never share
// it.
type clientAuth struct {
	token string
	pool  *x509.CertPool // nil: the system's roots
	// tr is the transport for the node's API (TLS with pool).
	tr *http.Transport
}

type clientAuthKey struct{}

// addClientAuthFlags adds --token and --tls-ca to every command.
func addClientAuthFlags(root *cobra.Command) {
	f := root.PersistentFlags()
	f.String("token", "", "bearer token to present to the node (API, NATS, dashboard); or TROUPE_TOKEN")
	f.String("tls-ca", "", "PEM file of the CA that signed the node's certificate (for https:// and tls:// nodes); or TROUPE_TLS_CA")
}

// setClientAuth reads --token and --tls-ca once the environment is applied
// and puts them in the command's context. A CA file that cannot be read
// fails the command before it dials.
func setClientAuth(cmd *cobra.Command) error {
	tok, _ := cmd.Flags().GetString("token")
	caFile, _ := cmd.Flags().GetString("tls-ca")
	a := &clientAuth{token: tok}
	if caFile != "" {
		pool, err := node.LoadCertPool(caFile)
		if err != nil {
			return fmt.Errorf("--tls-ca: %w", err)
		}
		a.pool = pool
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: a.pool, MinVersion: tls.VersionTLS12}
	a.tr = tr
	ctx := cmd.Context()
	if ctx == nil {
		ctx = context.Background()
	}
	cmd.SetContext(context.WithValue(ctx, clientAuthKey{}, a))
	return nil
}

func clientAuthOf(ctx context.Context) *clientAuth {
	a, _ := ctx.Value(clientAuthKey{}).(*clientAuth)
	return a
}

// authTransport adds the context's token to every request and dials with
// its CA.
type authTransport struct{}

func (authTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	a := clientAuthOf(r.Context())
	if a == nil {
		return http.DefaultTransport.RoundTrip(r)
	}
	return tokenTransport{token: a.token, base: a.tr}.RoundTrip(r)
}

// tokenTransport adds a bearer token to every request on base.
type tokenTransport struct {
	token string
	base  http.RoundTripper
}

func (t tokenTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if t.token != "" && r.Header.Get("Authorization") == "" {
		r = r.Clone(r.Context())
		r.Header.Set("Authorization", "Bearer "+t.token)
	}
	return t.base.RoundTrip(r)
}
