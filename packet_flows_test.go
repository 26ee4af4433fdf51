package rendr_test

import (
	"context"
	"encoding/binary"
	"net"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/internal/testlink"
)

// Packet flows over Race and Bond, in virtual time.

// stPacketPair opens a packet flow and accepts it.
func (lb *stLab) packetPair() (dc, lc *rendr.PacketConn) {
	lb.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dc, err := lb.d.DialPacket(ctx)
	if err != nil {
		lb.t.Fatalf("DialPacket: %v", err)
	}
	// The listening side learns of the flow from its OPEN or first datagram.
	if _, err := dc.Write([]byte("hello")); err != nil {
		lb.t.Fatal(err)
	}
	lc, err = lb.ln.AcceptPacket(ctx)
	if err != nil {
		lb.t.Fatalf("AcceptPacket: %v", err)
	}
	b := make([]byte, 16)
	if n, err := lc.Read(b); err != nil || string(b[:n]) != "hello" {
		lb.t.Fatalf("first datagram: %q, %v", b[:n], err)
	}
	return dc, lc
}

// dgResult is what a paced datagram run saw.
type dgResult struct {
	delays []time.Duration // one per datagram received, in arrival order
	got    []bool          // by sequence number
	dups   int             // datagrams delivered twice (must stay 0)
}

func (r dgResult) received() int {
	n := 0
	for _, g := range r.got {
		if g {
			n++
		}
	}
	return n
}

// stDatagrams writes n datagrams of size bytes, one every interval, each carrying its number
// and send time, and reads them on the other side until the last one's deadline passed.
func stDatagrams(t *testing.T, w, r net.Conn, n, size int, every time.Duration) dgResult {
	t.Helper()
	defer stPaced(w, n, size, every)()
	res := dgResult{got: make([]bool, n)}
	b := make([]byte, size+100)
	r.SetReadDeadline(time.Now().Add(time.Duration(n)*every + 5*time.Second))
	defer r.SetReadDeadline(time.Time{})
	for res.received() < n {
		k, err := r.Read(b)
		if err != nil {
			break // the deadline: whatever did not come by now is lost
		}
		if k != size {
			t.Fatalf("datagram of %d bytes, want %d", k, size)
		}
		i := binary.BigEndian.Uint64(b)
		if i >= uint64(n) {
			t.Fatalf("datagram number %d of %d", i, n)
		}
		if res.got[i] {
			res.dups++
			continue
		}
		res.got[i] = true
		res.delays = append(res.delays, time.Since(time.Unix(0, int64(binary.BigEndian.Uint64(b[8:])))))
	}
	return res
}

// TestSynctestPacketRace: datagrams over a Race of a good path and one that loses 30% and is
// then blackholed. The good path never fails, so no datagram may be lost; none may be
// delivered twice, though most arrive twice; p99 latency stays within 10% of the good path
// alone, in both directions.
func TestSynctestPacketRace(t *testing.T) {
	const n, size, every = 1500, 1200, 4 * time.Millisecond
	var alone time.Duration
	synctest.Test(t, func(t *testing.T) {
		lb := stNewLab(t, rendr.Options{}, stLinkSpec{name: "good", ab: stGoodLink, ba: stGoodLink})
		dc, lc := lb.packetPair()
		lb.mustWait("path up", 10*time.Second, lb.allUp)
		res := stDatagrams(t, dc, lc, n, size, every)
		if res.received() != n || res.dups != 0 {
			t.Fatalf("good path alone: %d of %d received, %d twice", res.received(), n, res.dups)
		}
		alone = p99(res.delays)
	})
	for _, dir := range []string{"dialer to listener", "listener to dialer"} {
		t.Run(dir, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				lb := stRaceLab(t)
				dc, lc := lb.packetPair()
				lb.mustWait("paths up", 10*time.Second, lb.allUp)
				lb.mustWait("the listening side racing", 10*time.Second, func() bool { return len(lb.listenerActive()) == 2 })
				w, r := dc, lc
				if dir == "listener to dialer" {
					w, r = lc, dc
				}
				go func() {
					time.Sleep(n * every / 2)
					lb.paths["lossy"].live().Blackhole(true)
				}()
				res := stDatagrams(t, w, r, n, size, every)
				st := r.Stats()
				t.Logf("%s: %d of %d received, p99 %v (good path alone %v); receiver dropped %d copies",
					dir, res.received(), n, p99(res.delays), alone, st.Duplicates)
				if res.received() != n || res.dups != 0 {
					t.Fatalf("%d of %d received, %d delivered twice", res.received(), n, res.dups)
				}
				if st.Duplicates == 0 {
					t.Fatal("no copy was dropped: the datagrams did not go on both paths")
				}
				if got := p99(res.delays); got > alone+alone/10 {
					t.Fatalf("p99 latency %v under Race, more than 10%% above the good path alone (%v)", got, alone)
				}
			})
		})
	}
}

// TestSynctestPacketBondKill: datagrams over a Bond while one child is killed and comes back.
// Only datagrams in flight on the killed path may be lost; none is delivered twice, and
// everything sent once the path is gone arrives.
func TestSynctestPacketBondKill(t *testing.T) {
	fast := testlink.Config{Delay: 5 * time.Millisecond, Rate: 4 << 20, Buffer: 256 << 10, Seed: 31}
	slow := testlink.Config{Delay: 20 * time.Millisecond, Rate: 2 << 20, Buffer: 256 << 10, Seed: 32}
	for _, how := range []string{"close", "reset", "stall"} {
		t.Run(how, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				lb := stNewLabGraph(t, rendr.Options{}, func(p map[string]*rendr.Target) *rendr.Target {
					return rendr.Bond("bond", p["fast"], p["slow"])
				}, stLinkSpec{name: "fast", ab: fast, ba: fast}, stLinkSpec{name: "slow", ab: slow, ba: slow})
				dc, lc := lb.packetPair()
				lb.mustWait("paths up", 10*time.Second, lb.allUp)
				const n, size, every = 3000, 1000, time.Millisecond
				go func() {
					time.Sleep(time.Second)
					l := lb.paths["fast"].live()
					switch how {
					case "close":
						l.Kill(false)
					case "reset":
						l.Kill(true)
					case "stall":
						l.Blackhole(true)
					}
				}()
				res := stDatagrams(t, dc, lc, n, size, every)
				ws, rs := dc.Stats(), lc.Stats()
				lost := n - res.received()
				t.Logf("%s: %d of %d received; sender %+v; receiver %+v", how, res.received(), n, ws, rs)
				if res.dups != 0 {
					t.Fatalf("%d datagrams delivered twice", res.dups)
				}
				if ws.Sent != uint64(n+1) || ws.SendDrops != 0 {
					t.Fatalf("sender sent %d and dropped %d of %d", ws.Sent, ws.SendDrops, n+1)
				}
				// A close or reset loses what the fast path had in flight (a few datagrams at
				// this rate). A blackhole also loses what the Bond sends it until it is
				// suspected: no probe answer for 100ms (silenceFloor), after a probe sent at
				// most 50ms after the fault, at about two thirds of 1000 datagrams a second.
				limit := 50
				if how == "stall" {
					limit = 250
				}
				if lost > limit {
					t.Fatalf("%d datagrams lost, more than %d", lost, limit)
				}
				for i := n - 500; i < n; i++ {
					if !res.got[i] {
						t.Fatalf("datagram %d, sent long after the path died, was lost", i)
					}
				}
			})
		})
	}
}
