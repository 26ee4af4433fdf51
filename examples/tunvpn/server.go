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
	ln, err := rendr.Listen(rendr.ListenConfig{Key: c.PrivateKey, Peers: c.Peers,
		Egress: rendr.AllowEgress(c.Allow, rendr.DirectEgress), Options: rendr.Options{Logger: log}}, srcs...)
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
