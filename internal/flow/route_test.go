package flow

import (
	"bytes"
	"io"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rendr-go/rendr/internal/wire"
)

// routeRouter routes by a Route the test sets.
type routeRouter struct {
	mu     sync.Mutex
	rt     *Route
	stalls []Link
}

func (r *routeRouter) Route() *Route {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.rt
}

func (r *routeRouter) Stalled(l Link, _ time.Time, _ time.Duration) (bool, time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stalls = append(r.stalls, l)
	return true, 0
}

func (r *routeRouter) set(rt *Route) {
	r.mu.Lock()
	r.rt = rt
	r.mu.Unlock()
}

// multiRig is a dialing engine a sending over two links (a Route of them) to a listening
// engine b, which answers over one.
type multiRig struct {
	t      *testing.T
	a, b   *Engine
	ra     *routeRouter
	rb     *fakeRouter
	l1, l2 *fakeLink
	ba     *fakeLink
}

func newMultiRig(t *testing.T, mode Mode) *multiRig {
	r := &multiRig{t: t, ra: &routeRouter{}, rb: &fakeRouter{},
		l1: &fakeLink{id: 1}, l2: &fakeLink{id: 2}, ba: &fakeLink{id: 1}}
	r.ra.set(&Route{Mode: mode, Kids: []*Route{one(r.l1), one(r.l2)}})
	r.rb.set(r.ba)
	r.a = New(Config{Dialer: true}, r.ra)
	r.b = New(Config{}, r.rb)
	t.Cleanup(func() {
		r.a.Fail(ErrClosed)
		r.b.Fail(ErrClosed)
	})
	return r
}

// exchange moves one round of records: l2's before l1's (l2 is the faster path), then b's
// answers. lose2 drops what l2 carried instead.
func (r *multiRig) exchange(lose2 bool) (n1, n2 int) {
	synctest.Wait()
	f1, f2 := frames(r.t, r.l1.take()), frames(r.t, r.l2.take())
	for _, f := range f1 {
		n1 += len(f.Payload)
	}
	for _, f := range f2 {
		n2 += len(f.Payload)
	}
	deliver := func(fs []wire.Frame) {
		for i := range fs {
			fs[i].Payload = bytes.Clone(fs[i].Payload)
			if err := r.b.Handle(&fs[i]); err != nil {
				r.t.Fatalf("b: %v", err)
			}
		}
	}
	if !lose2 {
		deliver(f2)
	}
	deliver(f1)
	synctest.Wait()
	for _, f := range frames(r.t, r.ba.take()) {
		if err := r.a.Handle(&f); err != nil {
			r.t.Fatalf("a: %v", err)
		}
	}
	return n1, n2
}

// transfer writes data on a new flow and runs rounds until b has read all of it; each round
// calls between first.
func (r *multiRig) transfer(data []byte, between func(round int)) (got []byte, sent1, sent2 int) {
	s, err := r.a.Open()
	if err != nil {
		r.t.Fatal(err)
	}
	go func() {
		s.Write(data)
		s.CloseWrite()
	}()
	out := make(chan []byte, 1)
	go func() {
		peer, err := r.b.Accept(r.t.Context())
		if err != nil {
			out <- nil
			return
		}
		peer.SetReadDeadline(time.Now().Add(time.Minute))
		b, _ := io.ReadAll(peer)
		out <- b
	}()
	for round := range 5000 {
		if between != nil {
			between(round)
		}
		n1, n2 := r.exchange(false)
		sent1, sent2 = sent1+n1, sent2+n2
		if len(out) == 1 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	return <-out, sent1, sent2
}

// TestRouteRace: every record goes on both links; the receiver keeps the first copy of each
// byte (here always l2's) and drops the other as a duplicate.
func TestRouteRace(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newMultiRig(t, ModeRace)
		data := payload(2<<20, 21)
		got, sent1, sent2 := r.transfer(data, nil)
		if !bytes.Equal(got, data) {
			t.Fatalf("read %d bytes, want the %d written", len(got), len(data))
		}
		if sent1 < len(data) || sent2 < len(data) {
			t.Fatalf("link 1 carried %d payload bytes, link 2 %d: a Race sends all %d on each", sent1, sent2, len(data))
		}
		if st := r.b.Stats(); st.DupBytes < uint64(len(data)) {
			t.Fatalf("%d duplicate bytes dropped, want every byte's second copy (%d)", st.DupBytes, len(data))
		}
	})
}

// TestRouteBond: records are spread by expected delivery time, so the link that takes bytes
// twice as fast carries about twice as many; the receiver reorders, and every byte arrives
// once.
func TestRouteBond(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newMultiRig(t, ModeBond)
		r.l1.rate, r.l2.rate = 2e6, 1e6
		data := payload(3<<20, 22)
		got, sent1, sent2 := r.transfer(data, nil)
		if !bytes.Equal(got, data) {
			t.Fatalf("read %d bytes, want the %d written", len(got), len(data))
		}
		share := float64(sent1) / float64(sent1+sent2)
		if sent1+sent2 != len(data) || share < 0.55 || share > 0.8 {
			t.Fatalf("link 1 carried %d bytes and link 2 %d (%.2f on the faster): want each byte once, about 2/3 on the faster", sent1, sent2, share)
		}
		if st := r.b.Stats(); st.Reordered == 0 {
			t.Fatal("nothing arrived ahead of a gap, though the slower link's records came first")
		}
	})
}

// TestRouteBondLosesLink: one child of a Bond dies with records in flight; when the route
// drops it, every flow rewinds and the survivor carries everything that was not acknowledged.
func TestRouteBondLosesLink(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newMultiRig(t, ModeBond)
		r.l1.rate, r.l2.rate = 1e6, 1e6
		data := payload(2<<20, 23)
		got, _, _ := r.transfer(data, func(round int) {
			if round == 3 {
				synctest.Wait()
				r.l2.take() // what link 2 carried is lost with it
				r.ra.set(one(r.l1))
				r.a.Kick()
			}
		})
		if !bytes.Equal(got, data) {
			t.Fatalf("read %d bytes, want the %d written", len(got), len(data))
		}
		if m := r.a.Stats().Migrations; m != 1 {
			t.Fatalf("%d rewinds, want 1 (link 2 left the route)", m)
		}
	})
}

// TestRouteAddLinkNoRewind: a link joining the route loses nothing, so nothing is resent.
func TestRouteAddLinkNoRewind(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newMultiRig(t, ModeBond)
		r.ra.set(one(r.l1))
		data := payload(1<<20, 24)
		got, _, sent2 := r.transfer(data, func(round int) {
			if round == 2 {
				r.ra.set(&Route{Mode: ModeBond, Kids: []*Route{one(r.l1), one(r.l2)}})
				r.a.Kick()
			}
		})
		if !bytes.Equal(got, data) {
			t.Fatalf("read %d bytes, want the %d written", len(got), len(data))
		}
		if st := r.a.Stats(); st.Migrations != 0 || r.b.Stats().DupBytes != 0 {
			t.Fatalf("%d rewinds and %d duplicate bytes after a link joined", st.Migrations, r.b.Stats().DupBytes)
		}
		if sent2 == 0 {
			t.Fatal("the joining link carried nothing")
		}
	})
}

// TestReorderBudgetResend: with the session's budget of pieces ahead of gaps spent (here by
// another flow's bytes that never complete), a Bond's reordered bytes are dropped by the
// receiver. The sender must send them again on its own, although every link stays healthy and
// no path change rewinds it.
func TestReorderBudgetResend(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newMultiRig(t, ModeBond)
		r.l1.rate, r.l2.rate = 1e6, 1e6
		// Four other flows take the session's budget, a flow's share each.
		for k := range maxReorderPieces / maxReorderFlow {
			for i := range maxReorderFlow {
				f := wire.Frame{Type: wire.TypeData, Flow: uint64(3 + 2*k), Offset: uint64(2 + 2*i), Payload: []byte{1}}
				if err := r.b.Handle(&f); err != nil {
					t.Fatal(err)
				}
			}
		}
		if r.b.mu.reorderPieces != maxReorderPieces {
			t.Fatalf("%d pieces held, want the session's %d", r.b.mu.reorderPieces, maxReorderPieces)
		}
		s, err := r.a.Open()
		if err != nil {
			t.Fatal(err)
		}
		data := payload(512<<10, 25)
		go func() {
			s.Write(data)
			s.CloseWrite()
		}()
		out := make(chan []byte, 1)
		go func() {
			peer, err := r.b.Accept(t.Context())
			if err != nil {
				out <- nil
				return
			}
			for peer.ID() != 1 { // flows 3 to 9, opened by the pieces above, come first
				if peer, err = r.b.Accept(t.Context()); err != nil {
					out <- nil
					return
				}
			}
			peer.SetReadDeadline(time.Now().Add(10 * time.Minute))
			b, err := io.ReadAll(peer)
			if err != nil {
				t.Errorf("reading: %v after %d bytes", err, len(b))
			}
			out <- b
		}()
		// Slow by design: every byte that overtakes is dropped, so each resend, backed off
		// as TCP backs off its timer, moves the flow on by what arrives in order.
		for range 300000 {
			synctest.Wait()
			f1, f2 := frames(t, r.l1.take()), frames(t, r.l2.take())
			for _, fs := range [][]wire.Frame{f2, f1} { // l2's records overtake l1's
				for i := range fs {
					fs[i].Payload = bytes.Clone(fs[i].Payload)
					if err := r.b.Handle(&fs[i]); err != nil {
						t.Fatal(err)
					}
				}
			}
			synctest.Wait()
			for _, f := range frames(t, r.ba.take()) {
				if f.Flow != 1 {
					continue // flows 3 to 9 exist only on b's side
				}
				if err := r.a.Handle(&f); err != nil {
					t.Fatal(err)
				}
			}
			if len(out) == 1 {
				break
			}
			time.Sleep(time.Millisecond)
		}
		got := <-out
		if !bytes.Equal(got, data) {
			t.Fatalf("read %d of %d bytes", len(got), len(data))
		}
		if st := r.b.Stats(); st.GapDrops == 0 {
			t.Fatal("no bytes were dropped for the budget: the test did not test anything")
		}
		if st := r.a.Stats(); st.Resends == 0 {
			t.Fatal("the sender never resent on its own")
		}
	})
}

// TestRoutePinnedDatagrams: over a Bond, datagrams pinned by hash go on one link per hash
// (hash modulo the links, ordered by id), whatever the Bond's own choice; unpinned ones and
// stream bytes are spread as usual; with one link left, everything takes it.
func TestRoutePinnedDatagrams(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newMultiRig(t, ModeBond)
		r.l1.rate, r.l2.rate = 4e6, 1e6 // the Bond itself would favour link 1
		s, err := r.a.OpenPacket()
		if err != nil {
			t.Fatal(err)
		}
		onLink := map[int]map[uint64]int{1: {}, 2: {}} // link -> hash -> datagrams
		run := func(n int) {
			for i := range n {
				b := make([]byte, 100)
				b[0] = byte(i % 4)
				if err := s.WriteDatagramPinned(b, uint64(i%4)); err != nil {
					t.Fatal(err)
				}
				if i%50 == 49 {
					synctest.Wait()
				}
			}
			synctest.Wait()
			for id, l := range map[int]*fakeLink{1: r.l1, 2: r.l2} {
				for _, f := range frames(t, l.take()) {
					if f.Type == wire.TypeDatagram {
						onLink[id][uint64(f.Payload[0])]++
					}
				}
			}
		}
		run(200)
		for h := uint64(0); h < 4; h++ {
			want := 1 + int(h%2) // hash mod 2 links, ordered by id
			if onLink[want][h] != 50 || onLink[3-want][h] != 0 {
				t.Fatalf("hash %d: %d datagrams on link %d and %d on link %d; want all 50 on link %d",
					h, onLink[want][h], want, onLink[3-want][h], 3-want, want)
			}
		}
		if st := s.PacketStats(); st.Sent != 200 || st.QueuedSend != 0 {
			t.Fatalf("stats %+v", st)
		}
		// One link left: every pinned datagram takes it.
		r.ra.set(one(r.l2))
		onLink = map[int]map[uint64]int{1: {}, 2: {}}
		run(100)
		if n := onLink[2][0] + onLink[2][1] + onLink[2][2] + onLink[2][3]; n != 100 {
			t.Fatalf("%d of 100 datagrams on the one link left", n)
		}
	})
}

// TestRouteSetsCompareAsSets: a route naming one link twice is the set of its links, so a link
// that joins later is known, and its leaving rewinds.
func TestRouteSetsCompareAsSets(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newMultiRig(t, ModeBond)
		e := r.a
		now := time.Now()
		e.mu.Lock()
		defer e.mu.Unlock()
		e.routeLocked([]Link{r.l1, r.l1}, now)
		e.routeLocked([]Link{r.l1, r.l2}, now) // l2 joins: no rewind
		if e.mu.migrations != 0 {
			t.Fatalf("%d rewinds after a link joined", e.mu.migrations)
		}
		e.routeLocked([]Link{r.l1}, now) // l2 leaves: rewind
		if e.mu.migrations != 1 {
			t.Fatalf("%d rewinds after a link left, want 1", e.mu.migrations)
		}
	})
}

// one is the Route of a single link.
func one(l Link) *Route { return &Route{Mode: ModeLink, Link: l} }
