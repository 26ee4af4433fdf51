package splice_test

import (
	"errors"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rendr-go/rendr/internal/splice"
)

// TestDatagrams: datagrams pass both ways; the splice ends when nothing passed either way for
// the idle time (not while one way is busy), or when a side's Read fails, says which, and
// closes both sides.
func TestDatagrams(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, aPeer := net.Pipe()
		b, bPeer := net.Pipe()
		why := make(chan [2]error, 1)
		go splice.Datagrams(a, b, time.Second, 2048, func(aErr, bErr error) { why <- [2]error{aErr, bErr} })
		buf := make([]byte, 2048)
		// One way only, for longer than the idle time: not idle.
		for i := range 30 {
			if _, err := aPeer.Write([]byte{byte(i)}); err != nil {
				t.Fatal(err)
			}
			if n, err := bPeer.Read(buf); err != nil || n != 1 || buf[0] != byte(i) {
				t.Fatalf("datagram %d: %v %v", i, buf[:n], err)
			}
			time.Sleep(100 * time.Millisecond)
		}
		if _, err := bPeer.Write([]byte("back")); err != nil {
			t.Fatal(err)
		}
		if n, err := aPeer.Read(buf); err != nil || string(buf[:n]) != "back" {
			t.Fatalf("the other way: %q %v", buf[:n], err)
		}
		time.Sleep(1500 * time.Millisecond)
		synctest.Wait()
		select {
		case w := <-why:
			if w[0] != nil || !errors.Is(w[1], splice.ErrIdle) {
				t.Fatalf("ended with %v, want ErrIdle", w)
			}
		default:
			t.Fatal("not ended after the idle time")
		}
		if _, err := aPeer.Write([]byte("x")); err == nil {
			t.Fatal("a is still open")
		}

		// A side that ends: the splice ends with its error.
		a, aPeer = net.Pipe()
		b, bPeer = net.Pipe()
		go splice.Datagrams(a, b, time.Minute, 2048, func(aErr, bErr error) { why <- [2]error{aErr, bErr} })
		aPeer.Close()
		if w := <-why; w[0] == nil || w[1] != nil {
			t.Fatalf("a's end: %v", w)
		}
		if _, err := bPeer.Write([]byte("x")); err == nil {
			t.Fatal("b is still open")
		}
	})
}

// tcpPair is two ends of a loopback TCP connection.
func tcpPair(t *testing.T) (*net.TCPConn, *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

// TestStreams: each end of stream crosses as a half-close, so the side that shut its sending
// side still reads the whole reply, and no abort is called; a side that fails makes the splice
// call the other side's abort, once, and end.
func TestStreams(t *testing.T) {
	a, aPeer := tcpPair(t)
	b, bPeer := tcpPair(t)
	var abortedA, abortedB atomic.Int32
	done := make(chan struct{})
	go func() {
		splice.Streams(a, b, func() { abortedA.Add(1) }, func() { abortedB.Add(1) })
		close(done)
	}()
	aPeer.Write([]byte("request"))
	aPeer.CloseWrite()
	if got, err := io.ReadAll(bPeer); err != nil || string(got) != "request" {
		t.Fatalf("b's peer read %q, %v", got, err)
	}
	bPeer.Write([]byte("the whole reply"))
	bPeer.CloseWrite()
	if got, err := io.ReadAll(aPeer); err != nil || string(got) != "the whole reply" {
		t.Fatalf("a's peer read %q, %v", got, err)
	}
	<-done
	if abortedA.Load() != 0 || abortedB.Load() != 0 {
		t.Fatalf("aborts called %d, %d on a clean end", abortedA.Load(), abortedB.Load())
	}

	a, aPeer = tcpPair(t)
	b, bPeer = tcpPair(t)
	done = make(chan struct{})
	go func() {
		splice.Streams(a, b, func() { abortedA.Add(1) }, func() { abortedB.Add(1) })
		close(done)
	}()
	bPeer.SetLinger(0)
	bPeer.Close() // b fails: a is told
	<-done
	if abortedA.Load() != 1 || abortedB.Load() != 0 {
		t.Fatalf("after b failed: aborts of a %d, of b %d; want 1 and 0", abortedA.Load(), abortedB.Load())
	}
	if _, err := aPeer.Read(make([]byte, 1)); err == nil {
		t.Fatal("a is still open")
	}
}

// udpPair is two UDP sockets on loopback, each connected to the other.
func udpPair(t *testing.T) (x, y *net.UDPConn) {
	t.Helper()
	lx, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	y, err = net.DialUDP("udp", nil, lx.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	lx.Close()
	x, err = net.DialUDP("udp", lx.LocalAddr().(*net.UDPAddr), y.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	return x, y
}

// TestDatagramsTooLong: a datagram longer than the splice's size is dropped whole, each way,
// never passed on cut short; the next one passes.
func TestDatagramsTooLong(t *testing.T) {
	a, aPeer := udpPair(t)
	b, bPeer := udpPair(t)
	done := make(chan struct{})
	go func() {
		splice.Datagrams(a, b, time.Minute, 1000, nil)
		close(done)
	}()
	defer func() { aPeer.Close(); bPeer.Close(); a.Close(); <-done }()
	for _, c := range []struct{ from, to *net.UDPConn }{{aPeer, bPeer}, {bPeer, aPeer}} {
		if _, err := c.from.Write(make([]byte, 1001)); err != nil {
			t.Fatal(err)
		}
		ok := make([]byte, 1000)
		ok[0] = 7
		if _, err := c.from.Write(ok); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 2000)
		c.to.SetReadDeadline(time.Now().Add(time.Minute))
		n, err := c.to.Read(buf)
		if err != nil || n != 1000 || buf[0] != 7 {
			t.Fatalf("read %d bytes (first %d), %v: want the 1000-byte datagram, the 1001-byte one dropped", n, buf[0], err)
		}
	}
}
