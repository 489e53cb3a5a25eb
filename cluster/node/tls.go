package node

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// tlsFiles are the node's certificate, key and CA, loaded once at start.
type tlsFiles struct {
	cert tls.Certificate
	ca   *x509.CertPool // nil without --tls-ca
}

// loadTLS loads Config.TLSCertFile, TLSKeyFile and TLSCAFile. It returns
// nil without a certificate, and an error naming the file for a missing
// or unreadable file, a key that does not match the certificate, or a CA
// file without a certificate in it.
func loadTLS(cfg Config) (*tlsFiles, error) {
	if cfg.TLSCertFile == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(cfg.TLSCertFile, cfg.TLSKeyFile)
	if err != nil {
		return nil, fmt.Errorf("node: --tls-cert %s / --tls-key %s: %w", cfg.TLSCertFile, cfg.TLSKeyFile, err)
	}
	if cert.Leaf == nil {
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("node: --tls-cert %s: %w", cfg.TLSCertFile, err)
		}
	}
	t := &tlsFiles{cert: cert}
	if cfg.TLSCAFile != "" {
		if t.ca, err = LoadCertPool(cfg.TLSCAFile); err != nil {
			return nil, fmt.Errorf("node: --tls-ca: %w", err)
		}
	}
	return t, nil
}

// LoadCertPool reads a PEM file of CA certificates (the CLI uses it for
// --tls-ca too).
func LoadCertPool(path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s: no PEM certificate in it", path)
	}
	return pool, nil
}

// server is the TLS config of the API and the NATS client port.
func (t *tlsFiles) server() *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{t.cert},
		MinVersion:   tls.VersionTLS12,
		NextProtos:   []string{"h2", "http/1.1"},
	}
}

// routes is the TLS config of the NATS routes between nodes: mutual TLS,
// each side presenting the node certificate and verifying the other's
// against the CA (Config.Validate requires --tls-ca in a cluster).
func (t *tlsFiles) routes() *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{t.cert},
		RootCAs:      t.ca,
		ClientCAs:    t.ca,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS12,
	}
}

// validateSecurity checks the auth and TLS fields of a defaulted config.
func (cfg Config) validateSecurity() error {
	if (cfg.TLSCertFile == "") != (cfg.TLSKeyFile == "") {
		return errors.New("node: --tls-cert and --tls-key go together")
	}
	if cfg.TLSCAFile != "" && cfg.TLSCertFile == "" {
		return errors.New("node: --tls-ca needs --tls-cert and --tls-key (the node's own certificate)")
	}
	if cfg.TLSCertFile != "" && cfg.clustered() && cfg.TLSCAFile == "" {
		return errors.New("node: TLS in a cluster needs --tls-ca: the routes between nodes verify each other's certificates against it")
	}
	if cfg.AuthTokensFile != "" && (cfg.NATSToken != "" || len(cfg.NATSNkeys) > 0) {
		return errors.New("node: --auth-tokens excludes --nats-token and --nats-nkey: NATS clients present their API token")
	}
	if cfg.AuthReloadInterval < 0 {
		return errors.New("node: negative auth reload interval")
	}
	return nil
}
