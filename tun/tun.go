// Package tun turns a host's IP traffic into rendr flows: the TUN ingress. Packets an
// operating system routes into a TUN device (golang.zx2c4.com/wireguard/tun's) are read and
// handed to a gVisor user-space stack, which terminates them:
//
//   - each TCP connection becomes a stream flow opened with the connection's L3 identity
//     (rendr.Dialer.DialIdentity). The application's SYN is answered only once the far side
//     connected (rendr.Conn.WaitAccepted); a refused destination gets an RST, one that does
//     not answer gets nothing. The flow carries the bytes, not the packets, so a path's death
//     is invisible to the application's TCP and a Bond never reorders it.
//     A destination the far side cannot reach gets an ICMP host unreachable.
//   - each UDP flow (one per source and destination address and port) becomes a packet flow,
//     closed after an idle time; a closed destination port gets an ICMP port unreachable. A
//     datagram over rendr.MaxDatagram (one the host fragmented) is dropped whole.
//   - every other protocol (ICMP echo, GRE...) goes as whole IP packets on one packet flow per
//     source address (l3.Raw), each pinned by its 5-tuple; nothing answers an echo here. One
//     over rendr.MaxDatagram (from a TUN with a larger MTU) gets ICMP fragmentation needed
//     (packet too big) with that MTU.
//
// The listening side carries the flows on to their destinations with its Egress
// (rendr.ListenConfig.Egress, docs/egress.md). Everything the ingress holds is bounded and
// counted: see Config, Memory and Stats.
//
// On a Linux TUN opened with virtio-net headers (Open does), the kernel's TCP segments of up
// to 64 KiB enter the stack whole, and the stack's own go out whole for the kernel to cut
// (Config.NoOffload turns this off; Stats.SegmentsIn and SegmentsOut count them).
package tun

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	wgtun "golang.zx2c4.com/wireguard/tun"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/internal/netstack"
	"github.com/rendr-go/rendr/l3"
)

// Opener opens the flows: a *rendr.Dialer.
type Opener interface {
	DialIdentity(ctx context.Context, id l3.Identity) (*rendr.Conn, error)
	DialPacketIdentity(ctx context.Context, id l3.Identity) (*rendr.PacketConn, error)
}

// Config configures an Ingress. Device and Dialer are required; every zero bound means its
// default.
type Config struct {
	// Device is the TUN the host routes into; Open makes one. The Ingress reads and writes
	// it, and closes it on Close.
	Device wgtun.Device
	// Dialer opens a flow for each connection.
	Dialer Opener
	// MTU is the device's MTU; zero asks the device (which looks its interface up in the
	// caller's network namespace: give it when the device was made in another).
	MTU int
	// MaxTCP bounds the TCP connections terminated at once (4096). Past it a new SYN is
	// answered with an RST; nothing already open is touched.
	MaxTCP int
	// MaxPending bounds the SYNs whose far side is being reached at once (256), and
	// MaxPendingPerSource those of one source address (64). Past either a SYN is dropped,
	// as a full listen queue drops it: the application's TCP sends it again. A SYN sent
	// again while its first is pending is the same connection, counted once.
	MaxPending, MaxPendingPerSource int
	// ConnectTimeout bounds how long a SYN waits for the far side (30s); then it is dropped
	// and the application's own connect times out, as it would without the tunnel.
	ConnectTimeout time.Duration
	// MaxUDP bounds the UDP flows open at once (4096). Past it a new flow's datagrams are
	// dropped (counted in Stats.UDPDropped), as a full socket table drops them; one sent
	// once a flow has closed opens it. UDPIdle closes a UDP flow after that long without a datagram either way (2
	// minutes); DNSIdle for flows to port 53 (30s).
	MaxUDP           int
	UDPIdle, DNSIdle time.Duration
	// TCP tunes the stack's TCP: its buffer ranges. Zero means 4 KiB / 1 MiB / 6 MiB to send
	// and 4 KiB / 1 MiB / 8 MiB to receive: what a long fat path needs, grown only as the
	// connection uses it (Memory changes these defaults).
	TCP TCPBuffers
	// Memory picks the defaults of every bound above that is left zero: MemoryDefault, or
	// MemorySmall for a router or a small box.
	Memory Memory
	// NoOffload turns the device's offloads off (on a Linux TUN opened with virtio-net
	// headers, as Open does): the kernel then hands over every packet MTU-sized with its
	// checksums done, and takes only such packets back. With them on (the default) the
	// kernel sends a TCP connection's data in segments of up to 64 KiB and cuts the
	// stack's own segments of up to 64 KiB to the MTU, which costs a fraction of the CPU;
	// if the kernel refuses a segment or an unfinished checksum on a write, the ingress
	// cuts and finishes them itself from then on.
	NoOffload bool
	// Logger receives debug events; nil discards them.
	Logger *slog.Logger
}

// TCPBuffers are the stack's TCP buffer ranges in bytes, to send and to receive: each
// connection's buffers start at the default and grow, as it uses them, up to the maximum.
type TCPBuffers = netstack.TCP

// Memory is a set of defaults for an Ingress's bounds.
type Memory int

const (
	// MemoryDefault: MaxTCP 4096, MaxPending 256 (64 per source), MaxUDP 4096, and TCP
	// buffers of 4 KiB / 1 MiB / 6 MiB to send and 4 KiB / 1 MiB / 8 MiB to receive, which
	// fill a 1 Gbit/s path at 50 ms.
	MemoryDefault Memory = iota
	// MemorySmall: MaxTCP 512, MaxPending 64 (16 per source), MaxUDP 512, and TCP buffers
	// of 4 KiB / 64 KiB / 1 MiB each way: a connection holds at most 2 MiB in the stack,
	// enough for 100 Mbit/s at 40 ms, and an idle one a few KiB. Beside the stack, each
	// connection's flow has its receive window (the Dialer's MaxWindow and
	// MaxSessionWindow bound those) and a 32 KiB copy buffer each way.
	MemorySmall
)

// Stats counts what an Ingress did.
type Stats struct {
	// TCP connections terminated now (TCPActive, those being connected included) and SYNs
	// whose far side is being reached now (TCPPending); since the start: opened (the far
	// side connected), answered with an RST (refused or turned down by the far side, or past
	// MaxTCP), left unanswered (no answer in time, or unreachable), and SYNs dropped past
	// MaxPending or MaxPendingPerSource.
	TCPActive, TCPPending                             int
	TCPOpened, TCPReset, TCPUnanswered, TCPSynDropped uint64
	// UDP flows open now, and since the start: opened, closed for idleness; and datagrams
	// dropped for want of a flow (each datagram of a flow past MaxUDP).
	UDPActive                       int
	UDPOpened, UDPIdled, UDPDropped uint64
	// Packets read from the device and written to it, and those dropped: not IP, or the
	// stack's queue to the device full. ICMPErrors counts the ICMP errors written to the
	// device: host unreachable for a TCP connection whose destination the far side could
	// not reach, port unreachable for a UDP flow whose destination port was closed.
	PacketsIn, PacketsOut, PacketsDropped, ICMPErrors uint64
	// Packets of other protocols than TCP and UDP, carried whole: the raw flows open now
	// (one per source address) and since the start, the packets sent to the far side and
	// received from it, and those dropped: for the host's own link (multicast, link-local),
	// past the backlog of a flow opening, or while the far side takes no raw flow.
	RawFlows                             int
	RawOpened, RawOut, RawIn, RawDropped uint64
	// Offload says the device's offloads are on (Config.NoOffload); SegmentsIn and
	// SegmentsOut count the TCP segments of more than one packet read from the device and
	// written to it (each counted once in PacketsIn or PacketsOut too).
	Offload                 bool
	SegmentsIn, SegmentsOut uint64
}

// Ingress is a running TUN ingress.
type Ingress struct {
	cfg    Config
	log    *slog.Logger
	dev    wgtun.Device
	vnet   *vnetDevice // the device's file with virtio-net headers; nil on other devices
	ep     *channel.Endpoint
	s      *stack.Stack
	ctx    context.Context
	cancel context.CancelFunc
	once   sync.Once

	// wg counts the goroutines that handle connections; once closed, none starts.
	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup

	pendMu  sync.Mutex
	pending map[netip.Addr]int // SYNs being connected, by source address
	npend   int
	syns    *synTable // the start of recent SYNs, for the ICMP errors that quote them
	rawState

	stats struct {
		tcpActive, udpActive                           atomic.Int64
		tcpOpened, tcpReset, tcpUnanswered, synDropped atomic.Uint64
		udpOpened, udpIdled, udpDropped                atomic.Uint64
		in, out, dropped, icmp                         atomic.Uint64
		rawOpened, rawOut, rawIn, rawDropped           atomic.Uint64
	}
}

// Open creates a TUN device named name (a kernel-chosen name when "tun%d"), with the Linux
// offloads on where the kernel has them. The caller gives it addresses and routes.
func Open(name string, mtu int) (wgtun.Device, error) {
	dev, err := wgtun.CreateTUN(name, mtu)
	if err != nil {
		return nil, fmt.Errorf("rendr/tun: create %s: %w", name, err)
	}
	return dev, nil
}

const nicID = 1

// Start starts an Ingress on cfg.Device.
func Start(cfg Config) (*Ingress, error) {
	if cfg.Device == nil {
		return nil, errors.New("rendr/tun: Config.Device is nil: open one with tun.Open")
	}
	if cfg.Dialer == nil {
		return nil, errors.New("rendr/tun: Config.Dialer is nil: give it the rendr.Dialer to the far side")
	}
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	if cfg.Memory != MemoryDefault && cfg.Memory != MemorySmall {
		return nil, fmt.Errorf("rendr/tun: Config.Memory %d: want MemoryDefault or MemorySmall", cfg.Memory)
	}
	small := cfg.Memory == MemorySmall
	pick := func(dflt, sm int) int {
		if small {
			return sm
		}
		return dflt
	}
	def(&cfg.MaxTCP, pick(4096, 512))
	def(&cfg.MaxPending, pick(256, 64))
	def(&cfg.MaxPendingPerSource, pick(64, 16))
	def(&cfg.MaxUDP, pick(4096, 512))
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = 30 * time.Second
	}
	if cfg.UDPIdle <= 0 {
		cfg.UDPIdle = 2 * time.Minute
	}
	if cfg.DNSIdle <= 0 {
		cfg.DNSIdle = 30 * time.Second
	}
	if cfg.TCP == (TCPBuffers{}) {
		cfg.TCP = TCPBuffers{SendDefault: 1 << 20, SendMax: 6 << 20, RecvDefault: 1 << 20, RecvMax: 8 << 20}
		if small {
			cfg.TCP = TCPBuffers{SendDefault: 64 << 10, SendMax: 1 << 20, RecvDefault: 64 << 10, RecvMax: 1 << 20}
		}
	}
	mtu := cfg.MTU
	if mtu <= 0 {
		var err error
		if mtu, err = cfg.Device.MTU(); err != nil {
			return nil, fmt.Errorf("rendr/tun: the device's MTU (set Config.MTU when the device is in another namespace): %w", err)
		}
	}
	vnet, err := openVnet(cfg.Device, !cfg.NoOffload)
	if err != nil {
		return nil, err
	}
	in := &Ingress{cfg: cfg, log: cfg.Logger, dev: cfg.Device, vnet: vnet, pending: map[netip.Addr]int{},
		syns: &synTable{seed: maphash.MakeSeed()}}
	in.raw = map[netip.Addr]*rawFlow{}
	if in.log == nil {
		in.log = slog.New(slog.DiscardHandler)
	}
	in.ctx, in.cancel = context.WithCancel(context.Background())
	in.s = stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol},
	})
	in.ep = channel.New(queueLen, uint32(mtu), "")
	var link stack.LinkEndpoint = in.ep
	if vnet != nil && vnet.offload {
		// The kernel's segments come in whole, with checksums it vouches for or that
		// vnet checks, and the stack's go out whole, for the kernel to cut.
		in.ep.SupportedGSOKind = stack.HostGSOSupported
		in.ep.LinkEPCapabilities = stack.CapabilityRXChecksumOffload
		link = gsoLink{in.ep}
	}
	if err := in.configure(link); err != nil {
		in.s.Close()
		in.s.Wait()
		return nil, err
	}
	in.enter()
	in.enter()
	go in.routineRead()
	go in.routineWrite()
	return in, nil
}

// configure makes the stack take every packet the host sends it, whatever its destination,
// and answer from that destination: it stands for the whole far side.
func (in *Ingress) configure(link stack.LinkEndpoint) error {
	if err := in.s.CreateNIC(nicID, link); err != nil {
		return fmt.Errorf("rendr/tun: create NIC: %v", err)
	}
	if err := in.s.SetPromiscuousMode(nicID, true); err != nil {
		return fmt.Errorf("rendr/tun: promiscuous: %v", err)
	}
	if err := in.s.SetSpoofing(nicID, true); err != nil {
		return fmt.Errorf("rendr/tun: spoofing: %v", err)
	}
	in.s.SetRouteTable([]tcpip.Route{
		{Destination: header.IPv4EmptySubnet, NIC: nicID},
		{Destination: header.IPv6EmptySubnet, NIC: nicID},
	})
	if err := netstack.TuneTCP(in.s, in.cfg.TCP); err != nil {
		return fmt.Errorf("rendr/tun: %v", err)
	}
	fwd := tcp.NewForwarder(in.s, 0, in.cfg.MaxPending, in.handleTCP)
	in.s.SetTransportProtocolHandler(tcp.ProtocolNumber, fwd.HandlePacket)
	ufwd := udp.NewForwarder(in.s, in.handleUDP)
	in.s.SetTransportProtocolHandler(udp.ProtocolNumber, ufwd.HandlePacket)
	return nil
}

// Close stops the ingress: every connection it terminates ends, and the device is closed.
func (in *Ingress) Close() error {
	var err error
	in.once.Do(func() {
		in.mu.Lock()
		in.closed = true
		in.mu.Unlock()
		in.cancel()
		err = in.dev.Close()
		in.s.Close() // every endpoint: the splices see their connections end
		in.ep.Close()
		in.wg.Wait()
		in.s.Wait()
	})
	return err
}

// enter counts a goroutine that handles a connection in, unless the ingress is closing; leave
// is its end.
func (in *Ingress) enter() bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.closed {
		return false
	}
	in.wg.Add(1)
	return true
}

func (in *Ingress) leave() { in.wg.Done() }

// Stats returns the counters.
func (in *Ingress) Stats() Stats {
	s := &in.stats
	in.pendMu.Lock()
	pending := in.npend
	in.pendMu.Unlock()
	in.rawMu.Lock()
	raw := 0
	for _, f := range in.raw {
		if f.pc != nil {
			raw++
		}
	}
	in.rawMu.Unlock()
	st := Stats{TCPPending: pending, RawFlows: raw,
		TCPActive: int(s.tcpActive.Load()), TCPOpened: s.tcpOpened.Load(), TCPReset: s.tcpReset.Load(),
		TCPUnanswered: s.tcpUnanswered.Load(), TCPSynDropped: s.synDropped.Load(),
		UDPActive: int(s.udpActive.Load()), UDPOpened: s.udpOpened.Load(), UDPIdled: s.udpIdled.Load(),
		UDPDropped: s.udpDropped.Load(),
		PacketsIn:  s.in.Load(), PacketsOut: s.out.Load(), PacketsDropped: s.dropped.Load(),
		ICMPErrors: s.icmp.Load(), RawOpened: s.rawOpened.Load(), RawOut: s.rawOut.Load(),
		RawIn: s.rawIn.Load(), RawDropped: s.rawDropped.Load(),
	}
	if in.vnet != nil {
		st.Offload = in.vnet.offload
		st.SegmentsIn, st.SegmentsOut = in.vnet.segIn.Load(), in.vnet.segOut.Load()
	}
	return st
}

// addrPort is a stack address and port as a netip.AddrPort (IPv4 unmapped).
func addrPort(a tcpip.Address, port uint16) netip.AddrPort {
	ip, _ := netip.AddrFromSlice(a.AsSlice())
	return netip.AddrPortFrom(ip.Unmap(), port)
}
