package netlab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"
)

// newLab skips when the machine cannot host a lab, and closes the lab at
// the end of the test, checking its namespaces are gone.
func newLab(t *testing.T, cfg Config) *Lab {
	t.Helper()
	if err := Available(); err != nil {
		t.Skip(err)
	}
	t.Parallel()
	l, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Error(err)
		}
	})
	return l
}

func netnsList(t *testing.T) string {
	t.Helper()
	out, err := run("", "ip", "netns", "list")
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// hasNS reports whether a namespace named exactly name is listed.
func hasNS(list, name string) bool {
	for _, line := range strings.Split(list, "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[0] == name {
			return true
		}
	}
	return false
}

func TestNewCloseLeavesNothing(t *testing.T) {
	l := newLab(t, Config{Paths: 3, Name: "nlt-close"})
	if l.Paths() != 3 {
		t.Fatalf("Paths() = %d, want 3", l.Paths())
	}
	list := netnsList(t)
	for _, ns := range []string{l.ClientNS(), l.ServerNS()} {
		if !hasNS(list, ns) {
			t.Fatalf("namespace %s missing after New; ip netns list:\n%s", ns, list)
		}
	}
	out, err := l.Exec(Server, "ip", "-br", "addr", "show", "dev", l.ServerIface(2))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), l.ServerAddr(2).String()+"/24") {
		t.Fatalf("server iface of path 2 lacks %s: %s", l.ServerAddr(2), out)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	list = netnsList(t)
	for _, ns := range []string{l.ClientNS(), l.ServerNS()} {
		if hasNS(list, ns) {
			t.Fatalf("namespace %s left behind after Close; ip netns list:\n%s", ns, list)
		}
	}
	if err := l.Blackhole(0, true); !errors.Is(err, errClosed) {
		t.Fatalf("Blackhole after Close = %v, want errClosed", err)
	}
}

func TestNewCleansUpOnFailure(t *testing.T) {
	if err := Available(); err != nil {
		t.Skip(err)
	}
	t.Parallel()
	injected := errors.New("injected")
	for _, stage := range []string{"links", "nft", "rate"} {
		prefix := "nlt-fail-" + stage
		l, err := build(Config{RateMbit: []int{10}, Name: prefix}, func(s string) error {
			if s == stage {
				return injected
			}
			return nil
		})
		if !errors.Is(err, injected) || l != nil {
			t.Fatalf("stage %s: build = %v, %v; want nil, injected", stage, l, err)
		}
		if list := netnsList(t); strings.Contains(list, prefix+"-") {
			t.Fatalf("stage %s: namespaces left behind:\n%s", stage, list)
		}
	}
	for _, cfg := range []Config{{Paths: -1}, {Paths: MaxPaths + 1}, {Paths: 1, RateMbit: []int{1, 2}}, {RateMbit: []int{-1}}, {Name: "bad name"}} {
		if _, err := New(cfg); err == nil {
			t.Fatalf("New(%+v) succeeded, want error", cfg)
		}
	}
}

func TestAddressesDistinctAcrossLabs(t *testing.T) {
	a := newLab(t, Config{})
	b, err := New(Config{Paths: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	seen := map[netip.Prefix]bool{}
	for _, l := range []*Lab{a, b} {
		for i := range l.Paths() {
			p := netip.PrefixFrom(l.ClientAddr(i), 24).Masked()
			if seen[p] || !netip.MustParsePrefix("10.0.0.0/8").Contains(p.Addr()) {
				t.Fatalf("subnet %s reused or outside 10/8", p)
			}
			seen[p] = true
		}
	}
}

func TestExecError(t *testing.T) {
	l := newLab(t, Config{Paths: 1})
	_, err := l.Exec(Client, "ip", "link", "show", "dev", "nosuchdev")
	if err == nil || !strings.Contains(err.Error(), "nosuchdev") || !strings.Contains(err.Error(), "not exist") {
		t.Fatalf("Exec error = %v; want command line and output", err)
	}
}

func TestEchoEachPath(t *testing.T) {
	l := newLab(t, Config{Paths: 3})
	for i := range l.Paths() {
		s := startEcho(t, l, i)
		c, err := dialPath(l, i, s.addr(), 2*time.Second)
		if err != nil {
			t.Fatalf("path %d: %v", i, err)
		}
		defer c.Close()
		local := c.LocalAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()
		remote := c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()
		if local != l.ClientAddr(i) || remote != l.ServerAddr(i) {
			t.Fatalf("path %d: conn %s -> %s, want %s -> %s", i, local, remote, l.ClientAddr(i), l.ServerAddr(i))
		}
		if err := echo(c, fmt.Sprintf("hello path %d", i), 2*time.Second); err != nil {
			t.Fatalf("path %d: %v", i, err)
		}
	}
	// The server address must not exist in the test process's namespace:
	// proof that the sockets really live in the lab.
	if _, err := net.Listen("tcp", netip.AddrPortFrom(l.ServerAddr(0), 0).String()); err == nil {
		t.Fatal("lab address is bindable outside the lab")
	}
}

func TestBlackhole(t *testing.T) {
	const short = 300 * time.Millisecond
	l := newLab(t, Config{Paths: 2})
	s0, s1 := startEcho(t, l, 0), startEcho(t, l, 1)
	c0, err := dialPath(l, 0, s0.addr(), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c0.Close()
	if err := echo(c0, "before", 2*time.Second); err != nil {
		t.Fatal(err)
	}

	if err := l.Blackhole(0, true); err != nil {
		t.Fatal(err)
	}
	if err := echo(c0, "during", short); !isTimeout(err) {
		t.Fatalf("echo on blackholed path: %v, want timeout", err)
	}
	if c, err := dialPath(l, 0, s0.addr(), short); err == nil {
		c.Close()
		t.Fatal("dial on blackholed path succeeded")
	} else if !isTimeout(err) {
		t.Fatalf("dial on blackholed path: %v, want timeout", err)
	}
	checkPathWorks(t, l, 1, s1)

	// Blackholing a second path and lifting it again must leave the
	// first one blackholed.
	if err := l.Blackhole(1, true); err != nil {
		t.Fatal(err)
	}
	if c, err := dialPath(l, 1, s1.addr(), short); err == nil {
		c.Close()
		t.Fatal("dial on blackholed path 1 succeeded")
	}
	if err := l.Blackhole(1, false); err != nil {
		t.Fatal(err)
	}
	checkPathWorks(t, l, 1, s1)
	if c, err := dialPath(l, 0, s0.addr(), short); err == nil {
		c.Close()
		t.Fatal("path 0 no longer blackholed after lifting path 1")
	}

	if err := l.Blackhole(0, false); err != nil {
		t.Fatal(err)
	}
	checkPathWorks(t, l, 0, s0)
}

func TestSetRate(t *testing.T) {
	const size = 2 << 20
	l := newLab(t, Config{Paths: 2, RateMbit: []int{0, 10}})
	if err := l.SetRate(0, 10); err != nil {
		t.Fatal(err)
	}
	for _, side := range []Side{Client, Server} {
		out, err := l.Exec(side, "tc", "qdisc", "show")
		if err != nil {
			t.Fatal(err)
		}
		if n := strings.Count(string(out), "tbf"); n != 2 {
			t.Fatalf("%v: %d tbf qdiscs, want 2:\n%s", side, n, out)
		}
	}
	mbit := transfer(t, l, 0, size)
	t.Logf("shaped at 10 Mbit/s: measured %.1f Mbit/s", mbit)
	if mbit < 5 || mbit > 20 {
		t.Fatalf("throughput %.1f Mbit/s outside 5..20 for a 10 Mbit/s tbf", mbit)
	}

	// Removing the shaping, twice to check it is idempotent, must make
	// the same transfer clearly faster.
	for range 2 {
		if err := l.SetRate(1, 0); err != nil {
			t.Fatal(err)
		}
	}
	mbit = transfer(t, l, 1, size)
	t.Logf("unshaped: measured %.1f Mbit/s", mbit)
	if mbit < 40 {
		t.Fatalf("unshaped throughput %.1f Mbit/s, want well above the 10 Mbit/s shaping", mbit)
	}
}

func TestLoss(t *testing.T) {
	const count = 200
	l := newLab(t, Config{Paths: 2})
	if err := l.Loss(0, 50); err != nil {
		t.Fatal(err)
	}
	if n := sendUDP(t, l, 0, count); n < count*20/100 || n > count*80/100 {
		t.Fatalf("50%% loss: %d of %d datagrams arrived, want 20%%..80%%", n, count)
	} else {
		t.Logf("50%% loss: %d of %d arrived", n, count)
	}
	if n := sendUDP(t, l, 1, count); n != count {
		t.Fatalf("lossless path 1: %d of %d arrived", n, count)
	}
	if err := l.Loss(0, 0); err != nil {
		t.Fatal(err)
	}
	if n := sendUDP(t, l, 0, count); n != count {
		t.Fatalf("after removing loss: %d of %d arrived", n, count)
	}
	if err := l.Loss(0, 101); err == nil {
		t.Fatal("Loss(0, 101) succeeded")
	}
}

func TestEnableMPTCP(t *testing.T) {
	if _, err := os.Stat("/proc/sys/net/mptcp/enabled"); err != nil {
		t.Skip("kernel without MPTCP:", err)
	}
	l := newLab(t, Config{Paths: 3})
	if err := l.EnableMPTCP(); err != nil {
		t.Fatal(err)
	}
	for _, side := range []Side{Client, Server} {
		out, err := l.Exec(side, "cat", "/proc/sys/net/mptcp/enabled")
		if err != nil || strings.TrimSpace(string(out)) != "1" {
			t.Fatalf("%v: mptcp enabled = %q, %v", side, out, err)
		}
	}
	out, err := l.Exec(Client, "ip", "mptcp", "endpoint", "show")
	if err != nil {
		t.Fatal(err)
	}
	for i := range l.Paths() {
		if has := strings.Contains(string(out), l.ClientAddr(i).String()+" "); has != (i >= 1) {
			t.Fatalf("endpoint for path %d present=%v:\n%s", i, has, out)
		}
	}

	var lc net.ListenConfig
	lc.SetMultipathTCP(true)
	ln, err := l.ListenConfig(Server, &lc, "tcp", netip.AddrPortFrom(l.ServerAddr(0), 0).String())
	if err != nil {
		t.Fatal(err)
	}
	s := &echoServer{ln: ln}
	s.wg.Add(1)
	accepted := make(chan net.Conn, 1)
	go func() {
		defer s.wg.Done()
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	t.Cleanup(s.close)
	d := &net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(l.ClientAddr(0), 0))}
	d.SetMultipathTCP(true)
	c, err := l.Dialer(Client, d)(context.Background(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sc, ok := <-accepted
	if !ok {
		t.Fatal("accept failed")
	}
	defer sc.Close()
	for _, conn := range []net.Conn{c, sc} {
		if mp, err := conn.(*net.TCPConn).MultipathTCP(); err != nil || !mp {
			t.Fatalf("%v -> %v: MultipathTCP = %v, %v", conn.LocalAddr(), conn.RemoteAddr(), mp, err)
		}
	}
}

// A lab carries packets from the moment New returns: a veth that the kernel has not yet
// switched on drops what is sent, and a burst of datagrams has no retransmission to hide it.
func TestFirstPacketsArrive(t *testing.T) {
	const count = 50
	l := newLab(t, Config{Paths: 2, Delay: []DelayConfig{{}, {Delay: time.Millisecond}}, Name: "nlt-first"})
	for i := range l.Paths() {
		if n := sendUDP(t, l, i, count); n != count {
			t.Fatalf("path %d: %d of %d datagrams sent right after New arrived\n%s", i, n, count, linkState(l))
		}
	}
}
