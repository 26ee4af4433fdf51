package flow

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rendr-go/rendr/internal/record"
	"github.com/rendr-go/rendr/internal/wire"
)

// Two engines wired back to back through fake links. A link keeps the records an engine sends
// until the test delivers them (frame by frame, through wire.Parse, into the other engine's
// Handle) or drops them, so a test decides exactly what is lost and when. Everything runs in a
// synctest bubble: synctest.Wait lets the engine goroutines settle.

// linkDefaults answers a Link's capabilities as a plain stream link does: no loss, no
// references to send buffers, no estimates. Test links embed it and answer what they need.
type linkDefaults struct{}

func (linkDefaults) MaxRecord() int                    { return 0 }
func (linkDefaults) ZeroCopy() bool                    { return false }
func (linkDefaults) Backlog() int                      { return 0 }
func (linkDefaults) Rate() float64                     { return 0 }
func (linkDefaults) Silence() time.Duration            { return 0 }
func (linkDefaults) Arrival(int) (time.Duration, bool) { return 0, false }

type fakeLink struct {
	linkDefaults
	id   uint32
	rate float64 // Estimator rate; 0: unknown
	mu   struct {
		sync.Mutex
		recs  [][]byte // frames of each record sent, oldest first
		bytes int      // bytes in recs
		dead  bool
	}
}

var _ Link = (*fakeLink)(nil)

func (l *fakeLink) LinkID() uint32 { return l.id }
func (l *fakeLink) Space() int     { return 1 << 20 }
func (l *fakeLink) Rate() float64  { return l.rate }
func (l *fakeLink) Backlog() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.mu.bytes
}
func (l *fakeLink) SRTT() (time.Duration, time.Duration) {
	return 10 * time.Millisecond, time.Millisecond
}

func (l *fakeLink) Send(r *record.Record) bool {
	defer r.Release()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.mu.dead {
		return false
	}
	l.mu.recs = append(l.mu.recs, bytes.Clone(r.Frames()))
	l.mu.bytes += r.Len()
	return true
}

// take removes and returns the records queued so far.
func (l *fakeLink) take() [][]byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.mu.recs
	l.mu.recs, l.mu.bytes = nil, 0
	return r
}

type fakeRouter struct {
	mu struct {
		sync.Mutex
		link   *fakeLink
		stalls int
		// waits is how many more verdicts to answer "not yet, ask again in 5ms", as the
		// session's router does while it waits for evidence against a link.
		waits int
	}
}

var _ Router = (*fakeRouter)(nil)

func (r *fakeRouter) Route() *Route {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.mu.link == nil {
		return nil
	}
	return one(r.mu.link)
}

func (r *fakeRouter) Stalled(Link, time.Time, time.Duration) (bool, time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.mu.stalls++
	if r.mu.waits > 0 {
		r.mu.waits--
		return false, 5 * time.Millisecond
	}
	return true, 0
}

func (r *fakeRouter) set(l *fakeLink) {
	r.mu.Lock()
	r.mu.link = l
	r.mu.Unlock()
}

func (r *fakeRouter) stalls() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.mu.stalls
}

// frames parses records into frames; payloads alias the records.
func frames(t *testing.T, recs [][]byte) []wire.Frame {
	t.Helper()
	var out []wire.Frame
	for _, b := range recs {
		for len(b) > 0 {
			f, n, err := wire.Parse(b)
			if err != nil {
				t.Fatalf("engine sent a frame that does not parse: %v", err)
			}
			out = append(out, f)
			b = b[n:]
		}
	}
	return out
}

// rig is a dialing engine a and a listening engine b.
type rig struct {
	t      *testing.T
	a, b   *Engine
	ra, rb *fakeRouter
	ab, ba *fakeLink // a's link to b, b's link to a
}

func newRig(t *testing.T, ac, bc Config) *rig {
	ac.Dialer, bc.Dialer = true, false
	r := &rig{t: t, ra: &fakeRouter{}, rb: &fakeRouter{}, ab: &fakeLink{id: 1}, ba: &fakeLink{id: 1}}
	r.ra.set(r.ab)
	r.rb.set(r.ba)
	r.a, r.b = New(ac, r.ra), New(bc, r.rb)
	t.Cleanup(func() {
		r.a.Fail(ErrClosed)
		r.b.Fail(ErrClosed)
	})
	return r
}

// deliver hands frames to e and fails the test on a protocol error.
func (r *rig) deliver(e *Engine, fs []wire.Frame) {
	r.t.Helper()
	for i := range fs {
		if err := e.Handle(&fs[i]); err != nil {
			r.t.Fatalf("Handle(%v flow %d): %v", fs[i].Type, fs[i].Flow, err)
		}
	}
}

// settle lets the engines exchange everything they have to send until both are quiet.
func (r *rig) settle() {
	r.t.Helper()
	quiet := false
	for range 1000 {
		synctest.Wait()
		ab, ba := frames(r.t, r.ra.current().take()), frames(r.t, r.rb.current().take())
		if len(ab) == 0 && len(ba) == 0 {
			if quiet {
				return
			}
			// Quiet, unless an acknowledgement is delayed: wait that out once.
			quiet = true
			time.Sleep(ackDelay)
			continue
		}
		quiet = false
		r.deliver(r.b, ab)
		r.deliver(r.a, ba)
	}
	r.t.Fatal("engines did not settle in 1000 exchanges")
}

// current is the link the router routes to.
func (r *fakeRouter) current() *fakeLink {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.mu.link
}

func payload(n int, seed uint64) []byte {
	p := make([]byte, n)
	rng := rand.New(rand.NewPCG(seed, 0))
	for i := range p {
		p[i] = byte(rng.Uint32())
	}
	return p
}

// readN reads exactly n bytes from s.
func readN(t *testing.T, s *Stream, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	s.SetReadDeadline(time.Now().Add(10 * time.Second)) // virtual: a lost byte fails, never hangs
	defer s.SetReadDeadline(time.Time{})
	if _, err := io.ReadFull(s, b); err != nil {
		t.Fatalf("reading %d bytes: %v", n, err)
	}
	return b
}

func accept(t *testing.T, e *Engine) *Stream {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	s, err := e.Accept(ctx)
	if err != nil {
		t.Fatalf("Accept: %v", err)
	}
	return s
}

func TestEngineTransfer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, Config{}, Config{})
		s, err := r.a.Open()
		if err != nil {
			t.Fatal(err)
		}
		data := payload(3<<20, 1) // beyond the initial windows: needs ACKs and MAX_DATA
		go func() {
			s.Write(data)
			s.CloseWrite()
		}()
		got := make(chan []byte, 1)
		r.settle()
		peer := accept(t, r.b)
		peer.SetReadDeadline(time.Now().Add(time.Minute))
		go func() {
			b, err := io.ReadAll(peer)
			if err != nil {
				t.Errorf("ReadAll: %v", err)
			}
			got <- b
		}()
		for range 100 {
			r.settle()
			if len(got) == 1 {
				break
			}
			time.Sleep(time.Millisecond)
		}
		if b := <-got; !bytes.Equal(b, data) {
			t.Fatalf("read %d bytes, want the %d written", len(b), len(data))
		}
	})
}

// rewindSetup writes data on a new flow, delivers only the first records to b (the rest is
// lost with the link) and returns the stream and how many bytes b received.
func rewindSetup(t *testing.T, r *rig, data []byte) (*Stream, int) {
	s, err := r.a.Open()
	if err != nil {
		t.Fatal(err)
	}
	if n, err := s.Write(data); n != len(data) || err != nil {
		t.Fatalf("Write = %d, %v", n, err)
	}
	synctest.Wait()
	recs := r.ab.take()
	if len(recs) < 3 {
		t.Fatalf("%d records for %d bytes: want several", len(recs), len(data))
	}
	kept := frames(t, recs[:len(recs)/2])
	got := 0
	for _, f := range kept {
		if f.Type == wire.TypeData {
			if int(f.Offset) != got {
				t.Fatalf("DATA at %d, want %d", f.Offset, got)
			}
			got += len(f.Payload)
		}
	}
	r.deliver(r.b, kept)
	synctest.Wait()
	return s, got
}

func TestEngineRewindFromAcked(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var rewinds atomic.Int64
		var rewound atomic.Uint64
		r := newRig(t, Config{OnRewind: func(flows int, bytes uint64) {
			rewinds.Add(int64(flows))
			rewound.Add(bytes)
		}}, Config{})
		data := payload(200<<10, 2)
		s, got := rewindSetup(t, r, data)
		// b's ACK arrives, then a's link dies and traffic moves to another.
		r.deliver(r.a, frames(t, r.ba.take()))
		if q := s.SendQueued(); q != len(data)-got {
			t.Fatalf("SendQueued = %d after an ACK of %d, want %d", q, got, len(data)-got)
		}
		nl := &fakeLink{id: 2}
		r.ra.set(nl)
		r.a.Kick()
		synctest.Wait()
		fs := frames(t, nl.take())
		var first *wire.Frame
		for i := range fs {
			if fs[i].Type == wire.TypeData {
				first = &fs[i]
				break
			}
		}
		if first == nil || int(first.Offset) != got {
			t.Fatalf("first DATA on the new link = %+v, want offset %d (the acknowledged one)", first, got)
		}
		r.deliver(r.b, fs)
		if st := r.a.Stats(); st.Migrations != 1 || st.Rewound != uint64(len(data)-got) {
			t.Errorf("Migrations = %d, Rewound = %d; want 1, %d (what was sent past the ACK)", st.Migrations, st.Rewound, len(data)-got)
		}
		if rewinds.Load() != 1 || rewound.Load() != uint64(len(data)-got) {
			t.Errorf("OnRewind told of %d flows and %d bytes; want 1 and %d", rewinds.Load(), rewound.Load(), len(data)-got)
		}
		peer := accept(t, r.b)
		if b := readN(t, peer, len(data)); !bytes.Equal(b, data) {
			t.Fatal("bytes differ after the rewind")
		}
		if st := r.b.Stats(); st.DupBytes != 0 || st.GapDrops != 0 {
			t.Errorf("receiver stats %+v: nothing was sent twice", st)
		}
	})
}

func TestEngineDuplicatesDropped(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, Config{}, Config{})
		data := payload(200<<10, 3)
		_, got := rewindSetup(t, r, data)
		// The ACK is lost too: a rewinds to 0 and b sees the first bytes again.
		r.ba.take()
		nl := &fakeLink{id: 2}
		r.ra.set(nl)
		r.a.Kick()
		synctest.Wait()
		r.deliver(r.b, frames(t, nl.take()))
		peer := accept(t, r.b)
		if b := readN(t, peer, len(data)); !bytes.Equal(b, data) {
			t.Fatal("bytes differ after resending delivered data")
		}
		if st := r.b.Stats(); st.DupBytes != uint64(got) {
			t.Errorf("DupBytes = %d, want %d", st.DupBytes, got)
		}
		synctest.Wait()
		peer.SetReadDeadline(time.Now().Add(time.Millisecond))
		if n, err := peer.Read(make([]byte, 1)); n != 0 || !errors.Is(err, ErrTimeout) {
			t.Fatalf("extra Read = %d, %v: a duplicate was delivered", n, err)
		}
	})
}

func TestEngineAckBeyondSent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, Config{}, Config{})
		s, _ := r.a.Open()
		s.Write([]byte("0123456789"))
		synctest.Wait()
		ack := wire.AppendAck(nil, s.ID(), 11, 1<<20, 0)
		f, _, err := wire.Parse(ack)
		if err != nil {
			t.Fatal(err)
		}
		if err := r.a.Handle(&f); err == nil {
			t.Fatal("ACK of 11 bytes when 10 were sent was accepted")
		}
		f.Seq = 10
		if err := r.a.Handle(&f); err != nil {
			t.Fatalf("ACK of everything sent: %v", err)
		}
	})
}

func TestEngineFlowWindowViolation(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, Config{}, Config{})
		in := wire.Frame{Type: wire.TypeData, Flow: 1, Offset: 0, Payload: make([]byte, PeerInitialWindow)}
		if err := r.b.Handle(&in); err != nil {
			t.Fatalf("DATA filling the initial window: %v", err)
		}
		over := wire.Frame{Type: wire.TypeData, Flow: 1, Offset: PeerInitialWindow, Payload: []byte{1}}
		if err := r.b.Handle(&over); !errors.Is(err, ErrFlowControl) {
			t.Fatalf("DATA beyond the flow window = %v, want ErrFlowControl", err)
		}

		// Each flow within its window, but together beyond the session's.
		r2 := newRig(t, Config{}, Config{})
		var err error
		id := uint64(1)
		for sent := 0; sent <= PeerInitialSessionWindow && err == nil; sent += PeerInitialWindow {
			f := wire.Frame{Type: wire.TypeData, Flow: id, Payload: make([]byte, PeerInitialWindow)}
			err = r2.b.Handle(&f)
			id += 2 // stream ids are odd
		}
		if !errors.Is(err, ErrFlowControl) {
			t.Fatalf("DATA beyond the session window = %v, want ErrFlowControl", err)
		}
	})
}

// finish runs a flow to its end on both sides: a writes and closes, b reads and closes.
func finish(t *testing.T, r *rig) uint64 {
	s, _ := r.a.Open()
	s.Write([]byte("x"))
	s.Close()
	r.settle()
	peer := accept(t, r.b)
	if b, err := io.ReadAll(peer); err != nil || string(b) != "x" {
		t.Fatalf("ReadAll = %q, %v", b, err)
	}
	peer.Close()
	r.settle()
	if a, b := r.a.Stats().Flows, r.b.Stats().Flows; a != 0 || b != 0 {
		t.Fatalf("flows left after both sides closed: %d, %d", a, b)
	}
	return s.ID()
}

func TestEngineStatelessReplies(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, Config{}, Config{})
		id := finish(t, r)
		// Retransmissions for the forgotten flow arrive at b (they were on a dead link).
		reply := func(e *Engine, l *fakeLink, in wire.Frame) wire.Frame {
			t.Helper()
			if err := e.Handle(&in); err != nil {
				t.Fatalf("Handle(%v) for a forgotten flow: %v", in.Type, err)
			}
			synctest.Wait()
			fs := frames(t, l.take())
			if len(fs) != 1 {
				t.Fatalf("reply to %v: %d frames %+v, want 1", in.Type, len(fs), fs)
			}
			return fs[0]
		}
		f := reply(r.b, r.ba, wire.Frame{Type: wire.TypeDataFin, Flow: id, Offset: 0, Payload: []byte("x")})
		if f.Type != wire.TypeAck || f.Flow != id || f.Delivered() != 1 || f.Limit != 1 || f.Flags != wire.AckFin {
			t.Errorf("reply to DATA_FIN = %+v, want ACK of 1 with AckFin", f)
		}
		f = reply(r.b, r.ba, wire.Frame{Type: wire.TypeData, Flow: id, Offset: 0, Payload: []byte("x")})
		if f.Type != wire.TypeStop || f.Flow != id || f.Code != CodeUnknown {
			t.Errorf("reply to DATA = %+v, want STOP (unknown)", f)
		}
		f = reply(r.b, r.ba, wire.Frame{Type: wire.TypeReset, Flow: id})
		if f.Type != wire.TypeAck || f.Flow != id || f.Flags != wire.AckFin {
			t.Errorf("reply to RESET = %+v, want ACK with AckFin", f)
		}
		// The dialing side answers the same way for flows it forgot.
		f = reply(r.a, r.ab, wire.Frame{Type: wire.TypeData, Flow: id, Offset: 0, Payload: []byte("y")})
		if f.Type != wire.TypeStop || f.Flow != id {
			t.Errorf("dialer's reply to DATA = %+v, want STOP", f)
		}
		// A flow the dialer never opened is a protocol error, not a stateless reply.
		bad := wire.Frame{Type: wire.TypeData, Flow: id + 5, Payload: []byte("z")}
		if err := r.a.Handle(&bad); err == nil {
			t.Error("DATA for a flow the dialer never opened was accepted")
		}
	})
}

// TestEngineImplicitOpen: stream 5's first frame arrives before 1 and 3 ever did: all three
// exist, in order (stream ids are odd; even ones are packet flows, opened separately), and
// hold what they receive. Accept has each once its OPEN is here, in the order of the ids.
func TestEngineImplicitOpen(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, Config{}, Config{})
		f := wire.Frame{Type: wire.TypeData, Flow: 5, Payload: []byte("three")}
		if err := r.b.Handle(&f); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		if s, err := r.b.Accept(ctx); err == nil {
			t.Fatalf("flow %d accepted before any OPEN", s.ID())
		}
		cancel()
		if st := r.b.Stats(); st.Flows != 3 {
			t.Fatalf("%d flows, want 3", st.Flows)
		}
		for _, id := range []uint64{3, 5, 1} {
			f := wire.Frame{Type: wire.TypeOpen, Flow: id}
			if err := r.b.Handle(&f); err != nil {
				t.Fatal(err)
			}
		}
		var ss []*Stream
		for want := uint64(1); want <= 5; want += 2 {
			s := accept(t, r.b)
			if s.ID() != want {
				t.Fatalf("accepted flow %d, want %d", s.ID(), want)
			}
			ss = append(ss, s)
		}
		f = wire.Frame{Type: wire.TypeData, Flow: 1, Payload: []byte("one")}
		if err := r.b.Handle(&f); err != nil {
			t.Fatal(err)
		}
		if b := readN(t, ss[0], 3); string(b) != "one" {
			t.Errorf("flow 1 read %q", b)
		}
		if b := readN(t, ss[2], 5); string(b) != "three" {
			t.Errorf("flow 5 read %q", b)
		}
		// An ACK for a flow never seen is an error: it cannot open a flow.
		f = wire.Frame{Type: wire.TypeAck, Flow: 9}
		if err := r.b.Handle(&f); err == nil {
			t.Error("ACK for an unknown flow was accepted")
		}
		if st := r.b.Stats(); st.Flows != 3 {
			t.Errorf("%d flows, want 3", st.Flows)
		}
		// A STOP may come before its flow's OPEN (which went by a slower path): it opens
		// the flow, and the ones below it, which wait for their OPENs.
		f = wire.Frame{Type: wire.TypeStop, Flow: 9}
		if err := r.b.Handle(&f); err != nil {
			t.Errorf("STOP before its OPEN: %v", err)
		}
		if st := r.b.Stats(); st.Flows != 5 {
			t.Errorf("%d flows, want 5", st.Flows)
		}
		ctx, cancel = context.WithTimeout(context.Background(), time.Second)
		if s, err := r.b.Accept(ctx); err == nil {
			t.Errorf("flow %d accepted before its OPEN", s.ID())
		}
		cancel()
	})
}

func TestEngineRefusal(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"backlog", Config{Backlog: 2}},
		{"maxflows", Config{MaxFlows: 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				r := newRig(t, Config{}, tc.cfg)
				var ss []*Stream
				for range 3 {
					s, err := r.a.Open()
					if err != nil {
						t.Fatal(err)
					}
					s.Write([]byte("hi"))
					ss = append(ss, s)
				}
				r.settle()
				for _, s := range ss[:2] {
					if _, err := s.Write([]byte("more")); err != nil {
						t.Errorf("flow %d: Write = %v", s.ID(), err)
					}
				}
				if _, err := ss[2].Write([]byte("more")); !errors.Is(err, ErrReset) {
					t.Errorf("refused flow: Write = %v, want ErrReset", err)
				}
				if _, err := ss[2].Read(make([]byte, 1)); !errors.Is(err, ErrReset) {
					t.Errorf("refused flow: Read = %v, want ErrReset", err)
				}
				accept(t, r.b)
				accept(t, r.b)
				ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
				defer cancel()
				if s, err := r.b.Accept(ctx); err == nil {
					t.Errorf("refused flow %d was accepted", s.ID())
				}
				// The refused flow leaves no state once closed.
				ss[2].Close()
				r.settle()
				if got := r.a.Stats().Flows; got != 2 {
					t.Errorf("dialer holds %d flows, want 2", got)
				}
			})
		})
	}
}

func TestEngineMaxFlowsOnOpen(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, Config{MaxFlows: 1}, Config{})
		if _, err := r.a.Open(); err != nil {
			t.Fatal(err)
		}
		if _, err := r.a.Open(); !errors.Is(err, ErrTooManyFlows) {
			t.Fatalf("Open beyond MaxFlows = %v", err)
		}
	})
}

func TestEngineStall(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, Config{}, Config{})
		s, _ := r.a.Open()
		s.Write([]byte("nobody acknowledges this"))
		synctest.Wait()
		// The fake link's srtt is 10ms: the stall timeout is the 40ms floor.
		time.Sleep(39 * time.Millisecond)
		synctest.Wait()
		if n := r.ra.stalls(); n != 0 {
			t.Fatalf("stalled after 39ms: %d", n)
		}
		time.Sleep(2 * time.Millisecond)
		synctest.Wait()
		if n := r.ra.stalls(); n != 1 {
			t.Fatalf("%d stall verdicts after 41ms, want 1", n)
		}
		// Acknowledged (after the receiver's ACK delay): no more verdicts.
		r.deliver(r.b, frames(t, r.ab.take()))
		time.Sleep(ackDelay)
		synctest.Wait()
		r.deliver(r.a, frames(t, r.ba.take()))
		time.Sleep(time.Second)
		synctest.Wait()
		if n := r.ra.stalls(); n != 1 {
			t.Fatalf("%d stall verdicts once everything was acknowledged, want 1", n)
		}
	})
}

// unacked opens a stream on the rig's dialing engine and writes bytes that nobody
// acknowledges, and returns when they were sent.
func (r *rig) unacked() time.Time {
	s, _ := r.a.Open()
	s.Write([]byte("nobody acknowledges this"))
	synctest.Wait()
	return time.Now()
}

// verdictsBy sleeps until at and checks that the Router has had want stall verdicts by then.
func (r *rig) verdictsBy(t *testing.T, at time.Time, want int, when string) {
	t.Helper()
	time.Sleep(time.Until(at))
	synctest.Wait()
	if n := r.ra.stalls(); n != want {
		t.Fatalf("%d stall verdicts %s, want %d", n, when, want)
	}
}

// TestEngineStallWaitsForEvidence: while the Router answers a verdict with "not yet", the
// engine asks again when told, without backing its timeout off; once the Router acts, the
// timeout doubles until data moves.
func TestEngineStallWaitsForEvidence(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, Config{}, Config{})
		r.ra.mu.Lock()
		r.ra.mu.waits = 2
		r.ra.mu.Unlock()
		start := r.unacked()
		ms := func(n int) time.Time { return start.Add(time.Duration(n) * time.Millisecond) }
		r.verdictsBy(t, ms(41), 1, "at 41ms (the 40ms floor)")
		r.verdictsBy(t, ms(46), 2, "at 46ms (asked again 5ms later)")
		r.verdictsBy(t, ms(51), 3, "at 51ms (acted)")
		// Acted at 50ms: the next verdict comes a doubled 80ms later, not 40ms.
		r.verdictsBy(t, ms(129), 3, "79ms after the Router acted")
		r.verdictsBy(t, ms(131), 4, "81ms after the Router acted")
	})
}

// TestEngineLateStallCheck: a stall check that runs long after it was due (this process was
// stopped) passes no verdict: it looks again a timeout later, when the acknowledgements that
// waited unread would have been read.
func TestEngineLateStallCheck(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, Config{}, Config{})
		start := r.unacked()
		r.verdictsBy(t, start.Add(39*time.Millisecond), 0, "at 39ms")
		// As if the check now due had been due 100ms ago: the process did not run since.
		r.a.mu.Lock()
		r.a.mu.checkDue = time.Now().Add(-100 * time.Millisecond)
		r.a.mu.Unlock()
		r.verdictsBy(t, start.Add(41*time.Millisecond), 0, "from a check 100ms late")
		r.verdictsBy(t, start.Add(81*time.Millisecond), 1, "a timeout after the late check")
	})
}

func TestEngineFailWakesCalls(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, Config{}, Config{})
		s, _ := r.a.Open()
		errs := make(chan error, 2)
		go func() {
			_, err := s.Read(make([]byte, 1))
			errs <- err
		}()
		go func() {
			_, err := s.Write(make([]byte, 4<<20)) // beyond every window: blocks
			errs <- err
		}()
		synctest.Wait()
		if len(errs) != 0 {
			t.Fatalf("returned early: %v", <-errs)
		}
		gone := errors.New("session gone")
		r.a.Fail(gone)
		synctest.Wait()
		for range 2 {
			select {
			case err := <-errs:
				if !errors.Is(err, gone) {
					t.Errorf("pending call = %v, want the session's error", err)
				}
			default:
				t.Fatal("Fail did not wake a pending call")
			}
		}
		if _, err := r.a.Open(); !errors.Is(err, gone) {
			t.Errorf("Open after Fail = %v", err)
		}
	})
}

// TestEngineUnsentBound: with a large window from the peer but no path to send on, Write buffers
// at most maxUnsent (plus one write chunk) instead of the whole window, and goes on once the
// engine can send again; every byte arrives.
func TestEngineUnsentBound(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, Config{}, Config{InitialWindow: 8 << 20, InitialSessionWindow: 16 << 20})
		s, err := r.a.Open()
		if err != nil {
			t.Fatal(err)
		}
		s.Write([]byte{1})
		r.settle() // b's ACK carries its 8 MiB window
		peer := accept(t, r.b)
		if got := readN(t, peer, 1); got[0] != 1 {
			t.Fatal("first byte differs")
		}
		r.settle()
		r.ra.set(nil) // nowhere to send
		data := payload(4<<20, 9)
		var mu sync.Mutex
		written := 0
		done := make(chan error, 1)
		go func() {
			for i := 0; i < len(data); i += 16 << 10 {
				n, err := s.Write(data[i : i+16<<10])
				mu.Lock()
				written += n
				mu.Unlock()
				if err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}()
		synctest.Wait()
		mu.Lock()
		w := written
		mu.Unlock()
		if w < maxUnsent || w > maxUnsent+writeChunk {
			t.Fatalf("Write buffered %d unsent bytes with an 8 MiB window, want %d..%d", w, maxUnsent, maxUnsent+writeChunk)
		}
		r.ra.set(r.ab)
		r.a.Kick()
		got := make(chan []byte, 1)
		go func() { got <- readN(t, peer, len(data)) }()
		for range 1000 {
			r.settle()
			if len(got) == 1 {
				break
			}
			time.Sleep(time.Millisecond)
		}
		if err := <-done; err != nil {
			t.Fatalf("Write: %v", err)
		}
		if !bytes.Equal(<-got, data) {
			t.Fatal("the bytes read differ from the bytes written")
		}
	})
}

// TestEngineRewindTailFirst: when the link dies just after its last acknowledgement (a reset),
// the bytes sent since half a round trip before that (most likely lost with it) go first on
// the new link, then the rest from the acknowledged offset (most likely arrived, their
// acknowledgement lost), each byte once. When it is left long after (a stall), where its
// queues dropped what was in flight is not known: the bytes go in order. Either way the
// receiver gets every byte exact.
func TestEngineRewindTailFirst(t *testing.T) {
	for _, c := range []struct {
		name  string
		dies  time.Duration // after the ACK
		first uint64
	}{{"reset", 3 * time.Millisecond, 200 << 10}, {"stall", 30 * time.Millisecond, 100 << 10}} {
		t.Run(c.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) { rewindTailFirst(t, c.dies, c.first) })
		})
	}
}

func rewindTailFirst(t *testing.T, dies time.Duration, first uint64) {
	r := newRig(t, Config{}, Config{}) // links with a 10ms round trip
	// Within the first flow window: no ACK is needed to send it all.
	data := payload(250<<10, 5)
	s, err := r.a.Open()
	if err != nil {
		t.Fatal(err)
	}
	write := func(lo, hi int) {
		t.Helper()
		if _, err := s.Write(data[lo<<10 : hi<<10]); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
	}
	// 0: the first 100 KiB, which arrive; their ACK comes back at 10ms.
	write(0, 100)
	r.deliver(r.b, frames(t, r.ab.take()))
	time.Sleep(2 * time.Millisecond)
	ack := r.ba.take()
	// 2ms: the next 100 KiB arrive too, and their ACK is lost with the link.
	write(100, 200)
	r.deliver(r.b, frames(t, r.ab.take()))
	time.Sleep(2 * time.Millisecond)
	r.ba.take()
	// 6ms, after the cut (half a round trip before the ACK): the last 50 KiB, lost with
	// the link.
	time.Sleep(2 * time.Millisecond)
	write(200, 250)
	r.ab.take()
	time.Sleep(4 * time.Millisecond)
	r.deliver(r.a, frames(t, ack))
	time.Sleep(dies)
	nl := &fakeLink{id: 2}
	r.ra.set(nl)
	r.a.Kick()
	synctest.Wait()
	fs := frames(t, nl.take())
	var offs []uint64
	sent := map[uint64]int{}
	for _, f := range fs {
		if f.Type == wire.TypeData {
			offs = append(offs, f.Offset)
			for o := f.Offset; o < f.Offset+uint64(len(f.Payload)); o++ {
				sent[o]++
			}
		}
	}
	if len(offs) == 0 || offs[0] != first {
		t.Fatalf("DATA on the new link at %v: want %d first", offs, first)
	}
	for o := uint64(0); o < uint64(len(data)); o++ {
		if want := min(int(o>>10)/100, 1); sent[o] != want {
			t.Fatalf("byte %d sent %d times on the new link, want %d", o, sent[o], want)
		}
	}
	r.deliver(r.b, fs)
	peer := accept(t, r.b)
	if b := readN(t, peer, len(data)); !bytes.Equal(b, data) {
		t.Fatal("bytes differ after the rewind")
	}
}
