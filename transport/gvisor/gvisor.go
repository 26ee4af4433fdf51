// Package gvisor is rendr's user-space TCP carrier: a path is one TCP connection of gVisor's
// netstack, whose IP packets travel as UDP datagrams. Each end runs a small stack of its own,
// so nothing of the host's TCP is used: no kernel TCP socket, no kernel congestion control,
// no firewall rule about TCP.
//
// Pick it where kernel TCP paths are unusable but UDP passes: a network that throttles or
// resets TCP, a host where the program may not open TCP sockets the way it needs, or a
// platform whose TCP stack behaves badly on a lossy link. It costs more CPU per byte than
// kernel TCP or QUIC (the stack runs in Go), and its path survives no change of the peer's
// address: a NAT that rebinds the port ends the path, and rendr re-dials. Where kernel TCP
// works, transport/tcp is cheaper; where the address changes under a live path,
// transport/quic moves with it.
//
// The stacks speak plain IPv4 and TCP between two private addresses inside the UDP
// datagrams; rendr's records inside the TCP stream are encrypted and authenticated as on any
// carrier, so the stack carries nothing readable.
//
// Unlike a kernel TCP listener, the listening side answers no SYN before the source address
// it claims is proven, so a spoofed datagram cannot make it reflect or amplify traffic, nor
// hold state. Control datagrams, told apart from IP packets by their first byte (0xf1 to
// 0xf3, never an IPv4 header's 0x4_), carry an address check like QUIC's Retry:
//
//	hello  (dialer):   0xf1 | nonce (8) | zero padding, 64 bytes or more in all
//	cookie (listener): 0xf2 | the hello's nonce (8) | token (20)
//	SYN    (dialer):   0xf3 | token (20) | the IPv4 SYN, each copy of it
//	token:             issue time (4, seconds, big-endian) | HMAC-SHA-256(listener secret,
//	                   issue time | source "ip:port")[:16]
//
// The listener answers a hello with a cookie (29 bytes, never more than the hello) and keeps
// nothing; only a SYN whose token it made for that very source, within the last 60 s, starts a
// stack. From then on the source's datagrams are plain IP packets to its stack. Stacks are
// bounded by MaxPeers (the oldest one still handshaking gives way at the bound, and it is gone
// after 3 s); rendr's handshake inside the connection admits only the configured peers.
// Listener.Stats counts every datagram the check turned away. The dialer sends its hello
// again after 250 ms, doubling to 2 s, ten times at most; the check costs a dial one round
// trip.
package gvisor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"

	gstack "github.com/rendr-go/rendr/internal/netstack"
	"github.com/rendr-go/rendr/transport"
)

// The addresses and port of the two stacks of a pair. Each pair of stacks is alone on its
// link, so every pair uses the same ones.
var (
	dialerIP   = tcpip.AddrFrom4([4]byte{10, 255, 0, 1})
	listenerIP = tcpip.AddrFrom4([4]byte{10, 255, 0, 2})
)

const (
	listenerPort = 1
	nicID        = 1
	// DefaultMTU is the largest IP packet a stack sends, so one UDP datagram of it fits a
	// 1500-byte Ethernet link with room for an IPv6 header.
	DefaultMTU = 1400
	// queueLen is how many packets a stack's link holds for the socket writer.
	queueLen = 1024
)

// Option configures a Dialer or a Listener.
type Option func(*options)

type options struct {
	mtu      int
	local    string
	listen   func(network, address string) (net.PacketConn, error)
	maxPeers int
	bufSize  int
}

// MTU sets the largest IP packet the stack sends (one UDP datagram each); 576 to 65000.
func MTU(n int) Option { return func(o *options) { o.mtu = min(max(n, 576), 65000) } }

// LocalAddr binds the dialing socket to a local address (an interface's address).
func LocalAddr(ip string) Option { return func(o *options) { o.local = ip } }

// ListenPacket opens the UDP socket with f instead of net.ListenPacket: for socket options, a
// device binding, or another network namespace. address is "ip:port".
func ListenPacket(f func(network, address string) (net.PacketConn, error)) Option {
	return func(o *options) { o.listen = f }
}

// MaxPeers bounds the stacks a Listener runs at once (one per dialing address that proved
// itself). At the bound, a proven SYN from one more address makes the oldest stack still
// handshaking give way (ListenerStats.Evicted), or is dropped if every stack carries a live
// connection (ListenerStats.Refused). Zero means 256.
func MaxPeers(n int) Option { return func(o *options) { o.maxPeers = n } }

// BufferSize sets each TCP connection's send buffer and the most its receive buffer grows to,
// in bytes; zero means 4 MiB.
func BufferSize(n int) Option { return func(o *options) { o.bufSize = n } }

func build(opts []Option) options {
	o := options{mtu: DefaultMTU, listen: net.ListenPacket, maxPeers: 256, bufSize: 4 << 20}
	for _, f := range opts {
		f(&o)
	}
	if o.maxPeers <= 0 {
		o.maxPeers = 256
	}
	return o
}

// netstack is one user-space stack with one link, whose packets go out through send.
type netstack struct {
	s    *stack.Stack
	ep   *channel.Endpoint
	done chan struct{}
	wg   sync.WaitGroup
}

func newNetstack(o *options, addr tcpip.Address, send func([]byte) error) (*netstack, error) {
	s := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol},
	})
	ep := channel.New(queueLen, uint32(o.mtu), "")
	n := &netstack{s: s, ep: ep, done: make(chan struct{})}
	if err := n.configure(o, addr); err != nil {
		s.Close()
		s.Wait()
		return nil, err
	}
	n.wg.Add(1)
	go n.routineSend(send)
	return n, nil
}

func (n *netstack) configure(o *options, addr tcpip.Address) error {
	if err := n.s.CreateNIC(nicID, n.ep); err != nil {
		return fmt.Errorf("rendr/gvisor: create NIC: %v", err)
	}
	pa := tcpip.ProtocolAddress{Protocol: ipv4.ProtocolNumber, AddressWithPrefix: addr.WithPrefix()}
	if err := n.s.AddProtocolAddress(nicID, pa, stack.AddressProperties{}); err != nil {
		return fmt.Errorf("rendr/gvisor: add address: %v", err)
	}
	n.s.SetRouteTable([]tcpip.Route{{Destination: header.IPv4EmptySubnet, NIC: nicID}})
	// A connection starts with a small receive window and grows it with what it carries
	// (moderation), so a peer that is not yet authenticated cannot make the stack hold
	// megabytes of out-of-order data.
	t := gstack.TCP{SendDefault: o.bufSize, SendMax: o.bufSize, RecvDefault: 64 << 10, RecvMax: o.bufSize}
	if err := gstack.TuneTCP(n.s, t); err != nil {
		return fmt.Errorf("rendr/gvisor: %v", err)
	}
	return nil
}

// routineSend takes the packets the stack sends and hands each to send, as one datagram.
func (n *netstack) routineSend(send func([]byte) error) {
	defer n.wg.Done()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-n.done
		cancel()
	}()
	for {
		pkt := n.ep.ReadContext(ctx)
		if pkt == nil {
			return
		}
		v := pkt.ToView()
		send(v.AsSlice()) // a datagram that cannot go is lost; TCP sends it again
		v.Release()
		pkt.DecRef()
	}
}

// inject hands the stack one received IP packet.
func (n *netstack) inject(b []byte) {
	if len(b) < header.IPv4MinimumSize || header.IPVersion(b) != header.IPv4Version {
		return
	}
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(b)})
	n.ep.InjectInbound(ipv4.ProtocolNumber, pkt)
	pkt.DecRef()
}

// segmentsSent counts the TCP segments the stack has sent.
func (n *netstack) segmentsSent() uint64 { return n.s.Stats().TCP.SegmentsSent.Value() }

// flushed waits, a bounded while, until the stack has sent a segment more than before (the
// FIN that Close makes, on the stack's own goroutine) and handed everything queued to the
// socket.
func (n *netstack) flushed(before uint64, within time.Duration) {
	end := time.Now().Add(within)
	for time.Now().Before(end) {
		if n.segmentsSent() > before && n.ep.NumQueued() == 0 {
			time.Sleep(time.Millisecond) // the writer may still be in its last WriteTo
			return
		}
		time.Sleep(time.Millisecond)
	}
}

func (n *netstack) close() {
	close(n.done)
	n.wg.Wait()
	n.ep.Close()
	n.s.Close()
	n.s.Wait()
}

// Dialer returns a path dialer: each call opens a UDP socket towards address ("host:port"),
// starts a stack and connects one TCP connection through it to the Listener there.
func Dialer(address string, opts ...Option) transport.DialFunc {
	o := build(opts)
	return func(ctx context.Context) (net.Conn, error) {
		raddr, err := net.ResolveUDPAddr("udp", address)
		if err != nil {
			return nil, err
		}
		local := ""
		if o.local != "" {
			local = net.JoinHostPort(o.local, "0")
		} else if raddr.IP.To4() != nil {
			local = "0.0.0.0:0"
		} else {
			local = "[::]:0"
		}
		pc, err := o.listen("udp", local)
		if err != nil {
			return nil, err
		}
		token, err := prove(ctx, pc, raddr)
		if err != nil {
			pc.Close()
			return nil, err
		}
		ns, err := newNetstack(&o, dialerIP, func(b []byte) error {
			_, err := pc.WriteTo(withToken(b, token), raddr)
			return err
		})
		if err != nil {
			pc.Close()
			return nil, err
		}
		c := &Conn{ns: ns, pc: pc, remote: raddr}
		c.wg.Add(1)
		go c.routineReceive(raddr.String())
		tc, err := gonet.DialContextTCP(ctx, ns.s,
			tcpip.FullAddress{NIC: nicID, Addr: listenerIP, Port: listenerPort}, ipv4.ProtocolNumber)
		if err != nil {
			c.teardown()
			return nil, err
		}
		c.TCPConn = tc
		return c, nil
	}
}

// Conn is one gVisor TCP connection as a rendr carrier.
type Conn struct {
	*gonet.TCPConn
	ns      *netstack
	pc      net.PacketConn // the dialing side's own socket; nil on the listening side
	remote  net.Addr
	release func() // the listening side: drop this peer
	once    sync.Once
	wg      sync.WaitGroup
}

// routineReceive feeds the dialing side's stack the datagrams from its peer's address.
func (c *Conn) routineReceive(peer string) {
	defer c.wg.Done()
	buf := make([]byte, 65536)
	for {
		n, from, err := c.pc.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue // ICMP errors from a peer not up yet, and the like
		}
		if from.String() != peer {
			continue // only the peer's datagrams reach the stack
		}
		c.ns.inject(buf[:n])
	}
}

// Close closes the TCP connection (a FIN, given a moment to leave) and everything under it.
func (c *Conn) Close() error {
	var err error
	c.once.Do(func() {
		if c.TCPConn != nil {
			before := c.ns.segmentsSent()
			err = c.TCPConn.Close()
			c.ns.flushed(before, 100*time.Millisecond)
		}
		c.teardown()
	})
	return err
}

func (c *Conn) teardown() {
	if c.pc != nil {
		c.pc.Close()
	}
	c.wg.Wait()
	c.ns.close()
	if c.release != nil {
		c.release()
	}
}

// LocalAddr is the UDP socket's address; RemoteAddr the peer's.
func (c *Conn) LocalAddr() net.Addr {
	if c.pc != nil {
		return c.pc.LocalAddr()
	}
	return c.TCPConn.LocalAddr()
}

func (c *Conn) RemoteAddr() net.Addr { return c.remote }
