// Reliability matrix row 4a: datagrams duplicated, reordered and corrupted in memory.

package rendr_test

import (
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/internal/path"
	"github.com/rendr-go/rendr/internal/testlink"
	"github.com/rendr-go/rendr/status"
)

// Row 4 of the reliability matrix: datagram paths that duplicate 25% of datagrams, reorder
// them (a jitter far above the spacing of packets) and corrupt 5%. Every byte must arrive
// exactly once and in order; a corrupted datagram fails authentication and is dropped, so none
// reaches a flow (the SHA-256 over the data says so), and it is counted as forged. Stream
// carriers cannot duplicate or reorder; a corrupted record there kills the path and the
// session moves: TestSynctestCorruptActive (in memory) and TestAdversarialCorruption (TCP,
// QUIC, gVisor and udpflow) cover that.

// rlForged adds up the forged-datagram counters of a side's packet paths.
func rlForged(st status.Session) (forged, lost, sent uint64) {
	for _, p := range st.Paths {
		if p.Packets != nil {
			forged += p.Packets.Forged
			lost += p.Packets.Lost
			sent += p.Packets.Sent
		}
	}
	return forged, lost, sent
}

func TestReliabilityMangledDatagrams(t *testing.T) {
	for _, g := range []struct {
		name string
		root func([]*rendr.Target) *rendr.Target
	}{{"selector", rlSelector}, {"bond", rlBond}} {
		t.Run(g.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				mangle := func(seed int64) testlink.PacketConfig {
					return testlink.PacketConfig{Delay: 10 * time.Millisecond, Jitter: 8 * time.Millisecond,
						Dup: 0.25, Corrupt: 0.05, Seed: seed}
				}
				lb := rlNewLab(t, rendr.Options{}, g.root,
					rlSpec{name: "a", packet: true, pab: mangle(51), pba: mangle(52)},
					rlSpec{name: "b", packet: true, pab: mangle(53), pba: mangle(54)})
				dc, lc := lb.open()
				defer dc.Close()
				defer lc.Close()
				const size = 2 << 20
				up, down := stDuplex(dc, lc, size, 55)
				up.check(t, "dialer to listener", 5*time.Minute)
				down.check(t, "listener to dialer", 5*time.Minute)
				var ab, ba testlink.PacketStats
				for _, p := range lb.paths {
					x, y := p.packetStats()
					rlAddStats(&ab, x)
					rlAddStats(&ba, y)
				}
				dForged, dLost, dSent := rlForged(lb.d.Status())
				var lForged, lLost, lSent uint64
				for _, s := range lb.ln.Sessions() {
					f, l, n := rlForged(s)
					lForged, lLost, lSent = lForged+f, lLost+l, lSent+n
				}
				t.Logf("%s: %d MiB each way in %v (virtual); links: up %s, down %s; dialer sent %d packets, declared %d lost, dropped %d forged; listener sent %d, declared %d lost, dropped %d forged; carriers dialed: a %d, b %d",
					g.name, size>>20, up.finished.Sub(up.start), rlStatsString(ab), rlStatsString(ba),
					dSent, dLost, dForged, lSent, lLost, lForged, lb.paths["a"].dials(), lb.paths["b"].dials())
				if ab.Duplicated == 0 || ab.Corrupted == 0 || ba.Duplicated == 0 || ba.Corrupted == 0 {
					t.Fatalf("the links did not mangle both ways: up %s, down %s", rlStatsString(ab), rlStatsString(ba))
				}
				// Every corrupted copy that was read was refused; a few may still be on the way.
				if lForged == 0 || dForged == 0 || lForged > uint64(ab.Corrupted) || dForged > uint64(ba.Corrupted) {
					t.Fatalf("forged datagrams counted: listener %d of %d corrupted, dialer %d of %d corrupted",
						lForged, ab.Corrupted, dForged, ba.Corrupted)
				}
				// In virtual time nothing starves: no fault here may cost a carrier.
				if lb.logs.Logged(path.ErrRecord) || lb.paths["a"].dials() != 1 || lb.paths["b"].dials() != 1 {
					t.Errorf("a path died (record error logged: %v); carriers dialed: a %d, b %d",
						lb.logs.Logged(path.ErrRecord), lb.paths["a"].dials(), lb.paths["b"].dials())
				}
			})
		})
	}
}

func rlStatsString(s testlink.PacketStats) string {
	return fmt.Sprintf("{sent %d delivered %d dup %d corrupt %d lost %d overflow %d}",
		s.Sent, s.Delivered, s.Duplicated, s.Corrupted, s.Lost, s.Overflow)
}
