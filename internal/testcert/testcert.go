// Package testcert makes a throwaway TLS identity at run time for tests, benchmarks and
// examples that need a TLS carrier (QUIC, TLS over TCP). Nothing is stored: each call makes a
// new key. Library code never uses it: a carrier's TLS configuration is the embedder's.
package testcert

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"time"
)

// Name is the server name the certificate is for.
const Name = "rendr.test"

// New returns a server configuration with a fresh self-signed ECDSA P-256 certificate for Name,
// and a client configuration that trusts exactly that certificate.
func New() (server, client *tls.Config, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: Name},
		DNSNames:              []string{Name},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	server = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert}},
		MinVersion: tls.VersionTLS13}
	client = &tls.Config{RootCAs: pool, ServerName: Name, MinVersion: tls.VersionTLS13}
	return server, client, nil
}

// Must is New for callers that cannot go on without it.
func Must() (server, client *tls.Config) {
	s, c, err := New()
	if err != nil {
		panic(err)
	}
	return s, c
}
