//go:build linux

package tun_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	wgtun "golang.zx2c4.com/wireguard/tun"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/internal/netlab"
	"github.com/rendr-go/rendr/internal/testkit"
	"github.com/rendr-go/rendr/l3"
	"github.com/rendr-go/rendr/tun"
)

// The lab: a client namespace with two uplinks to a server namespace. The server namespace
// also holds the "far network" 10.99.0.0/16 (its 10.99.0.1 on its loopback, and no route to
// 10.99.2.0/24), which the client reaches only through its TUN: the ingress turns each
// connection into a flow, over the two uplinks, and the listener's Egress dials it in the
// server namespace.
const (
	farAddr  = "10.99.0.1"
	farNet   = "10.99.0.0/16"
	deadNet  = "10.99.2.0/24" // no route to it in the server namespace
	farAddr6 = "fd99::1"
	farNet6  = "fd99::/16"
	deadNet6 = "fd99:2::/64"
	tunAddr6 = "fd98::2/128"
	tunAddr  = "10.98.0.2/32"
	tunName  = "rtun0"
	tunMTU   = 1500
	waitLong = time.Minute
)

type vpnLab struct {
	lab *netlab.Lab
	in  *tun.Ingress
	d   *rendr.Dialer
	ln  *rendr.Listener
}

// hangNet is a part of the far network whose destinations never answer: the listener's
// Egress waits on them until it is given up on.
var hangNet = netip.MustParsePrefix("10.99.0.128/25")

func newVPNLab(t *testing.T, edit func(*tun.Config)) *vpnLab {
	lab := testkit.NetLab(t, netlab.Config{Paths: 2, Name: "rtun"})
	for _, args := range [][]string{
		{"ip", "addr", "add", farAddr + "/32", "dev", "lo"},
		{"ip", "route", "add", "unreachable", deadNet},
		{"ip", "-6", "addr", "add", farAddr6 + "/128", "dev", "lo", "nodad"},
		{"ip", "-6", "route", "add", "unreachable", deadNet6},
	} {
		if _, err := lab.Exec(netlab.Server, args[0], args[1:]...); err != nil {
			t.Fatal(err)
		}
	}
	srv, cli := rendr.MustNewKey(), rendr.MustNewKey()
	var srcs []net.Listener
	for i := range lab.Paths() {
		l, err := lab.Listen(netlab.Server, "tcp", netip.AddrPortFrom(lab.ServerAddr(i), 0).String())
		if err != nil {
			t.Fatal(err)
		}
		srcs = append(srcs, l)
	}
	dialFar := lab.Dialer(netlab.Server, &net.Dialer{})
	egress := func(ctx context.Context, _ rendr.PublicKey, id l3.Identity) (net.Conn, error) {
		if hangNet.Contains(id.Dst.Addr()) {
			<-ctx.Done()
			return nil, ctx.Err()
		}
		network := "tcp"
		if id.Proto == l3.UDP {
			network = "udp"
		}
		return dialFar(ctx, network, id.Dst.String())
	}
	ln, err := rendr.Listen(rendr.ListenConfig{Key: srv, Peers: []rendr.PublicKey{cli.Public()}, Egress: egress}, srcs...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var paths []*rendr.Target
	for i := range lab.Paths() {
		dial := lab.Dialer(netlab.Client, &net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(lab.ClientAddr(i), 0))})
		addr := srcs[i].Addr().String()
		paths = append(paths, rendr.Path(testkit.PathName(i), func(ctx context.Context) (net.Conn, error) {
			return dial(ctx, "tcp", addr)
		}))
	}
	d, err := rendr.NewDialer(rendr.DialerConfig{Key: cli, PeerKey: srv.Public(), Root: rendr.Selector("root", paths...)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	dev, err := lab.Open(netlab.Client, func() (io.Closer, error) { return tun.Open(tunName, tunMTU) })
	if err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"ip", "addr", "add", tunAddr, "dev", tunName},
		{"ip", "-6", "addr", "add", tunAddr6, "dev", tunName, "nodad"},
		{"ip", "link", "set", tunName, "up"},
		{"ip", "route", "add", farNet, "dev", tunName},
		{"ip", "-6", "route", "add", farNet6, "dev", tunName},
	} {
		if _, err := lab.Exec(netlab.Client, args[0], args[1:]...); err != nil {
			dev.Close()
			t.Fatal(err)
		}
	}
	cfg := tun.Config{Device: dev.(wgtun.Device), Dialer: d, MTU: tunMTU}
	if edit != nil {
		edit(&cfg)
	}
	in, err := tun.Start(cfg)
	if err != nil {
		dev.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { in.Close() })
	return &vpnLab{lab: lab, in: in, d: d, ln: ln}
}

// TestNetnsIngressTCP: a program in the client namespace connects through the TUN to a server
// in the far network. 16 MiB go each way, exact; the client then shuts its sending side and
// still reads the server's last reply whole. Meanwhile the active uplink is blackholed, and
// the program's connection sees no error. A connection to a closed port is refused (an RST),
// and one to an address nothing answers for is not. It runs with the device's offloads on
// (the kernel's and the stack's segments cross the device whole: counted) and off (none do).
func TestNetnsIngressTCP(t *testing.T) {
	for _, offload := range []bool{true, false} {
		t.Run(map[bool]string{true: "offload", false: "no-offload"}[offload], func(t *testing.T) {
			testIngressTCP(t, offload)
		})
	}
}

func testIngressTCP(t *testing.T, offload bool) {
	v := newVPNLab(t, func(c *tun.Config) { c.NoOffload = !offload })
	far, err := v.lab.Listen(netlab.Server, "tcp", farAddr+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer far.Close()
	const total = 16 << 20
	tail := []byte("the last words, after the client's half-close")
	served := make(chan [sha256.Size]byte, 1)
	go func() {
		c, err := far.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		streamed := make(chan struct{})
		go func() { // the server's stream; its last words follow once the client is done
			defer close(streamed)
			b := make([]byte, 64<<10)
			rng := rand.New(rand.NewPCG(9, 9))
			for n := 0; n < total; n += len(b) {
				fill(b, rng)
				if _, err := c.Write(b); err != nil {
					return
				}
			}
		}()
		h := sha256.New()
		io.Copy(h, c)
		served <- [sha256.Size]byte(h.Sum(nil))
		<-streamed
		c.Write(tail)
		c.(*net.TCPConn).CloseWrite()
	}()
	dialClient := v.lab.Dialer(netlab.Client, &net.Dialer{})
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	c, err := dialClient(ctx, "tcp", far.Addr().String())
	if err != nil {
		t.Fatalf("connect through the TUN: %v", err)
	}
	defer c.Close()
	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(c)
		got <- b
	}()
	h := sha256.New()
	b := make([]byte, 64<<10)
	rng := rand.New(rand.NewPCG(8, 8))
	killed := false
	for n := 0; n < total; n += len(b) {
		fill(b, rng)
		h.Write(b)
		if _, err := c.Write(b); err != nil {
			t.Fatalf("write after %d bytes: %v", n, err)
		}
		if !killed && n >= total/3 {
			active := testkit.Active(v.d.Status())
			if err := v.lab.Blackhole(active, true); err != nil {
				t.Fatal(err)
			}
			killed = true
		}
	}
	c.(*net.TCPConn).CloseWrite()
	var back []byte
	select {
	case back = <-got:
	case <-time.After(waitLong):
		t.Fatalf("the reply did not end: %s", testkit.Describe(v.d.Status()))
	}
	if s := <-served; s != [sha256.Size]byte(h.Sum(nil)) {
		t.Fatal("the server received other bytes than the client sent")
	}
	want := sha256.New()
	rng = rand.New(rand.NewPCG(9, 9))
	for n := 0; n < total; n += len(b) {
		fill(b, rng)
		want.Write(b)
	}
	if len(back) != total+len(tail) || [sha256.Size]byte(want.Sum(nil)) != sha256.Sum256(back[:total]) || !bytes.Equal(back[total:], tail) {
		t.Fatalf("the client read %d bytes, want %d and the last words", len(back), total+len(tail))
	}
	if st := v.d.Status(); st.Migrations < 2 {
		t.Errorf("no move off the blackholed uplink: %s", testkit.Describe(st))
	}

	// A closed port: refused, as it would be without the tunnel.
	closed, err := v.lab.Listen(netlab.Server, "tcp", farAddr+":0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := closed.Addr().String()
	closed.Close()
	if _, err := dialClient(ctx, "tcp", closedAddr); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("a closed port through the TUN: %v, want connection refused", err)
	}
	// A network the far side has no route to: ICMP host unreachable, at once.
	if _, err := dialClient(ctx, "tcp", "10.99.2.1:80"); !errors.Is(err, syscall.EHOSTUNREACH) {
		t.Errorf("an unreachable network through the TUN: %v, want no route to host", err)
	}
	// The counters go up once the reset or the error is written, which may be after the
	// program has seen it.
	testkit.Wait(waitLong, func() bool { st := v.in.Stats(); return st.TCPReset >= 1 && st.ICMPErrors >= 1 })
	st := v.in.Stats()
	t.Logf("ingress: %+v", st)
	if st.TCPOpened != 1 || st.TCPReset != 1 || st.ICMPErrors != 1 || st.TCPUnanswered != 0 {
		t.Errorf("ingress stats %+v, want 1 opened, 1 reset and 1 ICMP error", st)
	}
	if offload && (!st.Offload || st.SegmentsIn == 0 || st.SegmentsOut == 0) {
		t.Errorf("offloads on, yet no segment of more than one packet crossed the device each way: %+v", st)
	}
	if !offload && (st.Offload || st.SegmentsIn != 0 || st.SegmentsOut != 0) {
		t.Errorf("offloads off, yet segments crossed the device: %+v", st)
	}
}

// udpEcho sends msg on c until it comes back (a datagram may be lost, or wait behind its
// flow's opening), at most 20 times a second apart, and reports whether it did.
func udpEcho(c net.Conn, msg []byte) bool {
	buf := make([]byte, 2048)
	for range 20 {
		c.Write(msg)
		c.SetReadDeadline(time.Now().Add(time.Second))
		if n, err := c.Read(buf); err == nil && bytes.Equal(buf[:n], msg) {
			return true
		}
	}
	return false
}

// TestNetnsIngressUDP: datagrams through the TUN to a UDP echo server in the far network come
// back, each.
func TestNetnsIngressUDP(t *testing.T) {
	v := newVPNLab(t, nil)
	pc, err := v.lab.ListenPacket(netlab.Server, "udp", farAddr+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	testkit.EchoUDP(pc)
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	c, err := v.lab.Dialer(netlab.Client, &net.Dialer{})(ctx, "udp", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := range 20 {
		if !udpEcho(c, fmt.Appendf(nil, "datagram %d", i)) {
			t.Fatalf("no echo of datagram %d: %+v", i, v.in.Stats())
		}
	}
	if st := v.in.Stats(); st.UDPOpened != 1 || st.UDPActive != 1 {
		t.Errorf("ingress stats %+v, want one UDP flow", st)
	}

	// A closed port: the far side's ICMP port unreachable comes back as one, and the
	// program's connected socket reads "connection refused".
	closed, err := v.lab.ListenPacket(netlab.Server, "udp", farAddr+":0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := closed.LocalAddr().String()
	closed.Close()
	c2, err := v.lab.Dialer(netlab.Client, &net.Dialer{})(ctx, "udp", closedAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	for try := 0; ; try++ {
		if try == 50 {
			t.Fatalf("50 datagrams to a closed port and no refusal: %+v", v.in.Stats())
		}
		c2.Write([]byte("anyone?"))
		c2.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		_, err := c2.Read(make([]byte, 64))
		if errors.Is(err, syscall.ECONNREFUSED) {
			break
		}
		if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("reading from a closed port: %v, want connection refused", err)
		}
	}
	testkit.Wait(waitLong, func() bool { return v.in.Stats().ICMPErrors >= 1 }) // counted once written
	if st := v.in.Stats(); st.ICMPErrors != 1 {
		t.Errorf("ingress stats %+v, want 1 ICMP error", st)
	}
}

// TestNetnsIngressSynFlood: 300 connections at once from one program to 100 destinations that
// never answer. The SYNs being connected stay within MaxPendingPerSource (16) and MaxPending
// (32); the others are dropped and counted, and the program's TCP sends them again. When the
// flood has given up, nothing is left pending, and a connection to a server that answers is
// made at once.
func TestNetnsIngressSynFlood(t *testing.T) {
	v := newVPNLab(t, func(c *tun.Config) {
		c.MaxPending, c.MaxPendingPerSource, c.ConnectTimeout = 32, 16, 2*time.Second
	})
	dial := v.lab.Dialer(netlab.Client, &net.Dialer{Timeout: 3 * time.Second})
	var most atomic.Int64
	watching := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for {
			if p := int64(v.in.Stats().TCPPending); p > most.Load() {
				most.Store(p)
			}
			select {
			case <-watching:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	var wg sync.WaitGroup
	for i := range 300 {
		dst := netip.AddrPortFrom(hangNet.Addr().Next(), 80)
		for range i % 100 {
			dst = netip.AddrPortFrom(dst.Addr().Next(), 80)
		}
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			if c, err := dial(ctx, "tcp", dst.String()); err == nil {
				c.Close()
				t.Errorf("a connection to %v, which never answers, was made", dst)
			}
		})
	}
	wg.Wait()
	close(watching)
	<-watched
	st := v.in.Stats()
	t.Logf("after the flood: most pending %d, %+v", most.Load(), st)
	if most.Load() > 16 || st.TCPSynDropped == 0 || st.TCPOpened != 0 {
		t.Errorf("most pending %d (bound 16), %d SYNs dropped, %d opened", most.Load(), st.TCPSynDropped, st.TCPOpened)
	}
	testkit.Wait(10*time.Second, func() bool { s := v.in.Stats(); return s.TCPPending == 0 && s.TCPActive == 0 })
	if s := v.in.Stats(); s.TCPPending != 0 || s.TCPActive != 0 {
		t.Fatalf("after the flood gave up: %d pending, %d active", s.TCPPending, s.TCPActive)
	}
	far, err := v.lab.Listen(netlab.Server, "tcp", farAddr+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer far.Close()
	go func() {
		if c, err := far.Accept(); err == nil {
			c.Write([]byte("hi"))
			c.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	c, err := v.lab.Dialer(netlab.Client, &net.Dialer{})(ctx, "tcp", far.Addr().String())
	if err != nil {
		t.Fatalf("a connection after the flood: %v", err)
	}
	defer c.Close()
	if b, err := io.ReadAll(c); err != nil || string(b) != "hi" {
		t.Fatalf("after the flood: read %q, %v", b, err)
	}
}

// TestNetnsIngressIPv6: the same through the TUN over IPv6 (the uplinks stay IPv4): a TCP
// connection carries 4 MiB each way exact, a UDP datagram is echoed, and a network the far
// side has no route to gives "no route to host" at once (ICMPv6 address unreachable).
func TestNetnsIngressIPv6(t *testing.T) {
	v := newVPNLab(t, nil)
	far, err := v.lab.Listen(netlab.Server, "tcp", "["+farAddr6+"]:0")
	if err != nil {
		t.Fatal(err)
	}
	defer far.Close()
	go func() {
		c, err := far.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		io.Copy(c, c) // echo, to the client's half-close
		c.(*net.TCPConn).CloseWrite()
	}()
	dial := v.lab.Dialer(netlab.Client, &net.Dialer{})
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	c, err := dial(ctx, "tcp", far.Addr().String())
	if err != nil {
		t.Fatalf("connect over IPv6 through the TUN: %v", err)
	}
	defer c.Close()
	data := make([]byte, 4<<20)
	fill(data, rand.New(rand.NewPCG(6, 6)))
	go func() {
		c.Write(data)
		c.(*net.TCPConn).CloseWrite()
	}()
	back, err := io.ReadAll(c)
	if err != nil || !bytes.Equal(back, data) {
		t.Fatalf("echo over IPv6: %d of %d bytes (%v), or they differ", len(back), len(data), err)
	}

	pc, err := v.lab.ListenPacket(netlab.Server, "udp", "["+farAddr6+"]:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	testkit.EchoUDP(pc)
	u, err := dial(ctx, "udp", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	if !udpEcho(u, []byte("v6?")) {
		t.Fatalf("no UDP echo over IPv6: %+v", v.in.Stats())
	}

	if _, err := dial(ctx, "tcp", "[fd99:2::1]:80"); !errors.Is(err, syscall.EHOSTUNREACH) {
		t.Errorf("an unreachable IPv6 network: %v, want no route to host", err)
	}
	testkit.Wait(waitLong, func() bool { return v.in.Stats().ICMPErrors >= 1 }) // counted once written
	if st := v.in.Stats(); st.TCPOpened != 1 || st.UDPOpened != 1 || st.ICMPErrors != 1 {
		t.Errorf("ingress stats %+v, want 1 TCP and 1 UDP flow, 1 ICMP error", st)
	}
}

// TestNetnsIngressResets: an RST crosses the tunnel both ways. The far server resets its
// connection: the program reads "connection reset by peer". The program resets its own: the
// far server's read fails the same way, not with an end of stream.
func TestNetnsIngressResets(t *testing.T) {
	v := newVPNLab(t, nil)
	far, err := v.lab.Listen(netlab.Server, "tcp", farAddr+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer far.Close()
	accepted := testkit.AcceptTCP(far)
	dial := v.lab.Dialer(netlab.Client, &net.Dialer{})
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()

	c, err := dial(ctx, "tcp", far.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	srv := <-accepted
	srv.SetLinger(0)
	srv.Close()
	c.SetReadDeadline(time.Now().Add(waitLong))
	if _, err := io.ReadAll(c); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("the far server's RST: the program read %v, want connection reset", err)
	}

	c2, err := dial(ctx, "tcp", far.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	srv2 := <-accepted
	defer srv2.Close()
	if _, err := c2.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(srv2, make([]byte, 5)); err != nil {
		t.Fatal(err)
	}
	c2.(*net.TCPConn).SetLinger(0)
	c2.Close()
	srv2.SetReadDeadline(time.Now().Add(waitLong))
	if _, err := io.ReadAll(srv2); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("the program's RST: the far server read %v, want connection reset", err)
	}
}

func fill(b []byte, rng *rand.Rand) {
	for i := 0; i+8 <= len(b); i += 8 {
		v := rng.Uint64()
		for j := range 8 {
			b[i+j] = byte(v >> (8 * j))
		}
	}
}

// TestNetnsIngressUDPFlood: with MaxUDP 8, one flow echoing, 100 more sockets send 3
// datagrams each to the far network. The flows open never pass 8 (one of them the first);
// every datagram of the 93 sockets that find no room is dropped and counted; and the first
// flow keeps echoing throughout.
func TestNetnsIngressUDPFlood(t *testing.T) {
	const maxUDP = 8
	v := newVPNLab(t, func(c *tun.Config) { c.MaxUDP = maxUDP })
	pc, err := v.lab.ListenPacket(netlab.Server, "udp", farAddr+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	testkit.EchoUDP(pc)
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	dial := v.lab.Dialer(netlab.Client, &net.Dialer{})
	first, err := dial(ctx, "udp", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	if !udpEcho(first, []byte("before")) {
		t.Fatalf("no echo before the flood: %+v", v.in.Stats())
	}
	most := 0
	for i := range 100 {
		c, err := dial(ctx, "udp", pc.LocalAddr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		for range 3 {
			c.Write(fmt.Appendf(nil, "flood %d", i))
		}
		most = max(most, v.in.Stats().UDPActive)
		if i%25 == 24 && !udpEcho(first, fmt.Appendf(nil, "during %d", i)) {
			t.Fatalf("the first flow stopped echoing during the flood: %+v", v.in.Stats())
		}
	}
	const refused = 3 * (100 - (maxUDP - 1))
	if !testkit.Wait(waitLong, func() bool {
		st := v.in.Stats()
		most = max(most, st.UDPActive)
		return st.UDPDropped >= refused
	}) {
		t.Fatalf("not every datagram past MaxUDP was counted: %+v, want %d dropped", v.in.Stats(), refused)
	}
	st := v.in.Stats()
	t.Logf("ingress: %+v; at most %d UDP flows open", st, most)
	if most > maxUDP || st.UDPOpened != maxUDP {
		t.Errorf("MaxUDP %d: at most %d open, %d opened, %d dropped", maxUDP, most, st.UDPOpened, st.UDPDropped)
	}
	if !udpEcho(first, []byte("after")) {
		t.Fatalf("the first flow stopped echoing after the flood: %+v", st)
	}
}
