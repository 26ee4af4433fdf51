package rendr_test

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/internal/testcert"
	"github.com/rendr-go/rendr/internal/testkit"
	"github.com/rendr-go/rendr/status"
	"github.com/rendr-go/rendr/transport"
	"github.com/rendr-go/rendr/transport/quic"
)

// rtCountingDg counts what a QUIC carrier sends as QUIC datagrams.
type rtCountingDg struct {
	net.Conn
	dg   transport.Datagrammer
	sent *atomic.Int64
}

func (c *rtCountingDg) SendDatagram(b []byte) error {
	err := c.dg.SendDatagram(b)
	if err == nil {
		c.sent.Add(1)
	}
	return err
}

func (c *rtCountingDg) ReceiveDatagram(ctx context.Context) ([]byte, error) {
	return c.dg.ReceiveDatagram(ctx)
}

func (c *rtCountingDg) MaxDatagramSize() int { return c.dg.MaxDatagramSize() }

// TestPacketFlowOverQUICDatagrams: a packet flow over a QUIC path sends its datagrams as QUIC
// DATAGRAM frames, both ways (counted at each end's carrier), every one arrives at most once
// and intact, one too large for a QUIC packet still arrives (it rides the stream), and one
// over MaxDatagram gets ErrTooLarge. Encrypted records and a secure carrier. When one end's
// carrier is wrapped in something that hides its datagrams, the handshake says so and every
// datagram rides the stream instead, both ways: none is sent where it would not be read.
func TestPacketFlowOverQUICDatagrams(t *testing.T) {
	for _, tc := range []struct {
		name         string
		secure, hide bool
	}{{"encrypted", false, false}, {"secure-carrier", true, false}, {"dialer-hides-datagrams", false, true}} {
		t.Run(tc.name, func(t *testing.T) { testPacketFlowOverQUIC(t, tc.secure, tc.hide) })
	}
}

// rtCountingSource counts what the carriers it accepts send as QUIC datagrams.
type rtCountingSource struct {
	net.Listener
	sent *atomic.Int64
}

func (s rtCountingSource) Accept() (net.Conn, error) {
	c, err := s.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &rtCountingDg{Conn: c, dg: c.(transport.Datagrammer), sent: s.sent}, nil
}

// rtPlainConn hides everything of a carrier but net.Conn, as an embedder's wrapper might.
type rtPlainConn struct{ net.Conn }

func testPacketFlowOverQUIC(t *testing.T, secure, hide bool) {
	srvTLS, cliTLS := testcert.Must()
	ql, err := quic.Listen("127.0.0.1:0", srvTLS)
	if err != nil {
		t.Fatal(err)
	}
	srv, cli := rendr.MustNewKey(), rendr.MustNewKey()
	var sopts []rendr.SourceOption
	var popts []rendr.PathOption
	if secure {
		sopts = append(sopts, rendr.SecureSource())
		popts = append(popts, rendr.SecureCarrier())
	}
	ln, err := rendr.Listen(rendr.ListenConfig{Key: srv, Peers: []rendr.PublicKey{cli.Public()}})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var dgSent, lnSent atomic.Int64
	if err := ln.AddSource(rtCountingSource{Listener: ql, sent: &lnSent}, sopts...); err != nil {
		t.Fatal(err)
	}
	qd := quic.NewDialer(ql.Addr().String(), cliTLS)
	dial := func(ctx context.Context) (net.Conn, error) {
		c, err := qd.Dial(ctx)
		if err != nil {
			return nil, err
		}
		if hide {
			return rtPlainConn{c}, nil
		}
		return &rtCountingDg{Conn: c, dg: c.(transport.Datagrammer), sent: &dgSent}, nil
	}
	d, err := rendr.NewDialer(rendr.DialerConfig{Key: cli, PeerKey: srv.Public(),
		Root: rendr.Path("q", dial, popts...)})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	a, err := d.DialPacket(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := ln.AcceptPacket(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()

	if _, err := a.Write(make([]byte, rendr.MaxDatagram+1)); !errors.Is(err, rendr.ErrTooLarge) {
		t.Fatalf("a datagram over MaxDatagram: %v", err)
	}
	big := bytes.Repeat([]byte{0xb1}, 6000) // over any QUIC packet: goes in the stream
	const n = 2000
	for dir, ends := range [][2]*rendr.PacketConn{{a, b}, {b, a}} {
		w, r := ends[0], ends[1]
		counter := []*atomic.Int64{&dgSent, &lnSent}[dir]
		before := counter.Load()
		got := make(map[uint32]bool)
		bigSeen := false
		buf := make([]byte, 8192)
		done := make(chan error, 1)
		go func() {
			for i := range n {
				p := make([]byte, 1200)
				p[0], p[1], p[2], p[3] = byte(i>>24), byte(i>>16), byte(i>>8), byte(i)
				for j := 4; j < len(p); j++ {
					p[j] = byte(i + j)
				}
				if _, err := w.Write(p); err != nil {
					done <- err
					return
				}
				if i == n/2 {
					if _, err := w.Write(big); err != nil {
						done <- err
						return
					}
				}
				if i%10 == 9 {
					time.Sleep(time.Millisecond) // a paced sender (at most 12 MB/s)
				}
			}
			done <- nil
		}()
		r.SetReadDeadline(time.Now().Add(10 * time.Second))
		for len(got) < n || !bigSeen {
			k, err := r.Read(buf)
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					break // what was lost stays lost
				}
				t.Fatal(err)
			}
			if k == len(big) {
				if !bytes.Equal(buf[:k], big) {
					t.Fatal("the large datagram arrived changed")
				}
				bigSeen = true
				continue
			}
			if k != 1200 {
				t.Fatalf("a datagram of %d bytes arrived", k)
			}
			i := uint32(buf[0])<<24 | uint32(buf[1])<<16 | uint32(buf[2])<<8 | uint32(buf[3])
			for j := 4; j < k; j++ {
				if buf[j] != byte(int(i)+j) {
					t.Fatalf("datagram %d arrived changed at byte %d", i, j)
				}
			}
			if got[i] {
				t.Fatalf("datagram %d delivered twice", i)
			}
			got[i] = true
			if len(got) == n && bigSeen {
				break
			}
			if len(got) >= n/2 {
				r.SetReadDeadline(time.Now().Add(time.Second)) // the rest may be lost
			}
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		st := r.Stats()
		sent := counter.Load() - before
		t.Logf("direction %d: %d of %d datagrams arrived; the sender's QUIC datagrams %d; receiver %+v", dir, len(got), n, sent, st)
		if !bigSeen {
			t.Fatal("the datagram too large for a QUIC packet never arrived")
		}
		// QUIC datagrams may be lost even on loopback (quic-go drops what its receive queue
		// cannot hold when the machine is loaded); most must arrive.
		if len(got) < n/2 {
			t.Fatalf("only %d of %d datagrams arrived over loopback", len(got), n)
		}
		if st.Duplicates != 0 || st.Truncated != 0 {
			t.Fatalf("receiver stats %+v", st)
		}
		if hide {
			if sent != 0 || dgSent.Load() != 0 {
				t.Fatalf("%d QUIC datagrams sent although the dialer's carrier hides its datagrams", sent+dgSent.Load())
			}
			if len(got) != n {
				t.Fatalf("in the stream, %d of %d datagrams arrived", len(got), n)
			}
		} else if sent < n/2 {
			t.Fatalf("the sender sent %d QUIC datagrams for %d datagrams: they went in the stream", sent, n)
		}
	}
}

// TestQUICMigratesInPlace: the dialing host's address changes mid-transfer (127.0.0.1 to
// 127.0.0.2 here; Wi-Fi to cellular on a phone) and the embedder calls Migrate. The QUIC
// connection moves under the path: the same path id carries on, no rendr migration or path
// death is counted, every byte arrives both ways, and the path reports its new address.
func TestQUICMigratesInPlace(t *testing.T) {
	srvTLS, cliTLS := testcert.Must()
	src := rtListenQUIC(t, srvTLS)
	srv, cli := rendr.MustNewKey(), rendr.MustNewKey()
	ln, err := rendr.Listen(rendr.ListenConfig{Key: srv, Peers: []rendr.PublicKey{cli.Public()}}, src)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	qd := quic.NewDialer(src.Addr().String(), cliTLS, quic.LocalAddr("127.0.0.1"))
	mig := &testkit.Migrations{}
	d, err := rendr.NewDialer(rendr.DialerConfig{Key: cli, PeerKey: srv.Public(),
		Root: rendr.Path("p0", qd.Dial), Options: rendr.Options{OnMigrate: mig.Record}})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	c1, c2 := rtDialAccept(t, d, ln)
	if p := c1.Status().Paths; len(p) != 1 || p[0].Local.(*net.UDPAddr).IP.String() != "127.0.0.1" {
		t.Fatalf("before: %s", testkit.Describe(c1.Status()))
	}
	rtTransferMovingInPlace(t, c1, c2, mig, 11, netip.MustParseAddr("127.0.0.2"), func() error {
		mctx, mcancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer mcancel()
		return qd.Migrate(mctx, "127.0.0.2")
	})
}

// rtTransferMovingInPlace moves 32 MiB each way between c1 and c2 (SHA-256 checked), calling
// move halfway, and checks that the flow's single path carried on through it: the same path
// id, up, never dialed again, now at local address to, and no rendr migration.
func rtTransferMovingInPlace(t *testing.T, c1, c2 *rendr.Conn, mig *testkit.Migrations, seed uint64, to netip.Addr, move func() error) {
	t.Helper()
	before, m0 := c1.Status().Paths, c1.Migrations()
	const size = 32 << 20
	var progress atomic.Int64
	moved := make(chan error, 1)
	go func() {
		for progress.Load() < size/2 {
			time.Sleep(time.Millisecond)
		}
		moved <- move()
	}()
	c1.SetDeadline(time.Now().Add(90 * time.Second))
	c2.SetDeadline(time.Now().Add(90 * time.Second))
	if err := testkit.Both(c1, c2, size, seed, &progress); err != nil {
		t.Logf("dialer: %s", testkit.Describe(c1.Status()))
		t.Logf("listener: %s", testkit.Describe(c2.Status()))
		select {
		case merr := <-moved:
			t.Logf("move: %v", merr)
		default:
		}
		t.Fatal(err)
	}
	if err := <-moved; err != nil {
		t.Fatalf("move: %v", err)
	}
	after := c1.Status().Paths
	if len(after) != 1 || after[0].ID != before[0].ID || after[0].State != status.Up || after[0].Dials != before[0].Dials {
		t.Fatalf("the path did not carry on: before %s, after %s", testkit.Describe(status.Session{Paths: before}), testkit.Describe(c1.Status()))
	}
	if got := after[0].Local.(*net.UDPAddr).AddrPort().Addr().Unmap(); got != to {
		t.Fatalf("dialer's path is at %s after the move, want %s", got, to)
	}
	if m := mig.Moves(); m != 0 || c1.Migrations() != m0 {
		t.Fatalf("%d rendr migrations (%v) for an in-place QUIC migration", m, mig)
	}
}

// TestMixedCarriers: one flow over a Bond, then a Race, of a TCP path, a QUIC path, a udpflow
// path and a gVisor path, while the path the status names active is killed by close, reset and silent stall:
// every byte arrives both ways, SHA-256 checked, whichever carrier kind carried it.
func TestMixedCarriers(t *testing.T) {
	groups := map[string]func(string, ...*rendr.Target) *rendr.Target{"bond": rendr.Bond, "race": rendr.Race}
	for _, name := range []string{"bond", "race"} {
		t.Run(name, func(t *testing.T) {
			size, kills := int64(32<<20), 6
			if testing.Short() {
				size, kills = 8<<20, 3
			}
			seed := testkit.Seed(t)
			rng := rand.New(rand.NewPCG(seed, 3))
			r := rtNewRig(t, rtRigConfig{Paths: 4, Carrier: "tcp,quic,udpflow,gvisor", Group: groups[name],
				Options: rendr.Options{HandshakeTimeout: time.Second}})
			c1, c2 := r.open()
			plan, err := rtTransferUnderKills(r, rng, c1, c2, size, kills, seed)
			t.Logf("kills: %v; migrations: %v", plan.Events(), r.mig)
			if err != nil {
				t.Fatalf("transfer: %v", err)
			}
			if plan.Hits() != kills {
				t.Fatalf("only %d of %d kills happened during the transfer", plan.Hits(), kills)
			}
			testkit.WaitUp(t, "dialer", c1.Status, 4, 30*time.Second)
			var kinds []string
			for _, p := range c1.Status().Paths {
				kinds = append(kinds, p.Local.Network())
			}
			slices.Sort(kinds)
			if !slices.Equal(kinds, []string{"tcp", "udp", "udp", "udp"}) {
				t.Fatalf("carriers after the transfer: %v", kinds)
			}
		})
	}
}
