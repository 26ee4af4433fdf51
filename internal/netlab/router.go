package netlab

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
)

// A path with a delay node is two veth pairs instead of one: c<i> in the client namespace to
// rc<i> in a third, "router", namespace, and s<i> in the server namespace to rs<i> there. The
// client and server keep their addresses and their /24; only their static neighbour entries
// change, to the MACs of rc<i> and rs<i>, so either end still sees the other on-link. The
// router holds no address of the path. Policy routing by input interface sends what arrives
// on rc<i> into the TUN device tunc<i>, whose reader is the client-to-server line; that line
// writes into tuns<i>, and what the kernel receives there is routed out of rs<i> to the
// server. The way back is the mirror image. Every IPv4 packet of the path thus crosses a
// line, whatever its protocol; IPv6 is off in the router, as the lab only addresses IPv4.
// The router decrements the TTL like any router, so a traceroute shows one hop.

// routerTableBase is the first routing table of the router namespace; path i uses the four
// tables from routerTableBase+4i, one per input interface.
const routerTableBase = 100

type routerIfs struct{ rc, rs, tunc, tuns string }

func routerIfNames(i int) routerIfs {
	return routerIfs{
		rc:   fmt.Sprintf("rc%d", i),
		rs:   fmt.Sprintf("rs%d", i),
		tunc: fmt.Sprintf("tunc%d", i),
		tuns: fmt.Sprintf("tuns%d", i),
	}
}

// setupRouterSysctls runs before any link exists in the router namespace, so that the
// devices made there later inherit the defaults set here. Reverse-path filtering is off:
// packets arrive on interfaces that hold no address of their subnet.
func (l *Lab) setupRouterSysctls() error {
	for _, f := range []string{"all", "default"} {
		err := writeFileNS(l.router, "/proc/sys/net/ipv6/conf/"+f+"/disable_ipv6", "1\n")
		// A kernel without IPv6 has no such file, and nothing to turn off.
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	for _, s := range []struct{ name, value string }{
		{"/proc/sys/net/ipv4/conf/all/rp_filter", "0\n"},
		{"/proc/sys/net/ipv4/conf/default/rp_filter", "0\n"},
		{"/proc/sys/net/ipv4/ip_forward", "1\n"},
	} {
		if err := writeFileNS(l.router, s.name, s.value); err != nil {
			return err
		}
	}
	return nil
}

// setupDelays creates the TUN devices of every delayed path in the router namespace, starts
// their lines and routes the path through them.
func (l *Lab) setupDelays() error {
	var b strings.Builder
	for i := range l.paths {
		p := &l.paths[i]
		if p.delay.isZero() {
			continue
		}
		n := routerIfNames(i)
		ct, st, err := l.openTUNPair(n, p.delay.offload())
		if err != nil {
			return err
		}
		p.node = newDelayNode(p.delay, min(ct.offload, st.offload), ct, st)
		p.node.start()

		for _, dev := range []string{n.rc, n.rs, n.tunc, n.tuns} {
			fmt.Fprintf(&b, "link set %s up\n", dev)
		}
		// Every address of the far side, as on the ends themselves (see setupLinks): a
		// packet for another path's address that entered this path leaves it here. The
		// entries must be static: with no address of its own the router has no local
		// table, so the kernel takes any other destination for a broadcast and sends it
		// to ff:ff:ff:ff:ff:ff, which the far end's TCP drops without a counter.
		for _, q := range l.paths {
			fmt.Fprintf(&b, "neigh replace %s lladdr %s dev %s nud permanent\n", q.clientAddr, p.clientMAC, n.rc)
			fmt.Fprintf(&b, "neigh replace %s lladdr %s dev %s nud permanent\n", q.serverAddr, p.serverMAC, n.rs)
		}
		for k, hop := range []struct{ in, out string }{
			{n.rc, n.tunc}, {n.tuns, n.rs}, // client to server
			{n.rs, n.tuns}, {n.tunc, n.rc}, // server to client
		} {
			table := routerTableBase + 4*i + k
			fmt.Fprintf(&b, "rule add iif %s lookup %d priority %d\n", hop.in, table, table)
			fmt.Fprintf(&b, "route add default dev %s table %d\n", hop.out, table)
		}
	}
	_, err := run(b.String(), "ip", "-n", l.router, "-batch", "-")
	return err
}

// tunDev is an open TUN device and what it hands over per read.
type tunDev struct {
	*os.File
	offload Offload
}

// openTUNPair opens the two devices of a node in the router namespace, asking for the
// offloads of want. A node writes what it reads from one device to the other as it is, so
// either both frame their packets with a virtio header or neither does.
func (l *Lab) openTUNPair(n routerIfs, want Offload) (ct, st tunDev, err error) {
	open := func(name string, want Offload) (tunDev, error) {
		return within(l.router, func() (tunDev, error) { return openTUN(name, want) })
	}
	if ct, err = open(n.tunc, want); err != nil {
		return ct, st, err
	}
	if st, err = open(n.tuns, ct.offload); err != nil {
		ct.Close()
		return ct, st, err
	}
	if ct.offload != OffloadNone && st.offload == OffloadNone {
		ct.Close()
		if ct, err = open(n.tunc, OffloadNone); err != nil {
			st.Close()
			return ct, st, err
		}
	}
	return ct, st, nil
}

// stopDelays stops every delay node; Close calls it before removing the namespaces.
func (l *Lab) stopDelays() error {
	var errs []error
	for i := range l.paths {
		if n := l.paths[i].node; n != nil {
			errs = append(errs, n.stop())
		}
	}
	return errors.Join(errs...)
}

// DelayStats returns the counters of the delay node on path i. It fails if the path has no
// node. The counters stay readable after Close.
func (l *Lab) DelayStats(i int) (DelayStats, error) {
	if err := l.checkPath(i); err != nil {
		return DelayStats{}, err
	}
	n := l.paths[i].node
	if n == nil {
		return DelayStats{}, fmt.Errorf("netlab: path %d has no delay node (set Config.Delay[%d])", i, i)
	}
	return n.stats(), nil
}

// RouterNS returns the name of the router namespace holding the delay nodes, for `ip netns
// exec`, or "" when no path has one.
func (l *Lab) RouterNS() string { return l.router }
