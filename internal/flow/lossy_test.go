package flow

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rendr-go/rendr/internal/record"
	"github.com/rendr-go/rendr/internal/wire"
)

// lossyLink is a datagram-like link: records of at most max frame bytes, each with the list of
// what it carries, taken by the test, which drops some and reports them lost.
type lossyLink struct {
	linkDefaults
	id  uint32
	max int
	mu  struct {
		sync.Mutex
		recs [][]byte
		car  [][]record.Carried
	}
}

var _ Link = (*lossyLink)(nil)

func (l *lossyLink) LinkID() uint32 { return l.id }
func (l *lossyLink) Space() int     { return 1 << 20 }
func (l *lossyLink) MaxRecord() int { return l.max }
func (l *lossyLink) SRTT() (time.Duration, time.Duration) {
	return 10 * time.Millisecond, time.Millisecond
}

func (l *lossyLink) Send(r *record.Record) bool {
	defer r.Release()
	if len(r.Frames()) > l.max {
		panic("record over the link's MaxRecord")
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.mu.recs = append(l.mu.recs, bytes.Clone(r.Frames()))
	l.mu.car = append(l.mu.car, slices.Clone(r.Carried))
	return true
}

func (l *lossyLink) take() ([][]byte, [][]record.Carried) {
	l.mu.Lock()
	defer l.mu.Unlock()
	r, c := l.mu.recs, l.mu.car
	l.mu.recs, l.mu.car = nil, nil
	return r, c
}

// acceptNow takes a flow already waiting for accept, or nil: it never waits.
func acceptNow(accept func(context.Context) (*Stream, error)) *Stream {
	now, cancel := context.WithCancel(context.Background())
	cancel()
	st, err := accept(now)
	if err != nil {
		return nil
	}
	return st
}

type lossyRouter struct{ l *lossyLink }

func (r lossyRouter) Route() *Route                                                { return one(r.l) }
func (r lossyRouter) Stalled(Link, time.Time, time.Duration) (bool, time.Duration) { return false, 0 }

// TestLossyLinkResendsWhatWasLost: over a link that loses one record in ten both ways (data,
// acknowledgements, window updates, the FIN) and reorders what it delivers, a transfer arrives
// exact, recovered by the loss reports alone (no resend on a timeout), and what is sent again
// is what was lost, not everything after it.
func TestLossyLinkResendsWhatWasLost(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ab, ba := &lossyLink{id: 1, max: 1200}, &lossyLink{id: 1, max: 1200}
		a := New(Config{Dialer: true}, lossyRouter{ab})
		b := New(Config{}, lossyRouter{ba})
		defer a.Fail(ErrClosed)
		defer b.Fail(ErrClosed)
		rng := rand.New(rand.NewPCG(7, 8))

		s, err := a.Open()
		if err != nil {
			t.Fatal(err)
		}
		data := payload(2<<20, 3)
		go func() {
			s.Write(data)
			s.CloseWrite()
		}()
		var peer *Stream
		got := make(chan []byte, 1)
		var sentData, lostData uint64
		var lostRecs int
		// One exchange: each side's records cross, one in ten lost (and reported), the rest
		// delivered in a shuffled order.
		cross := func(from *lossyLink, fromEng, to *Engine, count bool) {
			recs, car := from.take()
			idx := rng.Perm(len(recs))
			var lost [][]record.Carried
			for _, i := range idx {
				for _, c := range car[i] {
					if c.Kind == record.CarriedData && count {
						sentData += uint64(c.Len)
					}
				}
				if rng.IntN(10) == 0 {
					lostRecs++
					for _, c := range car[i] {
						if c.Kind == record.CarriedData && count {
							lostData += uint64(c.Len)
						}
					}
					lost = append(lost, car[i])
					continue
				}
				b := recs[i]
				for len(b) > 0 {
					f, n, err := wire.Parse(b)
					if err != nil {
						t.Fatal(err)
					}
					if err := to.Handle(&f); err != nil {
						t.Fatalf("Handle(%v): %v", f.Type, err)
					}
					b = b[n:]
				}
			}
			for _, c := range lost {
				fromEng.Lost(c)
			}
		}
		for round := 0; round < 20000 && len(got) == 0; round++ {
			synctest.Wait()
			cross(ab, a, b, true)
			cross(ba, b, a, false)
			if peer == nil {
				if st := acceptNow(b.Accept); st != nil {
					peer = st
					go func() {
						all, _ := io.ReadAll(peer) // a short read shows in the comparison below
						got <- all
					}()
				}
			}
			time.Sleep(time.Millisecond)
		}
		var all []byte
		select {
		case all = <-got:
		default:
			t.Fatalf("transfer did not finish; a: %+v, b: %+v", a.Stats(), b.Stats())
		}
		if !bytes.Equal(all, data) {
			t.Fatalf("read %d bytes, want the %d written", len(all), len(data))
		}
		st := a.Stats()
		t.Logf("%d records lost; %d data bytes sent for %d, %d of them lost; sender %+v", lostRecs, sentData, len(data), lostData, st)
		if lostData == 0 {
			t.Fatal("no data was lost: the test proves nothing")
		}
		if st.Resends != 0 {
			t.Fatalf("%d resends on a timeout: the loss reports should have covered every loss", st.Resends)
		}
		// Selective: what went again is what was lost (a lost resend goes again too, so the
		// total is at most data + lost), never the rest of the window after each loss.
		if sentData > uint64(len(data))+lostData {
			t.Fatalf("%d data bytes sent for %d with %d lost: more than the losses were resent", sentData, len(data), lostData)
		}
	})
}

// TestLossyLinkControlFrames: the record with the OPEN, every record with a FIN, and the
// receiver's first ACK and first MAX_DATA are lost; each goes again from the loss report, and
// the flow still ends both ways with every byte and no resend on a timeout.
func TestLossyLinkControlFrames(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newLossyPair(t, Config{})
		dropped := map[record.CarriedKind]int{}
		var fins int
		drop := func(car []record.Carried) bool {
			for _, c := range car {
				switch {
				case c.Kind == record.CarriedOpen && dropped[c.Kind] == 0,
					c.Kind == record.CarriedAck && dropped[c.Kind] == 0,
					c.Kind == record.CarriedMaxData && dropped[c.Kind] == 0:
					dropped[c.Kind]++
					return true
				case c.Kind == record.CarriedData && c.Fin && fins < 2:
					fins++
					return true
				}
			}
			return false
		}
		s, err := p.a.Open()
		if err != nil {
			t.Fatal(err)
		}
		up, down := payload(600<<10, 5), payload(300<<10, 6) // beyond the initial window: MAX_DATA
		go func() {
			s.Write(up)
			s.CloseWrite()
		}()
		gotUp, gotDown := make(chan []byte, 1), make(chan []byte, 1)
		go func() {
			all, _ := io.ReadAll(s)
			gotDown <- all
		}()
		var peer *Stream
		p.exchange(20000, drop, drop, func() bool {
			if peer == nil {
				if st := acceptNow(p.b.Accept); st != nil {
					peer = st
					go func() {
						all, _ := io.ReadAll(peer)
						gotUp <- all
					}()
					go func() {
						peer.Write(down)
						peer.CloseWrite()
					}()
				}
			}
			return len(gotUp) > 0 && len(gotDown) > 0
		})
		if len(gotUp) == 0 || len(gotDown) == 0 {
			t.Fatalf("the flow did not end both ways; dropped %v and %d FINs; a %+v, b %+v", dropped, fins, p.a.Stats(), p.b.Stats())
		}
		if !bytes.Equal(<-gotUp, up) || !bytes.Equal(<-gotDown, down) {
			t.Fatal("bytes differ")
		}
		if dropped[record.CarriedOpen] != 1 || dropped[record.CarriedAck] != 1 || dropped[record.CarriedMaxData] != 1 || fins != 2 {
			t.Fatalf("the losses the test is about did not all happen: %v, %d FINs", dropped, fins)
		}
		if p.a.Stats().Resends+p.b.Stats().Resends != 0 {
			t.Fatalf("resends on a timeout: a %+v, b %+v", p.a.Stats(), p.b.Stats())
		}
	})
}

// lossyPair is two engines joined by lossy links, and cross moves one side's records to the
// other, dropping (and reporting lost) those drop picks.
type lossyPair struct {
	t      *testing.T
	ab, ba *lossyLink
	a, b   *Engine
	quiet  bool // set by a drop function: this loss is reported later, by the test
}

func newLossyPair(t *testing.T, bc Config) *lossyPair {
	p := &lossyPair{t: t, ab: &lossyLink{id: 1, max: 1200}, ba: &lossyLink{id: 1, max: 1200}}
	bc.Dialer = false
	p.a = New(Config{Dialer: true}, lossyRouter{p.ab})
	p.b = New(bc, lossyRouter{p.ba})
	t.Cleanup(func() {
		p.a.Fail(ErrClosed)
		p.b.Fail(ErrClosed)
	})
	return p
}

func (p *lossyPair) cross(from *lossyLink, fromEng, to *Engine, drop func([]record.Carried) bool) {
	recs, car := from.take()
	for i, rec := range recs {
		if drop != nil && drop(car[i]) {
			if !p.quiet {
				fromEng.Lost(car[i])
			}
			p.quiet = false
			continue
		}
		for len(rec) > 0 {
			f, n, err := wire.Parse(rec)
			if err != nil {
				p.t.Fatal(err)
			}
			if err := to.Handle(&f); err != nil {
				p.t.Fatalf("Handle(%v): %v", f.Type, err)
			}
			rec = rec[n:]
		}
	}
}

// exchange runs rounds of crossing both ways, a millisecond of virtual time apart, until done.
func (p *lossyPair) exchange(rounds int, dropA, dropB func([]record.Carried) bool, done func() bool) {
	for range rounds {
		synctest.Wait()
		p.cross(p.ab, p.a, p.b, dropA)
		p.cross(p.ba, p.b, p.a, dropB)
		if done() {
			return
		}
		time.Sleep(time.Millisecond)
	}
}

// TestLossyLinkFinalAckOfForgottenFlow: the receiver's ACK_FIN is lost, and the loss is
// reported only after the receiver has forgotten the flow (both directions done, closed), as a
// datagram path reports a loss a round trip later. It goes again as a stateless reply, so the
// sender learns everything arrived without waiting for its timeout.
func TestLossyLinkFinalAckOfForgottenFlow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newLossyPair(t, Config{})
		s, err := p.a.Open()
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			io.Copy(io.Discard, s) // the peer's FIN, early
			s.Write(payload(10<<10, 9))
			s.CloseWrite()
			s.Close()
		}()
		var peer *Stream
		var held [][]record.Carried // the lost records with an ACK_FIN, reported late
		reported := false
		dropB := func(car []record.Carried) bool {
			if reported {
				return false
			}
			fin := false
			for _, c := range car {
				if c.Kind == record.CarriedData {
					return false // the receiver's own bytes or FIN: it needs them through to finish
				}
				fin = fin || (c.Kind == record.CarriedAck && c.Fin)
			}
			if fin {
				held = append(held, slices.Clone(car))
			}
			return fin
		}
		p.exchange(5000, nil, dropB, func() bool {
			if peer == nil {
				if st := acceptNow(p.b.Accept); st != nil {
					peer = st
					go func() {
						peer.CloseWrite() // its direction ends first: only ACKs go back after
						io.Copy(io.Discard, peer)
						peer.Close()
					}()
				}
			}
			if len(held) > 0 && !reported && p.b.Stats().Flows == 0 {
				// The receiver forgot the flow before it heard of the losses.
				reported = true
				for _, car := range held {
					p.b.Lost(car)
				}
			}
			return reported && p.a.Stats().Flows == 0
		})
		if !reported {
			t.Fatalf("the receiver never forgot the flow with its ACK_FIN lost; a %+v, b %+v", p.a.Stats(), p.b.Stats())
		}
		if n := p.a.Stats().Flows; n != 0 {
			t.Fatalf("the sender still has %d flows", n)
		}
		if r := p.a.Stats().Resends + p.b.Stats().Resends; r != 0 {
			t.Fatalf("%d resends on a timeout: the lost final ACK was not sent again", r)
		}
	})
}

// TestLossyLinkRefusalsSplit: stateless replies (refusals of 300 flows beyond a backlog of
// one) do not fit one 1200-byte record; they go out over several instead of waiting forever.
func TestLossyLinkRefusalsSplit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newLossyPair(t, Config{Backlog: 1})
		for range 300 {
			s, err := p.a.Open()
			if err != nil {
				t.Fatal(err)
			}
			go s.Write([]byte("hello"))
		}
		p.exchange(5000, nil, nil, func() bool { return p.a.Stats().Busy == 0 })
		if busy := p.a.Stats().Busy; busy != 0 {
			t.Fatalf("%d flows still wait for an answer", busy)
		}
	})
}

// TestLossyLinkOversizeDatagram: a datagram larger than the link's packets is dropped and
// counted; the datagram and the FIN behind it still go.
func TestLossyLinkOversizeDatagram(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newLossyPair(t, Config{})
		s, err := p.a.OpenPacket()
		if err != nil {
			t.Fatal(err)
		}
		if err := s.WriteDatagram(make([]byte, 2000)); err != nil {
			t.Fatal(err)
		}
		if err := s.WriteDatagram([]byte("small")); err != nil {
			t.Fatal(err)
		}
		s.CloseWrite()
		var peer *Stream
		var got []string
		eof := false
		p.exchange(1000, nil, nil, func() bool {
			if peer == nil {
				if st := acceptNow(p.b.AcceptPacket); st != nil {
					peer = st
				}
			}
			if peer != nil && !eof {
				peer.SetReadDeadline(time.Now().Add(time.Millisecond))
				buf := make([]byte, 4096)
				for {
					n, err := peer.ReadDatagram(buf)
					if err == io.EOF {
						eof = true
						break
					}
					if err != nil {
						break
					}
					got = append(got, string(buf[:n]))
				}
			}
			return eof
		})
		if !eof || len(got) != 1 || got[0] != "small" {
			t.Fatalf("read %q, EOF %v; want the small datagram, then EOF", got, eof)
		}
		if st := s.PacketStats(); st.Oversize != 1 {
			t.Fatalf("sender stats %+v: want one Oversize drop", st)
		}
	})
}

// TestLossyLinkLongRunAfterOneLoss: once the windows have grown, one record is lost and the
// sender goes on through its window before the loss comes back: the receiver keeps the
// megabytes behind the gap (its small records merge into few pieces, where one piece each
// would pass the bound of 4096 per flow) until the lost one comes again, so nothing is
// dropped and nothing resent on a timeout.
func TestLossyLinkLongRunAfterOneLoss(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newLossyPair(t, Config{InitialWindow: 16 << 20, MaxWindow: 16 << 20})
		s, err := p.a.Open()
		if err != nil {
			t.Fatal(err)
		}
		data := payload(24<<20, 12)
		go func() {
			s.Write(data)
			s.CloseWrite()
		}()
		lost := false
		var held []record.Carried
		dropA := func(car []record.Carried) bool {
			for _, c := range car {
				if c.Kind == record.CarriedData && c.Off > 8<<20 && !lost {
					lost, held = true, car
					p.quiet = true // reported lost below, once a whole window went out
					return true
				}
			}
			return false
		}
		var peer *Stream
		got := make(chan []byte, 1)
		rounds := 0
		p.exchange(20000, dropA, nil, func() bool {
			if peer == nil {
				if st := acceptNow(p.b.Accept); st != nil {
					peer = st
					go func() {
						all, _ := io.ReadAll(peer)
						got <- all
					}()
				}
			}
			if held != nil {
				if rounds++; rounds == 20 {
					p.a.Lost(held)
				}
			}
			return len(got) > 0
		})
		if !lost {
			t.Fatal("nothing was lost: the test proves nothing")
		}
		select {
		case all := <-got:
			if !bytes.Equal(all, data) {
				t.Fatalf("read %d bytes, want the %d written", len(all), len(data))
			}
		default:
			t.Fatalf("transfer did not finish; a %+v, b %+v", p.a.Stats(), p.b.Stats())
		}
		t.Logf("receiver %+v", p.b.Stats())
		if st := p.b.Stats(); st.GapDrops != 0 || st.Reordered < 5<<20 {
			t.Fatalf("receiver %+v: want no drop, and megabytes kept behind the gap", st)
		}
		if st := p.a.Stats(); st.Resends != 0 {
			t.Fatalf("sender %+v: resent on a timeout", st)
		}
	})
}
