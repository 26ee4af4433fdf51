//go:build linux

package main

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/rendr-go/rendr/internal/testkit"
)

// TestNetnsTunvpnCarriers: the uplinks over QUIC (up0) and over rendr's UDP carrier (up1),
// the server listening on both beside TCP. Both come up; a 16 MiB download through the
// tunnel, with the active uplink blackholed a quarter of the way in, is whole.
func TestNetnsTunvpnCarriers(t *testing.T) {
	const size = 16 << 20
	v := newTunvpnLab(t, size, false)
	lab := v.lab
	quicAddr := fmt.Sprintf("%s:7443", lab.ServerAddr(0))
	udpAddr := fmt.Sprintf("%s:7001", lab.ServerAddr(1))
	rewrite := func(path string, edit func(string) string) {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		s := edit(string(b))
		if s == string(b) {
			t.Fatalf("%s: nothing rewritten", path)
		}
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	rewrite(v.serverCfg, func(s string) string {
		return strings.Replace(s, "listen = [", fmt.Sprintf("listen = [\"quic://%s\", \"udp://%s\", ", quicAddr, udpAddr), 1)
	})
	rewrite(v.clientCfg, func(s string) string {
		s = strings.Replace(s, fmt.Sprintf("server = \"%s:7000\"", lab.ServerAddr(0)), fmt.Sprintf("server = \"quic://%s\"", quicAddr), 1)
		return strings.Replace(s, fmt.Sprintf("server = \"%s:7000\"", lab.ServerAddr(1)), fmt.Sprintf("server = \"udp://%s\"", udpAddr), 1)
	})
	server := start(t, lab.ServerNS(), "server", "-c", v.serverCfg)
	client := start(t, lab.ClientNS(), "client", "-c", v.clientCfg)
	bothUp := func() bool { return upCount(v.clientSock) == 2 }
	if !testkit.Wait(30*time.Second, bothUp) {
		r, _ := readStatus(v.clientSock)
		var sb strings.Builder
		printStatus(&sb, r)
		t.Fatalf("the QUIC and UDP uplinks did not both come up:\n%s", sb.String())
	}
	active := downloadCutting(t, v, size)
	t.Logf("16 MiB with up%d (%s) blackholed a quarter of the way in", active, map[int]string{0: "QUIC", 1: "UDP"}[active])
	client.stop(t)
	server.stop(t)
}
