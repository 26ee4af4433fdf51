package path

import (
	"bytes"
	"errors"
	"math"
	"runtime/metrics"
	"testing"
	"time"

	"github.com/rendr-go/rendr/internal/wire"
)

// countHandler takes every frame a packet path hands on and counts what it hears; it keeps
// nothing, so what a fuzz input allocates is the path's doing.
type countHandler struct {
	frames, lost, writable, measured int
}

func (h *countHandler) Frame(*Path, *wire.Frame) error { h.frames++; return nil }
func (h *countHandler) Lost(_ *Path, cs []Carried)     { h.lost += len(cs) }
func (h *countHandler) Writable(*Path)                 { h.writable++ }
func (h *countHandler) Measured(*Path)                 { h.measured++ }
func (h *countHandler) Down(*Path, error)              {}

// fuzzInFlight starts a fuzz input: an idle packet path with n data records and a PING of its
// own sent, all still in flight (the window is opened to let them out), so packets 0 to n
// are numbered: the PING first, then the data. As many records again wait in its queue, to
// go as acknowledgements open the window.
func fuzzInFlight(t *testing.T, n int) (*idlePath, *countHandler) {
	h := &countHandler{}
	ip := newIdlePath(h)
	p := ip.p
	p.mu.Lock()
	p.pk.cc.cwnd = float64((n + 1) * 1400)
	p.mu.pingSeq, p.mu.pingAt = 1, time.Now() // outstanding: its loss sends it again
	p.mu.Unlock()
	ping := NewRecord()
	ping.B = wire.AppendPing(ping.B, 1)
	p.SendControl(ping)
	ip.queueData(0, n)
	ip.send(t)
	if k := p.pk; k.next != uint64(n+1) || k.inFlightPackets() != n+1 {
		t.Fatalf("%d packets numbered, %d in flight; want %d", k.next, k.inFlightPackets(), n+1)
	}
	ip.queueData(n, n)
	return ip, h
}

// heapAllocs is the bytes the program has allocated so far.
func heapAllocs(s []metrics.Sample) uint64 {
	metrics.Read(s)
	return s[0].Value.Uint64()
}

func allocSample() []metrics.Sample {
	return []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}
}

// maxStepAlloc bounds what one frame or one packet may make the path allocate: a record or
// two from an empty pool (a lost PING or JOIN_PROOF queued again) and a writer's gather
// buffer, never anything that grows with a field of the frame.
const maxStepAlloc = 1 << 20

// checkPacketState asserts what must hold of a packet path after any input: its books
// balance, its state is bounded by what it sent, and its estimates by the time it has run.
// cwnd0 is the window it started with, elapsed the time since before its first packet.
func checkPacketState(t *testing.T, p *Path, cwnd0 float64, elapsed time.Duration) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	k := p.pk
	inflight, pongs, live := 0, 0, 0
	for i := k.start; i < len(k.sent); i++ {
		sp := &k.sent[i]
		if i > k.start && sp.pn <= k.sent[i-1].pn {
			t.Fatalf("packets in flight out of order: %d after %d", sp.pn, k.sent[i-1].pn)
		}
		if sp.done {
			continue
		}
		live++
		if sp.counted {
			inflight += sp.size
		}
		if sp.pong != 0 {
			pongs++
		}
	}
	if k.inflight != inflight || k.inflight < 0 {
		t.Fatalf("bytes in flight %d, packets in flight add up to %d", k.inflight, inflight)
	}
	if k.pongsOut != pongs || pongs > maxPongsOut {
		t.Fatalf("%d packets carrying a PONG counted, %d in flight (at most %d)", k.pongsOut, pongs, maxPongsOut)
	}
	if settled := k.acked + k.lostPackets + uint64(live); settled > k.next || uint64(len(k.sent)-k.start) > k.next {
		t.Fatalf("%d acknowledged, %d lost, %d in flight, %d kept, of %d packets numbered",
			k.acked, k.lostPackets, live, len(k.sent)-k.start, k.next)
	}
	if k.hasAcked && k.largestAcked >= k.next {
		t.Fatalf("largest acknowledged %d of %d packets numbered", k.largestAcked, k.next)
	}
	if k.marked > k.next {
		t.Fatalf("%d packets marked of %d numbered", k.marked, k.next)
	}
	if k.threshold < 3 || k.threshold > maxThreshold {
		t.Fatalf("reordering threshold %d", k.threshold)
	}
	// The window: never below two packets, and grown by at most the bytes acknowledged
	// (slow start adds exactly those; CUBIC less).
	mss := float64(k.mtu)
	if hi := max(cwnd0, 2*float64(k.c.MaxDatagramSize())) + float64(k.acked)*float64(k.c.MaxDatagramSize()); !(k.cc.cwnd >= minPackets*mss && k.cc.cwnd <= hi) {
		t.Fatalf("window %v: want %v to %v", k.cc.cwnd, minPackets*mss, hi)
	}
	// ssthresh was two packets at least when set; the packet size may have grown since.
	if math.IsNaN(k.cc.ssthresh) || k.cc.ssthresh < minPackets*float64(k.c.BaseDatagramSize()) {
		t.Fatalf("ssthresh %v", k.cc.ssthresh)
	}
	// Every RTT sample is the time since a packet went, less at most maxAckDelay, so no
	// estimate can exceed the time the path has run, whatever delay a PATH_ACK claims.
	e := &p.mu.est
	lim := elapsed + time.Microsecond
	if e.srtt < 0 || e.srtt > lim || e.rttvar < 0 || e.rttvar > lim || e.minRTT < 0 || e.minRTT > lim {
		t.Fatalf("srtt %v rttvar %v min %v after %v", e.srtt, e.rttvar, e.minRTT, elapsed)
	}
	if pto := p.ptoLocked(); pto<<10 <= 0 || pto > max(2*initialRTT, 5*lim+maxAckDelay+time.Millisecond) {
		t.Fatalf("probe timeout %v after %v", pto, elapsed)
	}
	if len(k.ranges) > maxAckRanges || len(k.responses) > maxResponses {
		t.Fatalf("%d ranges, %d responses kept", len(k.ranges), len(k.responses))
	}
	if e.loss < 0 || e.loss > 1 {
		t.Fatalf("loss estimate %v", e.loss)
	}
}

// pathAckSeeds are PATH_ACK and PATH_ACK_CE frames at the edges, for a path that numbered
// packets 0 to n (n+1 of them).
func pathAckSeeds(n uint64) [][]byte {
	all := []wire.AckRange{{Lo: 0, Hi: n}}
	var tiny []wire.AckRange // every other packet, as many ranges as a frame takes
	for i := range min(uint64(wire.MaxAckRanges), n/2+1) {
		tiny = append(tiny, wire.AckRange{Lo: n - 2*i, Hi: n - 2*i})
	}
	var seeds [][]byte
	for _, ce := range []uint64{0, 1, n + 1} {
		seeds = append(seeds,
			wire.AppendPathAck(nil, 0, all, ce),
			wire.AppendPathAck(nil, wire.MaxVarint, all, ce),                // a delay of 146 millennia
			wire.AppendPathAck(nil, 25, tiny, ce),                           // many tiny ranges
			wire.AppendPathAck(nil, 0, []wire.AckRange{{Lo: n, Hi: n}}, ce), // the newest only: the rest lost
		)
	}
	seeds = append(seeds,
		wire.AppendPathAck(nil, 0, []wire.AckRange{{Lo: 0, Hi: n + 1}}, 0),          // one never sent
		wire.AppendPathAck(nil, 0, []wire.AckRange{{Lo: 0, Hi: wire.MaxVarint}}, 0), // 2^62 packets
		wire.AppendPathAck(nil, 0, []wire.AckRange{{Lo: 0, Hi: wire.MaxVarint}}, wire.MaxVarint),
		wire.AppendPathAck(nil, 0, []wire.AckRange{{Lo: 0, Hi: 0}}, 1),
	)
	return seeds
}

// FuzzPacketPathAck feeds a packet path with packets in flight a sequence of arbitrary
// PATH_ACK and PATH_ACK_CE frames, acting on each as the reader does and letting the writer
// send what the window then allows. After each frame: no panic; an error only for an
// acknowledgement of a packet never sent; the path's books balance and stay bounded by what it
// sent (checkPacketState); and the frame cost at most maxStepAlloc bytes, whatever its
// largest, delay, ranges or count said.
func FuzzPacketPathAck(f *testing.F) {
	for _, n := range []uint8{1, 20, 200} {
		for _, s := range pathAckSeeds(uint64(n)) {
			f.Add(n, s)
		}
	}
	// Acknowledgements that grow a little at a time, with marks growing too.
	var grow []byte
	for hi := uint64(0); hi <= 40; hi += 3 {
		grow = wire.AppendPathAck(grow, 100, []wire.AckRange{{Lo: hi / 2, Hi: hi}}, hi/4+1)
	}
	f.Add(uint8(40), grow)
	// A first RTT sample, then one whose delay is huge: as microseconds it is past what a
	// Duration holds, and must neither wrap nor reach the estimate. (1<<64 - 1e9 - 616) / 1000
	// microseconds wrap to about -1 s: added to the sample, if taken off unclamped.
	for _, d := range []uint64{wire.MaxVarint, 1<<63/1000 + 1, 18446744072709551, 1 << 53, uint64(maxAckDelay/time.Microsecond) + 1} {
		two := wire.AppendPathAck(nil, 0, []wire.AckRange{{Lo: 0, Hi: 10}}, 0)
		two = wire.AppendPathAck(two, d, []wire.AckRange{{Lo: 0, Hi: 20}}, 0)
		f.Add(uint8(20), two)
	}
	f.Fuzz(func(t *testing.T, n uint8, frames []byte) {
		t0 := time.Now()
		ip, _ := fuzzInFlight(t, int(n%200)+1)
		defer ip.close()
		p := ip.p
		cwnd0 := p.pk.cc.cwnd
		ms := allocSample()
		var fr wire.Frame
		for len(frames) > 0 {
			var m int
			var err error
			fr, m, err = wire.Parse(frames)
			if err != nil {
				return // the reader closes the path here
			}
			frames = frames[m:]
			if fr.Type != wire.TypePathAck && fr.Type != wire.TypePathAckCE {
				continue
			}
			next := p.pk.next
			a0 := heapAllocs(ms)
			err = p.onAck(&fr)
			p.onTimer()
			if a := heapAllocs(ms) - a0; a > maxStepAlloc {
				t.Fatalf("one PATH_ACK allocated %d bytes", a)
			}
			if err != nil {
				if fr.Seq < next || !errors.Is(err, ErrRecord) {
					t.Fatalf("PATH_ACK of %d, %d packets numbered: %v", fr.Seq, next, err)
				}
				return // the path closes
			}
			if fr.Seq >= next {
				t.Fatalf("PATH_ACK of %d taken, of %d packets numbered", fr.Seq, next)
			}
			checkPacketState(t, p, cwnd0, time.Since(t0))
			ip.send(t)
			checkPacketState(t, p, cwnd0, time.Since(t0))
		}
	})
}

// FuzzPacketRecord feeds a packet path with packets in flight whole decrypted packets of
// arbitrary frames, through the reader's own handling (handlePacket): in is a sequence of
// packets, each a length byte and that many bytes of frames; flags mark them as having met
// congestion (bit 0), as from another address (bit 1), or give the last one's tail as a split
// packet's payload part (bit 2). After each packet: no panic; an error only of the kinds that
// close a path; the state bounded as in FuzzPacketPathAck; at most maxStepAlloc bytes
// allocated; and the writer sends what it must.
func FuzzPacketRecord(f *testing.F) {
	record := func(frames ...[]byte) []byte {
		var b []byte
		for _, fr := range frames {
			b = append(b, byte(len(fr)))
			b = append(b, fr...)
		}
		return b
	}
	const n = 20 // seeds assume packets 0 to n in flight
	acks := pathAckSeeds(n)
	f.Add(uint8(0), record(wire.AppendPing(nil, 1), wire.AppendPong(nil, 1), acks[0]))
	f.Add(uint8(1), record(append(wire.AppendPathChallenge(nil, 7), wire.AppendPathResponse(nil, 7)...)))
	f.Add(uint8(2), record(wire.AppendPathChallenge(nil, 1), wire.AppendPathResponse(nil, 1), wire.AppendPathChallenge(nil, 2),
		wire.AppendPathChallenge(nil, 3), wire.AppendPathChallenge(nil, 4), wire.AppendPathChallenge(nil, 5)))
	f.Add(uint8(0), record(wire.AppendPadding(nil, 200), wire.AppendData(nil, 3, 0, false, []byte("hello")), acks[2]))
	f.Add(uint8(4), record(wire.AppendDataHeader(nil, 3, 10, true, 4), []byte("data")))
	f.Add(uint8(0), record(wire.AppendDataHeader(nil, 3, wire.MaxVarint-4, false, 4), []byte("data")))
	var pings []byte
	for seq := range uint64(40) {
		pings = append(pings, 2)
		pings = wire.AppendPing(pings, seq%64)
	}
	f.Add(uint8(0), pings)
	for _, a := range acks {
		if len(a) < 256 {
			f.Add(uint8(1), record(a, wire.AppendPing(nil, 9)))
		}
	}
	f.Add(uint8(3), []byte{3, 0, 0, 0})
	f.Fuzz(func(t *testing.T, flags uint8, in []byte) {
		t0 := time.Now()
		ip, _ := fuzzInFlight(t, n)
		defer ip.close()
		p := ip.p
		cwnd0 := p.pk.cc.cwnd
		marked := flags&1 != 0
		ms := allocSample()
		for len(in) > 0 {
			l := min(int(in[0]), len(in)-1)
			frames := in[1 : 1+l]
			in = in[1+l:]
			var parts [][]byte
			if flags&4 != 0 && len(in) == 0 && len(frames) > 1 {
				frames, parts = frames[:len(frames)/2], [][]byte{frames[len(frames)/2:]}
			}
			frames = append([]byte(nil), frames...) // the path may not keep what it is lent
			a0 := heapAllocs(ms)
			var err error
			if flags&2 != 0 {
				err = ip.receive(frames, parts, pktAddr("elsewhere"), marked)
			} else {
				err = ip.receive(frames, parts, nil, marked)
			}
			if a := heapAllocs(ms) - a0; a > maxStepAlloc {
				t.Fatalf("one packet allocated %d bytes", a)
			}
			if err != nil {
				if !errors.Is(err, ErrRecord) {
					t.Fatalf("unexpected error %v", err)
				}
				return // the path closes
			}
			checkPacketState(t, p, cwnd0, time.Since(t0))
			p.mu.Lock()
			due := p.mu.pongPending && p.pk.pongsOut < maxPongsOut
			p.mu.Unlock()
			w0 := ip.c.writes
			ip.send(t)
			if due && ip.c.writes == w0 {
				t.Fatal("a PONG due, and nothing sent")
			}
			checkPacketState(t, p, cwnd0, time.Since(t0))
		}
	})
}

// FuzzPacketOpen feeds arbitrary datagrams to an encrypted packet path's opener, split
// packets included: each must open, be dropped by the replay window or its key epoch, or not
// authenticate, never panic. What opens was numbered at most 2^62-1, its frames and parts
// fill the datagram exactly (less the header and one tag a part), and a copy of it is
// dropped.
func FuzzPacketOpen(f *testing.F) {
	seal, _ := splitPair()
	seal.sent = dgEpoch - 1 // the last packet of epoch 0, then the first of epoch 1
	frames := wire.AppendPing(nil, 3)
	b := make([]byte, dgCounterSize, 2048)
	b = append(b, frames...)
	out, _, err := seal.sealCounted(b)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(append([]byte(nil), out...))
	ext := [][]byte{[]byte("first part"), []byte("second")}
	hdr := wire.AppendDataHeader(wire.AppendPong(nil, 4), 3, 100, false, 16)
	b = make([]byte, splitHeader(1+len(ext)), 2048)
	b = append(b, hdr...)
	out, _, err = seal.sealSplit(b, len(hdr), ext)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(append([]byte(nil), out...))
	f.Add(out[:len(out)-1])
	f.Add([]byte{0x80, 0, 0, 0, 0, 0, 0, 0, 2, 0, 17, 0, 17})
	f.Add([]byte{0x40, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3})
	f.Fuzz(func(t *testing.T, d []byte) {
		_, open := splitPair()
		frames, pn, err := open.openCounted(bytes.Clone(d))
		if err != nil {
			if !errors.Is(err, errForged) && !errors.Is(err, errReplay) && !errors.Is(err, errOld) && !errors.Is(err, errEpoch) {
				t.Fatalf("unexpected error %v", err)
			}
			if open.high != 0 {
				t.Fatalf("a refused datagram moved the window to %d", open.high)
			}
			return
		}
		if pn > wire.MaxVarint {
			t.Fatalf("packet %d opened", pn)
		}
		k := 1 + len(open.parts)
		size := dgCounterSize + len(frames) + wire.TagSize
		if k > 1 {
			size = splitHeader(k) + len(frames) + k*wire.TagSize
			for _, p := range open.parts {
				size += len(p)
			}
		}
		if k > wire.MaxParts || size != len(d) {
			t.Fatalf("a %d-byte datagram opened to %d parts, %d bytes with their overhead", len(d), k, size)
		}
		if _, _, err := open.openCounted(bytes.Clone(d)); !errors.Is(err, errReplay) {
			t.Fatalf("a copy of an opened datagram: %v", err)
		}
	})
}
