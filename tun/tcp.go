package tun

// TCP: each connection the host opens through the TUN is answered only once its flow reached
// the far side, then spliced to it.

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"

	"github.com/rendr-go/rendr"
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
	if in.stats.tcpActive.Add(1) > int64(in.cfg.MaxTCP) {
		in.release(ident)
		in.stats.tcpActive.Add(-1)
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

// halfCloser is a connection whose sending side closes alone.
type halfCloser interface {
	net.Conn
	CloseWrite() error
}

// spliceTCP copies both ways between the host's connection and its flow until both directions
// end. Each end of stream is passed on as a half-close, so a side that shuts its sending side
// still reads the whole reply. A reset on either side resets the other: the host's RST resets
// the flow (the far end's connection is cut with an RST), and a flow reset (the destination
// reset its connection) aborts the host's connection with an RST.
func spliceTCP(host *gonet.TCPConn, ep tcpip.Endpoint, flow *rendr.Conn) {
	var once sync.Once
	abort := func(hostFailed bool) {
		once.Do(func() {
			if hostFailed {
				flow.Reset()
			} else {
				ep.Abort()
			}
			host.Close()
			flow.Close()
		})
	}
	var wg sync.WaitGroup
	one := func(dst halfCloser, src net.Conn, fromHost bool) {
		defer wg.Done()
		readErr, writeErr := copyHalf(dst, src, make([]byte, 32<<10))
		switch {
		case readErr != nil:
			abort(fromHost) // the side read from broke
		case writeErr != nil:
			abort(!fromHost) // the side written to broke
		default:
			dst.CloseWrite()
		}
	}
	wg.Add(2)
	go one(flow, host, true)
	go one(host, flow, false)
	wg.Wait()
	host.Close()
	flow.Close()
}

// copyHalf copies src to dst until src's end of stream, and says which side failed if one
// did: src's read, or dst's write.
func copyHalf(dst io.Writer, src io.Reader, buf []byte) (readErr, writeErr error) {
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return nil, werr
			}
		}
		if err == io.EOF {
			return nil, nil
		}
		if err != nil {
			return err, nil
		}
	}
}
