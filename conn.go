// Stream flows: Conn, the net.Conn an application reads and writes, and what it shares with
// a PacketConn.

package rendr

import (
	"net"
	"time"

	"github.com/rendr-go/rendr/internal/flow"
	"github.com/rendr-go/rendr/l3"
	"github.com/rendr-go/rendr/status"
)

// Conn is one flow: a net.Conn whose bytes survive the loss of any path. Read, Write and the
// deadlines follow the net.Conn contract; Close delivers what was written, then the peer reads
// io.EOF.
type Conn struct {
	flowEnd
	mig0 int
}

// flowEnd is what a Conn and a PacketConn share: the flow, its session, the addresses of its
// two ends, the L3 identity it carries, and deadlines.
type flowEnd struct {
	s           *session
	st          *flow.Stream
	local, peer Addr
	id          l3.Identity
}

func newFlowEnd(s *session, st *flow.Stream) flowEnd {
	return flowEnd{s: s, st: st,
		local: Addr{Key: PublicKey(s.c.key.Public), Flow: st.ID()},
		peer:  Addr{Key: s.peerKey, Flow: st.ID()},
		id:    identityOf(st)}
}

func (c *flowEnd) LocalAddr() net.Addr  { return c.local }
func (c *flowEnd) RemoteAddr() net.Addr { return c.peer }

func (c *flowEnd) SetDeadline(t time.Time) error {
	c.st.SetReadDeadline(t)
	return c.st.SetWriteDeadline(t)
}
func (c *flowEnd) SetReadDeadline(t time.Time) error  { return c.st.SetReadDeadline(t) }
func (c *flowEnd) SetWriteDeadline(t time.Time) error { return c.st.SetWriteDeadline(t) }

var _ net.Conn = (*Conn)(nil)

func newConn(s *session, st *flow.Stream) *Conn {
	s.mu.Lock()
	m := s.router.MigrationsLocked()
	s.mu.Unlock()
	return &Conn{flowEnd: newFlowEnd(s, st), mig0: m}
}

func (c *Conn) Read(p []byte) (int, error)  { return c.st.Read(p) }
func (c *Conn) Write(p []byte) (int, error) { return c.st.Write(p) }

// Close closes the flow. It does not block: written bytes are delivered in the background.
func (c *Conn) Close() error {
	c.s.mu.Lock()
	delete(c.s.mu.watchers, c)
	c.s.mu.Unlock()
	return c.st.Close()
}

// Reset abandons the flow both ways, as a TCP RST does: what was written and not yet
// delivered is dropped, the peer's reads return ErrReset and its writes ErrStopped, and this
// side's calls return ErrClosed. A TUN ingress resets the flow of a connection its
// application reset, so the far end sees the reset too.
func (c *Conn) Reset() error {
	c.s.mu.Lock()
	delete(c.s.mu.watchers, c)
	c.s.mu.Unlock()
	c.st.Reject(flow.CodeClosed)
	return nil
}

// CloseWrite half-closes the flow: the peer reads io.EOF after everything written; reading
// goes on.
func (c *Conn) CloseWrite() error { return c.st.CloseWrite() }

// CloseRead stops reading: unread bytes are dropped and the peer's writes fail with
// ErrStopped.
func (c *Conn) CloseRead() error { return c.st.CloseRead() }

// FlowID is the flow's id within its session.
func (c *Conn) FlowID() uint64 { return c.st.ID() }

// Status describes the flow's session: its paths, their state and quality, and which one is
// active.
func (c *Conn) Status() status.Session { return c.s.snapshot() }

// Paths is Status().Paths.
func (c *Conn) Paths() []status.Path { return c.s.snapshot().Paths }

// Migrations counts the moves of the session's traffic since this flow opened.
func (c *Conn) Migrations() int {
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	return c.s.router.MigrationsLocked() - c.mig0
}

// OnMigrate sets a callback for each migration while the flow is open (nil removes it). It
// runs on rendr's engine goroutine and must return quickly.
func (c *Conn) OnMigrate(f func(status.Migration)) {
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	if f == nil {
		delete(c.s.mu.watchers, c)
		return
	}
	if c.s.mu.watchers == nil {
		c.s.mu.watchers = map[*Conn]func(status.Migration){}
	}
	c.s.mu.watchers[c] = f
}
