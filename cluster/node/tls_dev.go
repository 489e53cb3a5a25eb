package node

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// DevCerts are the files WriteDevCerts wrote.
type DevCerts struct {
	// CA and CAKey are the development CA's certificate and key.
	CA, CAKey string
	// Cert and Key are the node certificate (for the API, NATS clients
	// and routes: server and client authentication) and its key.
	Cert, Key string
}

// WriteDevCerts writes a development CA and a node certificate signed by
// it into dir (ca.pem, ca-key.pem, node.pem, node-key.pem; keys 0600),
// for tests and local use, never for production. The certificate is valid
// for hosts (DNS names or IP addresses) plus localhost and 127.0.0.1, for
// validFor. Existing files are not overwritten.
func WriteDevCerts(dir string, hosts []string, validFor time.Duration) (DevCerts, error) {
	out := DevCerts{
		CA: filepath.Join(dir, "ca.pem"), CAKey: filepath.Join(dir, "ca-key.pem"),
		Cert: filepath.Join(dir, "node.pem"), Key: filepath.Join(dir, "node-key.pem"),
	}
	if validFor <= 0 {
		return DevCerts{}, errors.New("certs: validity must be positive")
	}
	for _, f := range []string{out.CA, out.CAKey, out.Cert, out.Key} {
		if _, err := os.Stat(f); err == nil {
			return DevCerts{}, fmt.Errorf("certs: %s exists: not overwriting it", f)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return DevCerts{}, fmt.Errorf("certs: %w", err)
	}
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return DevCerts{}, fmt.Errorf("certs: %w", err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{Organization: []string{"Troupe development"}, CommonName: "Troupe dev CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(validFor),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return DevCerts{}, fmt.Errorf("certs: CA: %w", err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return DevCerts{}, fmt.Errorf("certs: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{Organization: []string{"Troupe development"}, CommonName: "troupe node"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(validFor),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	for _, h := range append([]string{"localhost", "127.0.0.1"}, hosts...) {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return DevCerts{}, fmt.Errorf("certs: node: %w", err)
	}
	caKeyDER, err := x509.MarshalECPrivateKey(caKey)
	if err != nil {
		return DevCerts{}, fmt.Errorf("certs: %w", err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return DevCerts{}, fmt.Errorf("certs: %w", err)
	}
	for _, w := range []struct {
		path, typ string
		der       []byte
		perm      os.FileMode
	}{
		{out.CA, "CERTIFICATE", caDER, 0o644},
		{out.CAKey, "EC PRIVATE KEY", caKeyDER, 0o600},
		{out.Cert, "CERTIFICATE", der, 0o644},
		{out.Key, "EC PRIVATE KEY", keyDER, 0o600},
	} {
		b := pem.EncodeToMemory(&pem.Block{Type: w.typ, Bytes: w.der})
		if err := os.WriteFile(w.path, b, w.perm); err != nil {
			return DevCerts{}, fmt.Errorf("certs: %w", err)
		}
	}
	return out, nil
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n
}
