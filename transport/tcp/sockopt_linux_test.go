package tcp

import (
	"net"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// maxPacing reads a connection's SO_MAX_PACING_RATE.
func maxPacing(t *testing.T, c net.Conn) uint64 {
	t.Helper()
	rc, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var v uint64
	var serr error
	rc.Control(func(fd uintptr) {
		var ti *unix.TCPInfo
		ti, serr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
		if serr == nil {
			v = ti.Max_pacing_rate
		}
	})
	if serr != nil {
		t.Fatal(serr)
	}
	return v
}

// Dialed and accepted sockets pace (SO_MAX_PACING_RATE set, to no real limit), unless told
// not to; the kernel's "unlimited" leaves pacing off.
func TestSocketsPace(t *testing.T) {
	for _, c := range []struct {
		name string
		opts []Option
		want uint64
	}{
		{"default", nil, paceAny},
		{"NoPacing", []Option{NoPacing()}, ^uint64(0)},
	} {
		ln, err := Listen("127.0.0.1:0", c.opts...)
		if err != nil {
			t.Fatal(err)
		}
		acc := make(chan net.Conn, 1)
		go func() {
			a, err := ln.Accept()
			if err != nil {
				a = nil
			}
			acc <- a
		}()
		d, err := Dialer(ln.Addr().String(), c.opts...)(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		a := <-acc
		if a == nil {
			t.Fatal("accept failed")
		}
		if got := maxPacing(t, d); got != c.want {
			t.Errorf("%s: dialed socket's SO_MAX_PACING_RATE is %#x, want %#x", c.name, got, c.want)
		}
		if got := maxPacing(t, a); got != c.want {
			t.Errorf("%s: accepted socket's SO_MAX_PACING_RATE is %#x, want %#x", c.name, got, c.want)
		}
		d.Close()
		a.Close()
		ln.Close()
	}
}
