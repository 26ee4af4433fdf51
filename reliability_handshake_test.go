// Reliability matrix rows 1a and 1b: a handshake that loses its hello or its reply.

package rendr_test

import (
	"context"
	"net"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/internal/testkit"
	"github.com/rendr-go/rendr/internal/testlink"
	"github.com/rendr-go/rendr/status"
)

// Row 1 of the reliability matrix: a handshake message lost, in each direction. The session
// must still establish; the tests count what it cost.

// TestReliabilityHandshakeLossUDPFlow: udpflow through a loopback UDP relay that loses the
// first datagram one way. udpflow repairs it itself (docs/datagram-paths.md, "Handshake over
// datagrams"): the dialer sends its first datagram again, and the listener answers a copy with
// a copy of its answer. So the path is dialed once, whichever message was lost.
func TestReliabilityHandshakeLossUDPFlow(t *testing.T) {
	for _, dir := range []string{"hello lost", "reply lost"} {
		t.Run(dir, func(t *testing.T) {
			r := testkit.NewRig(t, testkit.RigConfig{Paths: 1, Carrier: "udpflow"})
			u := r.UDPRelay(0)
			if dir == "hello lost" {
				u.DropNext(1, 0)
			} else {
				u.DropNext(0, 1)
			}
			start := time.Now()
			c1, c2 := r.Open()
			took := time.Since(start)
			if err := testkit.Both(c1, c2, 1<<20, 11, nil); err != nil {
				t.Fatal(err)
			}
			st := u.Stats()
			p := c1.Status().Paths[0]
			t.Logf("%s: established in %v; path dialed %d times; relay forwarded %d up, %d down, dropped %d up, %d down",
				dir, took.Round(time.Millisecond), p.Dials, st.SentUp, st.SentDown, st.DroppedUp, st.DroppedDown)
			if st.DroppedUp+st.DroppedDown != 1 {
				t.Fatalf("relay dropped %d datagrams, want exactly 1", st.DroppedUp+st.DroppedDown)
			}
			if p.Dials != 1 {
				t.Errorf("path dialed %d times: udpflow should repair a lost handshake datagram without a redial", p.Dials)
			}
		})
	}
}

// rlDieAfterWrite is a stream carrier whose link dies right after its first Write is taken,
// with the bytes still on the wire: the message never arrives and the carrier ends.
type rlDieAfterWrite struct {
	net.Conn
	once sync.Once
	kill func()
}

func (c *rlDieAfterWrite) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.once.Do(c.kill)
	return n, err
}

// rlWrapSource lets a test wrap the carriers a listener accepts.
type rlWrapSource struct {
	net.Listener
	wrap func(net.Conn) net.Conn
}

func (s *rlWrapSource) Accept() (net.Conn, error) {
	c, err := s.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return s.wrap(c), nil
}

// TestReliabilityHandshakeCarrierDies: on a stream carrier a message is not lost on its own;
// the carrier dies with it. The first carrier dies with the dialer's hello on the wire, or with
// the listener's reply on the wire. The path is dialed again and the session establishes on
// the second carrier. Also a datagram link that loses a handshake message and does not repair
// it (a bare PacketCarrier): that costs a redial after HandshakeTimeout. Virtual time.
func TestReliabilityHandshakeCarrierDies(t *testing.T) {
	link := testlink.Config{Delay: 5 * time.Millisecond, Rate: 8 << 20, Buffer: 256 << 10, Seed: 41}
	plink := testlink.PacketConfig{Delay: 5 * time.Millisecond, Seed: 42}
	const hsTimeout, reconnect = 2 * time.Second, 10 * time.Second
	for _, c := range []string{"stream hello lost", "stream reply lost", "datagram hello lost", "datagram reply lost"} {
		t.Run(c, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				srv, cli := rendr.MustNewKey(), rendr.MustNewKey()
				opts := rendr.Options{HandshakeTimeout: hsTimeout, ReconnectTimeout: reconnect}
				var src net.Listener
				var dial func(context.Context) (net.Conn, error)
				var mu sync.Mutex
				var links []*testlink.Link
				dials := 0
				switch c {
				case "stream hello lost", "stream reply lost":
					tl := testlink.Listen("p")
					src = tl
					if c == "stream reply lost" {
						accepted := 0
						src = &rlWrapSource{Listener: tl, wrap: func(conn net.Conn) net.Conn {
							mu.Lock()
							defer mu.Unlock()
							if accepted++; accepted > 1 {
								return conn
							}
							// The reply is written after the hello arrived, so by then the
							// dialing side has recorded this carrier's link.
							return &rlDieAfterWrite{Conn: conn, kill: func() {
								mu.Lock()
								defer mu.Unlock()
								links[0].Kill(false)
							}}
						}}
					}
					dial = func(ctx context.Context) (net.Conn, error) {
						conn, l, err := tl.Dial(ctx, link, link)
						if err != nil {
							return nil, err
						}
						mu.Lock()
						defer mu.Unlock()
						dials++
						links = append(links, l)
						if c == "stream hello lost" && dials == 1 {
							return &rlDieAfterWrite{Conn: conn, kill: func() { l.Kill(false) }}, nil
						}
						return conn, nil
					}
				default:
					pl := testlink.ListenPacket("p", rlMaxDatagram, rlBaseDatagram)
					src = pl
					dial = func(ctx context.Context) (net.Conn, error) {
						ab, ba := plink, plink
						mu.Lock()
						dials++
						if dials == 1 {
							if c == "datagram hello lost" {
								ab.DropFirst = 1
							} else {
								ba.DropFirst = 1
							}
						}
						mu.Unlock()
						conn, _, err := pl.Dial(ctx, ab, ba)
						if err != nil {
							return nil, err
						}
						return conn, nil
					}
				}
				ln, err := rendr.Listen(rendr.ListenConfig{Key: srv, Peers: []rendr.PublicKey{cli.Public()}, Options: opts}, src)
				if err != nil {
					t.Fatal(err)
				}
				defer ln.Close()
				d, err := rendr.NewDialer(rendr.DialerConfig{Key: cli, PeerKey: srv.Public(), Root: rendr.Path("p", dial), Options: opts})
				if err != nil {
					t.Fatal(err)
				}
				defer d.Close()
				start := time.Now()
				dc, lc := testkit.DialAccept(t, d, ln)
				took := time.Since(start)
				stSend(dc, lc, 1<<20, 12).check(t, "up", time.Minute)
				stSend(lc, dc, 1<<20, 13).check(t, "down", time.Minute)
				mu.Lock()
				n := dials
				mu.Unlock()
				p := d.Status().Paths[0]
				t.Logf("%s: established after %v of virtual time; %d carriers dialed (status: %d dials, %v)", c, took, n, p.Dials, p.State)
				if n != 2 {
					t.Errorf("%d carriers dialed, want 2: the first fails, the second carries the session", n)
				}
				if p.State != status.Up {
					t.Errorf("path %v after the transfer, want up", p.State)
				}
				// A lost reply leaves the listener an orphan session under the first attempt's
				// id (the dialer founds again under a fresh one, dialer.go): it has no path, so
				// it must go once ReconnectTimeout has passed, and the live one must stay.
				orphans := len(ln.Sessions()) - 1
				gone, ok := testkit.WaitUntil(2*reconnect, 10*time.Millisecond, func() bool { return len(ln.Sessions()) == 1 })
				if !ok {
					ss := ln.Sessions()
					for _, s := range ss {
						t.Logf("session %x: %d flows, %s", s.ID[:4], s.Flows, testkit.Describe(s))
					}
					t.Fatalf("listener still holds %d sessions %v after the handshake", len(ss), 2*reconnect)
				}
				t.Logf("%s: %d orphan sessions on the listener, gone %v later", c, orphans, gone)
				dc2, lc2 := testkit.DialAccept(t, d, ln)
				stSend(dc2, lc2, 64<<10, 14).check(t, "a new flow after the orphan went", time.Minute)
			})
		})
	}
}
