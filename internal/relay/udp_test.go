package relay

import (
	"net"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// The relay's goroutines must all end with Close.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestUDPDropNext: the relay loses exactly the datagrams DropNext asks for, in each direction,
// forwards the rest in order, and counts both.
func TestUDPDropNext(t *testing.T) {
	echo, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := echo.ReadFromUDP(buf)
			if err != nil {
				return
			}
			echo.WriteToUDP(buf[:n], from)
		}
	}()
	u, err := NewUDP(echo.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	c, err := net.Dial("udp", u.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Up: the first of 0,1,2 is lost. Down: the first echo (of 1) is lost too.
	u.DropNext(1, 1)
	for i := range 3 {
		if _, err := c.Write([]byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond) // keep the order on loopback; not a measurement
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, 16)
	n, err := c.Read(b)
	if err != nil || n != 1 || b[0] != 2 {
		t.Fatalf("read %v, %v; want the echo of datagram 2 alone", b[:n], err)
	}
	want := UDPStats{SentUp: 2, SentDown: 1, DroppedUp: 1, DroppedDown: 1}
	// The relay counts a datagram just after sending it: give the count a moment.
	st := u.Stats()
	for end := time.Now().Add(5 * time.Second); st != want && time.Now().Before(end); st = u.Stats() {
		time.Sleep(time.Millisecond)
	}
	if st != want {
		t.Fatalf("stats %+v, want %+v", st, want)
	}
}

// TestUDPMangle: with duplication, reordering and corruption on, what reaches the target is
// every datagram sent (but one the last may still hold back), plus exactly the copies counted
// as duplicated, with exactly the counted number bit-flipped, some out of order.
func TestUDPMangle(t *testing.T) {
	sink, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	u, err := NewUDP(sink.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	u.SetMangle(Mangle{Dup: 0.25, Reorder: 0.2, Corrupt: 0.05})
	c, err := net.Dial("udp", u.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const n = 400
	got := make(chan []byte, 4*n)
	go func() {
		buf := make([]byte, 64)
		for {
			k, err := sink.Read(buf)
			if err != nil {
				close(got)
				return
			}
			got <- append([]byte(nil), buf[:k]...)
		}
	}()
	for i := range n {
		// Each datagram is its number twice: a flipped bit makes the halves differ.
		if _, err := c.Write([]byte{byte(i >> 8), byte(i), byte(i >> 8), byte(i)}); err != nil {
			t.Fatal(err)
		}
		if i%10 == 0 {
			time.Sleep(2 * time.Millisecond) // let the sink keep up; loopback drops otherwise
		}
	}
	var recv, bad, outOfOrder, last int
	last = -1
	for recv < n {
		select {
		case b := <-got:
			recv++
			if b[0] != b[2] || b[1] != b[3] {
				bad++
				continue
			}
			if k := int(b[0])<<8 | int(b[1]); k < last {
				outOfOrder++
			} else {
				last = k
			}
		case <-time.After(2 * time.Second):
			goto done
		}
	}
done:
	// Drain the rest that is already there.
	for drained := false; !drained; {
		select {
		case b := <-got:
			recv++
			if b[0] != b[2] || b[1] != b[3] {
				bad++
			}
		case <-time.After(200 * time.Millisecond):
			drained = true
		}
	}
	m := u.Mangled()
	if m.Duplicated == 0 || m.Reordered == 0 || m.Corrupted == 0 {
		t.Fatalf("mangled %+v: each fault should have happened in %d datagrams", m, n)
	}
	// One flipped bit always makes the halves differ.
	want := n + int(m.Duplicated)
	if recv != want && recv != want-1 {
		t.Fatalf("target got %d datagrams, want %d (or one fewer, still held)", recv, want)
	}
	if outOfOrder == 0 {
		t.Fatalf("no datagram arrived out of order with %d reordered", m.Reordered)
	}
	if int64(bad) < m.Corrupted {
		t.Fatalf("%d corrupted datagrams arrived, the relay corrupted %d (duplicates of one count twice)", bad, m.Corrupted)
	}
}
