package main

// The server: the uplinks' far end, and where the clients' connections leave for the
// networks behind it.

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"os"
	"time"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/transport/quic"
	"github.com/rendr-go/rendr/transport/tcp"
	"github.com/rendr-go/rendr/transport/udpflow"
	"github.com/rendr-go/rendr/tun"
)

func runServer(ctx context.Context, c *serverConfig, log *slog.Logger) error {
	var srcs []net.Listener
	var tlsConf *tls.Config
	for _, a := range c.Listen {
		carrier, addr, _ := parseCarrier(a) // loadServer checked it
		var l net.Listener
		var err error
		switch carrier {
		case "quic":
			if tlsConf == nil {
				tlsConf, err = ephemeralTLS()
			}
			if err == nil {
				l, err = quic.Listen(addr.String(), tlsConf)
			}
		case "udp":
			l, err = udpflow.Listen(addr.String())
		default:
			l, err = tcp.Listen(addr.String())
		}
		if err != nil {
			for _, s := range srcs {
				s.Close()
			}
			return fmt.Errorf("listen %s: %w", a, err)
		}
		srcs = append(srcs, l)
	}
	egress := rendr.AllowEgress(c.Allow, rendr.DirectEgress)
	var gw *tun.Gateway
	if c.TUN != "" {
		g, teardown, err := startGateway(c)
		if err != nil {
			for _, s := range srcs {
				s.Close()
			}
			return err
		}
		defer func() {
			if err := teardown(); err != nil {
				log.Warn("tunvpn: tearing the gateway down", "err", err)
			}
		}()
		gw, egress = g, g.Egress(egress)
	}
	ln, err := rendr.Listen(rendr.ListenConfig{Key: c.PrivateKey, Peers: c.Peers,
		Egress: egress, Options: rendr.Options{Logger: log}}, srcs...)
	if err != nil {
		for _, s := range srcs {
			s.Close()
		}
		return err
	}
	defer ln.Close()
	st, err := serveStatus(c.Status, func() report {
		l := ln.Stats()
		r := report{Role: "server", Listener: &l}
		if gw != nil {
			s := gw.Stats()
			r.Gateway = &s
		}
		for _, s := range ln.Sessions() {
			r.Sessions = append(r.Sessions, viewSession(s))
		}
		return r
	})
	if err != nil {
		return err
	}
	defer os.Remove(c.Status)
	defer st.Close()
	fmt.Printf("tunvpn server: listening on %v for %d peers; status on %s\n", c.Listen, len(c.Peers), c.Status)
	<-ctx.Done()
	return nil
}

// ephemeralTLS is the QUIC carriers' TLS: a certificate made at each start and checked by no
// one. The clients know the server by its rendr key, which rendr's handshake inside each
// carrier proves; TLS here only lets QUIC run.
func ephemeralTLS() (*tls.Config, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: "tunvpn"},
		DNSNames: []string{"tunvpn"}, NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(10, 0, 0),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}, nil
}
