package relay

import (
	"net"
	"testing"
	"time"
)

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
