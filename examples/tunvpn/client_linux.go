package main

// The client: a TUN whose connections go over the uplinks to the server.

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/tun"
)

func runClient(ctx context.Context, c *clientConfig, log *slog.Logger) error {
	if err := cleanLeftovers(c); err != nil {
		log.Warn("tunvpn: leftovers of an earlier run", "err", err)
	}
	var paths []*rendr.Target
	for _, u := range c.Uplinks {
		d := &net.Dialer{Timeout: 10 * time.Second, Control: carrierControl(c.Mark, u.Interface)}
		if u.Source.IsValid() {
			d.LocalAddr = &net.TCPAddr{IP: u.Source.AsSlice()}
		}
		server := u.Server
		paths = append(paths, rendr.Path(u.Name, func(ctx context.Context) (net.Conn, error) {
			return d.DialContext(ctx, "tcp", server)
		}, rendr.Tier(u.Tier)))
	}
	root := map[string]func(string, ...*rendr.Target) *rendr.Target{
		"selector": rendr.Selector, "race": rendr.Race, "bond": rendr.Bond}[c.Policy]("uplinks", paths...)
	moves := &moveLog{}
	d, err := rendr.NewDialer(rendr.DialerConfig{Key: c.PrivateKey, PeerKey: c.ServerKey, Root: root,
		Options: rendr.Options{Logger: log, OnMigrate: moves.add}})
	if err != nil {
		return err
	}
	defer d.Close()
	dev, err := tun.Open(c.TUN, c.MTU)
	if err != nil {
		return err
	}
	setup, err := setupNet(c)
	if err != nil {
		dev.Close()
		return err
	}
	defer func() {
		if err := setup.teardown(); err != nil {
			log.Warn("tunvpn: tearing down", "err", err)
		}
	}()
	in, err := tun.Start(tun.Config{Device: dev, Dialer: d, MTU: c.MTU, Logger: log})
	if err != nil {
		dev.Close()
		return err
	}
	defer in.Close()
	// The uplinks come up now, not at the first connection; any that works brings the tunnel
	// up, and the others join as they can.
	go func() {
		if err := d.Connect(ctx); err != nil && ctx.Err() == nil {
			log.Warn("tunvpn: no uplink is up yet", "err", err)
		}
	}()
	st, err := serveStatus(c.Status, func() report {
		s := in.Stats()
		return report{Role: "client", Sessions: []sessionView{viewSession(d.Status())}, Migrations: moves.recent(), Ingress: &s}
	})
	if err != nil {
		return err
	}
	defer os.Remove(c.Status)
	defer st.Close()
	fmt.Printf("tunvpn client: %s up, %d uplinks, %s; status on %s\n", c.TUN, len(c.Uplinks), c.Policy, c.Status)
	<-ctx.Done()
	return nil
}
