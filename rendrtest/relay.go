package rendrtest

// The TCP relay. Each connection it accepts is paired with one it dials to the target, and
// each direction of the pair runs through two goroutines:
//
//  1. the reader reads a chunk from its side, drops it if the direction is dark (a
//     blackhole), waits for the rate's tokens and queues it, stamped with when it was read;
//  2. the writer takes the chunk from the queue, waits until the direction's delay after
//     that stamp, drops it if the direction went dark meanwhile, and writes it to the other
//     side.
//
// A FIN is passed on as a FIN once every byte before it is, an RST as an RST. A direction
// that lost bytes to a blackhole never forwards again: the stream would have a hole in it,
// which no TCP connection ever shows. Once the blackhole lifts, such a connection is reset.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// chunkSize is the most a reader reads at once. maxDelayed is how many bytes may wait in a
// direction's delay line before the reader stops reading (and TCP pushes back); without a
// delay the reader waits for each chunk to be written before it reads the next, so the relay
// holds no more than a chunk each way, as a plain copy would. queueLen bounds the chunks
// waiting, whatever their sizes.
const (
	chunkSize  = 32 << 10
	maxDelayed = 2 << 20
	queueLen   = 1024
)

// Relay forwards the TCP connections it accepts to a target, and breaks them on demand. Its
// methods may be called from any goroutine.
type Relay struct {
	ln     net.Listener
	target string
	opts   options
	ctx    context.Context // ends with Close: cancels dials in progress
	cancel context.CancelFunc
	wg     sync.WaitGroup
	pool   sync.Pool // of *[chunkSize]byte

	accepted, refused atomic.Int64
	fwd, dropped      [2]atomic.Int64 // bytes, by direction index

	// mu guards the faults and the set of connections.
	mu struct {
		sync.Mutex
		conns   map[*conn]struct{} // every connection not yet ended
		dark    Dir
		delay   [2]time.Duration
		rate    [2]bucket
		refuse  bool
		changed chan struct{} // closed and replaced when a delay or a rate changes
		closed  bool
	}
}

// conn is one relayed connection: c faces the client, t the target.
type conn struct {
	r       *Relay
	c       *net.TCPConn
	done    chan struct{} // closed when the connection ends
	endOnce sync.Once
	halves  atomic.Int32 // directions whose writer finished

	// Guarded by r.mu.
	t      *net.TCPConn // nil until the target answered
	gap    Dir          // directions that lost bytes (or a FIN) to a blackhole
	finned bool         // CloseConns ended it: nothing is forwarded any more
	ended  bool         // end was called: t must not be attached any more
}

// NewRelay starts a relay to target (a host:port) on a free port of 127.0.0.1. Close it when
// done.
func NewRelay(target string, opts ...Option) (*Relay, error) {
	o := buildOptions(opts)
	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return nil, fmt.Errorf("rendrtest: relay to %s: %w", target, err)
	}
	r := &Relay{ln: ln, target: target, opts: o}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	r.pool.New = func() any { return new([chunkSize]byte) }
	r.mu.conns = map[*conn]struct{}{}
	r.mu.changed = make(chan struct{})
	r.wg.Add(1)
	go r.routineAccept()
	return r, nil
}

// Addr is the address to dial instead of the target.
func (r *Relay) Addr() string { return r.ln.Addr().String() }

// Target is the address the relay forwards to.
func (r *Relay) Target() string { return r.target }

// CloseConns ends every open connection with a FIN to both ends, as a peer closing would:
// each end reads EOF once it has read what was forwarded before. Whatever either end sends
// afterwards is discarded. New connections pass as before. It returns how many connections
// it ended, counting those the relay accepted and is still connecting to the target.
func (r *Relay) CloseConns() int {
	cs := r.take()
	for _, c := range cs {
		c.c.CloseWrite()
		if c.t != nil {
			c.t.CloseWrite()
		}
	}
	return len(cs)
}

// ResetConns ends every open connection with an RST to both ends: their next read or write
// fails with ECONNRESET (a write may first succeed into the socket's buffer). New
// connections pass as before. It returns how many connections it ended, counting those the
// relay accepted and is still connecting to the target.
func (r *Relay) ResetConns() int {
	cs := r.take()
	for _, c := range cs {
		c.conn.end(true)
	}
	return len(cs)
}

// taken is a connection CloseConns or ResetConns ends, with its sockets as they were then: t
// is nil while the target is still being dialed.
type taken struct {
	conn *conn
	c, t *net.TCPConn
}

// take marks the open connections as ended by CloseConns and returns them.
func (r *Relay) take() []taken {
	r.mu.Lock()
	defer r.mu.Unlock()
	var cs []taken
	for c := range r.mu.conns {
		if !c.finned {
			c.finned = true
			cs = append(cs, taken{c, c.c, c.t})
		}
	}
	return cs
}

// Refuse makes the relay reset every new connection as soon as it arrives, while on. The
// kernel completes the TCP handshake before the relay sees the connection, so the dialer
// sees ECONNRESET either from its connect or from its first read. Open connections are left
// alone: CloseConns or ResetConns ends them.
func (r *Relay) Refuse(on bool) {
	r.mu.Lock()
	r.mu.refuse = on
	r.mu.Unlock()
}

// Blackhole swallows every byte going in the directions of d, on the open connections and
// on new ones, until Heal: nothing errors, nothing moves, the connections stay open, and a
// FIN or RST going that way is swallowed too. The bytes are discarded, not held: a connection
// that lost any is reset when Heal lifts the blackhole, as its stream has a hole in it.
// Connections are still accepted and dialed through while it lasts; a dialer sees its
// handshake on them time out. The directions not in d keep flowing.
func (r *Relay) Blackhole(d Dir) {
	r.mu.Lock()
	r.mu.dark |= d & Both
	r.mu.Unlock()
}

// Delay adds latency to the directions of d: each byte is forwarded no sooner than latency
// after the relay read it, in order. It applies to the bytes already waiting too. Zero
// removes it. While delayed, at most 2 MiB wait in each direction of a connection; beyond
// that the relay stops reading and TCP's flow control pushes back on the sender.
func (r *Relay) Delay(d Dir, latency time.Duration) {
	r.mu.Lock()
	for i, one := range dirs {
		if d&one != 0 {
			r.mu.delay[i] = max(latency, 0)
		}
	}
	r.changedLocked()
	r.mu.Unlock()
}

// Rate caps the bytes per second forwarded in the directions of d, across all connections
// through the relay together, as a link's capacity is shared; zero or less removes the cap.
// Over any span t at most burst + bytesPerSec·t bytes pass each way, where the burst is 20 ms
// of the rate (at least 1 KiB, at most 256 KiB). The cap slows the sender through TCP's flow
// control; nothing is lost.
func (r *Relay) Rate(d Dir, bytesPerSec int64) {
	r.mu.Lock()
	now := time.Now()
	for i, one := range dirs {
		if d&one != 0 {
			r.mu.rate[i].set(bytesPerSec, now)
		}
	}
	r.changedLocked()
	r.mu.Unlock()
}

// Heal lifts every fault: no blackhole, delay, rate cap or refusal. The connections that lost
// bytes to a blackhole are reset; the others carry on.
func (r *Relay) Heal() {
	r.mu.Lock()
	r.mu.dark = 0
	r.mu.refuse = false
	r.mu.delay = [2]time.Duration{}
	r.mu.rate = [2]bucket{}
	r.changedLocked()
	var holed []*conn
	for c := range r.mu.conns {
		if c.gap != 0 && !c.finned {
			holed = append(holed, c)
		}
	}
	r.mu.Unlock()
	for _, c := range holed {
		c.end(true)
	}
}

func (r *Relay) changedLocked() {
	close(r.mu.changed)
	r.mu.changed = make(chan struct{})
}

// Stats counts what went through a relay.
type Stats struct {
	Accepted int64 // connections accepted since the start, refused ones included
	Refused  int64 // connections reset at once by Refuse
	Active   int   // connections open now, not ended by the relay or by their ends
	// Bytes forwarded to the target (Up) and to the clients (Down), and bytes a blackhole
	// swallowed each way.
	Up, Down               int64
	DroppedUp, DroppedDown int64
}

// Stats returns the relay's counters.
func (r *Relay) Stats() Stats {
	r.mu.Lock()
	active := 0
	for c := range r.mu.conns {
		if !c.finned {
			active++
		}
	}
	r.mu.Unlock()
	return Stats{Accepted: r.accepted.Load(), Refused: r.refused.Load(), Active: active,
		Up: r.fwd[0].Load(), Down: r.fwd[1].Load(),
		DroppedUp: r.dropped[0].Load(), DroppedDown: r.dropped[1].Load()}
}

// Close stops the relay: it stops listening, closes every connection through it and returns
// once all of its goroutines have ended. It may be called more than once.
func (r *Relay) Close() error {
	r.mu.Lock()
	if r.mu.closed {
		r.mu.Unlock()
		return nil
	}
	r.mu.closed = true
	cs := make([]*conn, 0, len(r.mu.conns))
	for c := range r.mu.conns {
		cs = append(cs, c)
	}
	r.mu.Unlock()
	err := r.ln.Close()
	r.cancel()
	for _, c := range cs {
		c.end(false)
	}
	r.wg.Wait()
	return err
}

func (r *Relay) routineAccept() {
	defer r.wg.Done()
	for {
		nc, err := r.ln.Accept()
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			// Out of file descriptors, say: try again shortly, as net/http's server does.
			if !wait(5*time.Millisecond, nil, r.ctx.Done()) {
				return
			}
			continue
		}
		c := nc.(*net.TCPConn)
		r.accepted.Add(1)
		r.mu.Lock()
		switch {
		case r.mu.closed:
			r.mu.Unlock()
			c.Close()
			return
		case r.mu.refuse:
			r.mu.Unlock()
			r.refused.Add(1)
			reset(c)
			continue
		}
		// The connection counts as open from now: a fault while the target is dialed
		// applies to it.
		cn := &conn{r: r, c: c, done: make(chan struct{})}
		r.mu.conns[cn] = struct{}{}
		r.wg.Add(1)
		r.mu.Unlock()
		go r.routineDial(cn)
	}
}

// routineDial connects cn to the target and starts forwarding.
func (r *Relay) routineDial(cn *conn) {
	defer r.wg.Done()
	d := net.Dialer{Timeout: r.opts.dialTimeout}
	nc, err := d.DialContext(r.ctx, "tcp", r.target)
	if err != nil {
		cn.end(true) // the target is not there: the client learns it at once
		return
	}
	t := nc.(*net.TCPConn)
	r.mu.Lock()
	if cn.ended {
		r.mu.Unlock()
		reset(t)
		return
	}
	cn.t = t
	fin := cn.finned
	r.wg.Add(4)
	r.mu.Unlock()
	if fin {
		t.CloseWrite() // CloseConns came while the target was dialed
	}
	for i := range dirs {
		src, dst := cn.c, t
		if dirs[i] == Down {
			src, dst = t, cn.c
		}
		l := &lane{q: make(chan chunk, queueLen), written: make(chan struct{}, 1)}
		go r.routineRead(cn, i, src, l)
		go r.routineWrite(cn, i, dst, l)
	}
}

// chunk is a run of bytes read from one side, waiting to be written to the other.
type chunk struct {
	b  *[chunkSize]byte
	n  int
	at time.Time // when it was read
}

// lane is one direction of a connection, from its reader to its writer.
type lane struct {
	q       chan chunk
	queued  atomic.Int64  // bytes the reader queued that the writer has not written or dropped
	written chan struct{} // the writer took bytes off queued; holds one signal
	end     ending        // set by the reader before it closes q
}

// ending is how a direction's source ended and when.
type ending struct {
	kind endKind
	at   time.Time
}

type endKind int

const (
	endNone endKind = iota // nothing to pass on: the relay ended it, or a blackhole took it
	endFIN
	endRST
)

// verdict is what a direction does with bytes it holds.
type verdict int

const (
	pass verdict = iota
	drop
	holed // the direction lost bytes before and its blackhole is gone: reset
)

// judge decides the fate of n bytes going in direction i of c, now.
func (r *Relay) judge(c *conn, i int, n int) verdict {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case c.finned:
		return drop
	case r.mu.dark&dirs[i] != 0:
		c.gap |= dirs[i]
		r.dropped[i].Add(int64(n))
		return drop
	case c.gap&dirs[i] != 0:
		return holed
	}
	return pass
}

func (r *Relay) routineRead(c *conn, i int, src *net.TCPConn, l *lane) {
	defer r.wg.Done()
	defer close(l.q)
	for {
		b := r.pool.Get().(*[chunkSize]byte)
		n, err := src.Read(b[:r.readSize(i)])
		if n > 0 {
			switch r.judge(c, i, n) {
			case drop:
				r.pool.Put(b)
			case holed:
				r.pool.Put(b)
				c.end(true)
				return
			case pass:
				if !r.waitRate(c, i, n) {
					return
				}
				l.queued.Add(int64(n))
				select {
				case l.q <- chunk{b: b, n: n, at: time.Now()}:
				case <-c.done:
					return
				}
				if !r.waitQueue(c, i, l) {
					return
				}
			}
		} else {
			r.pool.Put(b)
		}
		if err != nil {
			switch {
			case isDone(c.done):
			case r.judge(c, i, 0) != pass:
				// A FIN or RST into a blackhole is lost like the bytes; after CloseConns
				// the relay already sent its own FIN.
			case err == io.EOF:
				l.end = ending{endFIN, time.Now()}
			default:
				l.end = ending{endRST, time.Now()}
			}
			return
		}
	}
}

// readSize is how much to read at once in direction i: less than a rate's burst, so that a
// capped direction passes chunks no larger than the burst.
func (r *Relay) readSize(i int) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if b := r.mu.rate[i]; b.rate > 0 {
		return min(chunkSize, int(b.burst))
	}
	return chunkSize
}

// waitRate waits until direction i's rate lets n more bytes pass; false if c ended first.
func (r *Relay) waitRate(c *conn, i int, n int) bool {
	for {
		r.mu.Lock()
		d := r.mu.rate[i].reserve(time.Now(), n)
		changed := r.mu.changed
		r.mu.Unlock()
		if d <= 0 || wait(d, changed, c.done) {
			return true
		}
		if isDone(c.done) {
			return false
		}
		// The rate changed: reserve from the new one.
	}
}

// waitDue waits until direction i's delay has passed since at; false if c ended first.
func (r *Relay) waitDue(c *conn, i int, at time.Time) bool {
	for {
		r.mu.Lock()
		d := time.Until(at.Add(r.mu.delay[i]))
		changed := r.mu.changed
		r.mu.Unlock()
		if d <= 0 || wait(d, changed, c.done) {
			return !isDone(c.done)
		}
		if isDone(c.done) {
			return false
		}
	}
}

func (r *Relay) routineWrite(c *conn, i int, dst *net.TCPConn, l *lane) {
	defer r.wg.Done()
	for ch := range l.q {
		r.writeChunk(c, i, dst, ch)
		l.queued.Add(-int64(ch.n))
		select {
		case l.written <- struct{}{}:
		default: // a signal is pending already
		}
	}
	// The reader has ended and every chunk before its end is written: pass the end on, as
	// late as the delay says.
	end := l.end
	if end.kind != endNone && r.waitDue(c, i, end.at) && r.judge(c, i, 0) == pass {
		if end.kind == endFIN {
			dst.CloseWrite()
		} else {
			c.end(true)
		}
	}
	if c.halves.Add(1) == 2 {
		c.end(false) // both directions are over
	}
}

// writeChunk writes ch to dst once direction i's delay has passed, unless the direction
// went dark or c ended meanwhile.
func (r *Relay) writeChunk(c *conn, i int, dst *net.TCPConn, ch chunk) {
	defer r.pool.Put(ch.b)
	if !r.waitDue(c, i, ch.at) {
		return // c ended: the reader sees it and closes the queue
	}
	switch r.judge(c, i, ch.n) {
	case drop:
		return
	case holed:
		c.end(true)
		return
	}
	if _, err := dst.Write(ch.b[:ch.n]); err != nil {
		// The other side is gone, unless CloseConns shut it down for writing under this
		// Write: then its FIN stands.
		if r.judge(c, i, 0) != drop {
			c.end(true)
		}
		return
	}
	r.fwd[i].Add(int64(ch.n))
}

// waitQueue holds the reader of direction i while the bytes queued exceed what the delay
// allows: none but the chunk being written without a delay, maxDelayed with one. It returns
// false if c ended first.
func (r *Relay) waitQueue(c *conn, i int, l *lane) bool {
	for {
		r.mu.Lock()
		limit := int64(0)
		if r.mu.delay[i] > 0 {
			limit = maxDelayed - chunkSize
		}
		changed := r.mu.changed
		r.mu.Unlock()
		if l.queued.Load() <= limit {
			return true
		}
		select {
		case <-l.written:
		case <-changed:
		case <-c.done:
			return false
		}
	}
}

// end closes both sides of c, with an RST if reset; only the first call counts.
func (c *conn) end(reset bool) {
	c.endOnce.Do(func() {
		c.r.mu.Lock()
		delete(c.r.mu.conns, c)
		c.ended = true
		t := c.t
		c.r.mu.Unlock()
		for _, s := range []*net.TCPConn{c.c, t} {
			if s == nil {
				continue
			}
			if reset {
				s.SetLinger(0)
			}
			s.Close()
		}
		close(c.done)
	})
}

// reset closes c with an RST.
func reset(c *net.TCPConn) {
	c.SetLinger(0)
	c.Close()
}

func isDone(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
