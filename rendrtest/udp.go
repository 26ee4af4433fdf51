package rendrtest

// The UDP relay, a small NAT. Every client address gets a mapping: a socket of its own
// towards the target, so that the target sees each client at a port of the relay's. A
// datagram goes:
//
//  1. from the socket it arrived on to the judge: dropped if its direction is dark, if
//     DropNext or Loss takes it, or if its direction's queue is full (a router's tail drop);
//  2. into that direction's queue, stamped with when it arrived;
//  3. out of the queue by the direction's sender, which waits for the delay after the stamp
//     and for the rate's tokens, drops it if the direction went dark meanwhile, and sends it.

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

const (
	// maxDatagram is the largest datagram the relay forwards.
	maxDatagram = 64 << 10
	// udpQueueLen is how many datagrams may wait in each direction (for a delay or a rate)
	// before the relay drops new ones.
	udpQueueLen = 1024
)

// UDPRelay forwards UDP datagrams between its clients and a target, and loses, delays or
// slows them on demand. Its methods may be called from any goroutine.
type UDPRelay struct {
	pc      *net.UDPConn // faces the clients
	target  *net.UDPAddr
	ctx     context.Context // ends with Close
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	queue   [2]chan datagram
	sent    [2]atomic.Int64 // datagrams, by direction index
	bytes   [2]atomic.Int64
	dropped [2]atomic.Int64

	// mu guards the faults and the mappings.
	mu struct {
		sync.Mutex
		maps     map[string]*mapping // by client address
		dark     Dir
		loss     [2]float64
		dropNext [2]int
		delay    [2]time.Duration
		rate     [2]bucket
		rng      *rand.Rand
		changed  chan struct{} // closed and replaced when a delay or a rate changes
		closed   bool
	}
}

type mapping struct {
	client *net.UDPAddr
	up     *net.UDPConn // towards the target
}

type datagram struct {
	m  *mapping
	b  []byte
	at time.Time
}

// NewUDPRelay starts a UDP relay to target (a host:port) on a free port of 127.0.0.1. Close
// it when done.
func NewUDPRelay(target string, opts ...Option) (*UDPRelay, error) {
	o := buildOptions(opts)
	ta, err := net.ResolveUDPAddr("udp", target)
	if err != nil {
		return nil, fmt.Errorf("rendrtest: UDP relay to %s: %w", target, err)
	}
	la, err := net.ResolveUDPAddr("udp", o.listen)
	if err != nil {
		return nil, fmt.Errorf("rendrtest: UDP relay to %s: %w", target, err)
	}
	pc, err := net.ListenUDP("udp", la)
	if err != nil {
		return nil, fmt.Errorf("rendrtest: UDP relay to %s: %w", target, err)
	}
	u := &UDPRelay{pc: pc, target: ta}
	u.ctx, u.cancel = context.WithCancel(context.Background())
	u.mu.maps = map[string]*mapping{}
	u.mu.rng = rand.New(rand.NewPCG(o.seed, 0x7265_6e64_7274_6573))
	u.mu.changed = make(chan struct{})
	for i := range dirs {
		u.queue[i] = make(chan datagram, udpQueueLen)
	}
	u.wg.Add(3)
	go u.routineIn()
	go u.routineSend(0)
	go u.routineSend(1)
	return u, nil
}

// Addr is the address to send to instead of the target.
func (u *UDPRelay) Addr() string { return u.pc.LocalAddr().String() }

// Target is the address the relay forwards to.
func (u *UDPRelay) Target() string { return u.target.String() }

// Blackhole drops every datagram going in the directions of d, queued ones included, until
// Heal. The other directions keep flowing.
func (u *UDPRelay) Blackhole(d Dir) {
	u.mu.Lock()
	u.mu.dark |= d & Both
	u.mu.Unlock()
}

// Loss drops each datagram going in the directions of d with probability p (0 to 1), from
// the pseudo-random sequence Seed chose; zero removes it.
func (u *UDPRelay) Loss(d Dir, p float64) {
	u.mu.Lock()
	for i, one := range dirs {
		if d&one != 0 {
			u.mu.loss[i] = min(max(p, 0), 1)
		}
	}
	u.mu.Unlock()
}

// DropNext drops the next n datagrams going in the directions of d (n in each), as a
// network losing one handshake message would. Calls add up.
func (u *UDPRelay) DropNext(d Dir, n int) {
	u.mu.Lock()
	for i, one := range dirs {
		if d&one != 0 {
			u.mu.dropNext[i] += max(n, 0)
		}
	}
	u.mu.Unlock()
}

// Delay holds each datagram going in the directions of d for latency after it arrived, in
// order; zero removes it. At most 1024 datagrams wait in each direction (for a delay or a
// rate); the relay drops those that arrive while that many wait, as a router's full queue
// does.
func (u *UDPRelay) Delay(d Dir, latency time.Duration) {
	u.mu.Lock()
	for i, one := range dirs {
		if d&one != 0 {
			u.mu.delay[i] = max(latency, 0)
		}
	}
	u.changedLocked()
	u.mu.Unlock()
}

// Rate caps the bytes per second forwarded in the directions of d, across all clients;
// zero or less removes the cap. Over any span t at most burst + bytesPerSec·t bytes of
// datagrams pass each way (the burst is as in Relay.Rate, or one datagram if larger). The
// datagrams over the cap wait in the direction's queue, and are dropped when it is full.
func (u *UDPRelay) Rate(d Dir, bytesPerSec int64) {
	u.mu.Lock()
	now := time.Now()
	for i, one := range dirs {
		if d&one != 0 {
			u.mu.rate[i].set(bytesPerSec, now)
		}
	}
	u.changedLocked()
	u.mu.Unlock()
}

// Heal lifts every fault: no blackhole, loss, pending DropNext, delay or rate cap.
func (u *UDPRelay) Heal() {
	u.mu.Lock()
	u.mu.dark = 0
	u.mu.loss = [2]float64{}
	u.mu.dropNext = [2]int{}
	u.mu.delay = [2]time.Duration{}
	u.mu.rate = [2]bucket{}
	u.changedLocked()
	u.mu.Unlock()
}

// Rebind forgets every client's mapping, as a NAT does when its mappings time out: the next
// datagram from each client leaves through a new socket, so the target sees the client
// arrive from a new port. Replies the target sends to the old port are lost. It returns how
// many mappings it dropped.
func (u *UDPRelay) Rebind() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	n := len(u.mu.maps)
	for k, m := range u.mu.maps {
		m.up.Close()
		delete(u.mu.maps, k)
	}
	return n
}

func (u *UDPRelay) changedLocked() {
	close(u.mu.changed)
	u.mu.changed = make(chan struct{})
}

// UDPStats counts what went through a UDP relay.
type UDPStats struct {
	Mappings int // clients with a mapping now
	// Datagrams and their bytes forwarded to the target (Up) and to the clients (Down).
	Up, Down           int64
	UpBytes, DownBytes int64
	// Datagrams dropped each way: by a blackhole, Loss, DropNext or a full queue.
	DroppedUp, DroppedDown int64
}

// Stats returns the relay's counters.
func (u *UDPRelay) Stats() UDPStats {
	u.mu.Lock()
	n := len(u.mu.maps)
	u.mu.Unlock()
	return UDPStats{Mappings: n, Up: u.sent[0].Load(), Down: u.sent[1].Load(),
		UpBytes: u.bytes[0].Load(), DownBytes: u.bytes[1].Load(),
		DroppedUp: u.dropped[0].Load(), DroppedDown: u.dropped[1].Load()}
}

// Close stops the relay and returns once all of its goroutines have ended. It may be called
// more than once.
func (u *UDPRelay) Close() error {
	u.mu.Lock()
	if u.mu.closed {
		u.mu.Unlock()
		return nil
	}
	u.mu.closed = true
	for k, m := range u.mu.maps {
		m.up.Close()
		delete(u.mu.maps, k)
	}
	u.mu.Unlock()
	u.cancel()
	err := u.pc.Close()
	u.wg.Wait()
	return err
}

// admit decides whether a datagram of direction i goes into its queue, counting it if not.
func (u *UDPRelay) admit(i int) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	take := u.mu.dark&dirs[i] != 0
	if !take && u.mu.dropNext[i] > 0 {
		u.mu.dropNext[i]--
		take = true
	}
	if !take && u.mu.loss[i] > 0 {
		take = u.mu.rng.Float64() < u.mu.loss[i]
	}
	if take {
		u.dropped[i].Add(1)
	}
	return !take
}

// enqueue queues a copy of b for direction i, or drops it when the queue is full.
func (u *UDPRelay) enqueue(i int, m *mapping, b []byte) {
	if !u.admit(i) {
		return
	}
	select {
	case u.queue[i] <- datagram{m: m, b: append([]byte(nil), b...), at: time.Now()}:
	default:
		u.dropped[i].Add(1)
	}
}

func (u *UDPRelay) routineIn() {
	defer u.wg.Done()
	buf := make([]byte, maxDatagram)
	for {
		n, from, err := u.pc.ReadFromUDP(buf)
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			continue // an ICMP error for an earlier datagram: the socket is fine
		}
		if m := u.lookup(from); m != nil {
			u.enqueue(0, m, buf[:n])
		}
	}
}

// lookup finds or makes from's mapping; nil once the relay is closed or if the target cannot
// be reached from here at all.
func (u *UDPRelay) lookup(from *net.UDPAddr) *mapping {
	key := from.String()
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.mu.closed {
		return nil
	}
	if m := u.mu.maps[key]; m != nil {
		return m
	}
	up, err := net.DialUDP("udp", nil, u.target)
	if err != nil {
		return nil
	}
	m := &mapping{client: from, up: up}
	u.mu.maps[key] = m
	u.wg.Add(1)
	go u.routineOut(m)
	return m
}

// routineOut takes the target's replies to one mapping until the mapping is dropped.
func (u *UDPRelay) routineOut(m *mapping) {
	defer u.wg.Done()
	buf := make([]byte, maxDatagram)
	for {
		n, err := m.up.Read(buf)
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			continue // ICMP unreachable from a target not up yet: the next reply may come
		}
		u.enqueue(1, m, buf[:n])
	}
}

// routineSend sends direction i's queued datagrams when their delay and the rate allow.
func (u *UDPRelay) routineSend(i int) {
	defer u.wg.Done()
	stop := u.ctx.Done()
	for {
		var dg datagram
		select {
		case dg = <-u.queue[i]:
		case <-stop:
			return
		}
		if !u.waitDue(i, dg.at) || !u.waitRate(i, len(dg.b)) {
			return
		}
		u.mu.Lock()
		dark := u.mu.dark&dirs[i] != 0
		u.mu.Unlock()
		if dark {
			u.dropped[i].Add(1)
			continue
		}
		var err error
		if i == 0 {
			_, err = dg.m.up.Write(dg.b)
		} else {
			_, err = u.pc.WriteToUDP(dg.b, dg.m.client)
		}
		if err != nil {
			// The mapping was dropped by Rebind meanwhile, or the kernel had no room: lost,
			// as on a network.
			u.dropped[i].Add(1)
			continue
		}
		u.sent[i].Add(1)
		u.bytes[i].Add(int64(len(dg.b)))
	}
}

// waitDue waits until direction i's delay has passed since at; false once the relay closes.
func (u *UDPRelay) waitDue(i int, at time.Time) bool {
	for {
		u.mu.Lock()
		d := time.Until(at.Add(u.mu.delay[i]))
		changed := u.mu.changed
		u.mu.Unlock()
		if d <= 0 || wait(d, changed, u.ctx.Done()) {
			return u.ctx.Err() == nil
		}
		if u.ctx.Err() != nil {
			return false
		}
	}
}

// waitRate waits until direction i's rate lets n more bytes pass; false once the relay
// closes.
func (u *UDPRelay) waitRate(i, n int) bool {
	for {
		u.mu.Lock()
		d := u.mu.rate[i].reserve(time.Now(), n)
		changed := u.mu.changed
		u.mu.Unlock()
		if d <= 0 || wait(d, changed, u.ctx.Done()) {
			return u.ctx.Err() == nil
		}
		if u.ctx.Err() != nil {
			return false
		}
	}
}
