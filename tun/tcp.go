package tun

// TCP: each connection the host opens through the TUN is answered only once its flow reached
// the far side, then spliced to it.

import (
	"context"
	"errors"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/internal/splice"
	"github.com/rendr-go/rendr/l3"
)

// handleTCP runs, in a goroutine of the forwarder's, for each new SYN (one per connection:
// the forwarder holds the SYNs sent again while it runs).
func (in *Ingress) handleTCP(r *tcp.ForwarderRequest) {
	if !in.enter() {
		r.Complete(true) // closing
		return
	}
	defer in.leave()
	id := r.ID()
	ident := l3.Identity{Proto: l3.TCP, Src: addrPort(id.RemoteAddress, id.RemotePort), Dst: addrPort(id.LocalAddress, id.LocalPort)}
	defer in.syns.take(ident) // its SYN is no longer needed, whatever became of it
	if !in.admit(ident) {
		in.stats.synDropped.Add(1)
		r.Complete(false)
		return
	}
	// A place among the connections is taken before the far side is asked, so that past
	// MaxTCP nothing is connected there only to be cut.
	if !takePlace(&in.stats.tcpActive, in.cfg.MaxTCP) {
		in.release(ident)
		in.stats.tcpReset.Add(1)
		r.Complete(true)
		return
	}
	c, err := in.connect(ident)
	in.release(ident)
	if err != nil {
		in.stats.tcpActive.Add(-1)
		if errors.Is(err, rendr.ErrDestUnreachable) {
			// What the host's own network would answer: ICMP host unreachable, which
			// ends its connect at once ("no route to host").
			r.Complete(false)
			if !in.hostUnreachable(ident) {
				in.stats.tcpUnanswered.Add(1)
			}
		} else if errors.Is(err, rendr.ErrDestTimeout) || errors.Is(err, context.DeadlineExceeded) {
			// What the host would see without the tunnel: no answer. Its TCP sends the
			// SYN again a few times, then reports the timeout.
			in.stats.tcpUnanswered.Add(1)
			r.Complete(false)
		} else {
			in.stats.tcpReset.Add(1)
			r.Complete(true)
		}
		in.log.Debug("rendr/tun: connection not made", "identity", ident, "err", err)
		return
	}
	var wq waiter.Queue
	ep, terr := r.CreateEndpoint(&wq)
	if terr != nil {
		// The SYN's state is gone (the host gave up meanwhile): the flow has nowhere to go.
		in.stats.tcpActive.Add(-1)
		r.Complete(true)
		c.Close()
		return
	}
	r.Complete(false)
	in.stats.tcpOpened.Add(1)
	defer in.stats.tcpActive.Add(-1)
	spliceTCP(gonet.NewTCPConn(&wq, ep), ep, c)
}

// connect opens the connection's flow and waits, bounded by ConnectTimeout, until the far
// side made the connection or said why not.
func (in *Ingress) connect(ident l3.Identity) (*rendr.Conn, error) {
	ctx, cancel := context.WithTimeout(in.ctx, in.cfg.ConnectTimeout)
	defer cancel()
	c, err := in.cfg.Dialer.DialIdentity(ctx, ident)
	if err != nil {
		return nil, err
	}
	if err := c.WaitAccepted(ctx); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// admit takes a place among the pending SYNs for ident's source, or says there is none.
func (in *Ingress) admit(ident l3.Identity) bool {
	in.pendMu.Lock()
	defer in.pendMu.Unlock()
	src := ident.Src.Addr()
	if in.npend >= in.cfg.MaxPending || in.pending[src] >= in.cfg.MaxPendingPerSource {
		return false
	}
	in.npend++
	in.pending[src]++
	return true
}

// release gives back a place admit took.
func (in *Ingress) release(ident l3.Identity) {
	in.pendMu.Lock()
	defer in.pendMu.Unlock()
	src := ident.Src.Addr()
	in.npend--
	if in.pending[src]--; in.pending[src] == 0 {
		delete(in.pending, src)
	}
}

// spliceTCP copies both ways between the host's connection and its flow, each end of stream
// passed on as a half-close. A reset on either side resets the other: the host's RST resets
// the flow (the far end's connection is cut with an RST), and a flow that fails (the
// destination reset its connection, or the session ended) aborts the host's connection with
// an RST.
func spliceTCP(host *gonet.TCPConn, ep tcpip.Endpoint, flow *rendr.Conn) {
	splice.Streams(host, flow, ep.Abort, func() { flow.Reset() })
}
