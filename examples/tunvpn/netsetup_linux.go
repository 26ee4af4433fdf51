package main

// The client's place in the host's network: the TUN's addresses and routes, and the policy
// rules that keep the uplinks' own carriers out of the tunnel (the layout wg-quick and
// tailscale use).
//
// Every route through the tunnel is in its own table. A rule sends traffic without the
// carriers' firewall mark to that table first; the carriers' sockets carry the mark, so
// they skip it and leave by the main table, over their uplinks, even under a full tunnel.
// For a full tunnel a second rule, before it, lets the main table's more specific routes win
// (the local networks stay local), as "suppress_prefixlength 0" does for wg-quick.

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"syscall"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// netSetup is what the client added to the host's network configuration.
type netSetup struct {
	rules []*netlink.Rule
	// routes and tun (the TUN's index) are what the watcher puts back if someone deletes
	// them while the TUN lives; they go with it, so teardown need not delete them.
	routes []*netlink.Route
	tun    int
}

// prefixNet is p as a net.IPNet.
func prefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// tunnelRules are the rules of c, by family.
func tunnelRules(c *clientConfig) []*netlink.Rule {
	v4full, v6full := c.fullTunnel()
	fams := map[int]bool{}
	routes := c.Routes
	if b := c.blocked(); b.IsValid() {
		// The blocked family's rules are a full tunnel's: its unreachable default route
		// is in the tunnel's table, and its local networks win over it.
		v4full, v6full = v4full || b.Addr().Is4(), v6full || !b.Addr().Is4()
		routes = append(slices.Clip(routes), b)
	}
	for _, r := range routes {
		if r.Addr().Is4() {
			fams[unix.AF_INET] = true
		} else {
			fams[unix.AF_INET6] = true
		}
	}
	var rules []*netlink.Rule
	mask := uint32(0xffffffff)
	for _, fam := range []int{unix.AF_INET, unix.AF_INET6} {
		if !fams[fam] {
			continue
		}
		if full := (fam == unix.AF_INET && v4full) || (fam == unix.AF_INET6 && v6full); full {
			r := netlink.NewRule()
			r.Family, r.Priority, r.Table, r.SuppressPrefixlen = fam, c.Table-1, unix.RT_TABLE_MAIN, 0
			rules = append(rules, r)
		}
		r := netlink.NewRule()
		r.Family, r.Priority, r.Table, r.Mark, r.Mask, r.Invert = fam, c.Table, c.Table, c.Mark, &mask, true
		rules = append(rules, r)
	}
	return rules
}

// setupNet gives the TUN its addresses, brings it up, routes c.Routes through it and adds the
// rules. On an error it takes back what it added.
func setupNet(c *clientConfig) (*netSetup, error) {
	link, err := netlink.LinkByName(c.TUN)
	if err != nil {
		return nil, fmt.Errorf("the TUN %s: %w", c.TUN, err)
	}
	for _, a := range c.Addresses {
		if err := netlink.AddrAdd(link, &netlink.Addr{IPNet: prefixNet(a)}); err != nil {
			return nil, fmt.Errorf("address %v on %s: %w", a, c.TUN, err)
		}
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return nil, fmt.Errorf("bringing %s up: %w", c.TUN, err)
	}
	s := &netSetup{tun: link.Attrs().Index}
	for _, r := range c.Routes {
		rt := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: prefixNet(r), Table: c.Table, Scope: netlink.SCOPE_LINK}
		if err := netlink.RouteAdd(rt); err != nil {
			return nil, fmt.Errorf("route %v through %s: %w", r, c.TUN, err)
		}
		s.routes = append(s.routes, rt)
	}
	if b := c.blocked(); b.IsValid() {
		rt := &netlink.Route{Dst: prefixNet(b), Table: c.Table, Type: unix.RTN_UNREACHABLE}
		if err := netlink.RouteAdd(rt); err != nil {
			return nil, fmt.Errorf("route unreachable %v (the family the full tunnel does not carry): %w", b, err)
		}
		s.routes = append(s.routes, rt)
	}
	for _, r := range tunnelRules(c) {
		if err := netlink.RuleAdd(r); err != nil {
			s.teardown()
			return nil, fmt.Errorf("rule %v: %w", r, err)
		}
		s.rules = append(s.rules, r)
	}
	return s, nil
}

// teardown deletes the rules, and the blocking route. The TUN's routes and addresses go with
// it, when it closes.
func (s *netSetup) teardown() error {
	var errs []error
	for _, r := range s.routes {
		if r.Type == unix.RTN_UNREACHABLE {
			if err := netlink.RouteDel(r); err != nil && !errors.Is(err, syscall.ESRCH) {
				errs = append(errs, fmt.Errorf("deleting route unreachable %v: %w", r.Dst, err))
			}
		}
	}
	for _, r := range s.rules {
		if err := netlink.RuleDel(r); err != nil && !errors.Is(err, syscall.ENOENT) {
			errs = append(errs, fmt.Errorf("deleting %v: %w", r, err))
		}
	}
	s.rules = nil
	return errors.Join(errs...)
}

// cleanLeftovers deletes what a client with this configuration that was killed left behind:
// its rules (a TUN and its routes die with the process that held it), and a TUN of its name
// a crashed process left, if any.
func cleanLeftovers(c *clientConfig) error {
	var errs []error
	for _, r := range tunnelRules(c) {
		for netlink.RuleDel(r) == nil {
		}
	}
	if b := c.blocked(); b.IsValid() {
		for netlink.RouteDel(&netlink.Route{Dst: prefixNet(b), Table: c.Table, Type: unix.RTN_UNREACHABLE}) == nil {
		}
	}
	if l, err := netlink.LinkByName(c.TUN); err == nil {
		if err := netlink.LinkDel(l); err != nil {
			errs = append(errs, fmt.Errorf("deleting the leftover %s: %w", c.TUN, err))
		}
	}
	return errors.Join(errs...)
}

// carrierControl marks a carrier's socket, so the tunnel's rules let it by, and binds it to
// its uplink's interface when it has one.
func carrierControl(mark uint32, iface string) func(network, address string, rc syscall.RawConn) error {
	return func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(mark)); serr != nil {
				serr = fmt.Errorf("SO_MARK: %w", serr)
				return
			}
			if iface != "" {
				if serr = unix.BindToDevice(int(fd), iface); serr != nil {
					serr = fmt.Errorf("binding to %s: %w", iface, serr)
				}
			}
		})
		if err != nil {
			return err
		}
		return serr
	}
}

// uplinkInterface is the interface u's carriers are bound to: its own, or, for an uplink given
// by its source address alone, the interface that has that address now ("" if none has it:
// the dial then fails to bind the address).
func uplinkInterface(u uplink) string {
	if u.Interface != "" || !u.Source.IsValid() {
		return u.Interface
	}
	fam := netlink.FAMILY_V4
	if !u.Source.Is4() {
		fam = netlink.FAMILY_V6
	}
	addrs, err := netlink.AddrList(nil, fam)
	if err != nil {
		return ""
	}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.Unmap() == u.Source.Unmap() {
			if l, err := netlink.LinkByIndex(a.LinkIndex); err == nil {
				return l.Attrs().Name
			}
		}
	}
	return ""
}
