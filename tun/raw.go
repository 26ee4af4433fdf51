package tun

// Everything but TCP and UDP (ICMP echo, GRE, ...) crosses as whole IP packets: one packet
// flow per source address of the host (a Raw identity), each packet pinned to one path of a
// Bond by its 5-tuple. The far side writes them to an IP network of its own and sends back
// the packets for that address. Nothing here answers an echo: a dead host must look dead.

import (
	"context"
	"net/netip"
	"sync"
	"time"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/l3"
)

const (
	// maxRawFlows bounds the source addresses with a raw flow (a host has one or two: its
	// TUN's IPv4 and IPv6 addresses).
	maxRawFlows = 8
	// rawBacklog is how many packets wait while their flow opens (a ping's first echo).
	rawBacklog = 16
	// rawRetry is how long after the far side turned a raw flow down it is asked again.
	rawRetry = 30 * time.Second
)

// rawFlow is the raw flow of one source address.
type rawFlow struct {
	src     netip.Addr
	pc      *rendr.PacketConn // nil while opening, or after the far side turned it down
	backlog [][]byte          // packets waiting for pc
	failed  time.Time         // when the far side last turned it down
}

// isRaw reports whether the IP packet p goes as a raw packet, not to the stack: everything
// but TCP and UDP (and IPv6 packets whose extension headers the stack walks).
func isRaw(p []byte) bool {
	switch p[0] >> 4 {
	case 4:
		return p[9] != 6 && p[9] != 17
	case 6:
		switch p[6] {
		case 6, 17, 0, 43, 44, 60: // TCP, UDP; hop-by-hop, routing, fragment, destination options
			return false
		}
		return true
	}
	return false
}

// sendRaw sends the raw packet p on the flow of its source address, opening it first.
func (in *Ingress) sendRaw(p []byte) {
	src, dst, ok := addrs(p)
	if ok && len(p) > rendr.MaxDatagram {
		// Only a TUN whose MTU is above what a flow carries sends one.
		in.tooBig(p)
		in.stats.rawDropped.Add(1)
		return
	}
	if !ok || !dst.IsGlobalUnicast() {
		// Multicast, link-local and the like belong to the host's own link (IPv6 router
		// and multicast listener messages, say): never to the far side.
		in.stats.rawDropped.Add(1)
		return
	}
	in.rawMu.Lock()
	f := in.raw[src]
	if f == nil {
		if len(in.raw) >= maxRawFlows {
			in.rawMu.Unlock()
			in.stats.rawDropped.Add(1)
			return
		}
		f = &rawFlow{src: src}
		in.raw[src] = f
		in.openRaw(f)
	}
	pc := f.pc
	if pc == nil {
		if !f.failed.IsZero() && time.Since(f.failed) >= rawRetry {
			f.failed = time.Time{}
			in.openRaw(f)
		}
		if f.failed.IsZero() && len(f.backlog) < rawBacklog {
			f.backlog = append(f.backlog, append([]byte(nil), p...))
		} else {
			in.stats.rawDropped.Add(1)
		}
	}
	in.rawMu.Unlock()
	if pc != nil {
		if _, err := pc.Write(p); err != nil {
			in.stats.rawDropped.Add(1)
			return
		}
		in.stats.rawOut.Add(1)
	}
}

// openRaw opens f's flow in a goroutine, which then reads what comes back. Called with
// rawMu held.
func (in *Ingress) openRaw(f *rawFlow) {
	if !in.enter() {
		return
	}
	go func() {
		defer in.leave()
		ctx, cancel := context.WithTimeout(in.ctx, in.cfg.ConnectTimeout)
		pc, err := in.cfg.Dialer.DialPacketIdentity(ctx, l3.Raw(f.src))
		if err == nil {
			if err = pc.WaitAccepted(ctx); err != nil {
				pc.Close()
			}
		}
		cancel()
		in.rawMu.Lock()
		if err != nil {
			in.log.Debug("rendr/tun: raw flow not opened", "source", f.src, "err", err)
			f.failed = time.Now()
			in.stats.rawDropped.Add(uint64(len(f.backlog)))
			f.backlog = nil
			in.rawMu.Unlock()
			return
		}
		pc.SetFlowHash(l3.FlowHash)
		f.pc = pc
		backlog := f.backlog
		f.backlog = nil
		in.rawMu.Unlock()
		in.stats.rawOpened.Add(1)
		for _, p := range backlog {
			if _, err := pc.Write(p); err == nil {
				in.stats.rawOut.Add(1)
			}
		}
		in.readRaw(f, pc)
	}()
}

// readRaw writes to the device the packets that come back on f's flow (those for f's source
// address only) until the flow ends; then the next raw packet opens it again.
func (in *Ingress) readRaw(f *rawFlow, pc *rendr.PacketConn) {
	defer func() {
		pc.Close()
		in.rawMu.Lock()
		if in.raw[f.src] == f {
			delete(in.raw, f.src)
		}
		in.rawMu.Unlock()
	}()
	stop := context.AfterFunc(in.ctx, func() { pc.Close() })
	defer stop()
	buf := make([]byte, offset+maxPacket)
	for {
		n, err := pc.Read(buf[offset:])
		if err != nil {
			return
		}
		p := buf[offset : offset+n]
		if _, dst, ok := addrs(p); !ok || dst != f.src {
			in.stats.rawDropped.Add(1) // not for this host: the far side has no business sending it
			continue
		}
		if _, err := in.dev.Write([][]byte{buf[:offset+n]}, offset); err != nil {
			in.stats.rawDropped.Add(1)
			continue
		}
		in.stats.rawIn.Add(1)
	}
}

// addrs is the source and destination address of the IP packet p.
func addrs(p []byte) (src, dst netip.Addr, ok bool) {
	switch {
	case len(p) >= 20 && p[0]>>4 == 4:
		return netip.AddrFrom4([4]byte(p[12:16])), netip.AddrFrom4([4]byte(p[16:20])), true
	case len(p) >= 40 && p[0]>>4 == 6:
		return netip.AddrFrom16([16]byte(p[8:24])), netip.AddrFrom16([16]byte(p[24:40])), true
	}
	return netip.Addr{}, netip.Addr{}, false
}

// rawState is the Ingress's raw flows.
type rawState struct {
	rawMu sync.Mutex
	raw   map[netip.Addr]*rawFlow
}
