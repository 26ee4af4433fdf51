package netlab

import (
	"errors"
	"fmt"
	"strings"
)

// Faults are nftables rules in one table per namespace, "netdev netlab",
// with one base chain per path hooked at ingress of that path's interface.
// Dropping at ingress on both ends covers both directions, is silent (an
// output-hook drop would hand EPERM to the sending socket, which a real
// broken link never does) and also catches ARP and IPv6 neighbour
// discovery, like a cut cable. Each change flushes and refills only the
// chain of one path, so paths are faulted independently.
const nftTable = "netdev netlab"

func chainName(i int) string { return fmt.Sprintf("p%d", i) }

// setupNFT creates the table and the empty per-path chains.
func (l *Lab) setupNFT() error {
	for _, side := range []Side{Client, Server} {
		var b strings.Builder
		fmt.Fprintf(&b, "add table %s\n", nftTable)
		for i, p := range l.paths {
			dev := p.clientIf
			if side == Server {
				dev = p.serverIf
			}
			fmt.Fprintf(&b, "add chain %s %s { type filter hook ingress device %q priority 0; policy accept; }\n",
				nftTable, chainName(i), dev)
		}
		if err := l.nft(side, b.String()); err != nil {
			return err
		}
	}
	return nil
}

// NFT runs an nftables script (nft -f syntax) in the namespace of side, for faults the lab has
// no method for: a NAT that rewrites addresses, say. Its tables are the caller's to manage.
func (l *Lab) NFT(side Side, script string) error { return l.nft(side, script) }

func (l *Lab) nft(side Side, script string) error {
	ns, err := l.nsName(side)
	if err != nil {
		return err
	}
	_, err = run(script, "ip", "netns", "exec", ns, "nft", "-f", "-")
	return err
}

// Blackhole silently drops every packet on path i in both directions while
// on is true. Established connections on the path stall rather than fail,
// as on a real dead link. Independent of other paths.
func (l *Lab) Blackhole(i int, on bool) error {
	if err := l.checkPath(i); err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return errClosed
	}
	l.paths[i].blackhole = on
	return l.applyFaults(i)
}

// Loss drops percent% of the packets on path i, at random and
// independently in each direction. 0 removes the loss. A blackhole on the
// same path takes precedence while it is on.
func (l *Lab) Loss(i int, percent int) error {
	if err := l.checkPath(i); err != nil {
		return err
	}
	if percent < 0 || percent > 100 {
		return fmt.Errorf("netlab: loss percent must be in 0..100, got %d", percent)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return errClosed
	}
	l.paths[i].loss = percent
	return l.applyFaults(i)
}

var errClosed = errors.New("netlab: lab is closed")

// applyFaults rebuilds the chain of path i from its fault state in both
// namespaces. Each namespace is updated in one nft transaction. If one
// namespace fails the two can disagree; the next successful call on this
// path rebuilds both from the recorded state. Callers hold l.mu.
func (l *Lab) applyFaults(i int) error {
	p := l.paths[i]
	var b strings.Builder
	fmt.Fprintf(&b, "flush chain %s %s\n", nftTable, chainName(i))
	switch {
	case p.blackhole:
		fmt.Fprintf(&b, "add rule %s %s drop\n", nftTable, chainName(i))
	case p.loss > 0:
		fmt.Fprintf(&b, "add rule %s %s numgen random mod 100 < %d drop\n", nftTable, chainName(i), p.loss)
	}
	var errs []error
	for _, side := range []Side{Client, Server} {
		if err := l.nft(side, b.String()); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// tbf parameters. The burst must cover what arrives between two dequeue
// opportunities: rate/8 bytes per second over a 4 ms tick (HZ=250) gives
// rate/8/250 bytes, 50 KB at 100 Mbit/s. It is never below 32 KiB, which
// is well above the MTU and lets tbf pass GSO segments without
// starving low rates. The queue holds 20 ms worth of data: enough to
// absorb TCP bursts, small enough that bufferbloat does not delay the
// point where a failing path shows up as a stall.
const (
	tickPerSecond = 250
	minBurstBytes = 32 << 10
	tbfLatency    = "20ms"
)

func burstBytes(mbit int) int {
	b := mbit * 1_000_000 / 8 / tickPerSecond
	return max(b, minBurstBytes)
}

// SetRate (re)applies a tbf rate limit of mbit Mbit/s on the egress of
// both ends of path i; 0 removes it.
func (l *Lab) SetRate(i int, mbit int) error {
	if err := l.checkPath(i); err != nil {
		return err
	}
	if mbit < 0 {
		return fmt.Errorf("netlab: rate must not be negative, got %d", mbit)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return errClosed
	}
	return l.applyRate(i, mbit)
}

// applyRate is SetRate without checks or locking; New calls it before the
// lab is shared.
func (l *Lab) applyRate(i int, mbit int) error {
	p := l.paths[i]
	var errs []error
	for _, end := range []struct{ ns, dev string }{{l.client, p.clientIf}, {l.server, p.serverIf}} {
		var err error
		if mbit > 0 {
			_, err = run("", "tc", "-n", end.ns, "qdisc", "replace", "dev", end.dev, "root", "tbf",
				"rate", fmt.Sprintf("%dmbit", mbit),
				"burst", fmt.Sprint(burstBytes(mbit)),
				"latency", tbfLatency)
		} else {
			out, derr := run("", "tc", "-n", end.ns, "qdisc", "del", "dev", end.dev, "root")
			// Deleting the default qdisc fails this way; the path is
			// already unshaped then, which is what was asked for.
			if derr != nil && !strings.Contains(string(out), "handle of zero") {
				err = derr
			}
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// EnableMPTCP prepares the lab for an MPTCP baseline: MPTCP on in both
// namespaces, limits of 4 subflows and 4 accepted addresses in both, and on
// the client a subflow endpoint for the address of every path but the
// first, which carries the initial subflow. Calling it again resets the
// client endpoints.
//
// The kernel opens the extra subflow of a connection from path i's client
// address bound to c<i>, towards the server address the first subflow
// used, which belongs to another path's subnet. The lab's neighbour entries
// cover every path's addresses on every link (see setupLinks), so that
// subflow crosses path i, and its delay node if it has one, both ways.
func (l *Lab) EnableMPTCP() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return errClosed
	}
	for _, side := range []Side{Client, Server} {
		if err := l.writeFileIn(side, "/proc/sys/net/mptcp/enabled", "1\n"); err != nil {
			return err
		}
		ns, _ := l.nsName(side)
		if _, err := run("", "ip", "-n", ns, "mptcp", "limits", "set", "subflow", "4", "add_addr_accepted", "4"); err != nil {
			return err
		}
	}
	var b strings.Builder
	b.WriteString("mptcp endpoint flush\n")
	for i := 1; i < len(l.paths); i++ {
		p := l.paths[i]
		fmt.Fprintf(&b, "mptcp endpoint add %s dev %s subflow\n", p.clientAddr, p.clientIf)
	}
	_, err := run(b.String(), "ip", "-n", l.client, "-batch", "-")
	return err
}
