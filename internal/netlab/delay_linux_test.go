package netlab

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// waitFor polls cond until it holds or a generous bound passes; the bound only stops a
// broken run.
func waitFor(t *testing.T, l *Lab, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: never held; last: %s\ndevices:%s", what, state, linkState(l))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func delayStats(t *testing.T, l *Lab, i int) DelayStats {
	t.Helper()
	s, err := l.DelayStats(i)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestDelayRoundTrip(t *testing.T) {
	const oneWay = 25 * time.Millisecond
	l := newLab(t, Config{Paths: 2, Delay: []DelayConfig{{Delay: oneWay}}, Name: "nlt-rtt"})
	if l.RouterNS() == "" {
		t.Fatal("RouterNS empty with a delay node")
	}
	if _, err := l.DelayStats(1); err == nil {
		t.Fatal("DelayStats of the plain path 1 succeeded")
	}
	s0, s1 := startEcho(t, l, 0), startEcho(t, l, 1)

	start := time.Now()
	c, err := dialPath(l, 0, s0.addr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	handshake := time.Since(start)
	local := c.LocalAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()
	remote := c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()
	if local != l.ClientAddr(0) || remote != l.ServerAddr(0) {
		t.Fatalf("conn %s -> %s, want %s -> %s", local, remote, l.ClientAddr(0), l.ServerAddr(0))
	}
	rtt := time.Duration(1 << 62)
	for k := range 5 {
		start = time.Now()
		if err := echo(c, fmt.Sprintf("round %d", k), 5*time.Second); err != nil {
			t.Fatal(err)
		}
		rtt = min(rtt, time.Since(start))
	}
	// Only a lower bound: a loaded machine adds time, never removes it.
	if handshake < 2*oneWay || rtt < 2*oneWay {
		t.Fatalf("handshake %v, echo round trip %v through a %v one-way node; want both at least %v", handshake, rtt, oneWay, 2*oneWay)
	}
	c1, err := dialPath(l, 1, s1.addr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c1.Close()
	start = time.Now()
	if err := echo(c1, "plain", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	t.Logf("%v one-way node: handshake %v, best echo round trip of 5 %v; plain path echo %v", oneWay, handshake, rtt, time.Since(start))
	st := delayStats(t, l, 0)
	if st.ToServer.Forwarded == 0 || st.ToClient.Forwarded == 0 {
		t.Fatalf("node counters %+v; both directions must have forwarded the echo", st)
	}
	// The router is a real hop: the path's faults, on c<i> and s<i>, still apply.
	if err := l.Blackhole(0, true); err != nil {
		t.Fatal(err)
	}
	if err := echo(c, "during", 300*time.Millisecond); !isTimeout(err) {
		t.Fatalf("echo through a blackholed delayed path: %v, want timeout", err)
	}
}

// tunStats reads the kernel's packet counters of a TUN device in the router namespace.
func tunStats(t *testing.T, l *Lab, dev string) (rx, tx uint64) {
	t.Helper()
	out, err := run("", "ip", "-n", l.RouterNS(), "-s", "-j", "link", "show", "dev", dev)
	if err != nil {
		t.Fatal(err)
	}
	var links []struct {
		Stats64 struct {
			RX, TX struct{ Packets uint64 }
		}
	}
	if err := json.Unmarshal(out, &links); err != nil || len(links) != 1 {
		t.Fatalf("ip -s -j link show dev %s: %v\n%s", dev, err, out)
	}
	return links[0].Stats64.RX.Packets, links[0].Stats64.TX.Packets
}

// checkedTransfer sends size random bytes from the client to the server over path i and
// returns the time from the first byte sent until the server has confirmed a SHA-256 match.
func checkedTransfer(t *testing.T, l *Lab, i, size int) time.Duration {
	t.Helper()
	data := make([]byte, size)
	rand.NewChaCha8([32]byte{byte(i + 1)}).Read(data)
	want := sha256.Sum256(data)

	ln, err := l.Listen(Server, "tcp", netip.AddrPortFrom(l.ServerAddr(i), 0).String())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type result struct {
		n   int64
		sum [32]byte
		err error
	}
	got := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- result{err: err}
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(20 * time.Second))
		h := sha256.New()
		n, err := io.Copy(h, c)
		var r result
		r.n, r.err = n, err
		h.Sum(r.sum[:0])
		if err == nil {
			_, r.err = c.Write([]byte{1})
		}
		got <- r
	}()
	c, err := dialPath(l, i, ln.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	start := time.Now()
	if _, err := c.Write(data); err != nil {
		t.Fatal(err)
	}
	c.(*net.TCPConn).CloseWrite()
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	elapsed := time.Since(start)
	r := <-got
	if r.err != nil || r.n != int64(size) || r.sum != want {
		t.Fatalf("receiver: %d bytes, sha256 match %v, err %v; want %d bytes, match", r.n, r.sum == want, r.err, size)
	}
	return elapsed
}

// maxGoodput is the most TCP payload a node at rate bit/s lets through: each full segment
// carries 1448 bytes (an MTU of 1500 less the IPv4 header and a TCP header with timestamps)
// and takes 1500 of the rate. The node never sends faster than its rate, whatever the load,
// so a transfer above this bound means the rate stage undercounts.
func maxGoodput(rate float64) float64 { return rate * 1448 / 1500 * 1.001 }

func TestDelayTransferRate(t *testing.T) {
	const (
		size = 4 << 20
		rate = 40_000_000
	)
	l := newLab(t, Config{Paths: 1, Delay: []DelayConfig{{Delay: 5 * time.Millisecond, RateBits: rate}}, Name: "nlt-rate"})
	elapsed := checkedTransfer(t, l, 0, size)
	goodput := float64(size) * 8 / elapsed.Seconds()
	t.Logf("%d MiB through a %d Mbit/s node: %.1f Mbit/s", size>>20, rate/1_000_000, goodput/1e6)
	if goodput > maxGoodput(rate) {
		t.Errorf("%.1f Mbit/s of payload through a %d Mbit/s node", goodput/1e6, rate/1_000_000)
	}

	// Every packet the kernel handed to a line was forwarded, dropped or lost, and every
	// forwarded one reached the kernel on the other side: the node's counters agree with
	// the devices' once the flow's last packets have crossed.
	n := routerIfNames(0)
	waitFor(t, l, "node counters match the TUN devices", func() (bool, string) {
		st := delayStats(t, l, 0)
		cRX, cTX := tunStats(t, l, n.tunc)
		sRX, sTX := tunStats(t, l, n.tuns)
		up, down := st.ToServer, st.ToClient
		ok := up.Forwarded+up.Dropped+up.Lost == cTX && up.Forwarded == sRX &&
			down.Forwarded+down.Dropped+down.Lost == sTX && down.Forwarded == cRX
		return ok, fmt.Sprintf("node %+v; tunc rx %d tx %d, tuns rx %d tx %d", st, cRX, cTX, sRX, sTX)
	})
	st := delayStats(t, l, 0)
	if st.ToServer.ForwardedBytes < size || st.ToServer.Lost != 0 || st.ToClient.Lost != 0 {
		t.Fatalf("node counters %+v: want at least %d bytes to the server and no loss", st, size)
	}
	// 64 KiB take 13 ms at 40 Mbit/s: this node reads packet by packet, so the counters
	// above, which count packets, are the devices' own.
	if st.Offload != OffloadNone || st.ToServer.Reads != st.ToServer.Forwarded+st.ToServer.Dropped {
		t.Fatalf("node counters %+v: want no offloads", st)
	}
	t.Logf("node counters %+v", st)
}

// A node with offloads forwards the kernel's super-packets whole, without a rate and at a
// rate that allows them, and its counters of reads and writes are the devices' own.
func TestDelayOffloadTransfer(t *testing.T) {
	const (
		size = 64 << 20
		rate = 1_000_000_000
	)
	l := newLab(t, Config{Paths: 2, Name: "nlt-tso", Delay: []DelayConfig{
		{Delay: 2 * time.Millisecond},
		{Delay: 5 * time.Millisecond, RateBits: rate},
	}})
	for i := range 2 {
		elapsed := checkedTransfer(t, l, i, size)
		goodput := float64(size) * 8 / elapsed.Seconds()
		st := delayStats(t, l, i)
		t.Logf("path %d: %d MiB at %.1f Mbit/s; node %+v", i, size>>20, goodput/1e6, st)
		if st.Offload == OffloadNone {
			t.Fatalf("path %d: node without offloads", i)
		}
		if i == 1 && goodput > maxGoodput(rate) {
			t.Errorf("%.1f Mbit/s of payload through a %d Mbit/s node", goodput/1e6, rate/1_000_000)
		}
		n := routerIfNames(i)
		waitFor(t, l, "node counters match the TUN devices", func() (bool, string) {
			st := delayStats(t, l, i)
			cRX, cTX := tunStats(t, l, n.tunc)
			sRX, sTX := tunStats(t, l, n.tuns)
			up, down := st.ToServer, st.ToClient
			ok := up.Reads == cTX && up.Writes == sRX && down.Reads == sTX && down.Writes == cRX
			return ok, fmt.Sprintf("node %+v; tunc rx %d tx %d, tuns rx %d tx %d", st, cRX, cTX, sRX, sTX)
		})
		up := delayStats(t, l, i).ToServer
		// 64 MiB are at least 46341 segments of 1448 bytes; a write that the kernel
		// refused would count as a drop.
		if up.Forwarded < size/1448 || up.Writes*4 > up.Forwarded || up.ForwardedBytes < size+up.Forwarded*52 {
			t.Errorf("path %d: counters %+v; want at least %d packets, in super-packets of 4 and more on average, of 52 bytes of headers each", i, up, size/1448)
		}
		if i == 0 && (up.Dropped != 0 || up.Lost != 0) {
			t.Errorf("path %d: counters %+v; want no drops without a rate", i, up)
		}
	}
}

// udpSegments sends count super-packets of segs datagrams of segSize bytes each from the
// client over path i, with UDP_SEGMENT, and returns how many datagrams arrived intact.
func udpSegments(t *testing.T, l *Lab, i, count, segs, segSize int) int {
	t.Helper()
	srv, cli, closeBoth := udpPair(t, l, i)
	defer closeBoth()
	rc, err := cli.(*net.UDPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_SEGMENT, segSize)
	}); err != nil || serr != nil {
		t.Fatalf("UDP_SEGMENT: %v %v", err, serr)
	}
	datagram := func(k int) []byte {
		d := bytes.Repeat([]byte{byte(k)}, segSize)
		binary.BigEndian.PutUint32(d, uint32(k))
		return d
	}
	got := make(chan int, 1)
	go func() {
		seen := make(map[int]bool)
		buf := make([]byte, segSize+1)
		for len(seen) < count*segs {
			// The line is quiet for a while once the rest were lost.
			srv.SetReadDeadline(time.Now().Add(time.Second))
			m, _, err := srv.ReadFrom(buf)
			if err != nil {
				break
			}
			k := int(binary.BigEndian.Uint32(buf))
			if m == segSize && k < count*segs && !seen[k] && bytes.Equal(buf[:m], datagram(k)) {
				seen[k] = true
			}
		}
		got <- len(seen)
	}()
	msg := make([]byte, 0, segs*segSize)
	for n := range count {
		msg = msg[:0]
		for s := range segs {
			msg = append(msg, datagram(n*segs+s)...)
		}
		if _, err := cli.WriteTo(msg, srv.LocalAddr()); err != nil {
			t.Fatalf("send %d: %v", n, err)
		}
		// Slow enough for the receiving socket's buffer.
		time.Sleep(time.Millisecond)
	}
	return <-got
}

// UDP super-packets cross a node with offloads whole and arrive as their datagrams; a lossy
// node reads and loses the same datagrams one by one.
func TestDelayOffloadUDP(t *testing.T) {
	const count, segs, segSize = 50, 10, 1200
	l := newLab(t, Config{Paths: 2, Name: "nlt-uso", Delay: []DelayConfig{
		{Delay: 2 * time.Millisecond},
		{Delay: 2 * time.Millisecond, LossPercent: 30, Seed: 5},
	}})
	if arrived := udpSegments(t, l, 0, count, segs, segSize); arrived != count*segs {
		t.Fatalf("%d of %d datagrams arrived through a node without loss", arrived, count*segs)
	}
	waitFor(t, l, "every datagram forwarded", func() (bool, string) {
		st := delayStats(t, l, 0)
		return st.ToServer.Forwarded == count*segs, fmt.Sprintf("%+v", st)
	})
	st := delayStats(t, l, 0)
	t.Logf("no loss: node %+v", st)
	if st.ToServer.ForwardedBytes != count*segs*(segSize+28) {
		t.Errorf("node counters %+v; want %d bytes", st, count*segs*(segSize+28))
	}
	switch st.Offload {
	case OffloadTCPUDP:
		if st.ToServer.Reads != count || st.ToServer.Writes != count {
			t.Errorf("node counters %+v; want %d reads and writes of super-packets", st, count)
		}
	case OffloadTCP:
		t.Logf("the kernel has no UDP segmentation offload")
	default:
		t.Errorf("node without offloads: %+v", st)
	}

	arrived := udpSegments(t, l, 1, count, segs, segSize)
	waitFor(t, l, "every datagram forwarded or lost", func() (bool, string) {
		st := delayStats(t, l, 1).ToServer
		return st.Forwarded+st.Lost == count*segs, fmt.Sprintf("%+v", st)
	})
	st = delayStats(t, l, 1)
	t.Logf("30%% loss: %d of %d arrived, node %+v", arrived, count*segs, st)
	up := st.ToServer
	if st.Offload != OffloadNone || up.Reads != count*segs || uint64(arrived) != up.Forwarded ||
		up.Lost < count*segs*15/100 || up.Lost > count*segs*45/100 {
		t.Fatalf("node counters %+v, %d arrived; want no offloads, a read per datagram, about 30%% of them lost, arrivals = forwarded", st, arrived)
	}
}

// udpBurst sends count datagrams of size bytes from the client over path i as fast as it
// can and returns how many arrived.
func udpBurst(t *testing.T, l *Lab, i, count, size int) int {
	t.Helper()
	srv, cli, closeBoth := udpPair(t, l, i)
	defer closeBoth()
	var wg sync.WaitGroup
	defer wg.Wait()
	got := make(chan int, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		n := 0
		buf := make([]byte, size+1)
		for n < count {
			// The line is quiet for a while once the rest were dropped.
			srv.SetReadDeadline(time.Now().Add(time.Second))
			m, _, err := srv.ReadFrom(buf)
			if err != nil {
				break
			}
			if m == size && bytes.HasPrefix(buf, []byte("netlab")) {
				n++
			}
		}
		got <- n
	}()
	msg := bytes.Repeat([]byte("netlab"), size/6+1)[:size]
	for k := range count {
		if _, err := cli.WriteTo(msg, srv.LocalAddr()); err != nil {
			t.Errorf("send %d: %v", k, err)
			break
		}
	}
	return <-got
}

func TestDelayQueueDrops(t *testing.T) {
	const count = 100
	// 200 kbit/s take 49 ms per 1228-byte packet, so the burst overflows 4000 bytes at
	// once unless sending it took seconds.
	l := newLab(t, Config{Paths: 1, Delay: []DelayConfig{{Delay: 5 * time.Millisecond, RateBits: 200_000, QueueBytes: 4000}}, Name: "nlt-queue"})
	arrived := udpBurst(t, l, 0, count, 1200)
	waitFor(t, l, "every datagram forwarded or dropped", func() (bool, string) {
		st := delayStats(t, l, 0).ToServer
		return st.Forwarded+st.Dropped == count, fmt.Sprintf("%+v", st)
	})
	st := delayStats(t, l, 0)
	t.Logf("burst of %d into a 4000-byte queue: %d arrived, counters %+v", count, arrived, st)
	if st.ToServer.Dropped == 0 || st.ToServer.Lost != 0 || uint64(arrived) != st.ToServer.Forwarded {
		t.Fatalf("%d arrived, counters %+v; want queue drops, no loss, arrivals = forwarded", arrived, st)
	}
}

func TestDelayLoss(t *testing.T) {
	const count = 200
	l := newLab(t, Config{Paths: 1, Delay: []DelayConfig{{Delay: time.Millisecond, LossPercent: 30, Seed: 3}}, Name: "nlt-dloss"})
	arrived := udpBurst(t, l, 0, count, 100)
	waitFor(t, l, "every datagram forwarded or lost", func() (bool, string) {
		st := delayStats(t, l, 0).ToServer
		return st.Forwarded+st.Lost == count, fmt.Sprintf("%+v", st)
	})
	st := delayStats(t, l, 0).ToServer
	t.Logf("30%% loss: %d of %d arrived, counters %+v", arrived, count, st)
	if st.Lost < count*15/100 || st.Lost > count*45/100 || st.Dropped != 0 || uint64(arrived) != st.Forwarded {
		t.Fatalf("%d arrived, counters %+v; want about 30%% lost, none dropped, arrivals = forwarded", arrived, st)
	}
}

func TestDelayCleansUpOnFailure(t *testing.T) {
	if err := Available(); err != nil {
		t.Skip(err)
	}
	t.Parallel()
	injected := errors.New("injected")
	for _, stage := range []string{"router", "links", "delay"} {
		prefix := "nlt-dfail-" + stage
		l, err := build(Config{Paths: 2, Delay: []DelayConfig{{}, {Delay: time.Millisecond}}, Name: prefix}, func(s string) error {
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
	// A lab without delays has no router namespace.
	l, err := New(Config{Paths: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if l.RouterNS() != "" {
		t.Fatalf("RouterNS = %q without delays", l.RouterNS())
	}
}

// linkState is the packet counters of every device of the lab, for a failure message.
func linkState(l *Lab) string {
	var b strings.Builder
	for _, ns := range []string{l.ClientNS(), l.RouterNS(), l.ServerNS()} {
		if ns == "" {
			continue
		}
		out, err := run("", "ip", "-n", ns, "-s", "link", "show")
		fmt.Fprintf(&b, "\n%s: %v\n%s", ns, err, out)
	}
	return b.String()
}
