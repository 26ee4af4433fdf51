package main

// The server: the uplinks' far end, and where the clients' connections leave for the
// networks behind it.

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/tun"
)

func runServer(ctx context.Context, c *serverConfig, log *slog.Logger) error {
	var srcs []net.Listener
	for _, a := range c.Listen {
		l, err := net.Listen("tcp", a)
		if err != nil {
			for _, s := range srcs {
				s.Close()
			}
			return err
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
