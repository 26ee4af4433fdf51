package netlab

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// echoServer echoes on every accepted connection; close joins everything.
type echoServer struct {
	ln    net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns []net.Conn
}

func startEcho(t *testing.T, l *Lab, i int) *echoServer {
	t.Helper()
	ln, err := l.Listen(Server, "tcp", netip.AddrPortFrom(l.ServerAddr(i), 0).String())
	if err != nil {
		t.Fatal(err)
	}
	s := &echoServer{ln: ln}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns = append(s.conns, c)
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				io.Copy(c, c)
			}()
		}
	}()
	t.Cleanup(s.close)
	return s
}

func (s *echoServer) close() {
	s.ln.Close()
	s.mu.Lock()
	for _, c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

func (s *echoServer) addr() string { return s.ln.Addr().String() }

// dialPath dials from the client namespace, bound to path i's address.
func dialPath(l *Lab, i int, addr string, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	d := &net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(l.ClientAddr(i), 0))}
	return l.Dialer(Client, d)(ctx, "tcp", addr)
}

func echo(c net.Conn, msg string, timeout time.Duration) error {
	c.SetDeadline(time.Now().Add(timeout))
	if _, err := io.WriteString(c, msg); err != nil {
		return err
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		return err
	}
	if string(buf) != msg {
		return fmt.Errorf("echo got %q, want %q", buf, msg)
	}
	return nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func checkPathWorks(t *testing.T, l *Lab, i int, s *echoServer) {
	t.Helper()
	c, err := dialPath(l, i, s.addr(), 2*time.Second)
	if err != nil {
		t.Fatalf("path %d: %v", i, err)
	}
	defer c.Close()
	if err := echo(c, "works", 2*time.Second); err != nil {
		t.Fatalf("path %d: %v", i, err)
	}
}

// transfer sends n bytes over path i and returns the throughput in Mbit/s,
// measured until the receiver has acknowledged the last byte.
func transfer(t *testing.T, l *Lab, i, n int) float64 {
	t.Helper()
	ln, err := l.Listen(Server, "tcp", netip.AddrPortFrom(l.ServerAddr(i), 0).String())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Add(1)
	go func() {
		defer wg.Done()
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		got, _ := io.Copy(io.Discard, c)
		binary.Write(c, binary.BigEndian, got)
	}()

	c, err := dialPath(l, i, ln.Addr().String(), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	start := time.Now()
	if _, err := io.Copy(c, io.LimitReader(zeros{}, int64(n))); err != nil {
		t.Fatal(err)
	}
	c.(*net.TCPConn).CloseWrite()
	var got int64
	if err := binary.Read(c, binary.BigEndian, &got); err != nil {
		t.Fatal(err)
	}
	elapsed := time.Since(start)
	if got != int64(n) {
		t.Fatalf("receiver got %d bytes, want %d", got, n)
	}
	return float64(n) * 8 / elapsed.Seconds() / 1e6
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// sendUDP sends count datagrams over path i and returns how many arrived.
func sendUDP(t *testing.T, l *Lab, i, count int) int {
	t.Helper()
	srv, cli, closeBoth := udpPair(t, l, i)
	defer closeBoth()

	got := make(chan int, 1)
	go func() {
		n := 0
		buf := make([]byte, 64)
		overall := time.Now().Add(3 * time.Second)
		for n < count && time.Now().Before(overall) {
			// Stop once the line has been quiet for a while: the
			// rest were dropped.
			srv.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			m, _, err := srv.ReadFrom(buf)
			if err != nil {
				break
			}
			if bytes.HasPrefix(buf[:m], []byte("netlab")) {
				n++
			}
		}
		got <- n
	}()
	for k := range count {
		if _, err := cli.WriteTo(fmt.Appendf(nil, "netlab %d", k), srv.LocalAddr()); err != nil {
			t.Errorf("send %d: %v", k, err)
			break
		}
	}
	return <-got
}

// udpPair opens a UDP socket on each end of path i; closeBoth closes them.
func udpPair(t *testing.T, l *Lab, i int) (srv, cli net.PacketConn, closeBoth func()) {
	t.Helper()
	srv, err := l.ListenPacket(Server, "udp", netip.AddrPortFrom(l.ServerAddr(i), 0).String())
	if err != nil {
		t.Fatal(err)
	}
	cli, err = l.ListenPacket(Client, "udp", netip.AddrPortFrom(l.ClientAddr(i), 0).String())
	if err != nil {
		srv.Close()
		t.Fatal(err)
	}
	return srv, cli, func() { srv.Close(); cli.Close() }
}
