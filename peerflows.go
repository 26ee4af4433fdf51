// Flows either side opens: the listening side may open flows towards a dialer (a server that
// pushes to a client behind NAT), which the dialer accepts, as yamux and smux allow.

package rendr

import (
	"context"
	"errors"
	"fmt"

	"github.com/rendr-go/rendr/internal/flow"
)

// ErrNoSession: Listener.DialPeer found no live session with that peer before its context
// ended. Only the dialing side starts sessions; the listener can open flows in the ones it
// has.
var ErrNoSession = errors.New("rendr: no session with this peer: it has not connected, or its session ended")

// handOff passes the flows a session accepts with accept, wrapped, to out until the session
// or the side taking them (done) ends. carry, when not nil, may take a flow first (the
// listener's Egress). A flow nobody took by then is failed with its session, not closed on its
// own: the session's CLOSE tells the peer, which reads ErrSessionClosed as for every flow; a FIN
// of its own would read there as this side's clean end (io.EOF).
func handOff[C any](s *session, accept func(*flow.Engine, context.Context) (*flow.Stream, error),
	wrap func(*session, *flow.Stream) C, out chan C, done <-chan struct{}, carry func(*session, *flow.Stream) bool) {
	defer s.wg.Done()
	for {
		st, err := accept(s.engine, s.ctx)
		if err != nil {
			return
		}
		if carry != nil && carry(s, st) {
			continue
		}
		select {
		case out <- wrap(s, st):
		case <-s.done:
			return
		case <-done:
			return
		}
	}
}

// Accept waits for the next stream flow the listening side opened towards this Dialer
// (Listener.DialPeer), or for ctx. It needs DialerConfig.AcceptFlows. Flows the listener
// opens arrive in the Dialer's current session; they wait for Accept up to the Backlog, and
// beyond it the listener's flow fails with ErrReset.
func (d *Dialer) Accept(ctx context.Context) (*Conn, error) {
	if !d.acceptFlows {
		return nil, errNoAcceptFlows
	}
	return acceptFrom(ctx, d.accept, d.done, errDialerClosed)
}

// AcceptPacket waits for the next packet flow the listening side opened towards this Dialer
// (Listener.DialPacketPeer), as Accept does for stream flows.
func (d *Dialer) AcceptPacket(ctx context.Context) (*PacketConn, error) {
	if !d.acceptFlows {
		return nil, errNoAcceptFlows
	}
	return acceptFrom(ctx, d.acceptPk, d.done, errDialerClosed)
}

var errNoAcceptFlows = errors.New("rendr: this Dialer takes no flows from the listener: set DialerConfig.AcceptFlows")

// startAccepting hands a new session's peer-opened flows to Accept and AcceptPacket.
func (d *Dialer) startAccepting(s *session) {
	if !d.acceptFlows {
		return
	}
	s.wg.Add(2)
	go handOff(s, (*flow.Engine).Accept, newConn, d.accept, d.done, nil)
	go handOff(s, (*flow.Engine).AcceptPacket, newPacketConn, d.acceptPk, d.done, nil)
}

// DialPeer opens a stream flow towards the dialer whose key is peer, in its live session: a
// server pushing to a client behind a NAT or a firewall, which could never be dialed. The
// Dialer takes it with Accept (it needs DialerConfig.AcceptFlows: without it the flow fails
// with ErrReset). With no live session for peer it waits for one until ctx ends, then returns
// ErrNoSession (with ctx's error): only the dialing side starts sessions. Opening costs no
// round trip; the flow then migrates and survives path deaths like any other.
func (l *Listener) DialPeer(ctx context.Context, peer PublicKey) (*Conn, error) {
	s, st, err := l.openTo(ctx, peer, (*flow.Engine).Open)
	if err != nil {
		return nil, err
	}
	return newConn(s, st), nil
}

// DialPacketPeer opens a packet flow towards the dialer whose key is peer, as DialPeer does a
// stream flow; the Dialer takes it with AcceptPacket.
func (l *Listener) DialPacketPeer(ctx context.Context, peer PublicKey) (*PacketConn, error) {
	s, st, err := l.openTo(ctx, peer, (*flow.Engine).OpenPacket)
	if err != nil {
		return nil, err
	}
	return newPacketConn(s, st), nil
}

// openTo opens a flow in peer's live session, waiting for one (bounded by ctx) while there
// is none: of several (a key may run more than one Dialer), the one with the most paths
// attached.
func (l *Listener) openTo(ctx context.Context, peer PublicKey, open func(*flow.Engine) (*flow.Stream, error)) (*session, *flow.Stream, error) {
	if err := peer.check("DialPeer's peer"); err != nil {
		return nil, nil, err
	}
	for {
		l.mu.Lock()
		if l.mu.closed {
			l.mu.Unlock()
			return nil, nil, errListenerClosed
		}
		var theirs []*session
		for _, s := range l.mu.sessions {
			if s.peerKey == peer {
				theirs = append(theirs, s)
			}
		}
		if l.mu.sessionUp == nil {
			l.mu.sessionUp = make(chan struct{})
		}
		up := l.mu.sessionUp
		l.mu.Unlock()
		var best *session
		bestPaths := -1
		for _, s := range theirs { // the sessions' locks are not taken under the listener's
			select {
			case <-s.established:
			default:
				continue
			}
			if s.err() != nil {
				continue
			}
			if n := s.pathCount(); n > bestPaths {
				best, bestPaths = s, n
			}
		}
		if best != nil {
			st, err := openWaiting(ctx, best.engine, open)
			if err != nil {
				return nil, nil, err
			}
			return best, st, nil
		}
		select {
		case <-up:
		case <-l.done:
		case <-ctx.Done():
			return nil, nil, fmt.Errorf("%w (peer %s): %w", ErrNoSession, peer, ctx.Err())
		}
	}
}
