package path

import (
	"io"
	"net"
	"testing"
	"time"
)

// TestUnread: bytes the peer sent that wait in the socket are seen as unread until they are
// read, on TCP and UDP; a connection with no socket of its own (net.Pipe) is never unread.
func TestUnread(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	u1, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer u1.Close()
	u2, err := net.DialUDP("udp", nil, u1.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer u2.Close()
	for _, pair := range []struct {
		name  string
		write net.Conn
		read  net.Conn
	}{{"tcp", s, c}, {"udp", u2, u1}} {
		if unread(pair.read) {
			t.Fatalf("%s: unread before anything was sent", pair.name)
		}
		if _, err := pair.write.Write([]byte("heard")); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for !unread(pair.read) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: 5 bytes sent, never seen waiting", pair.name)
			}
			time.Sleep(time.Millisecond)
		}
		if _, err := io.ReadFull(pair.read, make([]byte, 5)); err != nil {
			t.Fatal(err)
		}
		if unread(pair.read) {
			t.Fatalf("%s: unread after everything was read", pair.name)
		}
	}
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	go a.Write([]byte("x"))
	if unread(b) {
		t.Fatal("a pipe has no socket: never unread")
	}
	b.Read(make([]byte, 1))
}
