package rendr_test

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
	"syscall"
	"testing"
	"time"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/internal/testkit"
	"github.com/rendr-go/rendr/l3"
)

// egressLab is two in-memory paths under a Selector whose listener carries flows with an
// identity on with egress, bounded by max (0: the default).
func egressLab(t *testing.T, egress rendr.Egress, max int, timeout time.Duration) *testkit.MemLab {
	return testkit.NewMemLabListen(t, rendr.Options{}, func(lc *rendr.ListenConfig) {
		lc.Egress, lc.MaxEgress, lc.EgressTimeout = egress, max, timeout
	},
		func(p map[string]*rendr.Target) *rendr.Target { return rendr.Selector("root", p["a"], p["b"]) },
		testkit.LinkSpec{Name: "a", AB: stGoodLink, BA: stGoodLink},
		testkit.LinkSpec{Name: "b", AB: stGoodLink, BA: stGoodLink})
}

// tcpTo is a TCP identity from a client address to dst.
func tcpTo(dst netip.AddrPort) l3.Identity {
	return l3.Identity{Proto: l3.TCP, Src: netip.MustParseAddrPort("10.0.0.2:40000"), Dst: dst}
}

// TestEgressTCPHalfClose: a stream flow with an identity is carried on to a loopback TCP
// server by DirectEgress. The client sends 1 MiB and shuts its sending side; the server reads
// it to the end of stream (the half-close came through), then sends its whole reply and
// closes: the client reads every byte, then io.EOF.
func TestEgressTCPHalfClose(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	reply := make([]byte, 3<<20)
	stFill(reply, rand.New(rand.NewPCG(1, 1)))
	got := make(chan [sha256.Size]byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		h := sha256.New()
		io.Copy(h, c) // to the client's half-close
		got <- [sha256.Size]byte(h.Sum(nil))
		c.Write(reply)
	}()
	lb := egressLab(t, rendr.DirectEgress, 0, 0)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dc, err := lb.D.DialIdentity(ctx, tcpTo(netip.MustParseAddrPort(ln.Addr().String())))
	if err != nil {
		t.Fatal(err)
	}
	defer dc.Close()
	if err := dc.WaitAccepted(ctx); err != nil {
		t.Fatalf("WaitAccepted: %v", err)
	}
	req := make([]byte, 1<<20)
	stFill(req, rand.New(rand.NewPCG(2, 2)))
	if _, err := dc.Write(req); err != nil {
		t.Fatal(err)
	}
	if err := dc.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	back, err := io.ReadAll(dc)
	if err != nil {
		t.Fatalf("reading the reply: %v after %d bytes", err, len(back))
	}
	if h := <-got; h != sha256.Sum256(req) {
		t.Fatal("the server received other bytes than the client sent")
	}
	if !bytes.Equal(back, reply) {
		t.Fatalf("reply of %d bytes differs from the %d the server sent", len(back), len(reply))
	}
	lb.MustWait("the carried flow finished", 30*time.Second, func() bool { return lb.LN.Stats().EgressActive == 0 })
	if st := lb.LN.Stats(); st.EgressCarried != 1 {
		t.Fatalf("listener stats %+v, want 1 carried", st)
	}
}

// TestEgressUDP: a packet flow with a UDP identity is carried on to a loopback UDP echo
// server; every datagram comes back.
func TestEgressUDP(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	testkit.EchoUDP(pc)
	lb := egressLab(t, rendr.DirectEgress, 0, 0)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	id := l3.Identity{Proto: l3.UDP, Src: netip.MustParseAddrPort("10.0.0.2:5000"), Dst: netip.MustParseAddrPort(pc.LocalAddr().String())}
	dp, err := lb.D.DialPacketIdentity(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	defer dp.Close()
	if err := dp.WaitAccepted(ctx); err != nil {
		t.Fatalf("WaitAccepted: %v", err)
	}
	buf := make([]byte, 2048)
	for i := range 50 {
		msg := fmt.Appendf(nil, "datagram %d", i)
		// A datagram may be lost on the way (the kernel's UDP is allowed to drop): send it
		// again until its echo comes, a bounded number of times.
		for try := 0; ; try++ {
			if try == 20 {
				t.Fatalf("no echo of datagram %d", i)
			}
			if _, err := dp.Write(msg); err != nil {
				t.Fatal(err)
			}
			dp.SetReadDeadline(time.Now().Add(time.Second))
			n, err := dp.Read(buf)
			if err == nil && bytes.Equal(buf[:n], msg) {
				break
			}
		}
	}
}

// TestEgressTurnedDown: every way an Egress can fail reaches the dialing side as the error
// that says why, and the listener counts it: a refused port, an unreachable network, a
// destination that does not answer within EgressTimeout, an allow-list's no, an Egress that
// returns nothing, a flow whose kind does not fit its protocol, and MaxEgress reached. The
// session goes on.
func TestEgressTurnedDown(t *testing.T) {
	// A loopback port nothing listens on.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := netip.MustParseAddrPort(ln.Addr().String())
	ln.Close()
	unreachable := netip.MustParseAddrPort("198.51.100.1:80")
	slow := netip.MustParseAddrPort("198.51.100.2:80")
	nothing := netip.MustParseAddrPort("198.51.100.3:80")
	held := netip.MustParseAddrPort("198.51.100.4:80")
	release := make(chan struct{})
	egress := rendr.AllowEgress([]netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("198.51.100.0/24")},
		func(ctx context.Context, peer rendr.PublicKey, id l3.Identity) (net.Conn, error) {
			switch id.Dst {
			case unreachable:
				return nil, &net.OpError{Op: "dial", Net: "tcp", Err: syscall.EHOSTUNREACH}
			case slow:
				<-ctx.Done()
				return nil, ctx.Err()
			case nothing:
				return nil, nil
			case held:
				select {
				case <-release:
				case <-ctx.Done():
				}
				return nil, syscall.ECONNREFUSED
			}
			return rendr.DirectEgress(ctx, peer, id)
		})
	lb := egressLab(t, egress, 1, 500*time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, c := range []struct {
		name string
		dst  netip.AddrPort
		want error
	}{
		{"refused", closed, rendr.ErrDestRefused},
		{"unreachable", unreachable, rendr.ErrDestUnreachable},
		{"no answer", slow, rendr.ErrDestTimeout},
		{"not allowed", netip.MustParseAddrPort("192.0.2.1:443"), rendr.ErrRejected},
		{"nil, nil", nothing, rendr.ErrRejected},
	} {
		dc, err := lb.D.DialIdentity(ctx, tcpTo(c.dst))
		if err != nil {
			t.Fatal(err)
		}
		if err := dc.WaitAccepted(ctx); !errors.Is(err, c.want) || !errors.Is(err, rendr.ErrRejected) {
			t.Errorf("%s: WaitAccepted %v, want %v", c.name, err, c.want)
		}
		if _, err := dc.Read(make([]byte, 1)); !errors.Is(err, c.want) {
			t.Errorf("%s: Read %v, want %v", c.name, err, c.want)
		}
		dc.Close()
	}
	udp := l3.Identity{Proto: l3.UDP, Src: netip.MustParseAddrPort("10.0.0.2:5000"), Dst: netip.MustParseAddrPort("127.0.0.1:9")}
	mismatch, err := lb.D.DialPacketIdentity(ctx, tcpTo(closed))
	if err != nil {
		t.Fatal(err)
	}
	if err := mismatch.WaitAccepted(ctx); !errors.Is(err, rendr.ErrRejected) {
		t.Errorf("a TCP identity on a packet flow: %v, want ErrRejected", err)
	}
	// MaxEgress is 1: while one flow is being carried on, the next is turned down.
	first, err := lb.D.DialIdentity(ctx, tcpTo(held))
	if err != nil {
		t.Fatal(err)
	}
	lb.MustWait("the first flow in the Egress", 10*time.Second, func() bool { return lb.LN.Stats().EgressActive == 1 })
	second, err := lb.D.DialPacketIdentity(ctx, udp)
	if err != nil {
		t.Fatal(err)
	}
	if err := second.WaitAccepted(ctx); !errors.Is(err, rendr.ErrRejected) {
		t.Errorf("past MaxEgress: %v, want ErrRejected", err)
	}
	close(release)
	if err := first.WaitAccepted(ctx); !errors.Is(err, rendr.ErrDestRefused) {
		t.Errorf("the held flow: %v, want ErrDestRefused", err)
	}
	st := lb.LN.Stats()
	if st.EgressRefused != 2 || st.EgressUnreachable != 1 || st.EgressTimedOut != 1 || st.EgressRejected != 3 || st.EgressFull != 1 || st.EgressCarried != 0 {
		t.Errorf("listener stats: refused %d unreachable %d timed out %d rejected %d full %d carried %d; want 2 1 1 3 1 0",
			st.EgressRefused, st.EgressUnreachable, st.EgressTimedOut, st.EgressRejected, st.EgressFull, st.EgressCarried)
	}
	// The session is whole: a flow without identity opens and moves bytes.
	c, p := lb.Open()
	defer c.Close()
	defer p.Close()
	if _, err := c.Write([]byte("ok")); err != nil {
		t.Fatal(err)
	}
	if b := make([]byte, 2); func() error { _, err := io.ReadFull(p, b); return err }() != nil || string(b) != "ok" {
		t.Fatal("a plain flow after the refusals did not carry its bytes")
	}
}

// TestEgressResets: a destination that resets its connection resets the flow (ErrDestReset,
// an ErrReset); a client that closes its flow without reading what comes cuts the
// destination's connection.
func TestEgressResets(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	conns := testkit.AcceptTCP(ln)
	lb := egressLab(t, rendr.DirectEgress, 0, 0)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dst := netip.MustParseAddrPort(ln.Addr().String())
	dc, err := lb.D.DialIdentity(ctx, tcpTo(dst))
	if err != nil {
		t.Fatal(err)
	}
	defer dc.Close()
	if err := dc.WaitAccepted(ctx); err != nil {
		t.Fatal(err)
	}
	srv := <-conns
	srv.SetLinger(0)
	srv.Close() // an RST
	if _, err := io.ReadAll(dc); !errors.Is(err, rendr.ErrDestReset) || !errors.Is(err, rendr.ErrReset) {
		t.Fatalf("after the destination's RST: %v, want ErrDestReset", err)
	}

	dc2, err := lb.D.DialIdentity(ctx, tcpTo(dst))
	if err != nil {
		t.Fatal(err)
	}
	if err := dc2.WaitAccepted(ctx); err != nil {
		t.Fatal(err)
	}
	srv2 := <-conns
	defer srv2.Close()
	cut := make(chan error, 1)
	go func() {
		for { // the destination sends until its connection is cut
			srv2.SetWriteDeadline(time.Now().Add(30 * time.Second))
			if _, err := srv2.Write(make([]byte, 64<<10)); err != nil {
				cut <- err
				return
			}
		}
	}()
	dc2.Close() // without reading: the flow is stopped, and the destination's connection cut
	if err := <-cut; errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the destination could still write 30s after the client closed its flow: %v", err)
	}
	lb.MustWait("no flow carried on", 30*time.Second, func() bool { return lb.LN.Stats().EgressActive == 0 })
}

// TestEgressUDPRefused: datagrams to a UDP port nothing listens on draw an ICMP port
// unreachable at the listener, which ends the flow: the client reads ErrDestRefused.
func TestEgressUDPRefused(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dst := netip.MustParseAddrPort(pc.LocalAddr().String())
	pc.Close()
	lb := egressLab(t, rendr.DirectEgress, 0, 0)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dp, err := lb.D.DialPacketIdentity(ctx, l3.Identity{Proto: l3.UDP, Src: netip.MustParseAddrPort("10.0.0.2:5000"), Dst: dst})
	if err != nil {
		t.Fatal(err)
	}
	defer dp.Close()
	if err := dp.WaitAccepted(ctx); err != nil {
		t.Fatalf("WaitAccepted: %v (a UDP socket connects without a word to the destination)", err)
	}
	for i := 0; ; i++ {
		if i == 100 {
			t.Fatal("100 datagrams to a closed port and the flow goes on")
		}
		if _, err := dp.Write([]byte("hello?")); err != nil {
			if !errors.Is(err, rendr.ErrDestRefused) {
				t.Fatalf("Write: %v, want ErrDestRefused", err)
			}
			break
		}
		dp.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		if _, err := dp.Read(make([]byte, 16)); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			if !errors.Is(err, rendr.ErrDestRefused) {
				t.Fatalf("Read: %v, want ErrDestRefused", err)
			}
			break
		}
	}
}
