package main

// The client: a TUN whose connections go over the uplinks to the server.

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/transport"
	"github.com/rendr-go/rendr/transport/quic"
	"github.com/rendr-go/rendr/transport/tcp"
	"github.com/rendr-go/rendr/transport/udpflow"
	"github.com/rendr-go/rendr/tun"
)

func runClient(ctx context.Context, c *clientConfig, log *slog.Logger) error {
	if err := cleanLeftovers(c); err != nil {
		log.Warn("tunvpn: leftovers of an earlier run", "err", err)
	}
	var paths []*rendr.Target
	var carriers []*carrierSlot
	for _, u := range c.Uplinks {
		dial := uplinkDialer(c, u)
		slot := &carrierSlot{} // the watcher closes a carrier that lost its address
		paths = append(paths, rendr.Path(u.Name, func(ctx context.Context) (net.Conn, error) {
			conn, err := dial(ctx)
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
	cfg := tun.Config{Device: dev, Dialer: d, MTU: c.MTU, Logger: log, NoOffload: c.Offload != nil && !*c.Offload}
	if c.Memory == "small" {
		cfg.Memory = tun.MemorySmall
	}
	in, err := tun.Start(cfg)
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
		// A server that refuses every uplink ends a Connect at once, as net.Dial would: try
		// again, less and less often, until one comes up.
		wait := time.Second
		for {
			err := d.Connect(ctx)
			if err == nil || ctx.Err() != nil {
				return
			}
			log.Warn("tunvpn: no uplink is up yet", "err", err, "again in", wait)
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
			wait = min(2*wait, 30*time.Second)
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

// uplinkDialer dials u's carrier to the server: its socket marked, so the tunnel's rules let
// it by, and bound to u's interface and source address (an uplink given by its source alone is
// bound to the interface that has that address at each dial, so its carrier leaves by that
// interface's routes, not by whichever default route the main table prefers). TCP carriers get rendr's tuning
// (transport/tcp: little unsent data in the kernel, so a dying uplink holds little). A QUIC
// carrier does not check the server's certificate, which the server makes afresh at each
// start: rendr's own handshake inside it authenticates the server by its key, and encrypts.
func uplinkDialer(c *clientConfig, u uplink) transport.DialFunc {
	server := u.addr.String()
	control := func(network, address string, rc syscall.RawConn) error {
		return carrierControl(c.Mark, uplinkInterface(u))(network, address, rc)
	}
	packet := func(network, address string) (net.PacketConn, error) {
		lc := net.ListenConfig{Control: control}
		return lc.ListenPacket(context.Background(), network, address)
	}
	switch u.carrier {
	case "quic":
		opts := []quic.Option{quic.ListenPacket(packet)}
		if u.Source.IsValid() {
			opts = append(opts, quic.LocalAddr(u.Source.String()))
		}
		return quic.Dialer(server, &tls.Config{InsecureSkipVerify: true}, opts...)
	case "udp":
		opts := []udpflow.Option{udpflow.ListenPacket(packet)}
		if u.Source.IsValid() {
			opts = append(opts, udpflow.LocalAddr(u.Source.String()))
		}
		return udpflow.Dialer(server, opts...)
	}
	d := &net.Dialer{Timeout: 10 * time.Second, Control: control}
	if u.Source.IsValid() {
		d.LocalAddr = &net.TCPAddr{IP: u.Source.AsSlice()}
	}
	return tcp.Dialer(server, tcp.WithDialer(d))
}
