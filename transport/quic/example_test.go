package quic_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"math/big"
	"time"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/transport/quic"
)

// A rendr flow over a QUIC path. The path is declared a secure carrier, on both sides, so that
// rendr leaves the encryption to QUIC's TLS instead of encrypting its records a second time.
func Example() {
	serverTLS, clientTLS := selfSigned("rendr.example")
	srvKey, cliKey := rendr.MustNewKey(), rendr.MustNewKey()

	// Listening side: a QUIC listener is a source of carriers like any net.Listener.
	ln, err := rendr.Listen(rendr.ListenConfig{Key: srvKey, Peers: []rendr.PublicKey{cliKey.Public()}})
	if err != nil {
		panic(err)
	}
	defer ln.Close()
	src, err := quic.Listen("127.0.0.1:0", serverTLS)
	if err != nil {
		panic(err)
	}
	if err := ln.AddSource(src, rendr.SecureSource()); err != nil {
		panic(err)
	}

	// Dialing side: quic.Dialer is a path's dial function.
	d, err := rendr.NewDialer(rendr.DialerConfig{
		Key: cliKey, PeerKey: srvKey.Public(),
		Root: rendr.Path("quic", quic.Dialer(src.Addr().String(), clientTLS), rendr.SecureCarrier()),
	})
	if err != nil {
		panic(err)
	}
	defer d.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx)
	if err != nil {
		panic(err)
	}
	defer c.Close()
	lc, err := ln.AcceptContext(ctx)
	if err != nil {
		panic(err)
	}
	defer lc.Close()

	c.Write([]byte("hello over QUIC"))
	c.CloseWrite()
	got, _ := io.ReadAll(lc)
	fmt.Println(string(got))
	// Output: hello over QUIC
}

// selfSigned makes a throwaway certificate for name, and a client configuration that trusts
// that certificate alone. A deployment loads its own certificate, or pins the server's.
func selfSigned(name string) (server, client *tls.Config) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		DNSNames:     []string{name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		panic(err)
	}
	cert, _ := x509.ParseCertificate(der)
	roots := x509.NewCertPool()
	roots.AddCert(cert)
	server = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
	client = &tls.Config{RootCAs: roots, ServerName: name}
	return server, client
}
