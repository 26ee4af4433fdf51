package path

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"time"

	"github.com/rendr-go/rendr/transport"
)

// pktLink is an in-memory datagram link for packet paths under synctest: each direction
// loses, delays, reorders and duplicates datagrams as configured, and drops (or refuses)
// those over its MTU. Ends can change address, as a NAT rebinding would show it, and a test
// can inject datagrams from anywhere.
type pktLink struct {
	mu   sync.Mutex
	rng  *rand.Rand
	last [2]time.Time // the latest delivery time scheduled, by sending end
	ends [2]*pktEnd
	cfg  [2]pktConfig // by sending end
}

type pktConfig struct {
	Loss      float64       // the fraction of datagrams dropped
	Dup       float64       // the fraction delivered twice
	Delay     time.Duration // one way
	Jitter    time.Duration // up to this much more, drawn per datagram: reordering
	MTU       int           // larger datagrams vanish (0: no limit)
	RefuseBig bool          // ... or are refused at once with ErrDatagramTooLarge
	// The receiving end: it spends ReadCost on each datagram it reads (a slow host), holds at
	// most Queue datagrams waiting (more are dropped; 0: 1<<14), and, as a
	// transport.CongestionMarker, marks one read with at least MarkAt still waiting (0: none).
	// MarkEvery marks every MarkEvery-th datagram read whatever the queue holds: a reader
	// that falls behind for a moment now and then (0: none).
	ReadCost  time.Duration
	Queue     int
	MarkAt    int
	MarkEvery int
}

type pktAddr string

func (a pktAddr) Network() string { return "pkt" }
func (a pktAddr) String() string  { return string(a) }

type pktIn struct {
	b    []byte
	from net.Addr
}

// pktEnd is one end: a transport.Rebinder.
type pktEnd struct {
	l     *pktLink
	side  int
	q     chan pktIn
	done  chan struct{}
	once  sync.Once
	max   int
	base  int
	mu    sync.Mutex
	local net.Addr
	peer  net.Addr
	sent  map[string]int // datagrams written, by destination
	bytes map[string]int // bytes written, by destination
	tap   func([]byte)   // sees every datagram written, when set
	mark  bool           // the datagram read last was marked (the reader's alone)
	reads int            // datagrams read (the reader's alone)
}

var (
	_ transport.Rebinder         = (*pktEnd)(nil)
	_ transport.CongestionMarker = (*pktEnd)(nil)
)

func newPktLink(seed uint64, ab, ba pktConfig, max, base int) (*pktLink, *pktEnd, *pktEnd) {
	l := &pktLink{rng: rand.New(rand.NewPCG(seed, 7)), cfg: [2]pktConfig{ab, ba}}
	for i := range 2 {
		l.ends[i] = &pktEnd{l: l, side: i, q: make(chan pktIn, 1<<14), done: make(chan struct{}),
			max: max, base: base, local: pktAddr(fmt.Sprintf("end%d", i)), sent: map[string]int{}, bytes: map[string]int{}}
	}
	l.ends[0].peer, l.ends[1].peer = l.ends[1].local, l.ends[0].local
	return l, l.ends[0], l.ends[1]
}

func (e *pktEnd) other() *pktEnd { return e.l.ends[1-e.side] }

// send carries b from e to the end at addr (the other end, if it is still there).
func (e *pktEnd) send(b []byte, to net.Addr) error {
	select {
	case <-e.done:
		return net.ErrClosed
	default:
	}
	l := e.l
	l.mu.Lock()
	cfg := l.cfg[e.side]
	l.mu.Unlock()
	if cfg.MTU > 0 && len(b) > cfg.MTU && cfg.RefuseBig {
		return fmt.Errorf("pkt: %w", transport.ErrDatagramTooLarge)
	}
	e.mu.Lock()
	from := e.local
	e.sent[to.String()]++
	e.bytes[to.String()] += len(b)
	if e.tap != nil {
		e.tap(b)
	}
	e.mu.Unlock()
	dst := e.other()
	dst.mu.Lock()
	there := dst.local.String() == to.String()
	dst.mu.Unlock()
	if !there || cfg.MTU > 0 && len(b) > cfg.MTU && !cfg.RefuseBig {
		return nil // nobody at that address, or too large for the link: gone
	}
	l.mu.Lock()
	cfg = l.cfg[e.side] // setMTU may have changed it
	copies := 1
	if l.rng.Float64() < cfg.Loss {
		copies = 0
	} else if l.rng.Float64() < cfg.Dup {
		copies = 2
	}
	var delays [2]time.Duration
	now := time.Now()
	for i := range copies {
		delays[i] = cfg.Delay
		if cfg.Jitter > 0 {
			delays[i] += time.Duration(l.rng.Int64N(int64(cfg.Jitter)))
		} else if at := l.last[e.side]; !now.Add(delays[i]).After(at) {
			// Timers due at one instant fire in no set order: without jitter the link
			// keeps order, so each datagram is due a nanosecond after the one before.
			delays[i] = at.Sub(now) + time.Nanosecond
		}
		if at := now.Add(delays[i]); at.After(l.last[e.side]) {
			l.last[e.side] = at
		}
	}
	l.mu.Unlock()
	for i := range copies {
		d := pktIn{b: append([]byte(nil), b...), from: from}
		time.AfterFunc(delays[i], func() { dst.inject(d) })
	}
	return nil
}

// setMTU changes both directions' MTU from now on: larger datagrams vanish silently.
func (l *pktLink) setMTU(mtu int) {
	l.mu.Lock()
	l.cfg[0].MTU, l.cfg[1].MTU = mtu, mtu
	l.mu.Unlock()
}

// in is the configuration of the direction e receives.
func (e *pktEnd) in() pktConfig {
	e.l.mu.Lock()
	defer e.l.mu.Unlock()
	return e.l.cfg[1-e.side]
}

// inject delivers a datagram to e as if it came from d.from.
func (e *pktEnd) inject(d pktIn) {
	if q := e.in().Queue; q > 0 && len(e.q) >= q {
		return // the receiver's queue is full: dropped
	}
	select {
	case <-e.done:
	case e.q <- d:
	default: // the receiver is far behind: dropped
	}
}

// rebind gives e a new address: what it sends comes from there, and what is sent to its old
// one is lost.
func (e *pktEnd) rebind(addr string) {
	e.mu.Lock()
	e.local = pktAddr(addr)
	e.mu.Unlock()
}

func (e *pktEnd) bytesTo(addr string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.bytes[addr]
}

func (e *pktEnd) sentTo(addr string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.sent[addr]
}

func (e *pktEnd) Read(b []byte) (int, error) {
	n, _, err := e.ReadFrom(b)
	return n, err
}

func (e *pktEnd) ReadFrom(b []byte) (int, net.Addr, error) {
	select {
	case d := <-e.q:
		cfg := e.in()
		e.reads++
		e.mark = cfg.MarkAt > 0 && len(e.q) >= cfg.MarkAt || cfg.MarkEvery > 0 && e.reads%cfg.MarkEvery == 0
		if cfg.ReadCost > 0 {
			time.Sleep(cfg.ReadCost)
		}
		e.mu.Lock()
		from := d.from
		if from.String() == e.peer.String() {
			from = nil
		}
		e.mu.Unlock()
		return copy(b, d.b), from, nil
	case <-e.done:
		return 0, nil, net.ErrClosed
	}
}

func (e *pktEnd) Write(b []byte) (int, error) {
	e.mu.Lock()
	peer := e.peer
	e.mu.Unlock()
	return len(b), e.send(b, peer)
}

func (e *pktEnd) WriteTo(b []byte, a net.Addr) (int, error) { return len(b), e.send(b, a) }

func (e *pktEnd) SetPeer(a net.Addr) {
	e.mu.Lock()
	e.peer = a
	e.mu.Unlock()
}

func (e *pktEnd) Close() error {
	e.once.Do(func() { close(e.done) })
	return nil
}

func (e *pktEnd) Marked() bool          { return e.mark }
func (e *pktEnd) MaxDatagramSize() int  { return e.max }
func (e *pktEnd) BaseDatagramSize() int { return e.base }
func (e *pktEnd) LocalAddr() net.Addr {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.local
}
func (e *pktEnd) RemoteAddr() net.Addr {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.peer
}
func (e *pktEnd) SetDeadline(time.Time) error      { return nil }
func (e *pktEnd) SetReadDeadline(time.Time) error  { return nil }
func (e *pktEnd) SetWriteDeadline(time.Time) error { return os.ErrNoDeadline }
