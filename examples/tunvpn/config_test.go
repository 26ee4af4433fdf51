package main

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rendr-go/rendr"
)

// TestParseCarrier: an address names its carrier by scheme, TCP without one; anything else is
// refused with an error that lists the choices.
func TestParseCarrier(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.1:7000": "tcp", "tcp://192.0.2.1:7000": "tcp", "quic://[2001:db8::1]:7443": "quic", "udp://192.0.2.1:7001": "udp",
	} {
		c, a, err := parseCarrier(in)
		if err != nil || c != want || !a.IsValid() {
			t.Errorf("%s: %s %v %v, want %s", in, c, a, err, want)
		}
	}
	for _, in := range []string{"ws://192.0.2.1:80", "quic://example.com:443", "192.0.2.1", "tcp://"} {
		if _, _, err := parseCarrier(in); err == nil {
			t.Errorf("%s: accepted", in)
		}
	}
	if _, _, err := parseCarrier("sctp://192.0.2.1:1"); err == nil || !strings.Contains(err.Error(), "quic://") {
		t.Errorf("an unknown carrier: %v", err)
	}
}

// TestBlocked: a full tunnel of one family blocks the other when no route of it goes through
// the tunnel, and only then.
func TestBlocked(t *testing.T) {
	for routes, want := range map[string]string{
		"0.0.0.0/0":              "::/0",
		"::/0":                   "0.0.0.0/0",
		"0.0.0.0/0 ::/0":         "",
		"0.0.0.0/0 fd99::/16":    "",
		"10.99.0.0/16":           "",
		"10.99.0.0/16 fd99::/16": "",
		"::/0 10.99.0.0/16":      "",
	} {
		c := &clientConfig{}
		for _, r := range strings.Fields(routes) {
			c.Routes = append(c.Routes, netip.MustParsePrefix(r))
		}
		got := ""
		if b := c.blocked(); b.IsValid() {
			got = b.String()
		}
		if got != want {
			t.Errorf("routes %s: blocked %q, want %q", routes, got, want)
		}
	}
}

// TestLoadClientSettings: the carrier of each uplink, memory and offload are read; a wrong
// memory setting or carrier is refused with the file's name in the error.
func TestLoadClientSettings(t *testing.T) {
	key, _ := rendr.MustNewKey().MarshalText()
	base := "private_key = \"" + string(key) + "\"\nserver_key = \"" + rendr.MustNewKey().Public().String() +
		"\"\naddresses = [\"10.98.0.2/32\"]\nroutes = [\"10.99.0.0/16\"]\n"
	write := func(body string) string {
		p := filepath.Join(t.TempDir(), "client.toml")
		if err := os.WriteFile(p, []byte(base+body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	c, err := loadClient(write("memory = \"small\"\noffload = false\n[[uplink]]\nname = \"a\"\nserver = \"quic://192.0.2.1:7443\"\n" +
		"[[uplink]]\nname = \"b\"\nserver = \"192.0.2.1:7000\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Memory != "small" || c.Offload == nil || *c.Offload || c.Uplinks[0].carrier != "quic" || c.Uplinks[1].carrier != "tcp" ||
		c.Uplinks[0].addr != netip.MustParseAddrPort("192.0.2.1:7443") {
		t.Errorf("read %+v", c)
	}
	for _, bad := range []string{"memory = \"tiny\"\n[[uplink]]\nname = \"a\"\nserver = \"192.0.2.1:7000\"\n",
		"[[uplink]]\nname = \"a\"\nserver = \"ws://192.0.2.1:7000\"\n"} {
		if _, err := loadClient(write(bad)); err == nil || !strings.Contains(err.Error(), "client.toml") {
			t.Errorf("%q: %v", bad, err)
		}
	}
}
