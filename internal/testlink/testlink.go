// Package testlink provides in-memory byte-stream links with fault injection
// (delay, jitter, rate, blackhole, kill, corruption) for deterministic tests
// under testing/synctest.
//
// A link has no background goroutines. Every piece of state sits behind one
// mutex per link; a blocked Read or Write waits on a broadcast channel (closed
// and replaced on every state change) and, when there is a moment it cares
// about (the head segment's delivery time, a deadline), on a time.Timer. Inside
// a synctest bubble such waiters are durably blocked, so virtual time advances
// straight to the next delivery and timing is exact.
//
// Create links inside the bubble that uses them: channels made outside a
// bubble do not count as durably blocking inside it.
package testlink

import (
	"math"
	"math/bits"
	"math/rand/v2"
	"sync"
	"syscall"
	"time"
)

// DefaultBuffer is the in-flight limit used when Config.Buffer is 0.
const DefaultBuffer = 4 << 20

// Config shapes one direction of a link. The zero value is an ideal link: no
// delay, unlimited rate.
type Config struct {
	// Delay is the one-way propagation delay added to every byte.
	Delay time.Duration
	// Jitter adds a random delay in [0, Jitter) per segment (one segment
	// per Write, or per chunk when back-pressure splits a Write). Delivery
	// order is kept: a segment is never delivered before an earlier one.
	Jitter time.Duration
	// Rate is in bytes per second; 0 means unlimited. A segment of n bytes
	// occupies the sender's wire for n/Rate, and segments queue behind
	// each other.
	Rate int64
	// Buffer is how many bytes may be in flight (written, not yet read by
	// the peer) before Write blocks; 0 means DefaultBuffer. This gives
	// back-pressure like a kernel socket buffer.
	Buffer int
	// Loss models a lossy network under a reliable byte stream, as TCP sees it: each segment
	// is lost with this probability and delivered only after Retransmit, and because the
	// stream is ordered, every segment behind it waits too (head-of-line blocking).
	Loss float64
	// Retransmit is how late a lost segment arrives; zero means 200ms (TCP's minimum RTO).
	Retransmit time.Duration
	// Seed seeds the jitter/corruption PRNG so runs are repeatable.
	Seed int64
}

func (c Config) buffer() int {
	if c.Buffer > 0 {
		return c.Buffer
	}
	return DefaultBuffer
}

// segment is a run of bytes that becomes readable at once.
type segment struct {
	data []byte
	at   time.Time
}

// half is one direction of a link. Every field is guarded by Link.mu.
type half struct {
	cfg       Config
	rng       *rand.Rand
	q         []segment // in write order; at never decreases
	inflight  int       // queued + swallowed bytes; what Buffer limits
	swallowed int       // bytes eaten by the blackhole, still holding buffer space
	txFree    time.Time // when the sender's wire can start serialising the next segment
	txRem     uint64    // remainder of the last n*1e9/Rate division, carried so rounding never drifts
	lastAt    time.Time // delivery time of the newest segment, so jitter cannot reorder
	corrupt   int       // bytes still to get a flipped bit
	delivered int64     // bytes read by the receiver
	writing   bool      // a Write owns this direction, so concurrent Writes never interleave
	fin       bool      // sender is gone: EOF once q is empty and finAt has passed
	finAt     time.Time
	reset     bool          // reads fail with ECONNRESET
	broken    syscall.Errno // nonzero: writes fail with this (EPIPE or ECONNRESET)
}

func newHalf(cfg Config, stream uint64) *half {
	return &half{cfg: cfg, rng: rand.New(rand.NewPCG(uint64(cfg.Seed), stream))}
}

// txTime is how long n bytes occupy the wire at cfg.Rate. The division is
// done in 128 bits so large segments or rates neither overflow nor round.
func (h *half) txTime(n int) time.Duration {
	if h.cfg.Rate <= 0 {
		return 0
	}
	r := uint64(h.cfg.Rate)
	hi, lo := bits.Mul64(uint64(n), uint64(time.Second))
	lo, carry := bits.Add64(lo, h.txRem, 0)
	hi += carry
	if hi >= r { // more than 584 years: just say "forever"
		h.txRem = 0
		return math.MaxInt64
	}
	q, rem := bits.Div64(hi, lo, r)
	h.txRem = rem
	if q > math.MaxInt64 {
		return math.MaxInt64
	}
	return time.Duration(q)
}

// schedule returns when n bytes written now become readable:
// max(now, txFree) + n/Rate + Delay + jitter, but never before lastAt.
func (h *half) schedule(now time.Time, n int) time.Time {
	start := now
	if h.txFree.After(start) {
		start = h.txFree
	}
	h.txFree = start.Add(h.txTime(n))
	at := h.txFree.Add(h.cfg.Delay)
	if h.cfg.Jitter > 0 {
		at = at.Add(time.Duration(h.rng.Int64N(int64(h.cfg.Jitter))))
	}
	if h.cfg.Loss > 0 && h.rng.Float64() < h.cfg.Loss {
		rto := h.cfg.Retransmit
		if rto <= 0 {
			rto = 200 * time.Millisecond
		}
		at = at.Add(rto)
	}
	if at.Before(h.lastAt) {
		at = h.lastAt
	}
	h.lastAt = at
	return at
}

// push accepts p into the link. The bytes are copied: the caller's buffer is
// never kept. While the blackhole is on they only take up buffer space.
func (h *half) push(p []byte, now time.Time, blackhole bool) {
	h.inflight += len(p)
	if blackhole {
		h.swallowed += len(p)
		return
	}
	data := make([]byte, len(p))
	copy(data, p)
	for i := 0; i < len(data) && h.corrupt > 0; i++ {
		data[i] ^= 1 << h.rng.IntN(8)
		h.corrupt--
	}
	h.q = append(h.q, segment{data: data, at: h.schedule(now, len(data))})
}

// take copies bytes that have arrived by now into p and returns how many.
func (h *half) take(p []byte, now time.Time) int {
	n := 0
	for n < len(p) && len(h.q) > 0 && !h.q[0].at.After(now) {
		s := &h.q[0]
		k := copy(p[n:], s.data)
		n += k
		s.data = s.data[k:]
		if len(s.data) == 0 {
			h.q[0] = segment{} // let the GC have the bytes
			h.q = h.q[1:]
		}
	}
	h.inflight -= n
	h.delivered += int64(n)
	return n
}

// dropUnarrived discards segments still on the wire at now; bytes that have
// already arrived stay readable, like data in the receiver's socket buffer.
func (h *half) dropUnarrived(now time.Time) {
	i := len(h.q)
	for i > 0 && h.q[i-1].at.After(now) {
		i--
	}
	for _, s := range h.q[i:] {
		h.inflight -= len(s.data)
	}
	clear(h.q[i:])
	h.q = h.q[:i]
	if h.lastAt.After(now) {
		h.lastAt = now // the dropped segments must not hold back later ones
	}
}

// discard drops everything, arrived or not, and frees all buffer space.
func (h *half) discard() {
	h.q = nil
	h.inflight, h.swallowed = 0, 0
}

// Link controls both directions of a link from the test. It is safe for
// concurrent use.
type Link struct {
	mu        sync.Mutex
	wake      chan struct{} // closed and replaced on every state change
	dir       [2]*half      // [0] is a->b, [1] is b->a
	blackhole bool
}

// broadcastLocked wakes every waiter so it re-checks the state.
func (l *Link) broadcastLocked() {
	close(l.wake)
	l.wake = make(chan struct{})
}

// waitLocked releases l.mu until the state changes or until is reached
// (zero: no time limit), then re-acquires it. Callers re-check and loop.
func (l *Link) waitLocked(until time.Time) {
	wake := l.wake
	l.mu.Unlock()
	defer l.mu.Lock()
	if until.IsZero() {
		<-wake
		return
	}
	t := time.NewTimer(time.Until(until))
	defer t.Stop()
	select {
	case <-wake:
	case <-t.C:
	}
}

// Blackhole turns a blackhole on or off in both directions. While it is on,
// bytes written are accepted (until Buffer fills, then Write blocks like a
// stuck TCP socket) but never delivered, and nothing returns an error.
// Turning it on also loses bytes still on the wire; bytes that have already
// arrived stay readable. Turning it off frees the buffer space the swallowed
// bytes held but does not resurrect them: the stream has a gap, so a test
// should kill the link afterwards or accept the loss.
func (l *Link) Blackhole(on bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	for _, h := range l.dir {
		if on {
			h.dropUnarrived(now)
		} else {
			h.inflight -= h.swallowed
			h.swallowed = 0
		}
	}
	l.blackhole = on
	l.broadcastLocked()
}

// Hold delivers nothing in either direction until until, then everything due at once: what
// is on the wire, what has arrived and is not read yet, and what is written meanwhile. It is
// how a peer that is stopped and continued (SIGSTOP, a stalled VM) looks from both of its
// links: silence on every one, then a burst.
func (l *Link) Hold(until time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, h := range l.dir {
		for i := range h.q {
			if h.q[i].at.Before(until) {
				h.q[i].at = until
			}
		}
		if h.lastAt.Before(until) {
			h.lastAt = until
		}
	}
	l.broadcastLocked()
}

// Kill kills both ends at once; blocked Reads and Writes are woken.
// With reset false, bytes that have already arrived stay readable, then Reads
// return io.EOF (like a FIN); bytes still on the wire are lost; Writes fail
// with an error satisfying errors.Is(err, syscall.EPIPE). With reset true,
// Reads and Writes fail at once with an error satisfying
// errors.Is(err, syscall.ECONNRESET) and buffered bytes are discarded.
func (l *Link) Kill(reset bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	for _, h := range l.dir {
		h.inflight -= h.swallowed
		h.swallowed = 0
		if reset {
			h.discard()
			h.reset, h.broken = true, syscall.ECONNRESET
			continue
		}
		h.dropUnarrived(now)
		if !h.fin || h.finAt.After(now) {
			h.fin, h.finAt = true, now
		}
		if h.broken == 0 {
			h.broken = syscall.EPIPE
		}
	}
	l.broadcastLocked()
}

// Corrupt flips one bit (chosen with the PRNG) in each of the next n bytes
// written in each direction. Calls add up. Bytes swallowed by a blackhole
// are not counted.
func (l *Link) Corrupt(n int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, h := range l.dir {
		h.corrupt += n
	}
}

// Set changes the shaping of each direction. Delay, Jitter and Rate apply to
// bytes written afterwards; Buffer applies at once; Seed is ignored (the PRNG
// keeps its stream so runs stay repeatable).
func (l *Link) Set(ab, ba Config) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, c := range [2]Config{ab, ba} {
		h := l.dir[i]
		c.Seed = h.cfg.Seed
		if c.Rate != h.cfg.Rate {
			h.txRem = 0 // the remainder is in units of the old rate
		}
		h.cfg = c
	}
	l.broadcastLocked()
}

// Stats returns how many bytes have been delivered (read by the receiver)
// in each direction.
func (l *Link) Stats() (abBytes, baBytes int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.dir[0].delivered, l.dir[1].delivered
}
