package rendr_test

import (
	"encoding/binary"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rendr-go/rendr"
)

// ipv4 builds an IPv4 packet header with a transport header carrying the ports.
func ipv4(src, dst [4]byte, proto byte, sport, dport uint16) []byte {
	p := make([]byte, 28)
	p[0] = 0x45
	p[9] = proto
	copy(p[12:], src[:])
	copy(p[16:], dst[:])
	binary.BigEndian.PutUint16(p[20:], sport)
	binary.BigEndian.PutUint16(p[22:], dport)
	return p
}

func ipv6(src, dst byte, proto byte, sport, dport uint16) []byte {
	p := make([]byte, 48)
	p[0] = 0x60
	p[6] = proto
	p[8+15], p[24+15] = src, dst
	binary.BigEndian.PutUint16(p[40:], sport)
	binary.BigEndian.PutUint16(p[42:], dport)
	return p
}

func TestFlowHashIP(t *testing.T) {
	a, b := [4]byte{10, 0, 0, 1}, [4]byte{10, 0, 0, 2}
	out := rendr.FlowHashIP(ipv4(a, b, 6, 40000, 443))
	if back := rendr.FlowHashIP(ipv4(b, a, 6, 443, 40000)); back != out {
		t.Fatal("the two directions of one TCP connection hash differently")
	}
	if again := rendr.FlowHashIP(ipv4(a, b, 6, 40000, 443)); again != out {
		t.Fatal("the same packet hashes differently")
	}
	distinct := map[uint64]bool{out: true}
	for _, p := range [][]byte{
		ipv4(a, b, 6, 40001, 443),  // another port
		ipv4(a, b, 17, 40000, 443), // UDP
		ipv4(a, [4]byte{10, 0, 0, 3}, 6, 40000, 443),
		ipv6(1, 2, 6, 40000, 443),
		ipv6(1, 2, 17, 40000, 443),
	} {
		distinct[rendr.FlowHashIP(p)] = true
	}
	if len(distinct) != 6 {
		t.Fatalf("%d distinct hashes for 6 distinct 5-tuples", len(distinct))
	}
	if rendr.FlowHashIP(ipv6(1, 2, 6, 40000, 443)) != rendr.FlowHashIP(ipv6(2, 1, 6, 443, 40000)) {
		t.Fatal("IPv6: the two directions hash differently")
	}
	for _, bad := range [][]byte{nil, {0x45}, {0x60, 0}, {0x10, 0, 0, 0}} {
		rendr.FlowHashIP(bad) // short or not IP: no panic
	}
	pkt := ipv4(a, b, 6, 1, 2)
	if n := testing.AllocsPerRun(100, func() { rendr.FlowHashIP(pkt) }); n != 0 {
		t.Fatalf("%v allocations per hash", n)
	}
}

// TestSynctestFlowHashPins: over a Bond, a packet flow with SetFlowHash sends every datagram
// of one hash on one path; without it, the Bond spreads them over both paths when one cannot
// carry them alone.
func TestSynctestFlowHashPins(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		lb := stNewLabGraph(t, rendr.Options{}, func(p map[string]*rendr.Target) *rendr.Target {
			return rendr.Bond("bond", p["a"], p["b"])
		}, stLinkSpec{name: "a", ab: stGoodLink, ba: stGoodLink}, stLinkSpec{name: "b", ab: stGoodLink, ba: stGoodLink})
		dc, lc := lb.packetPair()
		lb.mustWait("paths up", 10*time.Second, lb.allUp)
		sent := func() map[string]int64 {
			m := map[string]int64{}
			for _, p := range lb.status().Paths {
				m[p.Name] = p.BytesSent
			}
			return m
		}
		send := func(every time.Duration) map[string]int64 {
			before := sent()
			res := stDatagrams(t, dc, lc, 2000, 1000, every)
			if res.received() != 2000 || res.dups != 0 {
				t.Fatalf("%d of 2000 received, %d twice", res.received(), res.dups)
			}
			after := sent()
			for k := range after {
				after[k] -= before[k]
			}
			return after
		}
		dc.SetFlowHash(func([]byte) uint64 { return 7 }) // one inner connection
		pinned := send(500 * time.Microsecond)
		one, other := pinned["a"], pinned["b"]
		if one < other {
			one, other = other, one
		}
		if one < 2000*1000 || other > 200<<10 {
			t.Fatalf("pinned: %v bytes per path; want every datagram on one path", pinned)
		}
		// Unpinned, the Bond sends each record where it arrives first (earliest completion):
		// while one path carries the load alone it may take it all, so the load here (33 MB/s)
		// is more than one path's 20 MiB/s.
		dc.SetFlowHash(nil)
		spread := send(30 * time.Microsecond)
		if spread["a"] < 200<<10 || spread["b"] < 200<<10 {
			t.Fatalf("unpinned: %v bytes per path; want the Bond to use both", spread)
		}
	})
}
