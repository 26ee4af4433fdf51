package flow

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rendr-go/rendr/internal/record"
	"github.com/rendr-go/rendr/internal/wire"
)

// FuzzEngineFrames feeds frames from an authenticated but arbitrary peer to a live engine, the
// way a session does (HandleFrom, with the path as Holder), and checks after every frame that
// the engine's state stays within its limits, and after every input that the work and memory
// it cost are bounded whatever the frames' fields say.
//
// Input: a mode byte, then frames as wire.Parse reads them (at most fuzzMaxInput bytes). A
// frame that does not parse ends the input, as it would end the path. A frame the engine
// rejects is counted, and the input goes on, as the peer's other paths would. PING, which the
// session answers itself and never hands to the engine, stands for something the local side
// does between frames: its Seq picks the action (fuzzAction).
//
// Mode bits: 1 dialing side (it opens flows and writes first), 2 the Holder lets payloads be
// kept by reference, 4 the link is a datagram path (records are small and list what they
// carry, so losses can be reported), 8 the frames' flow ids are moved into the listening
// side's id space (flows the listener opens).
func FuzzEngineFrames(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) == 0 {
			return
		}
		mode := in[0]
		in = in[1:]
		if len(in) > fuzzMaxInput {
			in = in[:fuzzMaxInput]
		}
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		synctest.Test(t, func(t *testing.T) { fuzzRun(t, mode, in) })
		runtime.ReadMemStats(&after)
		if d := after.TotalAlloc - before.TotalAlloc; d > fuzzMaxAlloc {
			t.Fatalf("one input of %d bytes allocated %d bytes, bound %d", len(in), d, fuzzMaxAlloc)
		}
	})
}

const (
	// fuzzMaxInput bounds the bytes of frames one input carries, so that an input (and the
	// minimizing of one, which runs it thousands of times) stays fast: a millisecond or two.
	// Limits no input this size can reach, such as the pieces kept ahead of gaps, have tests
	// of their own; those that one frame can reach (refused ids, flows, replies) it reaches.
	fuzzMaxInput = 4 << 10
	// fuzzMaxAlloc bounds what one input may allocate, engine, goroutines and test harness
	// included. The engine's limits under fuzzConfig keep a worst case well below it: 4096
	// refused ids, a few flows with their buffers, 256 KiB of datagrams, 16 KiB of queued
	// replies, and copies of at most the input's own bytes (under 1 MiB was the most seen
	// over 100,000 inputs). A frame that cost more than a few KiB whatever its size would
	// pass it.
	fuzzMaxAlloc = 8 << 20
)

// fuzzConfig keeps every limit small, so that an input can reach them.
var fuzzConfig = Config{
	InitialWindow:        16 << 10,
	MaxWindow:            64 << 10,
	InitialSessionWindow: 64 << 10,
	MaxSessionWindow:     256 << 10,
	MaxFlows:             8,
	Backlog:              4,
	// Metadata whose first byte is even is taken, odd turned down; a flow with metadata is
	// taken only once confirmed.
	HoldMeta: true,
	CheckMeta: func(m []byte) error {
		if m[0]%2 == 1 {
			return errors.New("odd")
		}
		return nil
	},
}

func fuzzRun(t *testing.T, mode byte, in []byte) {
	x := newFuzzState(t, mode)
	e := x.e
	frames := 0
	for len(in) > 0 {
		f, n, err := wire.Parse(in)
		if err != nil {
			break
		}
		in = in[n:]
		frames++
		if mode&8 != 0 && f.Flow != 0 && f.Flow <= wire.MaxVarint-ListenerIDs {
			// Into the listening side's id space: a dialer's flows the listener opened, a
			// listener's own flows.
			f.Flow += ListenerIDs
		}
		if f.Type == wire.TypePing {
			x.action(f.Seq)
		} else {
			x.handle(&f, x.h)
		}
		x.check()
	}
	e.Fail(ErrClosed)
	for _, s := range x.local {
		s.Close()
	}
	if n := x.h.held.Load(); n != 0 {
		t.Fatalf("%d payloads still held after the engine failed and every flow closed", n)
	}
	if x.h.bad.Load() {
		t.Fatal("a held payload was let go twice")
	}
	// Work: each id the engine opened or refused is one turn of the opening loop, bounded per
	// frame (handle); over the input, by the limits plus one per frame or action, since only
	// a frame (a refusal confirmed) or an action (a flow accepted or closed) makes room again.
	st := e.Stats()
	if w := st.Opened + st.Refused; w > uint64(e.cfg.MaxFlows+maxRefused+frames) {
		t.Fatalf("%d flows opened or refused by %d frames", w, frames)
	}
}

// newFuzzState starts an engine for mode (FuzzEngineFrames) in the caller's synctest bubble;
// a dialing one has opened two streams and a packet flow and sent a little on each.
func newFuzzState(t *testing.T, mode byte) *fuzzState {
	return newFuzzStateConfig(t, mode, fuzzConfig)
}

// newFuzzStateConfig is newFuzzState with other limits.
func newFuzzStateConfig(t *testing.T, mode byte, cfg Config) *fuzzState {
	cfg.Dialer = mode&1 != 0
	rt := &twoRouter{}
	for i := range rt.links {
		sl := &sinkLink{id: uint32(i + 1)}
		if mode&4 != 0 {
			sl.maxRecord = 1200 // a datagram path
		}
		rt.sinks[i], rt.links[i] = sl, sl
	}
	h := &countHolder{keep: mode&2 != 0}
	e := New(cfg, rt)
	t.Cleanup(func() { e.Fail(ErrClosed) }) // a failed check must not leave the engine running
	x := &fuzzState{t: t, e: e, rt: rt, h: h, buf: make([]byte, 4096)}
	if cfg.Dialer {
		for range 2 {
			x.open(wire.KindStream)
		}
		x.open(wire.KindPacket)
		for _, s := range x.local {
			if s.pk != nil {
				s.WriteDatagram(x.buf[:100])
				continue
			}
			x.write(s, 3000)
		}
		x.send()
	}
	return x
}

// fuzzState is the local side of one input: the engine and the flows the application holds.
type fuzzState struct {
	t     *testing.T
	e     *Engine
	rt    *twoRouter
	h     *countHolder
	local []*Stream // opened or accepted
	buf   []byte
}

func (x *fuzzState) open(kind uint8) {
	if len(x.local) >= 16 {
		return
	}
	var meta []byte
	if kind&2 != 0 {
		meta = []byte{kind >> 2, 1, 2, 3}
	}
	if s, err := x.e.open(kind&1, meta); err == nil {
		x.local = append(x.local, s)
	}
}

// handle gives f to the engine and checks what one frame may cost.
func (x *fuzzState) handle(f *wire.Frame, h Holder) {
	st := x.e.Stats()
	x.e.HandleFrom(f, h) // an error closes the path: counted in Violations, checked below
	nst := x.e.Stats()
	if d := nst.Opened - st.Opened; d > uint64(x.e.cfg.Backlog) {
		x.t.Fatalf("one %v frame (flow %d) opened %d flows, backlog %d", f.Type, f.Flow, d, x.e.cfg.Backlog)
	}
	if d := nst.Refused - st.Refused; d > maxRefused {
		x.t.Fatalf("one %v frame (flow %d) refused %d flows", f.Type, f.Flow, d)
	}
	if nst.Violations < st.Violations || nst.Violations > st.Violations+1 {
		x.t.Fatalf("one frame moved Violations from %d to %d", st.Violations, nst.Violations)
	}
}

// action does what the local side may do between two frames; seq picks it and its argument.
func (x *fuzzState) action(seq uint64) {
	arg := seq / 8
	var s *Stream
	if len(x.local) > 0 {
		s = x.local[arg%uint64(len(x.local))]
	}
	switch seq % 8 {
	case 0:
		x.send()
	case 1:
		// The dialing side opens, the listening side accepts; from 1<<20 on, the other way
		// round (both sides open flows, each in its own id space).
		if x.e.cfg.Dialer == (arg < 1<<20) {
			x.open(uint8(arg % 16)) // bit 0 the kind, bit 1 with metadata, bit 2 odd
			return
		}
		for _, kind := range []uint8{wire.KindStream, wire.KindPacket} {
			if len(x.local) >= 16 {
				return
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
			p, err := x.e.accept(ctx, kind)
			cancel()
			if err == nil {
				x.local = append(x.local, p)
			}
		}
	case 2:
		if s == nil {
			return
		}
		if s.pk != nil {
			s.SetReadDeadline(time.Now().Add(time.Millisecond))
			s.ReadDatagram(x.buf)
			return
		}
		s.SetReadDeadline(time.Now().Add(time.Millisecond))
		s.Read(x.buf[:1+arg%uint64(len(x.buf))])
	case 3:
		if s != nil {
			s.Close()
		}
	case 4:
		switch {
		case s == nil:
		case arg%4 == 3:
			s.Reject(arg / 4 % 8)
		case arg%8 == 1:
			s.Confirm()
		case arg%2 == 0:
			s.CloseRead()
		default:
			s.CloseWrite()
		}
	case 5:
		if s == nil {
			return
		}
		if s.pk != nil {
			s.WriteDatagram(x.buf[:arg%uint64(len(x.buf))])
			return
		}
		x.write(s, int(arg%uint64(len(x.buf))))
	case 6:
		if arg%2 == 1 {
			x.rt.cur.Store(1 - x.rt.cur.Load()) // the path changes: every flow rewinds
			x.e.Kick()
			return
		}
		for _, l := range x.rt.sinks {
			if cs := l.takeCarried(); len(cs) > 0 {
				x.e.Lost(cs)
			}
		}
	case 7:
		// Virtual time passes with the route up: delayed ACKs, resends and stall checks.
		x.rt.on.Store(true)
		x.e.Kick()
		time.Sleep(time.Duration(arg%2048) * time.Millisecond)
		synctest.Wait()
		x.rt.on.Store(false)
	}
}

// send lets the engine send what it has, and waits until it has.
func (x *fuzzState) send() {
	x.rt.on.Store(true)
	x.e.Kick()
	synctest.Wait()
	x.rt.on.Store(false)
}

// write writes n bytes, giving up after a millisecond of virtual time if the flow blocks.
func (x *fuzzState) write(s *Stream, n int) {
	s.SetWriteDeadline(time.Now().Add(time.Millisecond))
	s.Write(x.buf[:n])
}

// check asserts the engine's state is within its limits and its counts agree.
func (x *fuzzState) check() {
	t, e := x.t, x.e
	e.mu.Lock()
	defer e.mu.Unlock()
	cfg := e.cfg
	if len(e.mu.flows) > cfg.MaxFlows {
		t.Fatalf("%d flows, limit %d", len(e.mu.flows), cfg.MaxFlows)
	}
	for k, q := range e.mu.accept {
		if len(q) > cfg.Backlog {
			t.Fatalf("%d flows of kind %d wait in the backlog, limit %d", len(q), k, cfg.Backlog)
		}
	}
	if len(e.mu.refused) > maxRefused {
		t.Fatalf("%d refused ids kept, limit %d", len(e.mu.refused), maxRefused)
	}
	const frameMax = 1 + 8 + 8 + 8 + 1 // the largest control frame
	if len(e.mu.ctrl) > maxCtrl+2*frameMax {
		t.Fatalf("%d bytes of replies queued, limit %d", len(e.mu.ctrl), maxCtrl)
	}
	// Every stream the engine or the application still holds, once each.
	all := make(map[*Stream]bool, len(e.mu.flows)+len(x.local))
	for _, s := range e.mu.flows {
		all[s] = true
	}
	for _, s := range x.local {
		all[s] = true
	}
	pieces, dg, sendBuf, outstanding := 0, 0, 0, 0
	var held uint64
	for s := range all {
		if n := s.ooo.pieces(); n > maxReorderFlow {
			t.Fatalf("flow %d keeps %d pieces ahead of a gap, limit %d", s.id, n, maxReorderFlow)
		}
		pieces += s.ooo.pieces()
		held += uint64(s.rbuf.len() + s.ooo.n)
		sendBuf += s.sbuf.len()
		if s.outstanding {
			outstanding++
		}
		if s.recvNext > s.recvHigh || s.recvHigh > s.recvLimit {
			t.Fatalf("flow %d: delivered %d, highest %d, limit %d", s.id, s.recvNext, s.recvHigh, s.recvLimit)
		}
		if s.sendBase > s.sendNext || s.sendNext > s.sendHigh || s.err == nil && s.sendHigh-s.sendBase > uint64(s.sbuf.len()) {
			t.Fatalf("flow %d: acknowledged %d, next %d, highest %d, buffered %d", s.id, s.sendBase, s.sendNext, s.sendHigh, s.sbuf.len())
		}
		if pk := s.pk; pk != nil {
			dg += pk.recv.bytes
			if pk.recv.n > maxRecvDatagrams || pk.recv.bytes > maxRecvBytes || pk.send.n > maxSendDatagrams {
				t.Fatalf("packet flow %d queues %d datagrams (%d bytes) to read, %d to send", s.id, pk.recv.n, pk.recv.bytes, pk.send.n)
			}
		}
	}
	if pieces != e.mu.reorderPieces || pieces > maxReorderPieces {
		t.Fatalf("%d pieces ahead of gaps, the session counts %d, limit %d", pieces, e.mu.reorderPieces, maxReorderPieces)
	}
	if dg != e.mu.dgQueued || dg > cfg.MaxSessionWindow {
		t.Fatalf("%d bytes of datagrams queued, the session counts %d, limit %d", dg, e.mu.dgQueued, cfg.MaxSessionWindow)
	}
	if sendBuf != e.mu.sendBuffered || sendBuf > cfg.MaxSessionWindow {
		t.Fatalf("%d bytes in send buffers, the session counts %d, limit %d", sendBuf, e.mu.sendBuffered, cfg.MaxSessionWindow)
	}
	if outstanding != e.mu.outstanding {
		t.Fatalf("%d flows outstanding, the session counts %d", outstanding, e.mu.outstanding)
	}
	// Received bytes: counted as they first arrive, within the limit advertised, and what is
	// held (delivered and unread, or ahead of a gap) is what was counted and not consumed.
	if e.mu.recvUsed > e.mu.recvMax || e.mu.recvRead > e.mu.recvUsed || held > e.mu.recvUsed-e.mu.recvRead {
		t.Fatalf("session received %d of %d allowed, consumed %d, holds %d", e.mu.recvUsed, e.mu.recvMax, e.mu.recvRead, held)
	}
	if w := max(uint64(cfg.MaxSessionWindow), PeerInitialSessionWindow); e.mu.recvMax-e.mu.recvRead > w {
		t.Fatalf("session limit %d is %d past what was consumed, window %d", e.mu.recvMax, e.mu.recvMax-e.mu.recvRead, w)
	}
	if n := uint64(e.mu.ready.len()); n > e.mu.opened {
		t.Fatalf("%d streams ready, %d ever opened", n, e.mu.opened)
	}
	if n := uint64(len(e.mu.ackLater) + len(e.mu.sessWait) + len(e.mu.capWait)); n > 3*e.mu.opened {
		t.Fatalf("%d streams wait for an ACK, credit or buffer space, %d ever opened", n, e.mu.opened)
	}
	if e.mu.pinnedQueued < 0 {
		t.Fatalf("%d pinned datagrams queued", e.mu.pinnedQueued)
	}
}

// sinkLink takes every record and lets it go at once; as a datagram path (maxRecord set) it
// remembers what the last records carried, so that the test can report them lost.
type sinkLink struct {
	linkDefaults
	id        uint32
	maxRecord int
	mu        struct {
		sync.Mutex
		carried []record.Carried
	}
}

func (l *sinkLink) LinkID() uint32 { return l.id }
func (l *sinkLink) Space() int     { return 1 << 20 }
func (l *sinkLink) SRTT() (time.Duration, time.Duration) {
	return 10 * time.Millisecond, time.Millisecond
}

func (l *sinkLink) Send(r *record.Record) bool {
	if l.maxRecord > 0 && len(r.Carried) > 0 {
		l.mu.Lock()
		if len(l.mu.carried) < 256 {
			l.mu.carried = append(l.mu.carried, r.Carried...)
		}
		l.mu.Unlock()
	}
	r.Release()
	return true
}

func (l *sinkLink) takeCarried() []record.Carried {
	l.mu.Lock()
	defer l.mu.Unlock()
	cs := l.mu.carried
	l.mu.carried = nil
	return cs
}

var (
	_ Link   = (*sinkLink)(nil)
	_ Router = (*twoRouter)(nil)
	_ Holder = (*countHolder)(nil)
)

func (l *sinkLink) MaxRecord() int { return l.maxRecord }

// twoRouter routes over one of two links; the test switches between them. It gives a route
// only while on is set: the engine sends at the test's chosen moments, and does not contend
// for its lock with every frame the test hands it (which on a busy machine costs a context
// switch per frame).
type twoRouter struct {
	sinks [2]*sinkLink
	links [2]Link
	cur   atomic.Int32
	on    atomic.Bool
}

func (r *twoRouter) Route() *Route {
	if !r.on.Load() {
		return nil
	}
	return one(r.links[r.cur.Load()])
}
func (r *twoRouter) Stalled(Link, time.Time, time.Duration) (bool, time.Duration) { return true, 0 }

// countHolder lets payloads be kept by reference (when keep is set) and counts what is held.
type countHolder struct {
	keep bool
	held atomic.Int64
	bad  atomic.Bool
}

func (h *countHolder) Hold() record.Pin {
	if !h.keep {
		return nil
	}
	h.held.Add(1)
	return &countPin{h: h}
}

type countPin struct {
	h    *countHolder
	done atomic.Bool
}

func (p *countPin) Unpin() {
	if p.done.Swap(true) {
		p.h.bad.Store(true)
		return
	}
	p.h.held.Add(-1)
}

// fuzzSeeds are inputs built with the wire encoders: ordinary exchanges, and every field at
// its boundaries.
func fuzzSeeds() [][]byte {
	const big = wire.MaxVarint
	act := func(b []byte, a, arg uint64) []byte { return wire.AppendPing(b, arg*8+a) }
	seed := func(mode byte, build func(b []byte) []byte) []byte { return build([]byte{mode}) }
	p := make([]byte, 1500)
	for i := range p {
		p[i] = byte(i)
	}
	var out [][]byte
	for _, mode := range []byte{0, 2, 4, 6, 9, 13} {
		// A listener's ordinary flows (modes 9 and 13: a dialer's, the listener opened): open, data, a gap filled later, FIN, reads.
		out = append(out, seed(mode, func(b []byte) []byte {
			b = wire.AppendOpen(b, 1, wire.KindStream, nil)
			b = wire.AppendData(b, 1, 0, false, p[:100])
			b = wire.AppendData(b, 1, 200, false, p[:100])
			b = wire.AppendData(b, 1, 100, false, p[:100])
			b = act(b, 1, 0)
			b = act(b, 2, 500)
			b = wire.AppendData(b, 1, 300, true, p[:50])
			b = wire.AppendOpen(b, 2, wire.KindPacket, nil)
			b = wire.AppendDatagram(b, 2, 1, p[:40])
			b = wire.AppendDatagram(b, 2, 1, p[:40])
			b = act(b, 1, 0)
			b = act(b, 2, 1)
			b = act(b, 0, 0)
			b = act(b, 5, 80)
			b = act(b, 0, 0)
			b = act(b, 7, 100)
			b = act(b, 6, 0)
			b = act(b, 3, 0)
			return act(b, 0, 0)
		}))
		// Metadata: taken, turned down, data before its OPEN, the OPEN again with the same
		// metadata and with other metadata (a protocol error), and a flow rejected after
		// it was accepted.
		out = append(out, seed(mode, func(b []byte) []byte {
			b = wire.AppendOpen(b, 1, wire.KindStream, []byte{2, 9})
			b = wire.AppendOpen(b, 2, wire.KindPacket, []byte{1})
			b = wire.AppendData(b, 3, 0, false, p[:10])
			b = wire.AppendDatagram(b, 4, 1, p[:10])
			b = act(b, 1, 0)
			b = wire.AppendOpen(b, 3, wire.KindStream, []byte{4})
			b = wire.AppendOpen(b, 4, wire.KindPacket, []byte{5})
			b = wire.AppendOpen(b, 3, wire.KindStream, []byte{4})
			b = act(b, 1, 0)
			b = act(b, 4, 3)
			b = act(b, 7, 50)
			b = wire.AppendOpen(b, 1, wire.KindStream, []byte{2, 8})
			return act(b, 0, 0)
		}))
		// Ids far ahead, of both kinds, and id 0.
		out = append(out, seed(mode, func(b []byte) []byte {
			b = wire.AppendOpen(b, 4_000_001, wire.KindStream, nil)
			b = wire.AppendOpen(b, 1<<40, wire.KindPacket, nil)
			b = wire.AppendData(b, big, 0, true, nil)
			b = wire.AppendReset(b, big-1, 0, 0)
			b = wire.AppendDatagram(b, big-1, 1, p[:1])
			b = wire.AppendOpen(b, 0, wire.KindStream, nil)
			b = wire.AppendOpen(b, 2*(4+maxRefused)-1, wire.KindStream, nil)
			b = wire.AppendData(b, 2*(4+maxRefused)+1, 0, false, p[:1])
			b = wire.AppendAck(b, 9, 0, 0, wire.AckFin) // confirms a refusal: room for one more
			b = wire.AppendData(b, 2*(4+maxRefused)+1, 0, false, p[:1])
			return act(b, 0, 0)
		}))
		// Offsets, windows and sizes at their ends.
		out = append(out, seed(mode, func(b []byte) []byte {
			b = wire.AppendData(b, 1, big-10, false, p[:10])
			b = wire.AppendData(b, 1, PeerInitialWindow-1, false, p[:1])
			b = wire.AppendData(b, 1, PeerInitialWindow, false, p[:1])
			b = wire.AppendMaxData(b, big)
			b = wire.AppendAck(b, 1, big, big, 0)
			b = wire.AppendAck(b, 1, 0, big, 0)
			b = wire.AppendReset(b, 1, big, big)
			b = wire.AppendReset(b, 3, big, PeerInitialWindow)
			b = wire.AppendStop(b, 1, big)
			b = wire.AppendStop(b, 1, CodeRefused)
			b = wire.AppendDatagram(b, 2, big, p[:3])
			b = wire.AppendDatagram(b, 2, 1, p[:3])
			b = wire.AppendDatagram(b, 2, big-dedupWindow+1, p[:3])
			b = wire.AppendDatagram(b, 1, 1, p[:3])
			return act(b, 0, 0)
		}))
		// The session window filled by bytes far ahead on every flow, then passed.
		out = append(out, seed(mode, func(b []byte) []byte {
			for id := uint64(1); id <= 7; id += 2 {
				b = wire.AppendData(b, id, PeerInitialWindow-1, false, p[:1])
			}
			b = act(b, 1, 0)
			b = act(b, 1, 0)
			b = wire.AppendData(b, 9, 0, true, p[:1])
			b = wire.AppendReset(b, 9, 0, 2)
			b = act(b, 3, 0)
			b = act(b, 0, 0)
			return wire.AppendData(b, 11, 0, false, p[:1])
		}))
		// Pieces ahead of a gap; a rewind with refusals pending.
		out = append(out, seed(mode, func(b []byte) []byte {
			for i := uint64(0); i < 500; i++ {
				b = wire.AppendData(b, 1, 2+2*i, false, p[:1])
			}
			b = wire.AppendOpen(b, 2*(4+maxRefused)-1, wire.KindStream, nil)
			b = act(b, 0, 0)
			b = act(b, 6, 1)
			b = act(b, 0, 0)
			b = wire.AppendData(b, 1, 0, false, p[:2])
			return act(b, 2, 100)
		}))
		// Many one-byte pieces ahead of a gap, over several flows.
		out = append(out, seed(mode, func(b []byte) []byte {
			for i := uint64(0); i < 500; i++ {
				b = wire.AppendData(b, 1+2*(i%3), 2+2*i, false, p[:1])
			}
			b = wire.AppendData(b, 1, 0, false, p[:1200])
			return act(b, 0, 0)
		}))
	}
	for _, mode := range []byte{1, 3, 5, 7} {
		// A dialer's flows 1, 3 (streams) and 2 (packets), with 3000 bytes written on each
		// stream: acknowledgements, windows, refusals and resets from the listener.
		out = append(out, seed(mode, func(b []byte) []byte {
			b = wire.AppendAck(b, 1, 1000, 300000, 0)
			b = wire.AppendAck(b, 1, 3000, big, wire.AckFin)
			b = wire.AppendAck(b, 3, 3001, 4000, 0)
			b = wire.AppendMaxData(b, big)
			b = act(b, 5, 4000)
			b = act(b, 0, 0)
			b = wire.AppendStop(b, 3, CodeRefused)
			b = wire.AppendReset(b, 3, CodeRefused, 0)
			b = wire.AppendData(b, 1, 0, true, p[:20])
			b = wire.AppendDatagram(b, 2, 7, p[:9])
			b = wire.AppendReset(b, 2, 0, 0)
			b = wire.AppendData(b, 5, 0, false, p[:1])
			b = wire.AppendOpen(b, 3, wire.KindStream, nil)
			b = act(b, 6, 0)
			b = act(b, 7, 1000)
			b = act(b, 3, 0)
			b = act(b, 3, 1)
			b = act(b, 1, 0)
			return act(b, 0, 0)
		}))
	}
	return out
}
