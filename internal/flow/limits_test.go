package flow

import (
	"bytes"
	"errors"
	"slices"
	"testing"
	"testing/synctest"

	"github.com/rendr-go/rendr/internal/wire"
)

// listener returns a listening engine with no route: it takes frames and queues what it would
// answer, and nothing leaves it.
func listener(t *testing.T, cfg Config) *Engine {
	t.Helper()
	cfg.Dialer = false
	e := New(cfg, &fakeRouter{})
	t.Cleanup(func() { e.Fail(ErrClosed) })
	return e
}

// One OPEN naming a flow id far ahead implies every id below it. It used to make the
// listening side refuse them one by one under its lock (time and memory linear in the id);
// now a frame implying more flows than the backlog and the refused ids can take is a protocol
// error that changes nothing.
//
// The same holds on the dialing side for the ids of the flows the listening side opens, and an
// id of a side's own space that it never opened (the peer cannot open it) opens nothing
// either.
func TestOpenFarAheadIsBounded(t *testing.T) {
	cases := []struct {
		dialer   bool
		id       uint64
		overflow uint64 // 1: too far ahead; 0: not the peer's to open at all
	}{
		{false, 4_000_001, 1}, {false, 1<<40 + 1, 1}, {false, 1 << 40, 1},
		{false, ListenerIDs - 1, 1}, {false, ListenerIDs - 2, 1},
		{false, ListenerIDs + 1, 0}, {false, wire.MaxVarint, 0}, {false, wire.MaxVarint - 1, 0},
		{true, ListenerIDs + 4_000_001, 1}, {true, ListenerIDs + 1<<40, 1},
		{true, wire.MaxVarint, 1}, {true, wire.MaxVarint - 1, 1},
		{true, 1, 0}, {true, 4_000_002, 0},
	}
	for _, tc := range cases {
		id := tc.id
		cfg := Config{Dialer: tc.dialer}
		e := New(cfg, &fakeRouter{})
		t.Cleanup(func() { e.Fail(ErrClosed) })
		f := wire.Frame{Type: wire.TypeOpen, Flow: id, Kind: kindOf(id)}
		// Fatal, not Error: the ids after the first would take the old code hours.
		if err := e.Handle(&f); err == nil {
			t.Fatalf("OPEN of flow %d was accepted", id)
		}
		st := e.Stats()
		if st.Flows != 0 || st.Opened != 0 || st.Refused != 0 || st.RefusedPending != 0 {
			t.Fatalf("OPEN of flow %d left %d flows (%d opened), %d refused (%d pending)", id, st.Flows, st.Opened, st.Refused, st.RefusedPending)
		}
		if st.OpenOverflow != tc.overflow || st.Violations != 1 {
			t.Errorf("OPEN of flow %d (dialer %v): OpenOverflow %d, Violations %d, want %d and 1", id, tc.dialer, st.OpenOverflow, st.Violations, tc.overflow)
		}
		e.mu.Lock()
		ctrl, seen, own := len(e.mu.ctrl), e.mu.seen, e.mu.own
		e.mu.Unlock()
		if ctrl != 0 || seen != [2]uint64{} || own != [2]uint64{} {
			t.Errorf("OPEN of flow %d queued %d reply bytes and moved the highest ids to %v and %v", id, ctrl, seen, own)
		}
		// Nothing else is harmed: the flows the peer may open still open.
		first := firstID(wire.KindStream, !tc.dialer)
		f = wire.Frame{Type: wire.TypeData, Flow: first, Payload: []byte("x")}
		if err := e.Handle(&f); err != nil {
			t.Fatalf("DATA on flow %d after the refused OPEN: %v", first, err)
		}
		if st := e.Stats(); st.Flows != 1 {
			t.Errorf("%d flows after opening flow 1, want 1", st.Flows)
		}
	}
}

// The bound is the room there is: the backlog's free places, then refused ids up to 4096. An
// id implying exactly that many new flows is taken; one more is an error, as it would be if
// the same OPENs came one by one.
func TestOpenAheadFillsTheRoomExactly(t *testing.T) {
	for _, kind := range []uint8{wire.KindStream, wire.KindPacket} {
		e := listener(t, Config{Backlog: 3})
		room := uint64(3 + maxRefused)
		id := firstID(kind, true) + 2*(room-1)
		f := wire.Frame{Type: wire.TypeOpen, Flow: id, Kind: kind}
		if err := e.Handle(&f); err != nil {
			t.Fatalf("kind %d: OPEN of %d flows, exactly the room: %v", kind, room, err)
		}
		st := e.Stats()
		if st.Flows != 3 || st.Refused != maxRefused || st.RefusedPending != maxRefused {
			t.Fatalf("kind %d: %d flows and %d refused (%d pending), want 3 and %d", kind, st.Flows, st.Refused, st.RefusedPending, maxRefused)
		}
		e.mu.Lock()
		ctrl := len(e.mu.ctrl)
		e.mu.Unlock()
		if ctrl > maxCtrl+64 {
			t.Errorf("kind %d: %d bytes of refusals queued, bound %d", kind, ctrl, maxCtrl)
		}
		f.Flow += 2
		if err := e.Handle(&f); err == nil {
			t.Fatalf("kind %d: OPEN beyond the room was accepted", kind)
		}
		if st := e.Stats(); st.Refused != maxRefused || st.OpenOverflow != 1 {
			t.Errorf("kind %d: after the overflow %d refused, OpenOverflow %d", kind, st.Refused, st.OpenOverflow)
		}
		// The peer's confirmation of one refusal makes room for one more flow.
		ack := wire.Frame{Type: wire.TypeAck, Flow: id, Seq: 0, Limit: 0, Flags: wire.AckFin}
		if err := e.Handle(&ack); err != nil {
			t.Fatal(err)
		}
		if err := e.Handle(&f); err != nil {
			t.Fatalf("kind %d: OPEN after a confirmed refusal: %v", kind, err)
		}
		if st := e.Stats(); st.RefusedPending != maxRefused || st.Refused != maxRefused+1 {
			t.Errorf("kind %d: %d refused (%d pending), want %d (%d)", kind, st.Refused, st.RefusedPending, maxRefused+1, maxRefused)
		}
	}
}

// A dialer whose OPENs were lost with a dying path sends them again after the rewind, in no
// particular order: the highest may come first and imply all the others. Within the limits
// that is no error, and every flow gets its bytes.
func TestOpensAfterLossInAnyOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, Config{}, Config{Backlog: 8})
		var ss []*Stream
		for i := range 12 {
			s, err := r.a.Open()
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.Write([]byte{byte(i)}); err != nil {
				t.Fatal(err)
			}
			ss = append(ss, s)
		}
		synctest.Wait()
		fs := frames(t, r.ab.take())
		// Highest flow first: its frames imply the eleven below.
		slices.SortStableFunc(fs, func(a, b wire.Frame) int { return -cmpU64(a.Flow, b.Flow) })
		r.deliver(r.b, fs)
		r.settle()
		if st := r.b.Stats(); st.Refused != 4 || st.Violations != 0 {
			t.Fatalf("listener refused %d flows with %d violations, want 4 and 0", st.Refused, st.Violations)
		}
		for want := uint64(1); want <= 15; want += 2 {
			p := accept(t, r.b)
			if p.ID() != want {
				t.Fatalf("accepted flow %d, want %d", p.ID(), want)
			}
			if b := readN(t, p, 1); b[0] != byte(want/2) {
				t.Errorf("flow %d read %d, want %d", want, b[0], want/2)
			}
		}
		for _, s := range ss[8:] {
			if _, err := s.Write([]byte("more")); !errors.Is(err, ErrReset) {
				t.Errorf("refused flow %d: Write = %v, want ErrReset", s.ID(), err)
			}
		}
		r.settle()
		if st := r.b.Stats(); st.RefusedPending != 0 {
			t.Errorf("%d refusals still unconfirmed after settling", st.RefusedPending)
		}
	})
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// A DATAGRAM for a stream id, or stream bytes for a packet id, is an error before it opens
// anything.
func TestWrongKindOpensNothing(t *testing.T) {
	for _, f := range []wire.Frame{
		{Type: wire.TypeDatagram, Flow: 9, Seq: 1, Payload: []byte("d")},
		{Type: wire.TypeData, Flow: 10, Payload: []byte("s")},
		{Type: wire.TypeDataFin, Flow: 10, Offset: 3},
	} {
		e := listener(t, Config{})
		if err := e.Handle(&f); err == nil {
			t.Errorf("%v for flow %d was accepted", f.Type, f.Flow)
		}
		if st := e.Stats(); st.Flows != 0 || st.Opened != 0 {
			t.Errorf("%v for flow %d opened %d flows", f.Type, f.Flow, st.Opened)
		}
	}
}

// DATA, and a RESET's final size, count against the session window: a frame that would take
// the session past the limit it was given is a flow control error, and the counts stay within
// the limit (they used to pass it, and stay past it, on a DATA frame).
func TestResetFinalWithinSessionWindow(t *testing.T) {
	e := listener(t, Config{})
	// Four flows fill the session window (1 MiB) with bytes nobody reads.
	chunk := bytes.Repeat([]byte{7}, 65535)
	for id := uint64(1); id <= 7; id += 2 {
		for off := uint64(0); off < PeerInitialWindow; off += uint64(len(chunk)) {
			n := min(uint64(len(chunk)), PeerInitialWindow-off)
			f := wire.Frame{Type: wire.TypeData, Flow: id, Offset: off, Payload: chunk[:n]}
			if err := e.Handle(&f); err != nil {
				t.Fatalf("flow %d at %d: %v", id, off, err)
			}
		}
	}
	// DATA past the session window fails and leaves the counts (and the flow) as they were.
	f := wire.Frame{Type: wire.TypeDataFin, Flow: 9, Offset: 9, Payload: []byte("x")}
	if err := e.Handle(&f); !errors.Is(err, ErrFlowControl) {
		t.Fatalf("DATA beyond the session window: %v, want ErrFlowControl", err)
	}
	e.mu.Lock()
	used, limit := e.mu.recvUsed, e.mu.recvMax
	s9 := e.mu.flows[9]
	e.mu.Unlock()
	if used > limit || s9.recvHigh != 0 || s9.finRecv {
		t.Fatalf("after DATA beyond the window: session counts %d of %d; flow 9 highest %d, FIN %v", used, limit, s9.recvHigh, s9.finRecv)
	}
	f = wire.Frame{Type: wire.TypeReset, Flow: 9, Final: 1}
	if err := e.Handle(&f); !errors.Is(err, ErrFlowControl) {
		t.Fatalf("RESET with a final size beyond the session window: %v, want ErrFlowControl", err)
	}
	e.mu.Lock()
	used, limit = e.mu.recvUsed, e.mu.recvMax
	e.mu.Unlock()
	if used > limit {
		t.Errorf("session counts %d bytes received, limit %d", used, limit)
	}
	// Within the window a RESET still settles the flow.
	f = wire.Frame{Type: wire.TypeReset, Flow: 9, Final: 0}
	if err := e.Handle(&f); err != nil {
		t.Fatalf("RESET with final size 0: %v", err)
	}
}

// A packet flow has no stream bytes, so a RESET's final size can only be 0.
func TestPacketResetFinal(t *testing.T) {
	e := listener(t, Config{})
	f := wire.Frame{Type: wire.TypeReset, Flow: 2, Final: 5}
	if err := e.Handle(&f); err == nil {
		t.Fatal("RESET of a packet flow with final size 5 was accepted")
	}
	e.mu.Lock()
	used := e.mu.recvUsed
	e.mu.Unlock()
	if used != 0 {
		t.Errorf("session counts %d bytes for a packet flow", used)
	}
	f.Final = 0
	if err := e.Handle(&f); err != nil {
		t.Fatalf("RESET of a packet flow with final size 0: %v", err)
	}
}

// Every field at its largest, on a live engine: each frame is taken or refused as the rules
// say, and the engine's state stays within its limits either way (fuzzState.check).
func TestFieldExtremes(t *testing.T) {
	const big = wire.MaxVarint
	one := []byte("0123456789")
	for _, tc := range []struct {
		name   string
		dialer bool
		f      wire.Frame
		fails  bool
	}{
		{"DATA at the last offset", false, wire.Frame{Type: wire.TypeData, Flow: 1, Offset: big - 10, Payload: one}, true},
		{"DATA at the window's end", false, wire.Frame{Type: wire.TypeDataFin, Flow: 1, Offset: PeerInitialWindow - 10, Payload: one}, false},
		{"DATA past the window's end", false, wire.Frame{Type: wire.TypeData, Flow: 1, Offset: PeerInitialWindow - 9, Payload: one}, true},
		{"RESET final at the last offset", false, wire.Frame{Type: wire.TypeReset, Flow: 1, Code: big, Final: big}, true},
		{"RESET final at the window's end", false, wire.Frame{Type: wire.TypeReset, Flow: 1, Code: big, Final: PeerInitialWindow}, false},
		{"DATAGRAM with the last seq", false, wire.Frame{Type: wire.TypeDatagram, Flow: 2, Seq: big, Payload: one}, false},
		{"OPEN of the last id", false, wire.Frame{Type: wire.TypeOpen, Flow: big, Kind: wire.KindStream}, true},
		{"MAX_DATA to the last offset", false, wire.Frame{Type: wire.TypeMaxData, Limit: big}, false},
		{"ACK of more than was sent", true, wire.Frame{Type: wire.TypeAck, Flow: 1, Seq: big, Limit: big}, true},
		{"ACK with the last limit", true, wire.Frame{Type: wire.TypeAck, Flow: 1, Seq: 3000, Limit: big, Flags: wire.AckFin}, false},
		{"STOP with the last code", true, wire.Frame{Type: wire.TypeStop, Flow: 1, Code: big}, false},
		{"RESET of a packet flow at the last offset", true, wire.Frame{Type: wire.TypeReset, Flow: 2, Final: big}, true},
		{"DATAGRAM with the last seq to the dialer", true, wire.Frame{Type: wire.TypeDatagram, Flow: 2, Seq: big, Payload: one}, false},
		{"MAX_DATA to the last offset, then writes", true, wire.Frame{Type: wire.TypeMaxData, Limit: big}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var mode byte
				if tc.dialer {
					mode = 1
				}
				x := newFuzzState(t, mode)
				before := x.e.Stats().Violations
				err := x.e.Handle(&tc.f)
				if (err != nil) != tc.fails {
					t.Fatalf("Handle = %v, want an error: %v", err, tc.fails)
				}
				if got := x.e.Stats().Violations - before; got != map[bool]uint64{false: 0, true: 1}[tc.fails] {
					t.Errorf("Violations moved by %d", got)
				}
				x.check()
				// The engine goes on: the local side writes and sends, within its bounds.
				for _, s := range x.local {
					if s.pk == nil {
						x.write(s, len(x.buf))
					}
				}
				x.send()
				x.check()
				if err := x.e.Err(); err != nil {
					t.Fatalf("engine failed: %v", err)
				}
			})
		})
	}
}

// A DATAGRAM's Seq may jump to the end of its range and back: the dedup window moves in
// constant work, and what it can no longer tell apart is dropped as too old.
func TestDatagramSeqExtremes(t *testing.T) {
	e := listener(t, Config{})
	for _, seq := range []uint64{wire.MaxVarint, 1, wire.MaxVarint - dedupWindow, wire.MaxVarint - dedupWindow + 1, wire.MaxVarint - dedupWindow + 1, wire.MaxVarint} {
		f := wire.Frame{Type: wire.TypeDatagram, Flow: 2, Seq: seq, Payload: []byte("d")}
		if err := e.Handle(&f); err != nil {
			t.Fatalf("DATAGRAM seq %d: %v", seq, err)
		}
	}
	e.mu.Lock()
	st := e.mu.flows[2].pk.stats
	e.mu.Unlock()
	if st.Received != 2 || st.TooOld != 2 || st.Duplicates != 2 {
		t.Errorf("received %d, too old %d, duplicates %d; want 2, 2, 2", st.Received, st.TooOld, st.Duplicates)
	}
	if st := e.Stats().Datagrams; st.Received != 2 || st.TooOld != 2 || st.Duplicates != 2 {
		t.Errorf("session totals: received %d, too old %d, duplicates %d; want 2, 2, 2", st.Received, st.TooOld, st.Duplicates)
	}
}

// A peer raising its MAX_DATA a byte at a time wakes one flow waiting for session credit per
// frame, not every one (it used to cost a turn of every waiting flow per frame); and every
// flow still gets its turn, even when the one woken is reset before it could send.
func TestMaxDataWakesByCredit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		x := newFuzzStateConfig(t, 1, Config{})
		const flows, each = 40, 32 << 10 // 1.25 MiB: past the peer's initial 1 MiB
		var ss []*Stream
		for range flows {
			s, err := x.e.Open()
			if err != nil {
				t.Fatal(err)
			}
			s.Write(make([]byte, each))
			ss = append(ss, s)
		}
		x.send()
		x.e.mu.Lock()
		waiting, used := len(x.e.mu.sessWait), x.e.mu.sendUsed
		x.e.mu.Unlock()
		if used != PeerInitialSessionWindow || waiting < 5 {
			t.Fatalf("%d bytes sent, %d flows waiting for credit", used, waiting)
		}
		limit := uint64(PeerInitialSessionWindow)
		for i := range 3 {
			limit++
			f := wire.Frame{Type: wire.TypeMaxData, Limit: limit}
			if err := x.e.Handle(&f); err != nil {
				t.Fatal(err)
			}
			x.e.mu.Lock()
			ready, still := x.e.mu.ready.len(), len(x.e.mu.sessWait)
			woken := x.e.mu.ready.s[x.e.mu.ready.head]
			x.e.mu.Unlock()
			if ready != 1 || still != waiting-1 {
				t.Fatalf("MAX_DATA of one more byte: %d flows ready, %d still waiting; want 1 and %d", ready, still, waiting-1)
			}
			if i == 2 {
				// The flow woken is stopped before it sends: the byte goes to the next.
				stop := wire.Frame{Type: wire.TypeStop, Flow: woken.id, Code: CodeClosed}
				if err := x.e.Handle(&stop); err != nil {
					t.Fatal(err)
				}
			}
			x.send()
			x.e.mu.Lock()
			used := x.e.mu.sendUsed
			x.e.mu.Unlock()
			if used != limit {
				t.Fatalf("after MAX_DATA %d, %d bytes sent", limit, used)
			}
			x.check()
		}
		// Plenty of credit wakes every waiting flow, and everything written goes.
		f := wire.Frame{Type: wire.TypeMaxData, Limit: wire.MaxVarint}
		if err := x.e.Handle(&f); err != nil {
			t.Fatal(err)
		}
		x.send()
		x.e.mu.Lock()
		defer x.e.mu.Unlock()
		var left int
		for _, s := range ss {
			if s.sendErr == nil {
				left += int(s.sendBase) + s.sbuf.len() - int(s.sendHigh)
			}
		}
		if len(x.e.mu.sessWait) != 0 || left != 0 {
			t.Fatalf("%d flows still waiting for credit, %d bytes unsent", len(x.e.mu.sessWait), left)
		}
	})
}

// A frame not from wire.Parse may carry values past the varint range; the engine refuses it
// instead of failing to encode its reply (a RESET for a forgotten flow is answered with its
// Final, which would not encode: it used to panic).
func TestValuesPastVarintRange(t *testing.T) {
	e := listener(t, Config{Backlog: 1})
	f := wire.Frame{Type: wire.TypeData, Flow: 5, Payload: []byte("x")} // flow 1 opens, 3 and 5 are refused
	if err := e.Handle(&f); err != nil {
		t.Fatal(err)
	}
	e.mu.Lock()
	e.mu.ctrl = nil // the refusals
	e.mu.Unlock()
	for _, f := range []wire.Frame{
		{Type: wire.TypeReset, Flow: 3, Final: 1 << 63},
		{Type: wire.TypeDataFin, Flow: 5, Offset: wire.MaxVarint, Payload: []byte("x")},
		{Type: wire.TypeData, Flow: 1 << 63},
		{Type: wire.TypeMaxData, Limit: 1 << 62},
		{Type: wire.TypeAck, Flow: 1, Seq: 1 << 62, Limit: 1 << 62},
		{Type: wire.TypeDatagram, Flow: 2, Seq: 1 << 62},
	} {
		if err := e.Handle(&f); err == nil {
			t.Errorf("%v with a value past 2^62-1 was accepted", f.Type)
		}
	}
	e.mu.Lock()
	ctrl := len(e.mu.ctrl)
	e.mu.Unlock()
	if ctrl != 0 {
		t.Errorf("%d bytes of replies queued", ctrl)
	}
}
