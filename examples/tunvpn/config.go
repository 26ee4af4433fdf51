package main

// The configuration files: one per side, TOML, edited by hand.

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"

	"github.com/BurntSushi/toml"

	"github.com/rendr-go/rendr"
)

// serverConfig is the server's file.
type serverConfig struct {
	PrivateKey rendr.PrivateKey  `toml:"private_key"`
	Peers      []rendr.PublicKey `toml:"peers"`
	// Listen is the addresses the clients' uplinks dial: "host:port" or "tcp://host:port"
	// for TCP, "quic://host:port" for QUIC, "udp://host:port" for rendr's own UDP carrier.
	Listen []string `toml:"listen"`
	// Allow is where clients may go through the server: the networks behind it. There is
	// no default: "0.0.0.0/0" and "::/0" say everything, on purpose.
	Allow  []netip.Prefix `toml:"allow"`
	Status string         `toml:"status_socket"`
	// TUN names the gateway's TUN, which takes the clients' packets of other protocols
	// than TCP and UDP (ping): it has TUNAddresses, and the routes back to ClientNetworks
	// (the clients' tunnel addresses) go through it. With Masquerade, forwarding is turned
	// on and the clients' networks are masqueraded (nftables) out of every other
	// interface. Without TUN such packets are not carried.
	TUN            string         `toml:"tun"`
	TUNAddresses   []netip.Prefix `toml:"tun_addresses"`
	ClientNetworks []netip.Prefix `toml:"client_networks"`
	Masquerade     bool           `toml:"masquerade"`
}

// clientConfig is the client's file.
type clientConfig struct {
	PrivateKey rendr.PrivateKey `toml:"private_key"`
	ServerKey  rendr.PublicKey  `toml:"server_key"`
	// Policy is how the uplinks are used: "selector" (the best, the others standing by),
	// "race" (every packet on every uplink) or "bond" (their capacities added up).
	Policy string `toml:"policy"`
	TUN    string `toml:"tun"`
	MTU    int    `toml:"mtu"`
	// Addresses are the TUN's own; Routes what goes through it. 0.0.0.0/0 or ::/0 make a
	// full tunnel: everything but the uplinks' own carriers, and the local networks the
	// main table has more specific routes for.
	Addresses []netip.Prefix `toml:"addresses"`
	Routes    []netip.Prefix `toml:"routes"`
	// Mark is the firewall mark of the carriers' sockets and Table the routing table of
	// the tunnel's routes: traffic without the mark is routed by Table first.
	Mark   uint32 `toml:"mark"`
	Table  int    `toml:"table"`
	Status string `toml:"status_socket"`
	// Memory is the TUN ingress's bounds: "default", or "small" for a router or a small
	// box (tun.MemorySmall).
	Memory string `toml:"memory"`
	// Offload, when false, turns the TUN's offloads off (tun.Config.NoOffload): for a
	// kernel that mishandles them.
	Offload *bool    `toml:"offload"`
	Uplinks []uplink `toml:"uplink"`
}

// uplink is one way to the server.
type uplink struct {
	Name string `toml:"name"`
	// Server is the server's address this uplink dials, an IP literal and a port, with the
	// carrier as in the server's listen: "192.0.2.10:7000" (TCP), "quic://192.0.2.10:7443",
	// "udp://192.0.2.10:7001".
	Server string `toml:"server"`
	// carrier and addr are Server read.
	carrier string
	addr    netip.AddrPort
	// Source and Interface bind the uplink's carriers (either or both): its address, and
	// its network interface.
	Source    netip.Addr `toml:"source"`
	Interface string     `toml:"interface"`
	// Tier: 0 is used first; a higher tier only while no lower one is usable.
	Tier int `toml:"tier"`
}

const (
	defaultMark   = 0x7264
	defaultTable  = 7264
	defaultStatus = "/run/tunvpn.sock"
)

// load reads a TOML file into v, refusing keys it does not know (a misspelt key is a
// setting that silently does not apply).
func load(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	md, err := toml.Decode(string(b), v)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		return fmt.Errorf("%s: unknown setting %q", path, und[0].String())
	}
	return nil
}

func loadServer(path string) (*serverConfig, error) {
	c := &serverConfig{}
	if err := load(path, c); err != nil {
		return nil, err
	}
	switch {
	case c.PrivateKey == rendr.PrivateKey{}:
		return nil, fmt.Errorf("%s: private_key is missing (tunvpn genkey makes one)", path)
	case len(c.Peers) == 0:
		return nil, fmt.Errorf("%s: peers is empty: list the clients' public keys (tunvpn pubkey)", path)
	case len(c.Listen) == 0:
		return nil, fmt.Errorf("%s: listen is empty: give the addresses the clients dial", path)
	case len(c.Allow) == 0:
		return nil, fmt.Errorf("%s: allow is empty: list the networks clients may reach (0.0.0.0/0 and ::/0 for all)", path)
	case c.TUN != "" && len(c.ClientNetworks) == 0:
		return nil, fmt.Errorf("%s: tun %q without client_networks: list the clients' tunnel addresses (say 10.98.0.0/16)", path, c.TUN)
	case c.TUN == "" && (len(c.ClientNetworks) > 0 || len(c.TUNAddresses) > 0 || c.Masquerade):
		return nil, fmt.Errorf("%s: client_networks, tun_addresses and masquerade need a gateway: set tun", path)
	}
	for _, l := range c.Listen {
		if _, _, err := parseCarrier(l); err != nil {
			return nil, fmt.Errorf("%s: listen %q: %w", path, l, err)
		}
	}
	if c.Status == "" {
		c.Status = defaultStatus
	}
	return c, nil
}

// carriers are the carriers tunvpn speaks, by their scheme in an address.
var carriers = []string{"tcp", "quic", "udp"}

// parseCarrier reads an address of listen or of an uplink's server: an optional scheme
// (tcp://, quic://, udp://; TCP without one), an IP literal and a port.
func parseCarrier(s string) (carrier string, addr netip.AddrPort, err error) {
	carrier, rest, found := strings.Cut(s, "://")
	if !found {
		carrier, rest = "tcp", s
	}
	if !slices.Contains(carriers, carrier) {
		return "", addr, fmt.Errorf("carrier %q: want tcp://, quic:// or udp:// (TCP without one)", carrier)
	}
	if addr, err = netip.ParseAddrPort(rest); err != nil {
		return "", addr, fmt.Errorf("want an IP and a port: %w", err)
	}
	return carrier, addr, nil
}

func loadClient(path string) (*clientConfig, error) {
	c := &clientConfig{}
	if err := load(path, c); err != nil {
		return nil, err
	}
	switch {
	case c.PrivateKey == rendr.PrivateKey{}:
		return nil, fmt.Errorf("%s: private_key is missing (tunvpn genkey makes one)", path)
	case c.ServerKey == rendr.PublicKey{}:
		return nil, fmt.Errorf("%s: server_key is missing: the server's public key (tunvpn pubkey)", path)
	case len(c.Uplinks) == 0:
		return nil, fmt.Errorf("%s: no [[uplink]]: give at least one way to the server", path)
	case len(c.Addresses) == 0:
		return nil, fmt.Errorf("%s: addresses is empty: the tunnel's own address, say 10.98.0.2/32", path)
	case len(c.Routes) == 0:
		return nil, fmt.Errorf("%s: routes is empty: what goes through the tunnel (0.0.0.0/0 and ::/0 for all)", path)
	}
	if c.Policy == "" {
		c.Policy = "selector"
	}
	if c.Policy != "selector" && c.Policy != "race" && c.Policy != "bond" {
		return nil, fmt.Errorf("%s: policy %q: want selector, race or bond", path, c.Policy)
	}
	if c.TUN == "" {
		c.TUN = "tunvpn0"
	}
	if c.MTU == 0 {
		c.MTU = 1420
	}
	if c.MTU < 1280 || c.MTU > 65535 {
		return nil, fmt.Errorf("%s: mtu %d: want 1280 to 65535", path, c.MTU)
	}
	if c.Mark == 0 {
		c.Mark = defaultMark
	}
	if c.Table == 0 {
		c.Table = defaultTable
	}
	if c.Status == "" {
		c.Status = defaultStatus
	}
	if c.Memory != "" && c.Memory != "default" && c.Memory != "small" {
		return nil, fmt.Errorf("%s: memory %q: want default or small", path, c.Memory)
	}
	seen := map[string]bool{}
	for i, u := range c.Uplinks {
		switch {
		case u.Name == "":
			return nil, fmt.Errorf("%s: uplink %d has no name", path, i+1)
		case seen[u.Name]:
			return nil, fmt.Errorf("%s: two uplinks are named %q", path, u.Name)
		case u.Server == "":
			return nil, fmt.Errorf("%s: uplink %q has no server address", path, u.Name)
		case u.Tier < 0:
			return nil, fmt.Errorf("%s: uplink %q: tier %d is below 0", path, u.Name, u.Tier)
		}
		var err error
		if c.Uplinks[i].carrier, c.Uplinks[i].addr, err = parseCarrier(u.Server); err != nil {
			return nil, fmt.Errorf("%s: uplink %q: server %q: %w", path, u.Name, u.Server, err)
		}
		seen[u.Name] = true
	}
	return c, nil
}

// blocked is the default route of the family a full tunnel of the other family would
// otherwise leak: with 0.0.0.0/0 through the tunnel and no IPv6 route in it, the host's IPv6
// would leave by the uplinks, bypassing the tunnel. That family's traffic gets an
// unreachable route in the tunnel's table instead (its local networks stay reachable, as
// under a full tunnel). Invalid when nothing is blocked.
func (c *clientConfig) blocked() netip.Prefix {
	v4full, v6full := c.fullTunnel()
	var v4, v6 bool
	for _, r := range c.Routes {
		v4, v6 = v4 || r.Addr().Is4(), v6 || !r.Addr().Is4()
	}
	switch {
	case v4full && !v6:
		return netip.MustParsePrefix("::/0")
	case v6full && !v4:
		return netip.MustParsePrefix("0.0.0.0/0")
	}
	return netip.Prefix{}
}

// fullTunnel reports whether routes send everything through the tunnel, by family.
func (c *clientConfig) fullTunnel() (v4, v6 bool) {
	for _, r := range c.Routes {
		if r.Bits() == 0 {
			if r.Addr().Is4() {
				v4 = true
			} else {
				v6 = true
			}
		}
	}
	return v4, v6
}

var errUsage = errors.New("usage")
