package rendrtest

import (
	"encoding/binary"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// udpTarget answers every datagram with the same bytes and remembers what it got and from
// where; it stops with the test.
type udpTarget struct {
	pc    *net.UDPConn
	got   atomic.Int64 // datagrams received
	bytes atomic.Int64
	mu    sync.Mutex
	from  []string // sources seen, in order, each once
	mute  atomic.Bool
}

func newUDPTarget(t *testing.T) *udpTarget {
	t.Helper()
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	u := &udpTarget{pc: pc}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, maxDatagram)
		for {
			n, from, err := pc.ReadFromUDP(buf)
			if err != nil {
				return
			}
			u.got.Add(1)
			u.bytes.Add(int64(n))
			u.mu.Lock()
			if len(u.from) == 0 || u.from[len(u.from)-1] != from.String() {
				u.from = append(u.from, from.String())
			}
			u.mu.Unlock()
			if !u.mute.Load() {
				pc.WriteToUDP(buf[:n], from)
			}
		}
	}()
	t.Cleanup(func() { pc.Close(); wg.Wait() })
	return u
}

func (u *udpTarget) sources() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.from...)
}

func udpRelayTo(t *testing.T, target string) *UDPRelay {
	t.Helper()
	r, err := NewUDPRelay(target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func udpClient(t *testing.T, r *UDPRelay) *net.UDPConn {
	t.Helper()
	ra, _ := net.ResolveUDPAddr("udp", r.Addr())
	c, err := net.DialUDP("udp", nil, ra)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// ping sends datagram i and waits for its echo, failing after patience.
func ping(t *testing.T, c *net.UDPConn, i int) {
	t.Helper()
	if _, err := c.Write(binary.BigEndian.AppendUint64(nil, uint64(i))); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(patience))
	b := make([]byte, 64)
	for {
		n, err := c.Read(b)
		if err != nil {
			t.Fatalf("no echo of datagram %d: %v", i, err)
		}
		if n == 8 && binary.BigEndian.Uint64(b) == uint64(i) {
			return
		}
	}
}

// nothingComes checks that c receives nothing in a short while: whatever arrives is a
// failure, so a short wait makes the check weaker, never flaky.
func nothingComes(t *testing.T, c *net.UDPConn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if n, err := c.Read(make([]byte, 64)); !isTimeout(err) {
		t.Errorf("received %d bytes, %v; want nothing", n, err)
	}
}

// TestUDPRelayForwards: datagrams cross both ways and are counted.
func TestUDPRelayForwards(t *testing.T) {
	tg := newUDPTarget(t)
	r := udpRelayTo(t, tg.pc.LocalAddr().String())
	c := udpClient(t, r)
	for i := range 50 {
		ping(t, c, i)
	}
	// The relay counts a datagram just after sending it: the echo can be quicker.
	want := UDPStats{Mappings: 1, Up: 50, Down: 50, UpBytes: 400, DownBytes: 400}
	waitFor(t, "the counts of 50 datagrams of 8 bytes each way", func() bool { return r.Stats() == want })
}

// TestUDPRelayBlackhole: a blackhole one way drops every datagram that way while the other
// way flows; Heal lifts it.
func TestUDPRelayBlackhole(t *testing.T) {
	tg := newUDPTarget(t)
	r := udpRelayTo(t, tg.pc.LocalAddr().String())
	c := udpClient(t, r)
	ping(t, c, 0)

	r.Blackhole(Up)
	for range 10 {
		c.Write([]byte("dark"))
	}
	waitFor(t, "10 datagrams dropped up", func() bool { return r.Stats().DroppedUp == 10 })
	if n := tg.got.Load(); n != 1 {
		t.Errorf("the target got %d datagrams through an up blackhole, want only the first", n)
	}
	nothingComes(t, c)

	r.Heal()
	ping(t, c, 1)
	r.Blackhole(Down)
	for range 10 {
		c.Write([]byte("lit!"))
	}
	// The target gets them and echoes them into the down blackhole.
	waitFor(t, "10 datagrams up and their 10 echoes dropped", func() bool {
		return tg.got.Load() == 12 && r.Stats().DroppedDown == 10
	})
	nothingComes(t, c)
	r.Heal()
	ping(t, c, 2)
}

// TestUDPRelayLoss: DropNext drops exactly the datagrams it is told to, Loss about its share,
// and Loss(1) all of them.
func TestUDPRelayLoss(t *testing.T) {
	tg := newUDPTarget(t)
	tg.mute.Store(true)
	r := udpRelayTo(t, tg.pc.LocalAddr().String())
	c := udpClient(t, r)
	// send sends n datagrams, 20 at a time so that no socket buffer overflows, and waits
	// until the relay has forwarded or dropped each and the target has what was forwarded.
	send := func(n int) {
		t.Helper()
		for n > 0 {
			k := min(n, 20)
			n -= k
			before := r.Stats()
			for range k {
				c.Write([]byte("x"))
			}
			waitFor(t, "the datagrams to be forwarded or dropped", func() bool {
				st := r.Stats()
				return st.Up+st.DroppedUp == before.Up+before.DroppedUp+int64(k) && tg.got.Load() == st.Up
			})
		}
	}
	r.DropNext(Up, 3)
	send(5)
	if st := r.Stats(); st.DroppedUp != 3 || st.Up != 2 {
		t.Errorf("DropNext(3) of 5: stats %+v, want 3 dropped and 2 forwarded", st)
	}
	r.Loss(Up, 1)
	send(20)
	if st := r.Stats(); st.DroppedUp != 23 || st.Up != 2 {
		t.Errorf("Loss(1): stats %+v, want every datagram dropped", st)
	}
	r.Loss(Up, 0.5)
	send(200)
	if d := r.Stats().DroppedUp - 23; d < 50 || d > 150 {
		t.Errorf("Loss(0.5) dropped %d of 200", d)
	}
}

// TestUDPRelayDelay: with a delay down, every echo arrives no sooner than the delay after its
// datagram was sent, and in order.
func TestUDPRelayDelay(t *testing.T) {
	const delay, n = 100 * time.Millisecond, 20
	tg := newUDPTarget(t)
	r := udpRelayTo(t, tg.pc.LocalAddr().String())
	c := udpClient(t, r)
	r.Delay(Down, delay)
	sent := make([]time.Time, n)
	for i := range n {
		sent[i] = time.Now()
		c.Write(binary.BigEndian.AppendUint64(nil, uint64(i)))
	}
	c.SetReadDeadline(time.Now().Add(patience))
	b := make([]byte, 64)
	for i := range n {
		k, err := c.Read(b)
		if err != nil {
			t.Fatalf("echo %d: %v", i, err)
		}
		if lag := time.Since(sent[i]); lag < delay {
			t.Errorf("echo %d arrived %v after it was sent, before the %v delay", i, lag, delay)
		}
		if got := binary.BigEndian.Uint64(b[:k]); got != uint64(i) {
			t.Fatalf("echo %d arrived as number %d: out of order", i, got)
		}
	}
}

// TestUDPRelayRate: a capped direction never passes more than the burst plus the rate times
// the time since the cap; the datagrams over it wait rather than being dropped.
func TestUDPRelayRate(t *testing.T) {
	const rate, n, size = 64 << 10, 48, 1 << 10
	tg := newUDPTarget(t)
	tg.mute.Store(true)
	r := udpRelayTo(t, tg.pc.LocalAddr().String())
	c := udpClient(t, r)
	start := time.Now()
	r.Rate(Up, rate)
	b := make([]byte, size)
	for range n {
		c.Write(b)
	}
	for {
		got := tg.bytes.Load()
		if most := burstFor(rate) + int64(time.Since(start).Seconds()*rate); got > most {
			t.Fatalf("%d bytes passed where the cap allows %d", got, most)
		}
		if got == n*size {
			break
		}
		if time.Since(start) > patience {
			t.Fatalf("only %d of %d bytes passed", got, n*size)
		}
		time.Sleep(time.Millisecond)
	}
	if st := r.Stats(); st.DroppedUp != 0 {
		t.Errorf("%d datagrams dropped under the cap; the queue should have held them", st.DroppedUp)
	}
}

// TestUDPRelayRebind: after Rebind the target sees the client from a new port, and the
// client's traffic flows on.
func TestUDPRelayRebind(t *testing.T) {
	tg := newUDPTarget(t)
	r := udpRelayTo(t, tg.pc.LocalAddr().String())
	c := udpClient(t, r)
	ping(t, c, 0)
	if n := r.Rebind(); n != 1 {
		t.Fatalf("Rebind dropped %d mappings, want 1", n)
	}
	ping(t, c, 1)
	if src := tg.sources(); len(src) != 2 || src[0] == src[1] {
		t.Errorf("the target saw the client from %v; want two ports in turn", src)
	}
}
