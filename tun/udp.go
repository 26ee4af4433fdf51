package tun

// UDP: each flow of datagrams between two addresses and ports is a packet flow, closed when
// it idles.

import (
	"context"
	"errors"
	"sync/atomic"

	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/internal/splice"
	"github.com/rendr-go/rendr/l3"
)

// handleUDP runs for the first datagram of a flow the stack has no endpoint for. It makes the
// flow's endpoint (which takes this datagram and the ones after it) and opens the packet flow
// in a goroutine; datagrams sent meanwhile wait in the endpoint's queue.
func (in *Ingress) handleUDP(r *udp.ForwarderRequest) bool {
	id := r.ID()
	ident := l3.Identity{Proto: l3.UDP, Src: addrPort(id.RemoteAddress, id.RemotePort), Dst: addrPort(id.LocalAddress, id.LocalPort)}
	if !in.enter() {
		return true // closing: dropped
	}
	if ident.Valid() != nil {
		in.leave()
		in.stats.udpDropped.Add(1) // port 0: no flow can stand for it
		return true
	}
	if !takePlace(&in.stats.udpActive, in.cfg.MaxUDP) {
		in.leave()
		in.stats.udpDropped.Add(1)
		return true // dropped, as a full socket table drops it
	}
	var wq waiter.Queue
	ep, err := r.CreateEndpoint(&wq)
	if err != nil {
		in.leave()
		in.stats.udpActive.Add(-1)
		in.stats.udpDropped.Add(1)
		return true
	}
	host := gonet.NewUDPConn(&wq, ep)
	idle := in.cfg.UDPIdle
	if ident.Dst.Port() == 53 {
		idle = in.cfg.DNSIdle
	}
	go func() {
		defer in.leave()
		defer in.stats.udpActive.Add(-1)
		ctx, cancel := context.WithTimeout(in.ctx, in.cfg.ConnectTimeout)
		pc, err := in.cfg.Dialer.DialPacketIdentity(ctx, ident)
		cancel()
		if err != nil {
			in.log.Debug("rendr/tun: UDP flow not opened", "identity", ident, "err", err)
			host.Close()
			return
		}
		in.stats.udpOpened.Add(1)
		splice.Datagrams(pc, host, idle, rendr.MaxDatagram, func(flowErr, hostErr error) {
			if errors.Is(hostErr, splice.ErrIdle) {
				in.stats.udpIdled.Add(1)
			}
			if errors.Is(flowErr, rendr.ErrDestRefused) {
				in.portUnreachable(ident) // the far side's ICMP port unreachable, passed on
			}
		})
	}()
	return true
}

// takePlace adds one to n unless it is at limit already, and reports whether it did. n is
// never seen above limit, not even for an instant: Stats reads it.
func takePlace(n *atomic.Int64, limit int) bool {
	for {
		v := n.Load()
		if v >= int64(limit) {
			return false
		}
		if n.CompareAndSwap(v, v+1) {
			return true
		}
	}
}
