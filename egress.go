// Egress: the listening side carries flows that stand for an IP connection on to where they
// were going, and tells the dialing side how that went in terms it can hand its application
// (docs/egress.md).

package rendr

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/rendr-go/rendr/internal/flow"
	"github.com/rendr-go/rendr/internal/splice"
	"github.com/rendr-go/rendr/l3"
)

// An Egress connects a flow that stands for an IP connection (Dialer.DialIdentity,
// DialPacketIdentity) to where it goes, on the listening side. peer is the dialing side's
// authenticated key, id the connection as the dialing side's host saw it. It returns the
// connection to splice the flow to: for a stream flow (TCP) a byte stream, for a packet flow
// (UDP and others) a connection each Read and Write of which is one datagram (a connected
// *net.UDPConn). ctx ends at ListenConfig.EgressTimeout, or when the session does.
//
// An error turns the flow down, and the dialing side's WaitAccepted, Read and Write say why:
// an error that wraps syscall.ECONNREFUSED gives ErrDestRefused, EHOSTUNREACH, ENETUNREACH,
// EHOSTDOWN or ENETDOWN ErrDestUnreachable, a timeout ErrDestTimeout, and any other ErrRejected
// (an allow-list's no, say). A TUN ingress answers its application as the OS would: an RST,
// an ICMP unreachable, nothing.
//
// An Egress may allow-list (AllowEgress), rewrite the destination (NAT), or bind the source
// address of the connection it makes (to keep the client's, where the host permits it).
type Egress func(ctx context.Context, peer PublicKey, id l3.Identity) (net.Conn, error)

// DirectEgress dials id's destination from this host with the kernel's sockets: a TCP
// connection for a TCP identity, a connected UDP socket for a UDP one; any other protocol is
// turned down. It reaches whatever this host reaches, its own loopback and private networks
// included: a listener open to peers that should not, put AllowEgress in front of it.
func DirectEgress(ctx context.Context, _ PublicKey, id l3.Identity) (net.Conn, error) {
	var d net.Dialer
	switch id.Proto {
	case l3.TCP:
		return d.DialContext(ctx, "tcp", id.Dst.String())
	case l3.UDP:
		return d.DialContext(ctx, "udp", id.Dst.String())
	}
	return nil, fmt.Errorf("rendr: DirectEgress carries TCP and UDP, not %v", id.Proto)
}

// ErrEgressProhibited is AllowEgress's error for a destination outside its prefixes.
var ErrEgressProhibited = errors.New("rendr: egress to this destination is not allowed")

// AllowEgress is next for destinations within one of prefixes, and turns every other one
// down with ErrEgressProhibited (the dialing side reads ErrRejected).
func AllowEgress(prefixes []netip.Prefix, next Egress) Egress {
	allowed := append([]netip.Prefix(nil), prefixes...)
	return func(ctx context.Context, peer PublicKey, id l3.Identity) (net.Conn, error) {
		for _, p := range allowed {
			if p.Contains(id.Dst.Addr()) {
				return next(ctx, peer, id)
			}
		}
		return nil, fmt.Errorf("%w: %v", ErrEgressProhibited, id)
	}
}

// egressLimits is the listener's egress configuration, defaults applied.
type egressLimits struct {
	egress           Egress
	timeout          time.Duration
	max              int
	udpIdle, dnsIdle time.Duration
}

func (cfg *ListenConfig) egressLimits() egressLimits {
	e := egressLimits{egress: cfg.Egress, timeout: cfg.EgressTimeout, max: cfg.MaxEgress,
		udpIdle: cfg.EgressUDPIdle, dnsIdle: cfg.EgressUDPIdle}
	if e.timeout <= 0 {
		e.timeout = 30 * time.Second
	}
	if e.max <= 0 {
		e.max = 1024
	}
	if e.udpIdle <= 0 {
		e.udpIdle, e.dnsIdle = 2*time.Minute, 30*time.Second
	}
	return e
}

// egressStats counts what the listener's Egress did.
type egressStats struct {
	active                                                  atomic.Int64
	carried, refused, unreachable, timedOut, rejected, full atomic.Uint64
}

// carry takes a flow with an identity off the way to Accept and carries it on with the
// Egress, in a goroutine of the session's, or turns it down.
func (l *Listener) carry(s *session, st *flow.Stream) {
	id := identityOf(st)
	if st.IsPacket() == (id.Proto == l3.TCP) {
		// A TCP connection is a byte stream: it rides a stream flow, and nothing else does.
		l.egressStats.rejected.Add(1)
		l.c.log.Debug("rendr: egress refused", "identity", id, "err", "a stream flow must carry TCP, a packet flow anything else")
		st.Reject(flow.CodeRejected)
		return
	}
	if n := l.egressStats.active.Add(1); n > int64(l.egressLim.max) {
		l.egressStats.active.Add(-1)
		l.egressStats.full.Add(1)
		st.Reject(flow.CodeRejected)
		return
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer l.egressStats.active.Add(-1)
		ctx, cancel := context.WithTimeout(s.ctx, l.egressLim.timeout)
		c, err := l.egressLim.egress(ctx, s.peerKey, id)
		cancel()
		if err == nil && c == nil {
			err = errors.New("rendr: the listener's Egress returned neither a connection nor an error")
		}
		if err != nil {
			code := l.egressFailed(err)
			l.c.log.Debug("rendr: egress failed", "identity", id, "code", code, "err", err)
			st.Reject(code)
			return
		}
		l.egressStats.carried.Add(1)
		st.Confirm()
		if st.IsPacket() {
			idle := l.egressLim.udpIdle
			if id.Dst.Port() == 53 {
				idle = l.egressLim.dnsIdle
			}
			spliceDatagrams(st, c, idle)
		} else {
			spliceStream(st, c)
		}
	}()
}

// egressFailed counts an Egress error and returns the reset code that tells the dialing side.
func (l *Listener) egressFailed(err error) uint64 {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		l.egressStats.refused.Add(1)
		return flow.CodeDestRefused
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH),
		errors.Is(err, syscall.EHOSTDOWN), errors.Is(err, syscall.ENETDOWN):
		l.egressStats.unreachable.Add(1)
		return flow.CodeDestUnreachable
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded),
		errors.As(err, &ne) && ne.Timeout():
		l.egressStats.timedOut.Add(1)
		return flow.CodeDestTimeout
	}
	l.egressStats.rejected.Add(1)
	return flow.CodeRejected
}

// spliceStream copies both ways between a stream flow and c, each end of stream passed on as
// a half-close. A flow that fails (reset, or its session ended) cuts the destination's
// connection with an RST where the kernel gives one; a destination that fails resets the flow
// with CodeDestReset.
func spliceStream(st *flow.Stream, c net.Conn) {
	splice.Streams(st, c, func() { st.Reject(flow.CodeDestReset) }, func() {
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetLinger(0)
		}
	})
}

// spliceDatagrams copies datagrams both ways between a packet flow and c until either ends, no
// datagram has passed either way for idle, or the destination answers with an ICMP port
// unreachable (the flow is reset with CodeDestRefused).
func spliceDatagrams(st *flow.Stream, c net.Conn, idle time.Duration) {
	splice.Datagrams(datagramFlow{st}, c, idle, MaxDatagram, func(_, cErr error) {
		if errors.Is(cErr, syscall.ECONNREFUSED) {
			// An ICMP port unreachable came back for a datagram sent: the client's host
			// gives its application the same.
			st.Reject(flow.CodeDestRefused)
		}
	})
}

// datagramFlow is a packet flow as one side of a datagram splice.
type datagramFlow struct{ *flow.Stream }

func (d datagramFlow) Read(p []byte) (int, error) { return d.ReadDatagram(p) }
func (d datagramFlow) Write(p []byte) (int, error) {
	if err := d.WriteDatagram(p); err != nil {
		return 0, err
	}
	return len(p), nil
}
