package udpflow

import (
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/rendr-go/rendr/transport"
)

// Connection ids beyond the first, and the stateless reset tokens for them, are exchanged
// under the encryption of rendr's handshake (transport.HandshakeExtender), so an observer
// never sees an id before it is used, nor any token:
//
//	HelloExtra (dialer):   0x01 | futureIDs ids, 8 bytes each                    (33 bytes)
//	AnswerExtra (listener): 0x01 | reset token of id 0, then of each offered id,
//	                        16 bytes each                                       (81 bytes)
//
// A listener takes 1 to futureIDs offered ids; an empty hello blob (a dialer without the
// extension) gets an empty answer, and that connection keeps its one id and has no reset.
const (
	extVersion = 0x01
	futureIDs  = 4
	maxIDs     = 1 + futureIDs
	// idleSwitch: a dialer that has sent nothing for this long moves to its next id before
	// it sends again. NAT mappings lapse with idleness (RFC 4787 asks for at least 2 minutes,
	// many keep 30 s), so that is when a dialer's datagrams come from a new address; 5 s is
	// well above rendr's idle probe interval (1 s), so an idle path with rendr's default
	// probes keeps its id, and one whose embedder probes rarely does not carry the old id to
	// a new address.
	idleSwitch = 5 * time.Second
	// retireGrace is how long a listener still takes the ids its connection moved past:
	// datagrams the peer sent before it moved, late or reordered.
	retireGrace = 10 * time.Second
)

// ErrStatelessReset is what a dialed connection's reads and writes fail with once its
// listener said, with a valid stateless reset, that it has no state for the connection (it
// restarted, or closed it). It wraps net.ErrClosed.
var ErrStatelessReset = fmt.Errorf("udpflow: stateless reset, the listener has no state for this connection: %w", net.ErrClosed)

var errExtra = errors.New("udpflow: malformed handshake extension")

func (c *Conn) id(i int) [8]byte { return [8]byte(c.hdrs[i][1:headerSize]) }

// setID makes id the connection's id i, before nids counts it.
func (c *Conn) setID(i int, id [8]byte) {
	c.hdrs[i][0] = 0
	copy(c.hdrs[i][1:headerSize], id[:])
}

// idIndex is the index of id among the connection's ids; -1 when it is none of them.
func (c *Conn) idIndex(id [8]byte) int {
	n := int(c.nids.Load())
	for i := range n {
		if [8]byte(c.hdrs[i][1:headerSize]) == id {
			return i
		}
	}
	return -1
}

// ID is the connection id this end sends with now (every datagram carries it): for logs, and
// for matching packet captures to paths. It changes as the connection moves to fresh ids.
func (c *Conn) ID() [8]byte { return c.id(int(c.cur.Load())) }

// advance moves the sending id up to index i, if the connection has it and is not past it.
func (c *Conn) advance(i int) {
	for {
		cur := c.cur.Load()
		if int32(i) <= cur || int32(i) >= c.nids.Load() {
			return
		}
		if c.cur.CompareAndSwap(cur, int32(i)) {
			c.switches.Add(1)
			return
		}
	}
}

// heard notes, on the listening side, that the peer sent with id i: once it has sent with a
// newer id than before, the ones before are retired after retireGrace. Only the peer's own
// move retires an id: one this side moved past may still be the one the peer sends with.
func (c *Conn) heard(i int) {
	for {
		seen := c.seen.Load()
		if int32(i) <= seen {
			return
		}
		if c.seen.CompareAndSwap(seen, int32(i)) {
			break
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	select {
	case <-c.done:
		return // Close stopped the timer, or is about to: none after it
	default:
	}
	if c.retire == nil {
		c.retire = time.AfterFunc(retireGrace, c.retireOld)
	} else {
		c.retire.Reset(retireGrace)
	}
}

// retireOld removes the ids the peer moved past from the listener's table: their datagrams
// are now unknown to the listener, and get a stateless reset, which the dialer ignores for an
// id it no longer sends with.
func (c *Conn) retireOld() {
	below := int(c.seen.Load())
	l := c.ln
	l.mu.Lock()
	for i := range below {
		if r, ok := l.conns[c.id(i)]; ok && r.c == c {
			delete(l.conns, c.id(i))
		}
	}
	l.mu.Unlock()
}

// HelloExtra is the dialing side's blob for rendr's hello (transport.HandshakeExtender): the
// connection ids it may move to.
func (c *Conn) HelloExtra() []byte {
	if c.d == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.nids.Load() > 1 {
		return nil // already agreed: a second handshake on one carrier does not happen
	}
	b := make([]byte, 1, 1+8*futureIDs)
	b[0] = extVersion
	for i := 1; i <= futureIDs; i++ {
		var id [8]byte
		for {
			rand.Read(id[:])
			if c.idIndexUpTo(id, i) < 0 {
				break
			}
		}
		c.setID(i, id)
		b = append(b, id[:]...)
	}
	c.d.offered = futureIDs
	return b
}

// idIndexUpTo is idIndex over the first n ids, whether or not nids counts them yet.
func (c *Conn) idIndexUpTo(id [8]byte, n int) int {
	for i := range n {
		if c.id(i) == id {
			return i
		}
	}
	return -1
}

// AnswerExtra takes the hello's blob on the listening side (transport.HandshakeExtender).
// rendr calls it only once the hello authenticated under the listener's key, came from an
// allowed peer and passed the replay check: the connection is promoted to its full queue
// here. The offered ids become the connection's too, and the answer carries their reset
// tokens. An offered id that is already some connection's refuses the handshake.
func (c *Conn) AnswerExtra(hello []byte) ([]byte, error) {
	l := c.ln
	if l == nil {
		return nil, errors.New("udpflow: AnswerExtra on a dialed connection")
	}
	select {
	case <-c.done:
		return nil, c.err
	default:
	}
	if len(hello) == 0 {
		c.promote()
		return nil, nil
	}
	if hello[0] != extVersion || (len(hello)-1)%8 != 0 || len(hello) < 1+8 || len(hello) > 1+8*futureIDs {
		return nil, errExtra
	}
	n := (len(hello) - 1) / 8
	if c.nids.Load() != 1 {
		return nil, errExtra // a second answer
	}
	ids := make([][8]byte, 0, 1+n)
	ids = append(ids, c.id(0))
	for i := range n {
		id := [8]byte(hello[1+8*i:])
		for _, o := range ids {
			if o == id {
				return nil, errExtra
			}
		}
		ids = append(ids, id)
	}
	l.mu.Lock()
	for _, id := range ids[1:] {
		if _, taken := l.conns[id]; taken {
			l.mu.Unlock()
			return nil, fmt.Errorf("udpflow: offered connection id %x is taken", id)
		}
	}
	if r, ok := l.conns[ids[0]]; !ok || r.c != c {
		l.mu.Unlock()
		return nil, net.ErrClosed // closed meanwhile
	}
	for i, id := range ids[1:] {
		c.setID(1+i, id)
	}
	c.nids.Store(int32(len(ids)))
	for i, id := range ids[1:] {
		l.conns[id] = route{c: c, i: int32(1 + i)}
	}
	l.mu.Unlock()
	c.promote()
	out := make([]byte, 1, 1+resetTokenSize*len(ids))
	out[0] = extVersion
	for _, id := range ids {
		t := resetToken(l.resetKey, id)
		out = append(out, t[:]...)
	}
	return out, nil
}

// ReplyExtra takes the reply's blob on the dialing side (transport.HandshakeExtender): the
// reset tokens of its ids. From then on the connection may move to the ids it offered, and a
// valid stateless reset closes it. An empty blob (a listener without the extension) leaves
// it on its first id, with no reset.
func (c *Conn) ReplyExtra(reply []byte) error {
	if c.d == nil {
		return errors.New("udpflow: ReplyExtra on an accepted connection")
	}
	if len(reply) == 0 {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 1 + c.d.offered
	if c.d.offered == 0 || c.nids.Load() != 1 || len(reply) != 1+resetTokenSize*n || reply[0] != extVersion {
		return errExtra
	}
	for i := range n {
		copy(c.d.tokens[i][:], reply[1+resetTokenSize*i:])
	}
	c.d.tokensOK.Store(true)
	c.nids.Store(int32(n))
	return nil
}

// takeRetry acts on a Retry from the listener: the hello goes again at once, carrying the
// token, and its later copies carry it too.
func (c *Conn) takeRetry(b []byte, from netip.AddrPort) {
	tok := b[headerSize:]
	if len(tok) == 0 || len(tok) > maxToken {
		return
	}
	c.mu.Lock()
	if c.answered || c.first == nil || from != c.peer || c.d.retries >= maxRetries {
		c.mu.Unlock()
		return
	}
	c.d.retries++
	p, _, err := parseHello(c.first)
	if err != nil {
		c.mu.Unlock()
		return
	}
	c.first = buildHello(c.id(0), p, tok)
	d, peer := c.first, c.peer
	c.mu.Unlock()
	c.d.retriesTaken.Add(1)
	c.s.writeTo(d, peer)
}

// takeReset closes the connection on a valid stateless reset for the id it sends with. Any
// other reset changes nothing.
func (c *Conn) takeReset(b []byte, idx int) {
	if len(b) != resetSize || !c.d.tokensOK.Load() || int32(idx) != c.cur.Load() ||
		subtle.ConstantTimeCompare(b[headerSize:], c.d.tokens[idx][:]) != 1 {
		c.d.resetsIgnored.Add(1)
		return
	}
	c.closeWith(ErrStatelessReset)
}

// promote lifts a listener's connection from its pending bounds to its full ones.
func (c *Conn) promote() {
	c.mu.Lock()
	was := c.pending
	c.pending = false
	c.mu.Unlock()
	if !was {
		return
	}
	c.qmu.Lock()
	c.qlen = queueLen
	c.promoted.Store(true)
	c.releasePendingLocked() // what it queued counts against its own bounds now
	c.qmu.Unlock()
	c.ln.pending.Add(-1)
	c.ln.stats.promoted.Add(1)
}

// ConnStats counts what a connection did beside moving datagrams.
type ConnStats struct {
	Dropped       int64 // datagrams dropped for a full receive queue
	IDSwitches    int64 // moves to a fresh connection id
	Retries       int64 // dialer: Retry datagrams acted on (at most 4)
	ResetsIgnored int64 // dialer: stateless resets that were not valid for the current id
}

// Stats returns the connection's counters.
func (c *Conn) Stats() ConnStats {
	s := ConnStats{Dropped: c.dropped.Load(), IDSwitches: c.switches.Load()}
	if c.d != nil {
		s.Retries, s.ResetsIgnored = c.d.retriesTaken.Load(), c.d.resetsIgnored.Load()
	}
	return s
}

var _ transport.HandshakeExtender = (*Conn)(nil)
