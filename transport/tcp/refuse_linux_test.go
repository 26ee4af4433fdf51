package tcp_test

import (
	"context"
	"io"
	"net"
	"testing"
	"time"

	"github.com/rendr-go/rendr/transport"
	"github.com/rendr-go/rendr/transport/tcp"
)

// dialFrom connects from a local address to addr, bounded by d.
func dialFrom(local, addr string, d time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	dl := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
	return dl.DialContext(ctx, "tcp", addr)
}

// A refused host's SYNs are dropped in the kernel, by a socket filter (only Linux has them):
// its dial never connects while the refusal lasts, other hosts connect, a connection accepted
// before goes on, and once the refusal ends the host connects again.
func TestRefuseSource(t *testing.T) {
	ln, err := tcp.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	addr := ln.Addr().String()
	accepted := make(chan net.Conn, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}
	}()
	before, err := dialFrom("127.0.0.2", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer before.Close()
	server := <-accepted
	defer server.Close()

	r, ok := ln.(transport.SourceRefuser)
	if !ok {
		t.Fatalf("%T is not a transport.SourceRefuser", ln)
	}
	r.RefuseSource(&net.TCPAddr{IP: net.ParseIP("127.0.0.2"), Port: 1}, time.Minute)
	if c, err := dialFrom("127.0.0.2", addr, 300*time.Millisecond); err == nil {
		c.Close()
		t.Fatal("a refused host connected")
	}
	other, err := dialFrom("127.0.0.3", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("another host: %v", err)
	}
	other.Close()
	// The connection from before the refusal still carries bytes both ways.
	if _, err := before.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(server, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("the connection accepted before: %q, %v", buf, err)
	}
	// A refusal ends: a host refused for a moment connects again.
	r.RefuseSource(&net.TCPAddr{IP: net.ParseIP("127.0.0.4"), Port: 1}, 100*time.Millisecond)
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := dialFrom("127.0.0.4", addr, time.Second)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still refused long after the refusal ended: %v", err)
		}
	}
}
