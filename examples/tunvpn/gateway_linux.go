package main

// The server's gateway: the TUN that takes the clients' raw packets (ICMP echo and every
// protocol but TCP and UDP), the routes back to the clients through it, and, with
// masquerade, IP forwarding and an nftables masquerade of the clients' networks, so their
// packets can leave by the server's other interfaces.

import (
	"errors"
	"fmt"
	"net"
	"os"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/rendr-go/rendr/tun"
)

// nftTable is the nftables table of tunvpn's masquerade.
const nftTable = "tunvpn"

// gatewaySetup is what the server added for its gateway.
type gatewaySetup struct {
	gw  *tun.Gateway
	nft bool
}

// setupGateway opens the gateway's TUN, gives it c.TUNAddresses, routes c.ClientNetworks
// through it, and with c.Masquerade turns forwarding on and masquerades the clients'
// networks. On an error it takes back what it made.
func setupGateway(c *serverConfig) (*gatewaySetup, error) {
	cleanGatewayLeftovers(c)
	dev, err := tun.Open(c.TUN, 1500)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*gatewaySetup, error) {
		dev.Close()
		deleteNFT()
		return nil, err
	}
	link, err := netlink.LinkByName(c.TUN)
	if err != nil {
		return fail(fmt.Errorf("the gateway's TUN %s: %w", c.TUN, err))
	}
	for _, a := range c.TUNAddresses {
		if err := netlink.AddrAdd(link, &netlink.Addr{IPNet: prefixNet(a), Flags: unix.IFA_F_NODAD}); err != nil {
			return fail(fmt.Errorf("address %v on %s: %w", a, c.TUN, err))
		}
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fail(fmt.Errorf("bringing %s up: %w", c.TUN, err))
	}
	for _, n := range c.ClientNetworks {
		if err := netlink.RouteAdd(&netlink.Route{LinkIndex: link.Attrs().Index, Dst: prefixNet(n), Scope: netlink.SCOPE_LINK}); err != nil {
			return fail(fmt.Errorf("route %v through %s: %w", n, c.TUN, err))
		}
	}
	s := &gatewaySetup{}
	if c.Masquerade {
		for _, f := range []string{"/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding"} {
			if err := os.WriteFile(f, []byte("1"), 0o644); err != nil {
				return fail(fmt.Errorf("turning IP forwarding on: %w", err))
			}
		}
		if err := addMasquerade(c); err != nil {
			return fail(fmt.Errorf("nftables masquerade: %w", err))
		}
		s.nft = true
	}
	s.gw = tun.NewGateway(dev, c.Allow)
	return s, nil
}

// teardown closes the gateway (its TUN takes its addresses and routes with it) and deletes
// the masquerade. Forwarding stays on: other things on the host may rely on it.
func (s *gatewaySetup) teardown() error {
	err := s.gw.Close()
	if s.nft {
		err = errors.Join(err, deleteNFT())
	}
	return err
}

// cleanGatewayLeftovers deletes what a killed server left: its masquerade table (its TUN died
// with it).
func cleanGatewayLeftovers(c *serverConfig) {
	deleteNFT()
	if l, err := netlink.LinkByName(c.TUN); err == nil {
		netlink.LinkDel(l)
	}
}

// addMasquerade adds table inet tunvpn with a postrouting nat chain that masquerades what the
// clients' networks send out of any interface but the gateway's.
func addMasquerade(c *serverConfig) error {
	conn, err := nftables.New()
	if err != nil {
		return err
	}
	t := conn.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: nftTable})
	ch := conn.AddChain(&nftables.Chain{Name: "postrouting", Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource})
	ifname := make([]byte, unix.IFNAMSIZ)
	copy(ifname, c.TUN)
	for _, n := range c.ClientNetworks {
		proto, off, size := byte(unix.NFPROTO_IPV4), uint32(12), uint32(4)
		if n.Addr().Is6() {
			proto, off, size = unix.NFPROTO_IPV6, 8, 16
		}
		mask := net.CIDRMask(n.Bits(), int(size)*8)
		conn.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: []expr.Any{
			&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: size},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: size, Mask: mask, Xor: make([]byte, size)},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: n.Masked().Addr().AsSlice()},
			&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: ifname},
			&expr.Masq{},
		}})
	}
	return conn.Flush()
}

// deleteNFT deletes tunvpn's nftables table, if there is one.
func deleteNFT() error {
	conn, err := nftables.New()
	if err != nil {
		return err
	}
	tables, err := conn.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return err
	}
	for _, t := range tables {
		if t.Name == nftTable {
			conn.DelTable(t)
			return conn.Flush()
		}
	}
	return nil
}

// startGateway sets the gateway up and returns it with its teardown.
func startGateway(c *serverConfig) (*tun.Gateway, func() error, error) {
	s, err := setupGateway(c)
	if err != nil {
		return nil, nil, err
	}
	return s.gw, s.teardown, nil
}
