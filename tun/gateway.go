package tun

// The far side of raw flows: a Gateway writes their packets to a TUN of its own, whose host
// routes them on (with NAT, set up by the caller), and hands each raw flow the packets that
// come back for its host's address.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	wgtun "golang.zx2c4.com/wireguard/tun"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/internal/deadline"
	"github.com/rendr-go/rendr/l3"
)

// gatewayQueue is how many packets wait for one raw flow to take them; past it they are
// dropped, as a full interface queue drops them.
const gatewayQueue = 256

// Gateway carries raw flows (l3.Raw) to an IP network through a TUN device. Give its Egress to
// the listener (rendr.ListenConfig.Egress). Each raw flow may send packets from its own
// address only, to the allowed prefixes only; one address belongs to one peer key at a time.
type Gateway struct {
	dev   wgtun.Device
	allow []netip.Prefix
	wg    sync.WaitGroup

	mu     sync.Mutex
	closed bool
	hosts  map[netip.Addr]*gatewayConn

	stats struct{ out, in, dropped atomic.Uint64 }
}

// GatewayStats counts a Gateway's packets: written to its device for the raw flows, read from
// it and handed to them, and dropped (not allowed, spoofed, for no flow, or a full queue).
type GatewayStats struct {
	Flows            int
	Out, In, Dropped uint64
}

// NewGateway starts a Gateway on dev, which the caller has given addresses and routes (the
// hosts' addresses route to it), for packets to the allowed prefixes.
func NewGateway(dev wgtun.Device, allow []netip.Prefix) *Gateway {
	g := &Gateway{dev: dev, allow: append([]netip.Prefix(nil), allow...), hosts: map[netip.Addr]*gatewayConn{}}
	g.wg.Add(1)
	go g.routineRead()
	return g
}

// Egress returns an Egress that carries raw flows through the Gateway, and hands every other
// flow to next.
func (g *Gateway) Egress(next rendr.Egress) rendr.Egress {
	return func(ctx context.Context, peer rendr.PublicKey, id l3.Identity) (net.Conn, error) {
		if !id.IsRaw() {
			return next(ctx, peer, id)
		}
		return g.attach(peer, id.Src.Addr())
	}
}

// attach makes the connection of the raw flow of host from peer: it replaces one of the same
// peer's (a client that started again), and another peer's host address is refused.
func (g *Gateway) attach(peer rendr.PublicKey, host netip.Addr) (net.Conn, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return nil, errors.New("rendr/tun: the gateway is closed")
	}
	if old := g.hosts[host]; old != nil {
		if old.peer != peer {
			return nil, fmt.Errorf("rendr/tun: %v is another peer's address", host)
		}
		old.closeLocked()
	}
	c := &gatewayConn{g: g, peer: peer, host: host, in: make(chan []byte, gatewayQueue),
		done: make(chan struct{}), rdl: deadline.New()}
	g.hosts[host] = c
	return c, nil
}

// routineRead reads what the device's host sends to the hosts and queues each packet for the
// raw flow of its destination.
func (g *Gateway) routineRead() {
	defer g.wg.Done()
	readBatches(g.dev, g.deliver, &g.stats.dropped)
}

func (g *Gateway) deliver(p []byte) {
	_, dst, ok := addrs(p)
	g.mu.Lock()
	c := g.hosts[dst]
	g.mu.Unlock()
	if !ok || c == nil {
		g.stats.dropped.Add(1)
		return
	}
	select {
	case c.in <- append([]byte(nil), p...):
		g.stats.in.Add(1)
	default:
		g.stats.dropped.Add(1)
	}
}

// Stats returns the counters.
func (g *Gateway) Stats() GatewayStats {
	g.mu.Lock()
	n := len(g.hosts)
	g.mu.Unlock()
	return GatewayStats{Flows: n, Out: g.stats.out.Load(), In: g.stats.in.Load(), Dropped: g.stats.dropped.Load()}
}

// Close stops the Gateway and closes its device; the raw flows it carries end.
func (g *Gateway) Close() error {
	g.mu.Lock()
	g.closed = true
	for _, c := range g.hosts {
		c.closeLocked()
	}
	g.mu.Unlock()
	err := g.dev.Close()
	g.wg.Wait()
	return err
}

// gatewayConn is one raw flow's side of the Gateway: each Read is a packet for its host, each
// Write one of its host's packets.
type gatewayConn struct {
	g    *Gateway
	peer rendr.PublicKey
	host netip.Addr
	in   chan []byte
	done chan struct{}
	rdl  *deadline.Deadline
	once sync.Once
}

func (c *gatewayConn) closeLocked() {
	c.once.Do(func() {
		close(c.done)
		if c.g.hosts[c.host] == c {
			delete(c.g.hosts, c.host)
		}
	})
}

func (c *gatewayConn) Read(p []byte) (int, error) {
	select {
	case b := <-c.in:
		return copy(p, b), nil
	case <-c.done:
		return 0, net.ErrClosed
	case <-c.rdl.Wait():
		return 0, os.ErrDeadlineExceeded
	}
}

// Write writes one packet of the host to the device: from the host's own address, to an
// allowed destination; any other is dropped.
func (c *gatewayConn) Write(p []byte) (int, error) {
	select {
	case <-c.done:
		return 0, net.ErrClosed
	default:
	}
	src, dst, ok := addrs(p)
	if !ok || src != c.host || !c.g.allowed(dst) {
		c.g.stats.dropped.Add(1)
		return len(p), nil
	}
	b := make([]byte, offset+len(p))
	copy(b[offset:], p)
	if _, err := c.g.dev.Write([][]byte{b}, offset); err != nil {
		c.g.stats.dropped.Add(1)
		return len(p), nil
	}
	c.g.stats.out.Add(1)
	return len(p), nil
}

func (g *Gateway) allowed(dst netip.Addr) bool {
	for _, p := range g.allow {
		if p.Contains(dst) {
			return true
		}
	}
	return false
}

func (c *gatewayConn) Close() error {
	c.g.mu.Lock()
	c.closeLocked()
	c.g.mu.Unlock()
	return nil
}

func (c *gatewayConn) SetReadDeadline(t time.Time) error { c.rdl.Set(t); return nil }
func (c *gatewayConn) SetDeadline(t time.Time) error     { return c.SetReadDeadline(t) }
func (c *gatewayConn) SetWriteDeadline(time.Time) error  { return nil }
func (c *gatewayConn) LocalAddr() net.Addr               { return gatewayAddr{} }
func (c *gatewayConn) RemoteAddr() net.Addr              { return gatewayAddr{c.host} }

type gatewayAddr struct{ a netip.Addr }

func (gatewayAddr) Network() string  { return "ip" }
func (a gatewayAddr) String() string { return a.a.String() }
