//go:build linux

package main

import (
	"context"
	"errors"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rendr-go/rendr/internal/netlab"
	"github.com/rendr-go/rendr/internal/testkit"
)

// TestNetnsTunvpnNoIPv6Leak: a full IPv4 tunnel (routes 0.0.0.0/0 only) on a client whose
// first uplink also has IPv6 with a default route. While tunvpn runs, IPv6 beyond the
// uplink's own network is unreachable (it would otherwise leave by the uplink, around the
// tunnel), the uplink's own IPv6 network is still reached, and the blocking route comes back
// if deleted; after SIGTERM, IPv6 leaves by the uplink again and nothing is left.
func TestNetnsTunvpnNoIPv6Leak(t *testing.T) {
	v := newTunvpnLab(t, 1<<20, true)
	lab := v.lab
	const beyond = "fd55::1" // on the server's loopback: reached by the client's IPv6 default route
	for _, c := range []struct {
		side netlab.Side
		args []string
	}{
		{netlab.Server, []string{"ip", "-6", "addr", "add", "fd77::1/64", "dev", lab.ServerIface(0), "nodad"}},
		{netlab.Server, []string{"ip", "-6", "addr", "add", beyond + "/128", "dev", "lo", "nodad"}},
		{netlab.Client, []string{"ip", "-6", "addr", "add", "fd77::2/64", "dev", lab.ClientIface(0), "nodad"}},
		{netlab.Client, []string{"ip", "-6", "route", "add", "default", "via", "fd77::1", "dev", lab.ClientIface(0)}},
	} {
		if _, err := lab.Exec(c.side, c.args[0], c.args[1:]...); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(v.clientCfg)
	if err != nil {
		t.Fatal(err)
	}
	cfg := strings.Replace(string(b), `routes = ["0.0.0.0/0", "fd99::/16"]`, `routes = ["0.0.0.0/0"]`, 1)
	if cfg == string(b) {
		t.Fatal("the client's routes were not rewritten")
	}
	if err := os.WriteFile(v.clientCfg, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	far, err := lab.Listen(netlab.Server, "tcp", "["+beyond+"]:9000")
	if err != nil {
		t.Fatal(err)
	}
	defer far.Close()
	local, err := lab.Listen(netlab.Server, "tcp", "[fd77::1]:9000")
	if err != nil {
		t.Fatal(err)
	}
	defer local.Close()
	for _, ln := range []net.Listener{far, local} {
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
	}
	dial := func(addr string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c, err := lab.Dialer(netlab.Client, &net.Dialer{})(ctx, "tcp", addr)
		if err == nil {
			c.Close()
		}
		return err
	}
	if err := dial("[" + beyond + "]:9000"); err != nil {
		t.Fatalf("IPv6 beyond the uplink before tunvpn: %v", err)
	}
	server := start(t, lab.ServerNS(), "server", "-c", v.serverCfg)
	client := start(t, lab.ClientNS(), "client", "-c", v.clientCfg)
	if !testkit.Wait(30*time.Second, func() bool { _, err := readStatus(v.clientSock); return err == nil }) {
		t.Fatal("the client's status socket did not answer")
	}
	blocked := func() bool {
		err := dial("[" + beyond + "]:9000")
		return errors.Is(err, syscall.EHOSTUNREACH) || errors.Is(err, syscall.ENETUNREACH)
	}
	if !blocked() {
		t.Fatalf("IPv6 beyond the uplink leaves around the full IPv4 tunnel: %v", dial("["+beyond+"]:9000"))
	}
	if err := dial("[fd77::1]:9000"); err != nil {
		t.Errorf("the uplink's own IPv6 network under the full tunnel: %v", err)
	}
	if _, err := lab.Exec(netlab.Client, "ip", "-6", "route", "del", "unreachable", "::/0", "table", "7264"); err != nil {
		t.Fatal(err)
	}
	if !testkit.Wait(10*time.Second, blocked) {
		t.Fatal("the blocking route deleted by someone else was not put back")
	}
	client.stop(t)
	checkClean(t, lab)
	if err := dial("[" + beyond + "]:9000"); err != nil {
		t.Errorf("IPv6 beyond the uplink after tunvpn stopped: %v", err)
	}
	server.stop(t)
}
