package path

import (
	"bytes"
	"fmt"
	"math"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/flynn/noise"

	"github.com/rendr-go/rendr/internal/record"
	"github.com/rendr-go/rendr/internal/wire"
)

// pktHandler records the DATA frames a packet path delivers and what it reports lost.
type pktHandler struct {
	*handler
	mu       sync.Mutex
	got      map[uint64]int // DATA frames by offset: how many times each arrived
	lost     map[uint64]int // Carried DATA by offset: how many times each was reported lost
	writable chan struct{}
}

func newPktHandler() *pktHandler {
	return &pktHandler{handler: newHandler(), got: map[uint64]int{}, lost: map[uint64]int{},
		writable: make(chan struct{}, 1)}
}

func (h *pktHandler) Frame(p *Path, f *wire.Frame) error {
	if f.Type == wire.TypeData {
		h.mu.Lock()
		h.got[f.Offset]++
		h.mu.Unlock()
	}
	return h.handler.Frame(p, f)
}

func (h *pktHandler) Writable(p *Path) {
	select {
	case h.writable <- struct{}{}:
	default:
	}
	h.handler.Writable(p)
}

func (h *pktHandler) Lost(p *Path, cs []Carried) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, c := range cs {
		if c.Kind == record.CarriedData {
			h.lost[c.Off]++
		}
	}
}

const pktPayload = 1000

// cipherPair makes the record ciphers of both ends of an encrypted path.
func cipherPair(t *testing.T) (sa, ra, sb, rb *noise.CipherState) {
	t.Helper()
	ca, cb := net.Pipe()
	defer ca.Close()
	defer cb.Close()
	ia, ib := secured(t, ca, cb)
	return ia.Send, ia.Recv, ib.Send, ib.Recv
}

// pktPair starts two encrypted packet paths over l's ends.
func pktPair(t *testing.T, a, b *pktEnd) (pa, pb *Path, ha, hb *pktHandler) {
	t.Helper()
	sa, ra, sb, rb := cipherPair(t)
	ha, hb = newPktHandler(), newPktHandler()
	pa = New(1, a, sa, ra, Config{}, ha)
	pb = New(1, b, sb, rb, Config{}, hb)
	pa.Start()
	pb.Start()
	t.Cleanup(func() {
		pa.Close(nil)
		pb.Close(nil)
		pa.Wait()
		pb.Wait()
	})
	return pa, pb, ha, hb
}

// sendData sends n records of one DATA frame each, as the engine would: only while Space
// allows, listing what each carries. It checks, at every send, that the path never lets more
// than its window (and one record) into flight.
func sendData(t *testing.T, p *Path, h *pktHandler, from, n int) {
	t.Helper()
	sendDataSized(t, p, h, from, n, pktPayload)
}

// sendDataSized is sendData with size bytes of payload per record, still numbered by
// pktPayload offsets (the handler keys records by offset).
func sendDataSized(t *testing.T, p *Path, h *pktHandler, from, n, size int) {
	t.Helper()
	payload := make([]byte, size)
	for i := from; i < from+n; i++ {
		for p.Space() <= 0 {
			select {
			case <-h.writable:
			case <-time.After(5 * time.Second):
				t.Fatalf("record %d: no room for 5s: %+v", i, p.PacketStats())
			}
		}
		st := p.PacketStats()
		if st.InFlight > st.Window+p.pk.mtu {
			t.Fatalf("in flight %d over the window %d", st.InFlight, st.Window)
		}
		r := NewRecord()
		r.SetLimit(p.MaxRecord())
		off := uint64(i * pktPayload)
		r.B = wire.AppendData(r.B, 1, off, false, payload[:min(size, p.MaxRecord()-32)])
		r.Carried = append(r.Carried, Carried{Kind: record.CarriedData, Flow: 1, Off: off, Len: pktPayload})
		if !p.Send(r) {
			t.Fatalf("record %d: path closed: %v", i, p.Cause())
		}
	}
}

// settled waits until every one of n records arrived or was reported lost.
func settled(t *testing.T, tx, rx *pktHandler, from, n int) (arrived, lost int) {
	t.Helper()
	for range 600 {
		arrived, lost = 0, 0
		tx.mu.Lock()
		rx.mu.Lock()
		done := true
		for i := from; i < from+n; i++ {
			off := uint64(i * pktPayload)
			if rx.got[off] > 0 {
				arrived++
			} else if tx.lost[off] > 0 {
				lost++
			} else {
				done = false
			}
			if rx.got[off] > 1 {
				rx.mu.Unlock()
				tx.mu.Unlock()
				t.Fatalf("record at %d delivered %d times", off, rx.got[off])
			}
		}
		rx.mu.Unlock()
		tx.mu.Unlock()
		if done {
			return arrived, lost
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("after 30s: %d arrived, %d reported lost, of %d", arrived, lost, n)
	return
}

// TestPacketPathAccountsForEveryRecord: over a link that loses, duplicates and reorders in
// both directions (acknowledgements included), every record either arrives exactly once or is
// reported lost, and the path stays up.
func TestPacketPathAccountsForEveryRecord(t *testing.T) {
	for _, loss := range []float64{0, 0.01, 0.1} {
		t.Run(fmt.Sprint(loss), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				cfg := pktConfig{Loss: loss, Dup: 0.02, Delay: 10 * time.Millisecond, Jitter: 4 * time.Millisecond}
				_, a, b := newPktLink(1, cfg, cfg, 1400, 1200)
				pa, pb, ha, hb := pktPair(t, a, b)
				const n = 3000
				sendData(t, pa, ha, 0, n)
				arrived, lost := settled(t, ha, hb, 0, n)
				st := pa.PacketStats()
				t.Logf("loss %v: %d arrived, %d lost; %+v", loss, arrived, lost, st)
				if loss == 0 && lost > 0 {
					t.Errorf("%d records reported lost on a link that loses none", lost)
				}
				if loss > 0 && lost == 0 {
					t.Errorf("no loss reported on a link losing %v", loss)
				}
				if st.Window < 2*1200 {
					t.Errorf("window %d below two packets", st.Window)
				}
				if pa.Cause() != nil || pb.Cause() != nil {
					t.Fatalf("a path closed: %v / %v", pa.Cause(), pb.Cause())
				}
			})
		})
	}
}

// TestPacketPathSlowsForMarks: a receiver that reads slower than the sender can send, with a
// bounded queue in front of it. Without congestion marks the window grows until the queue
// overflows, and records are lost. With them (the carrier marks what it reads while the queue
// is an eighth full), the sender shrinks its window on the marks the acknowledgements report,
// and nothing is lost: every record arrives once.
func TestPacketPathSlowsForMarks(t *testing.T) {
	for _, markAt := range []int{0, 32} {
		t.Run(fmt.Sprint("markAt=", markAt), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				// 100 µs a datagram: about 12 MB/s of 1200-byte packets, 2 ms each way.
				ab := pktConfig{Delay: 2 * time.Millisecond, ReadCost: 100 * time.Microsecond, Queue: 256, MarkAt: markAt}
				ba := pktConfig{Delay: 2 * time.Millisecond}
				_, a, b := newPktLink(4, ab, ba, 1200, 1200)
				pa, pb, ha, hb := pktPair(t, a, b)
				const n = 5000
				sendData(t, pa, ha, 0, n)
				arrived, lost := settled(t, ha, hb, 0, n)
				st, rt := pa.PacketStats(), pb.PacketStats()
				t.Logf("%d arrived, %d lost; sender %+v; receiver marked %d", arrived, lost, st, rt.MarkedIn)
				if markAt == 0 {
					if st.Lost == 0 || st.Marked != 0 || rt.MarkedIn != 0 {
						t.Fatalf("no marks: %d packets lost, %d marked, %d marked in: want losses and no marks",
							st.Lost, st.Marked, rt.MarkedIn)
					}
					return
				}
				if lost > 0 || st.Lost > 0 {
					t.Errorf("%d records (%d packets) lost: the marks should have kept the queue from overflowing", lost, st.Lost)
				}
				if rt.MarkedIn == 0 || st.Marked == 0 || st.Marked > rt.MarkedIn {
					t.Errorf("receiver marked %d, sender was told of %d: want both above 0, and no more told than marked",
						rt.MarkedIn, st.Marked)
				}
				if pa.Cause() != nil || pb.Cause() != nil {
					t.Fatalf("a path closed: %v / %v", pa.Cause(), pb.Cause())
				}
			})
		})
	}
}

// TestPacketPathKeepsWindowForOccasionalMarks: on a long path whose window was found, a mark
// now and then (one datagram in 500: a receiver that falls behind for a moment) leaves the
// window near where it was, while a mark on every datagram (one that cannot keep up) still
// shrinks it far. Nothing is lost either way.
func TestPacketPathKeepsWindowForOccasionalMarks(t *testing.T) {
	for _, tc := range []struct{ every, n int }{{500, 4000}, {1, 1000}} {
		t.Run(fmt.Sprint("markEvery=", tc.every), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ab := pktConfig{Delay: 25 * time.Millisecond, MarkEvery: tc.every}
				ba := pktConfig{Delay: 25 * time.Millisecond}
				_, a, b := newPktLink(12, ab, ba, 1200, 1200)
				pa, pb, ha, hb := pktPair(t, a, b)
				// Congestion avoidance at 200 packets, as if slow start had found that.
				const w = 200 * 1200
				pa.mu.Lock()
				pa.pk.cc.cwnd, pa.pk.cc.ssthresh = w, w
				pa.mu.Unlock()
				sendData(t, pa, ha, 0, tc.n)
				arrived, lost := settled(t, ha, hb, 0, tc.n)
				st, rt := pa.PacketStats(), pb.PacketStats()
				t.Logf("%d arrived, %d lost; sender %+v; receiver marked %d", arrived, lost, st, rt.MarkedIn)
				if lost > 0 || st.Lost > 0 {
					t.Errorf("%d records (%d packets) lost on a link that loses none", lost, st.Lost)
				}
				if st.Marked == 0 || st.Marked > rt.MarkedIn {
					t.Fatalf("receiver marked %d, sender was told of %d", rt.MarkedIn, st.Marked)
				}
				if tc.every > 1 && st.Window < w*9/10 {
					t.Errorf("window %d after %d occasional marks: want at least 90%% of %d", st.Window, st.Marked, w)
				}
				if tc.every == 1 && st.Window > w/4 {
					t.Errorf("window %d with every packet marked: want under a quarter of %d", st.Window, w)
				}
			})
		})
	}
}

// TestPacketPathFindsMTU: a link that silently drops datagrams over 1400 bytes, behind a
// carrier that would take 9000: the search settles between 1368 and 1400 and nothing the
// engine sent is lost to it.
func TestPacketPathFindsMTU(t *testing.T) {
	for _, refuse := range []bool{false, true} {
		t.Run(fmt.Sprint("refused=", refuse), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				cfg := pktConfig{Delay: 5 * time.Millisecond, MTU: 1400, RefuseBig: refuse}
				_, a, b := newPktLink(2, cfg, cfg, 9000, 1200)
				pa, _, ha, hb := pktPair(t, a, b)
				const n = 2000
				sendData(t, pa, ha, 0, n)
				_, lost := settled(t, ha, hb, 0, n)
				time.Sleep(time.Second)
				st := pa.PacketStats()
				if st.MTU < 1368 || st.MTU > 1400 {
					t.Fatalf("MTU %d, want 1368 to 1400", st.MTU)
				}
				if lost > 0 {
					t.Fatalf("%d records lost: probes must be the only casualties of the search", lost)
				}
				if m := pa.MaxRecord(); m+pa.pk.overhead()+ackReserve != st.MTU {
					t.Fatalf("MaxRecord %d for MTU %d", m, st.MTU)
				}
			})
		})
	}
}

// TestPacketPathDropsForgeries: datagrams that do not authenticate, injected from anywhere,
// are counted and dropped; the path and its traffic go on.
func TestPacketPathDropsForgeries(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := pktConfig{Delay: 5 * time.Millisecond}
		_, a, b := newPktLink(3, cfg, cfg, 1400, 1200)
		pa, pb, ha, hb := pktPair(t, a, b)
		for i := range 50 {
			junk := make([]byte, 40+i)
			junk[7] = byte(i) // packet numbers 0 to 49: inside the replay window
			b.inject(pktIn{b: junk, from: a.LocalAddr()})
			b.inject(pktIn{b: junk[:5], from: pktAddr("elsewhere")})
		}
		sendData(t, pa, ha, 0, 500)
		settled(t, ha, hb, 0, 500)
		if st := pb.PacketStats(); st.Forged != 100 {
			t.Fatalf("%d forged datagrams counted, want 100", st.Forged)
		}
		if pa.Cause() != nil || pb.Cause() != nil {
			t.Fatalf("a path closed: %v / %v", pa.Cause(), pb.Cause())
		}
		if n := b.sentTo("elsewhere"); n != 0 {
			t.Fatalf("%d datagrams sent to the forger's address", n)
		}
	})
}

// TestPacketPathFollowsRebinding: the sending end moves to a new address mid-transfer (a NAT
// gave it a new port). The other end validates the address, moves there, and nothing is
// lost beyond what the move dropped, which is reported. Copies of the sender's datagrams
// replayed from a third address change nothing and get nothing back.
func TestPacketPathFollowsRebinding(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := pktConfig{Delay: 5 * time.Millisecond}
		_, a, b := newPktLink(4, cfg, cfg, 1400, 1200)
		pa, pb, ha, hb := pktPair(t, a, b)
		// Capture what a sends, to replay it from elsewhere later.
		var captured [][]byte
		var cmu sync.Mutex
		a.mu.Lock()
		a.tap = func(d []byte) {
			cmu.Lock()
			if len(captured) < 100 {
				captured = append(captured, append([]byte(nil), d...))
			}
			cmu.Unlock()
		}
		a.mu.Unlock()
		sendData(t, pa, ha, 0, 500)
		settled(t, ha, hb, 0, 500)
		a.rebind("end0-new")
		var attacker sync.WaitGroup
		defer attacker.Wait()
		attacker.Go(func() {
			// The attacker's copies: the first datagrams b received, sent again.
			for range 20 {
				cmu.Lock()
				for _, d := range captured {
					b.inject(pktIn{b: d, from: pktAddr("evil")})
				}
				cmu.Unlock()
				time.Sleep(10 * time.Millisecond)
			}
		})
		sendData(t, pa, ha, 500, 1500)
		settled(t, ha, hb, 500, 1500)
		st := pb.PacketStats()
		if st.Rebinds != 1 {
			t.Fatalf("%d rebinds, want 1", st.Rebinds)
		}
		if got := b.RemoteAddr().String(); got != "end0-new" {
			t.Fatalf("b sends to %s", got)
		}
		if pa.Cause() != nil || pb.Cause() != nil {
			t.Fatalf("a path closed: %v / %v", pa.Cause(), pb.Cause())
		}
		if n := b.sentTo("evil"); n != 0 {
			t.Fatalf("%d datagrams sent to the replaying address", n)
		}
	})
}

// TestAckRanges: packet numbers arriving in any order become the ranges a PATH_ACK reports,
// newest first, merged where they touch.
func TestAckRanges(t *testing.T) {
	p := &Path{pk: &pkState{}}
	p.pk.ackTimer = time.NewTimer(time.Hour)
	now := time.Now()
	for _, pn := range []uint64{0, 1, 2, 5, 4, 9, 7, 8, 3, 12} {
		p.receivedLocked(pn, true, false, now)
	}
	want := []wire.AckRange{{Lo: 12, Hi: 12}, {Lo: 7, Hi: 9}, {Lo: 0, Hi: 5}}
	if !slices.Equal(p.pk.ranges, want) {
		t.Fatalf("ranges %v, want %v", p.pk.ranges, want)
	}
	p.receivedLocked(6, true, false, now)
	p.receivedLocked(10, true, false, now)
	p.receivedLocked(11, true, false, now)
	if want := []wire.AckRange{{Lo: 0, Hi: 12}}; !slices.Equal(p.pk.ranges, want) {
		t.Fatalf("ranges %v, want %v", p.pk.ranges, want)
	}
}

// TestPacketPathUnvalidatedPeer: the listening side of a datagram carrier cannot trust the
// source address of the first datagram. Until a packet from the peer authenticates, it sends
// that address at most three times the base datagram size, however long it waits and
// however much it has to send; the first authenticated packet lifts the limit.
func TestPacketPathUnvalidatedPeer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := pktConfig{Delay: 5 * time.Millisecond}
		_, a, b := newPktLink(5, cfg, cfg, 1400, 1200)
		sa, ra, sb, rb := cipherPair(t)
		ha, hb := newPktHandler(), newPktHandler()
		pa := New(1, a, sa, ra, Config{Unvalidated: true}, ha)
		pa.Start()
		defer func() { pa.Close(nil); pa.Wait() }()
		// The peer says nothing for a second (a silent path dies after 1.5 s) while pa has
		// data to send.
		for i := range 20 {
			r := NewRecord()
			r.B = wire.AppendData(r.B, 1, uint64(i*pktPayload), false, make([]byte, pktPayload))
			pa.Send(r)
		}
		time.Sleep(time.Second)
		if n := a.bytesTo("end1"); n > 3*1200 || n == 0 {
			t.Fatalf("sent %d bytes to an unproven address, want 1 to %d", n, 3*1200)
		}
		pb := New(1, b, sb, rb, Config{}, hb)
		pb.Start()
		defer func() { pb.Close(nil); pb.Wait() }()
		settled(t, ha, hb, 0, 20)
	})
}

// TestPacketPathPaces: with a window of many packets and a 20 ms round trip, the path does not
// send its window at once: once the RTT is known, at most a burst (paceBurst full packets, or
// a millisecond's worth) and the two packets a probe timeout may add leave at any one instant.
func TestPacketPathPaces(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := pktConfig{Delay: 10 * time.Millisecond}
		_, a, b := newPktLink(6, cfg, cfg, 1400, 1200)
		var mu sync.Mutex
		at := map[time.Time]int{} // data bytes sent at each instant
		a.mu.Lock()
		a.tap = func(d []byte) {
			if len(d) > 500 {
				mu.Lock()
				at[time.Now()] += len(d)
				mu.Unlock()
			}
		}
		a.mu.Unlock()
		pa, _, ha, hb := pktPair(t, a, b)
		sendData(t, pa, ha, 0, 3000)
		settled(t, ha, hb, 0, 3000)
		st := pa.PacketStats()
		if st.Window < 40*1200 {
			t.Fatalf("window %d: too small for the test to show pacing", st.Window)
		}
		mu.Lock()
		defer mu.Unlock()
		var first time.Time
		for ts := range at {
			if first.IsZero() || ts.Before(first) {
				first = ts
			}
		}
		worst := 0
		for ts, n := range at {
			if ts.Sub(first) > 100*time.Millisecond { // past slow start's first round trips
				worst = max(worst, n)
			}
		}
		// A burst: paceBurst packets or a millisecond at 1.25 windows per 20 ms round trip,
		// and the two packets of a probe timeout. The link loses nothing, so the window
		// only grew: the final one bounds every earlier burst.
		burst := max(paceBurst*st.MTU, int(1.25*float64(st.Window)/20))
		if limit := burst + 2*st.MTU; worst > limit || worst > st.Window/4 {
			t.Fatalf("%d data bytes at one instant; the pacer allows %d of a %d-byte window", worst, limit, st.Window)
		}
	})
}

// TestPacketPathBlackHole: the path MTU falls mid-transfer with no error saying so (a tunnel
// came up on the way): large datagrams vanish, small ones pass. The path notices, drops back to
// the base size, finds the new limit, and every record still arrives or is reported lost (and
// so sent again by the engine).
func TestPacketPathBlackHole(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := pktConfig{Delay: 5 * time.Millisecond, MTU: 9000}
		l, a, b := newPktLink(7, cfg, cfg, 9000, 1200)
		pa, _, ha, hb := pktPair(t, a, b)
		sendData(t, pa, ha, 0, 2000)
		settled(t, ha, hb, 0, 2000)
		time.Sleep(time.Second)
		if st := pa.PacketStats(); st.MTU < 8000 {
			t.Fatalf("MTU %d before the black hole, want the link's 9000 or close", st.MTU)
		}
		l.setMTU(1400)
		sendDataSized(t, pa, ha, 2000, 3000, 8000) // records as large as the path takes
		settled(t, ha, hb, 2000, 3000)
		time.Sleep(3 * time.Second)
		st := pa.PacketStats()
		if st.MTU > 1400 || st.MTU < 1200 {
			t.Fatalf("MTU %d after the black hole, want 1200 to 1400", st.MTU)
		}
		if pa.Cause() != nil {
			t.Fatalf("path closed: %v", pa.Cause())
		}
	})
}

// atomicPin counts the pins records gave back, from whichever goroutine releases them.
type atomicPin struct{ n *atomic.Int64 }

func (c atomicPin) Unpin() { c.n.Add(1) }

// TestPacketPathSplitPackets: records whose payload stays in the sender's buffers (Ext, as
// the engine sends them) go as split packets, sealed in parts. Over a lossy link every record
// arrives once, payload pieces at their offsets, or is reported lost; every pin comes back.
func TestPacketPathSplitPackets(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := pktConfig{Loss: 0.05, Delay: 5 * time.Millisecond}
		_, a, b := newPktLink(8, cfg, cfg, 1400, 1200)
		var splits atomic.Int64
		a.mu.Lock()
		a.tap = func(d []byte) {
			if len(d) > 8 && d[0]&0x80 != 0 {
				splits.Add(1)
			}
		}
		a.mu.Unlock()
		pa, pb, ha, hb := pktPair(t, a, b)
		var pins atomic.Int64
		const n = 600
		half := pktPayload / 2
		for i := range n {
			for pa.Space() <= 0 {
				select {
				case <-ha.writable:
				case <-time.After(5 * time.Second):
					t.Fatalf("record %d: no room", i)
				}
			}
			r := NewRecord()
			r.SetLimit(pa.MaxRecord())
			off := uint64(i * pktPayload)
			r.B = wire.AppendDataHeader(r.B, 1, off, false, pktPayload)
			r.AppendExt(bytes.Repeat([]byte{byte(i)}, half), atomicPin{&pins})
			r.AppendExt(bytes.Repeat([]byte{byte(i + 1)}, half), atomicPin{&pins})
			r.Carried = append(r.Carried, Carried{Kind: record.CarriedData, Flow: 1, Off: off, Len: pktPayload})
			if !pa.Send(r) {
				t.Fatalf("record %d: path closed: %v", i, pa.Cause())
			}
		}
		settled(t, ha, hb, 0, n)
		hb.mu.Lock()
		for i := range n {
			off := uint64(i * pktPayload)
			if hb.got[off] != hb.got[off+uint64(half)] {
				t.Fatalf("record %d: its two pieces arrived %d and %d times", i, hb.got[off], hb.got[off+uint64(half)])
			}
		}
		hb.mu.Unlock()
		if splits.Load() == 0 {
			t.Fatal("no split packet sent")
		}
		if pins.Load() != 2*n {
			t.Fatalf("%d of %d pins released", pins.Load(), 2*n)
		}
		if pa.Cause() != nil || pb.Cause() != nil {
			t.Fatalf("a path closed: %v / %v", pa.Cause(), pb.Cause())
		}
	})
}

// TestPacketPathAckFrequency: once a path is under way its receiver acknowledges every tenth
// packet, not every second (each acknowledgement is a system call at each end), and never
// leaves a packet unacknowledged for long: every record is settled.
func TestPacketPathAckFrequency(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := pktConfig{Delay: 5 * time.Millisecond}
		_, a, b := newPktLink(9, cfg, cfg, 1400, 1200)
		pa, pb, ha, hb := pktPair(t, a, b)
		const n = 3000
		sendData(t, pa, ha, 0, n)
		settled(t, ha, hb, 0, n)
		acks := b.sentTo("end0") // pb sends nothing but acknowledgements, PONGs and PINGs
		if acks > n/5 {
			t.Fatalf("%d packets back for %d received: acknowledged more often than every tenth", acks, n)
		}
		if pa.Cause() != nil || pb.Cause() != nil {
			t.Fatalf("a path closed: %v / %v", pa.Cause(), pb.Cause())
		}
	})
}

// TestPathAckCE: a PATH_ACK_CE whose count grew adds the new marks to the round once; the
// same count again, a lower one arriving late, or a higher one with nothing newly
// acknowledged add nothing. The window does not shrink at a mark, but once, when the round
// ends, by half the fraction marked; marks are not losses.
func TestPathAckCE(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newCCRig(t)
		send := func(n int) {
			time.Sleep(time.Millisecond)
			for range n {
				r.p.trackLocked(&pkItem{pn: r.next, size: rigMSS}, time.Now(), nil)
				r.next++
			}
			r.k.next = r.next
			time.Sleep(10 * time.Millisecond)
		}
		r.avoid(30)
		send(20)
		r.ack(0, 9, 0) // opens the round
		w := r.k.cc.cwnd
		r.ack(0, 9, 1)   // the same packets again, with a count: nothing new acknowledged
		r.ack(10, 14, 1) // a mark
		r.ack(10, 14, 1) // the same acknowledgement again
		r.ack(15, 19, 2) // another
		r.ack(10, 14, 1) // an older one, late
		if r.k.marked != 2 || r.k.cc.roundMark != 2 || r.k.cc.roundAck != 20 {
			t.Fatalf("marked %d, round %d marked of %d; want 2, 2 of 20", r.k.marked, r.k.cc.roundMark, r.k.cc.roundAck)
		}
		if r.k.cc.cwnd < w {
			t.Fatalf("window %.0f before the round ended, was %.0f: marks cut it at once", r.k.cc.cwnd, w)
		}
		w = r.k.cc.cwnd
		send(10)
		r.ack(20, 29, 2) // a packet sent after the round began: it ends
		if want := w * (1 - 2.0/20/2); math.Abs(r.k.cc.cwnd-want) > 1 || r.k.cc.alpha != 0.1 {
			t.Fatalf("round's end: window %.0f, alpha %v; want %.0f (2 of 20 marked), 0.1", r.k.cc.cwnd, r.k.cc.alpha, want)
		}
		if st := r.p.PacketStats(); st.Lost != 0 || st.Marked != 2 {
			t.Fatalf("%+v: marks are not losses", st)
		}
	})
}
