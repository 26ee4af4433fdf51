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
	var carriers []*carrierSlot
	for _, u := range c.Uplinks {
		d := &net.Dialer{Timeout: 10 * time.Second, Control: carrierControl(c.Mark, u.Interface)}
		if u.Source.IsValid() {
			d.LocalAddr = &net.TCPAddr{IP: u.Source.AsSlice()}
		}
		server := u.Server
		slot := &carrierSlot{} // the watcher closes a carrier that lost its address
		paths = append(paths, rendr.Path(u.Name, func(ctx context.Context) (net.Conn, error) {
			conn, err := d.DialContext(ctx, "tcp", server)
			if err == nil {
				slot.set(conn)
			}
			return conn, err
		}, rendr.Tier(u.Tier)))
		carriers = append(carriers, slot)
	}
	root := map[string]func(string, ...*rendr.Target) *rendr.Target{
		"selector": rendr.Selector, "race": rendr.Race, "bond": rendr.Bond}[c.Policy](uplinksGroup, paths...)
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
	// The uplinks are followed as their interfaces and addresses change, and the rules and
	// routes kept in place. Deferred after the teardown and the TUN's closing, the watcher
	// stops, and waits, before them: nothing puts a rule back after teardown deleted it. It
	// starts before the uplinks dial, so one whose interface is missing is out from the start.
	var out func() []uplinkOut
	if w, err := startWatch(c, d, setup, paths, carriers, log); err != nil {
		log.Warn("tunvpn: not following the uplinks' interfaces", "err", err)
	} else {
		defer w.stop()
		out = w.out
	}
	// The uplinks come up now, not at the first connection; any that works brings the tunnel
	// up, and the others join as they can.
	go func() {
		if err := d.Connect(ctx); err != nil && ctx.Err() == nil {
			log.Warn("tunvpn: no uplink is up yet", "err", err)
		}
	}()
	st, err := serveStatus(c.Status, func() report {
		s := in.Stats()
		r := report{Role: "client", Sessions: []sessionView{viewSession(d.Status())}, Migrations: moves.recent(), Ingress: &s}
		if out != nil {
			r.Out = out()
		}
		return r
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
