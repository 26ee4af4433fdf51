// Reliability matrix row 6a: a path MTU black hole in memory.

package rendr_test

import (
	"testing"
	"testing/synctest"
	"time"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/internal/testlink"
	"github.com/rendr-go/rendr/status"
)

// Row 6 of the reliability matrix: a path MTU of 1280 bytes with a PMTU black hole: larger
// packets are dropped silently, no ICMP. The carrier says it takes 1472-byte datagrams (a
// 1500-byte Ethernet link), rendr starts at 1200 and probes upwards (RFC 8899): the probes over
// the limit vanish, and the path must settle on a size that fits, without dying and with every
// byte exact.

// rlPMTUPayload is the largest UDP payload in a 1280-byte IPv4 packet.
const rlPMTUPayload = 1280 - 20 - 8

// rlCheckMTU fails the test unless each packet path in st settled within [base, limit].
func rlCheckMTU(t *testing.T, side string, st status.Session, base, limit int) []int {
	t.Helper()
	var mtus []int
	for _, p := range st.Paths {
		if p.Packets == nil {
			t.Fatalf("%s: path %s is not a packet path", side, p.Name)
		}
		mtus = append(mtus, p.Packets.MTU)
		if p.Packets.MTU < base || p.Packets.MTU > limit {
			t.Errorf("%s: path %s uses %d-byte datagrams, want %d to %d", side, p.Name, p.Packets.MTU, base, limit)
		}
	}
	return mtus
}

func TestReliabilityPMTUBlackHole(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		link := testlink.PacketConfig{Delay: 10 * time.Millisecond, MTU: rlPMTUPayload, Seed: 61}
		lb := rlNewLab(t, rendr.Options{}, rlSelector, rlSpec{name: "p", packet: true, pab: link, pba: link})
		dc, lc := lb.open()
		defer dc.Close()
		defer lc.Close()
		up, down := stDuplex(dc, lc, 4<<20, 62)
		up.check(t, "dialer to listener", 5*time.Minute)
		down.check(t, "listener to dialer", 5*time.Minute)
		ab, ba := lb.paths["p"].packetStats()
		d := rlCheckMTU(t, "dialer", lb.d.Status(), rlBaseDatagram, rlPMTUPayload)
		l := rlCheckMTU(t, "listener", lb.ln.Sessions()[0], rlBaseDatagram, rlPMTUPayload)
		t.Logf("settled on %v (dialer) and %v (listener) bytes; oversize datagrams dropped: %d up, %d down; carriers dialed %d",
			d, l, ab.Oversize, ba.Oversize, lb.paths["p"].dials())
		if ab.Oversize == 0 || ba.Oversize == 0 {
			t.Errorf("no probe over the limit was sent (up %d, down %d): the search did not run", ab.Oversize, ba.Oversize)
		}
		if n := lb.paths["p"].dials(); n != 1 {
			t.Errorf("the path was dialed %d times: the black hole must cost probes, not the path", n)
		}
	})
}
