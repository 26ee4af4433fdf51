package relay

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
)

// UDP is a loopback UDP relay, a small NAT: each client address gets a mapping, an upstream
// socket of its own towards the target. It can blackhole mappings (Stall, Block) and rebind
// them (Rebind: the target sees the same client arrive from a new port, as after a NAT
// timeout). It cannot close what flows through it: UDP carriers end their connections
// themselves.
type UDP struct {
	pc     *net.UDPConn // faces the clients
	target *net.UDPAddr
	dial   func(network, address string) (net.Conn, error)
	wg     sync.WaitGroup

	mangle  atomic.Pointer[Mangle]
	rngMu   sync.Mutex
	rng     *rand.Rand
	mangled MangleStats // guarded by rngMu

	mu struct {
		sync.Mutex
		maps    map[string]*mapping
		blocked bool
		closed  bool
	}

	// Datagrams still to drop on their way to the target (up) and to the clients (down), and
	// counters of what the relay forwarded and dropped that way.
	dropUp, dropDown       atomic.Int64
	sentUp, sentDown       atomic.Int64
	droppedUp, droppedDown atomic.Int64
}

// DropNext makes the relay lose the next up datagrams on their way to the target and the next
// down datagrams on their way to any client, silently, as a lossy network would: a handshake
// message lost in one direction. Calls add up.
func (u *UDP) DropNext(up, down int) {
	u.dropUp.Add(int64(up))
	u.dropDown.Add(int64(down))
}

// UDPStats counts datagrams through a UDP relay, by direction.
type UDPStats struct {
	SentUp, SentDown       int64 // forwarded to the target, and to clients
	DroppedUp, DroppedDown int64 // lost by DropNext
}

// Stats returns the relay's counters.
func (u *UDP) Stats() UDPStats {
	return UDPStats{SentUp: u.sentUp.Load(), SentDown: u.sentDown.Load(),
		DroppedUp: u.droppedUp.Load(), DroppedDown: u.droppedDown.Load()}
}

// take reports whether a datagram must be dropped by DropNext's budget in n, counting it.
func take(n, dropped *atomic.Int64) bool {
	for {
		k := n.Load()
		if k <= 0 {
			return false
		}
		if n.CompareAndSwap(k, k-1) {
			dropped.Add(1)
			return true
		}
	}
}

type mapping struct {
	client  *net.UDPAddr
	up      *net.UDPConn
	stalled atomic.Bool
	// A datagram held back to be sent after the next one, each way (Mangle.Reorder); each is
	// touched by its direction's goroutine alone.
	heldUp, heldDown []byte
}

// Mangle is what the relay does to the datagrams it forwards, in both directions, as a bad
// network would. The zero value forwards them untouched.
type Mangle struct {
	Dup     float64 // probability that a datagram is sent twice
	Reorder float64 // probability that a datagram is held back and sent after the next one
	Corrupt float64 // probability that a datagram has one bit flipped
}

// MangleStats counts what Mangle did.
type MangleStats struct {
	Duplicated, Reordered, Corrupted int64
}

// SetMangle changes what the relay does to datagrams from now on.
func (u *UDP) SetMangle(m Mangle) { u.mangle.Store(&m) }

// Mangled returns what Mangle did so far.
func (u *UDP) Mangled() MangleStats {
	u.rngMu.Lock()
	defer u.rngMu.Unlock()
	return u.mangled
}

// forward sends b through send as Mangle says; held is the direction's held-back datagram. A
// held datagram waits for the next one in its direction: on a path that goes quiet it is lost,
// which the protocol above must survive anyway.
func (u *UDP) forward(held *[]byte, b []byte, send func([]byte)) {
	m := u.mangle.Load()
	if *m == (Mangle{}) && *held == nil {
		send(b)
		return
	}
	u.rngMu.Lock()
	hold := *held == nil && m.Reorder > 0 && u.rng.Float64() < m.Reorder
	dup := !hold && m.Dup > 0 && u.rng.Float64() < m.Dup
	flip := -1
	if m.Corrupt > 0 && len(b) > 0 && u.rng.Float64() < m.Corrupt {
		flip = u.rng.IntN(len(b) * 8)
		u.mangled.Corrupted++
	}
	if dup {
		u.mangled.Duplicated++
	}
	if hold {
		u.mangled.Reordered++
	}
	u.rngMu.Unlock()
	if flip >= 0 {
		b[flip/8] ^= 1 << (flip % 8)
	}
	if hold {
		*held = append((*held)[:0], b...)
		return
	}
	send(b)
	if dup {
		send(b)
	}
	if *held != nil {
		send(*held)
		*held = nil
	}
}

// maxUDP is the largest datagram the relay forwards.
const maxUDP = 64 << 10

// NewUDP starts a relay to target on a free loopback port.
func NewUDP(target string) (*UDP, error) { return NewUDPConfig(target, UDPConfig{}) }

// UDPConfig places a UDP relay's sockets somewhere other than the process's loopback: in a
// network namespace, say, so that the relay stands between two of them.
type UDPConfig struct {
	// Listen is the address the relay receives clients on; empty means 127.0.0.1:0.
	Listen string
	// ListenPacket opens the socket facing the clients; nil means net.ListenPacket. It must
	// return a *net.UDPConn.
	ListenPacket func(network, address string) (net.PacketConn, error)
	// Dial opens each mapping's socket towards the target; nil means net.Dial. It must return
	// a *net.UDPConn.
	Dial func(network, address string) (net.Conn, error)
}

// NewUDPConfig starts a relay to target as cfg says.
func NewUDPConfig(target string, cfg UDPConfig) (*UDP, error) {
	ta, err := net.ResolveUDPAddr("udp", target)
	if err != nil {
		return nil, err
	}
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	if cfg.ListenPacket == nil {
		cfg.ListenPacket = net.ListenPacket
	}
	if cfg.Dial == nil {
		cfg.Dial = net.Dial
	}
	p, err := cfg.ListenPacket("udp", cfg.Listen)
	if err != nil {
		return nil, err
	}
	pc, ok := p.(*net.UDPConn)
	if !ok {
		p.Close()
		return nil, fmt.Errorf("relay: ListenPacket returned a %T, not a *net.UDPConn", p)
	}
	u := &UDP{pc: pc, target: ta, dial: cfg.Dial, rng: rand.New(rand.NewPCG(1, 2))}
	u.mangle.Store(&Mangle{})
	u.mu.maps = map[string]*mapping{}
	u.wg.Add(1)
	go u.routineIn()
	return u, nil
}

// Addr is the address to send to.
func (u *UDP) Addr() string { return u.pc.LocalAddr().String() }

// Kill applies m to every mapping: Stall blackholes them for good (a client that moves to a
// new port gets through again). Close and Reset have no UDP meaning and do nothing.
func (u *UDP) Kill(m Mode) int {
	if m != Stall {
		return 0
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, mp := range u.mu.maps {
		mp.stalled.Store(true)
	}
	return len(u.mu.maps)
}

// Block blackholes every mapping, new ones included, while on.
func (u *UDP) Block(on bool) {
	u.mu.Lock()
	u.mu.blocked = on
	u.mu.Unlock()
	if on {
		u.Kill(Stall)
	}
}

// Rebind drops every mapping that is not stalled: the next datagram from each client gets a
// new upstream port.
func (u *UDP) Rebind() int {
	u.mu.Lock()
	var n int
	for k, mp := range u.mu.maps {
		if !mp.stalled.Load() {
			mp.up.Close()
			delete(u.mu.maps, k)
			n++
		}
	}
	u.mu.Unlock()
	return n
}

// Close stops the relay.
func (u *UDP) Close() error {
	u.mu.Lock()
	u.mu.closed = true
	for k, mp := range u.mu.maps {
		mp.up.Close()
		delete(u.mu.maps, k)
	}
	u.mu.Unlock()
	err := u.pc.Close()
	u.wg.Wait()
	return err
}

func (u *UDP) routineIn() {
	defer u.wg.Done()
	buf := make([]byte, maxUDP)
	for {
		n, from, err := u.pc.ReadFromUDP(buf)
		if err != nil {
			return
		}
		mp := u.lookup(from)
		if mp == nil || mp.stalled.Load() || take(&u.dropUp, &u.droppedUp) {
			continue
		}
		u.forward(&mp.heldUp, buf[:n], func(b []byte) { mp.up.Write(b) })
		u.sentUp.Add(1)
	}
}

// lookup finds or makes from's mapping; nil once the relay is closed.
func (u *UDP) lookup(from *net.UDPAddr) *mapping {
	key := from.String()
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.mu.closed {
		return nil
	}
	if mp := u.mu.maps[key]; mp != nil {
		return mp
	}
	c, err := u.dial("udp", u.target.String())
	if err != nil {
		return nil
	}
	up, ok := c.(*net.UDPConn)
	if !ok {
		c.Close()
		return nil
	}
	mp := &mapping{client: from, up: up}
	mp.stalled.Store(u.mu.blocked)
	u.mu.maps[key] = mp
	u.wg.Add(1)
	go u.routineOut(mp)
	return mp
}

func (u *UDP) routineOut(mp *mapping) {
	defer u.wg.Done()
	buf := make([]byte, maxUDP)
	for {
		n, err := mp.up.Read(buf)
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			continue // ICMP unreachable from a target not up yet: the next reply may come
		}
		if mp.stalled.Load() || take(&u.dropDown, &u.droppedDown) {
			continue
		}
		u.forward(&mp.heldDown, buf[:n], func(b []byte) { u.pc.WriteToUDP(b, mp.client) })
		u.sentDown.Add(1)
	}
}
