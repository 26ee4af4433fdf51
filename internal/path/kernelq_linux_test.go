package path

import (
	"io"
	"net"
	"testing"
	"time"
)

// Over a real TCP connection the kernel's reading comes through: a round trip, a segment
// size, a rate once data was acknowledged, when bytes were acknowledged; and nothing for a carrier that is not TCP.
func TestKernelQueueReadsTCP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	acc := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(acc)
			return
		}
		acc <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	peer, ok := <-acc
	if !ok {
		t.Fatal("accept failed")
	}
	defer peer.Close()
	go io.Copy(io.Discard, peer)
	k := newKernelQueue(c)
	if k.read == nil {
		t.Fatal("no TCP_INFO reading on a TCP connection")
	}
	if _, err := c.Write(make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		info, ok := k.read()
		if ok && info.minRTT > 0 && info.rate > 0 && info.mss > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("reading %+v, %v: no round trip, rate or segment size after 1 MiB", info, ok)
		}
		time.Sleep(time.Millisecond)
	}
	if _, ok := k.arrival(0, 1<<10, time.Now()); !ok {
		t.Fatal("no arrival estimate over a measured TCP connection")
	}
	// The peer's kernel acknowledged the megabyte: when, and that nothing is left in flight.
	for {
		now := time.Now()
		at, all := k.delivered(now)
		if all && !at.IsZero() && !at.After(now) {
			if info, _ := k.read(); info.acked < 1<<20 {
				t.Fatalf("all delivered with %d bytes acknowledged of 1 MiB", info.acked)
			}
			break
		}
		if now.After(deadline) {
			t.Fatalf("delivered %v, all %v: the 1 MiB was never all acknowledged", at, all)
		}
		time.Sleep(time.Millisecond)
	}
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if newKernelQueue(a).read != nil {
		t.Fatal("a reading for a carrier that is not a kernel TCP socket")
	}
}
