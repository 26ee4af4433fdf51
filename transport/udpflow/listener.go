package udpflow

import (
	"crypto/rand"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rendr-go/rendr/internal/rate"
)

// Listener accepts udpflow connections on one UDP socket.
type Listener struct {
	s        *socket
	o        options
	accept   chan *Conn
	done     chan struct{}
	closing  sync.Once
	wg       sync.WaitGroup
	retryKey *[32]byte // random per Listener: Retry tokens need not outlive it
	resetKey *[32]byte // StatelessResetKey's, or random
	resets   rate.Limiter
	retries  rate.Table // Retries per source host
	now      func() time.Time
	pending  atomic.Int64 // connections not yet promoted
	// pendingQueued is what those connections queue beside their hellos (pendingBudget).
	pendingQueued atomic.Int64
	stats         listenerCounters

	mu    sync.Mutex
	conns map[[8]byte]route
}

// route is a connection id's connection, and which of its ids it is.
type route struct {
	c *Conn
	i int32
}

type listenerCounters struct {
	promoted, dropped, malformed, retries, tokens, badTokens, resets, resetsLimited, unknown atomic.Int64
	retriesLimited                                                                           atomic.Int64
}

// ListenerStats counts what a Listener did with datagrams that belong to no connection yet.
type ListenerStats struct {
	Pending   int64 // connections not yet promoted (a gauge)
	Promoted  int64 // connections promoted: their hello authenticated, or they answered
	Dropped   int64 // hellos dropped: Accept behind (MaxPending), or no room in the pending budget
	Malformed int64 // hellos that did not parse
	Retries   int64 // Retry datagrams sent
	// RetriesLimited counts hellos that would have got a Retry, dropped because their source
	// (an IPv4 address, an IPv6 /64) had 32 at once or 16 a second already.
	RetriesLimited int64
	Tokens         int64 // hellos admitted on a valid Retry token
	BadTokens      int64 // hellos with a forged, expired or other address's token: silence
	Resets         int64 // stateless resets sent
	ResetsLimited  int64 // stateless resets not sent for the rate limit (64 a second)
	Unknown        int64 // other datagrams of no connection, dropped silently
}

// Stats returns the listener's counters.
func (l *Listener) Stats() ListenerStats {
	s := &l.stats
	return ListenerStats{Pending: l.pending.Load(), Promoted: s.promoted.Load(),
		Dropped: s.dropped.Load(), Malformed: s.malformed.Load(), Retries: s.retries.Load(),
		Tokens: s.tokens.Load(), BadTokens: s.badTokens.Load(), Resets: s.resets.Load(),
		ResetsLimited: s.resetsLimited.Load(), Unknown: s.unknown.Load(), RetriesLimited: s.retriesLimited.Load()}
}

// Listen opens a Listener on address ("ip:port"; an IPv4 address listens on IPv4 alone, ":port"
// on both families).
func Listen(address string, opts ...Option) (*Listener, error) {
	o := build(opts)
	var retryKey, resetKey [32]byte
	if _, err := rand.Read(retryKey[:]); err != nil {
		return nil, err
	}
	if o.resetKey != nil {
		resetKey = *o.resetKey
	} else if _, err := rand.Read(resetKey[:]); err != nil {
		return nil, err
	}
	u, err := o.udp("udp", address)
	if err != nil {
		return nil, err
	}
	s, err := newSocket(u, o.batch)
	if err != nil {
		u.Close()
		return nil, err
	}
	s.tap = o.tap
	s.clock = o.clock
	l := &Listener{s: s, o: o, accept: make(chan *Conn, o.pending), done: make(chan struct{}),
		conns: map[[8]byte]route{}, retryKey: &retryKey, resetKey: &resetKey, now: time.Now}
	l.wg.Add(1)
	go l.routineRead()
	return l, nil
}

// Addr is the listening address.
func (l *Listener) Addr() net.Addr { return l.s.u.LocalAddr() }

// Accept returns the next new connection: one whose first datagram (a handshake message to
// rendr) arrived. It is pending until rendr's handshake authenticates that datagram
// (AnswerExtra) or the connection writes its answer.
func (l *Listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.accept:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close stops the listener and closes its connections.
func (l *Listener) Close() error {
	l.closing.Do(func() {
		close(l.done)
		l.s.close()
		l.wg.Wait()
		l.mu.Lock()
		conns := map[*Conn]bool{}
		for _, r := range l.conns {
			conns[r.c] = true
		}
		l.mu.Unlock()
		for c := range conns {
			c.Close()
		}
		for {
			select {
			case c := <-l.accept:
				c.Close()
			default:
				return
			}
		}
	})
	return nil
}

// routineRead reads the listening socket and hands each datagram to its connection.
func (l *Listener) routineRead() {
	defer l.wg.Done()
	l.s.readLoop(l.demux)
}

// demux is the listener's whole answer to one datagram: its connection's, or, for an id it
// does not know, a new connection, a Retry, a stateless reset, or nothing.
func (l *Listener) demux(b []byte, from netip.AddrPort, rb *rxBuf) bool {
	if len(b) < headerSize {
		l.stats.unknown.Add(1)
		return false
	}
	id := [8]byte(b[1:headerSize])
	l.mu.Lock()
	r, ok := l.conns[id]
	l.mu.Unlock()
	if ok {
		return r.c.deliver(b, from, rb, int(r.i))
	}
	switch b[0] {
	case flagHello, flagHello | flagToken:
		l.hello(b, id, from)
	case 0:
		l.reset(b, id, from)
	default:
		l.stats.unknown.Add(1) // not the start of a connection: nothing answers it
	}
	return false
}

// hello starts a connection for a hello of a new id, or answers it with a Retry.
func (l *Listener) hello(b []byte, id [8]byte, from netip.AddrPort) {
	if len(b) < helloSize {
		l.stats.malformed.Add(1)
		return
	}
	p, token, err := parseHello(b)
	if err != nil {
		l.stats.malformed.Add(1)
		return
	}
	select {
	case <-l.done:
		return
	default:
	}
	if token != nil {
		if !checkRetryToken(l.retryKey, token, from, id, l.now()) {
			l.stats.badTokens.Add(1)
			return
		}
		l.stats.tokens.Add(1)
	} else if l.o.retryAt >= 0 && l.pending.Load() >= int64(l.o.retryAt) {
		now := l.now()
		if !l.retries.Take(rate.HostKey(from.Addr()), now, retryRate, retryBurst) {
			l.stats.retriesLimited.Add(1) // a flood from one host: no sendto for it
			return
		}
		t := retryToken(l.retryKey, from, id, uint32(now.Unix()))
		var d [retrySize]byte
		d[0] = flagRetry
		copy(d[1:], id[:])
		copy(d[headerSize:], t[:])
		l.s.writeTo(d[:], from) // 29 bytes for at least 1200
		l.stats.retries.Add(1)
		return
	}
	if len(l.accept) == cap(l.accept) {
		l.stats.dropped.Add(1) // Accept is behind: the dialer will try again
		return
	}
	big := len(p) > pendingBytes
	if big && l.pendingQueued.Add(int64(len(p))) > pendingBudget {
		l.pendingQueued.Add(-int64(len(p)))
		l.stats.dropped.Add(1)
		return
	}
	c := newConn(l.s, from, l.o.maxSize, id)
	c.ln = l
	c.pending = true
	c.hasHello = true
	c.hello = append(make([]byte, 0, len(p)), p...) // at its size, not in a pool buffer
	c.queued = int64(len(p))
	if big {
		c.pcharge, c.helloBudget = int64(len(p)), true
	}
	c.helloSum = helloHash(p)
	c.helloLen = len(b)
	l.mu.Lock()
	l.conns[id] = route{c: c}
	l.mu.Unlock()
	l.pending.Add(1)
	l.accept <- c // only this goroutine sends, and there is room
}

// reset answers a data datagram of an id the listener does not know with a stateless reset,
// so that a dialer whose listener lost its state learns it at once. Only a datagram of at
// least minResetTrigger bytes gets one (the reset is smaller), and at most resetRate a
// second.
func (l *Listener) reset(b []byte, id [8]byte, from netip.AddrPort) {
	if len(b) < minResetTrigger {
		l.stats.unknown.Add(1)
		return
	}
	if !l.resets.Take(l.now(), resetRate, resetBurst) {
		l.stats.resetsLimited.Add(1)
		return
	}
	t := resetToken(l.resetKey, id)
	var d [resetSize]byte
	d[0] = flagReset
	copy(d[1:], id[:])
	copy(d[headerSize:], t[:])
	l.s.writeTo(d[:], from)
	l.stats.resets.Add(1)
}

// forget removes a closed connection's ids.
func (l *Listener) forget(c *Conn) {
	l.mu.Lock()
	for i := range int(c.nids.Load()) {
		if r, ok := l.conns[c.id(i)]; ok && r.c == c {
			delete(l.conns, c.id(i))
		}
	}
	l.mu.Unlock()
	c.mu.Lock()
	was := c.pending
	c.pending = false
	c.mu.Unlock()
	if was {
		l.pending.Add(-1)
	}
}
