package flow

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rendr-go/rendr/internal/wire"
)

// acceptPacket waits for a packet flow on e.
func acceptPacket(t *testing.T, e *Engine) *Stream {
	t.Helper()
	ctx, cancel := contextWithTimeout(time.Second)
	defer cancel()
	s, err := e.AcceptPacket(ctx)
	if err != nil {
		t.Fatalf("AcceptPacket: %v", err)
	}
	return s
}

func dgram(i int, size int) []byte {
	b := make([]byte, size)
	binary.BigEndian.PutUint32(b, uint32(i))
	return b
}

func TestPacketRoundTrip(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, Config{}, Config{})
		s, err := r.a.OpenPacket()
		if err != nil {
			t.Fatal(err)
		}
		st, _ := r.a.Open()
		if s.ID() != 2 || st.ID() != 1 || !s.IsPacket() || st.IsPacket() {
			t.Fatalf("ids: packet %d, stream %d; packet flows are even, streams odd", s.ID(), st.ID())
		}
		const n = 300 // more than the send queue holds: written in batches the engine drains
		for i := range n {
			if err := s.WriteDatagram(dgram(i, 1200)); err != nil {
				t.Fatal(err)
			}
			if i%100 == 99 {
				synctest.Wait()
			}
		}
		if err := s.WriteDatagram(make([]byte, MaxDatagram+1)); !errors.Is(err, ErrTooLarge) {
			t.Fatalf("a datagram over MaxDatagram: %v, want ErrTooLarge", err)
		}
		r.settle()
		peer := acceptPacket(t, r.b)
		buf := make([]byte, 2000)
		for i := range n {
			k, err := peer.ReadDatagram(buf)
			if err != nil || k != 1200 || binary.BigEndian.Uint32(buf) != uint32(i) {
				t.Fatalf("datagram %d: %d bytes, number %d, %v", i, k, binary.BigEndian.Uint32(buf), err)
			}
		}
		// Short buffers truncate, as for UDP.
		s.WriteDatagram(dgram(7, 100))
		r.settle()
		small := make([]byte, 10)
		if k, err := peer.ReadDatagram(small); k != 10 || err != nil {
			t.Fatalf("truncated read: %d, %v", k, err)
		}
		// Close: the peer reads io.EOF after what arrived.
		s.WriteDatagram(dgram(8, 10))
		s.Close()
		r.settle()
		if k, err := peer.ReadDatagram(buf); k != 10 || err != nil {
			t.Fatalf("last datagram: %d, %v", k, err)
		}
		if _, err := peer.ReadDatagram(buf); err != io.EOF {
			t.Fatalf("after the peer closed: %v, want io.EOF", err)
		}
		ps, rs := s.PacketStats(), peer.PacketStats()
		if ps.Sent != n+2 || rs.Received != n+2 || rs.Truncated != 1 || rs.Duplicates != 0 || ps.SendDrops != 0 || rs.RecvDrops != 0 {
			t.Fatalf("stats: sender %+v, receiver %+v", ps, rs)
		}
		peer.Close()
		st.Close()
		r.settle()
		accept(t, r.b).Close() // the stream opened beside it
		r.settle()
		if st := r.b.Stats(); st.Flows != 0 {
			t.Fatalf("%d flows left on the listening side after both closed", st.Flows)
		}
	})
}

// TestPacketDedupAndDrops delivers every DATAGRAM twice and out of order, as a Race over paths
// of different speed does, then overflows the receive queue: each datagram reaches the reader
// at most once, and every drop is counted by its cause.
func TestPacketDedupAndDrops(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, Config{}, Config{})
		s, _ := r.a.OpenPacket()
		for i := range 100 {
			s.WriteDatagram(dgram(i, 50))
		}
		synctest.Wait()
		fs := frames(t, r.ab.take())
		var dg []wire.Frame
		for _, f := range fs {
			if f.Type == wire.TypeDatagram {
				dg = append(dg, f)
			} else {
				r.deliver(r.b, []wire.Frame{f})
			}
		}
		if len(dg) != 100 {
			t.Fatalf("%d DATAGRAM frames for 100 writes", len(dg))
		}
		// Second half first, then everything again.
		order := append(append(append([]wire.Frame{}, dg[50:]...), dg[:50]...), dg...)
		r.deliver(r.b, order)
		peer := acceptPacket(t, r.b)
		got := map[uint32]bool{}
		buf := make([]byte, 100)
		for range 100 {
			if _, err := peer.ReadDatagram(buf); err != nil {
				t.Fatal(err)
			}
			i := binary.BigEndian.Uint32(buf)
			if got[i] {
				t.Fatalf("datagram %d delivered twice", i)
			}
			got[i] = true
		}
		if st := peer.PacketStats(); st.Received != 100 || st.Duplicates != 100 || st.QueuedRecv != 0 {
			t.Fatalf("stats %+v, want 100 received and 100 duplicates", st)
		}
		// Far behind the newest: too old to tell, dropped.
		old := dg[0]
		old.Seq = 0
		late := wire.Frame{Type: wire.TypeDatagram, Flow: s.ID(), Seq: 5000, Payload: []byte("new")}
		r.deliver(r.b, []wire.Frame{late})
		old.Seq = 5000 - dedupWindow
		r.deliver(r.b, []wire.Frame{old})
		if st := peer.PacketStats(); st.TooOld != 1 || st.Received != 101 {
			t.Fatalf("stats %+v, want one too old", st)
		}
		peer.ReadDatagram(buf)
		// A reader that does not read: the queue fills, the rest is dropped and counted.
		for i := range maxRecvDatagrams + 10 {
			f := wire.Frame{Type: wire.TypeDatagram, Flow: s.ID(), Seq: uint64(6000 + i), Payload: []byte{1}}
			r.deliver(r.b, []wire.Frame{f})
		}
		if st := peer.PacketStats(); st.RecvDrops != 10 || st.QueuedRecv != maxRecvDatagrams {
			t.Fatalf("stats %+v, want %d queued and 10 dropped", st, maxRecvDatagrams)
		}
		// A writer faster than the engine: the send queue fills and drops, never blocks.
		r.ra.set(nil)
		for range maxSendDatagrams + 5 {
			if err := s.WriteDatagram([]byte{2}); err != nil {
				t.Fatal(err)
			}
		}
		if st := s.PacketStats(); st.SendDrops != 5 || st.QueuedSend != maxSendDatagrams {
			t.Fatalf("sender stats %+v, want %d queued and 5 dropped", st, maxSendDatagrams)
		}
	})
}

// TestPacketImplicitOpen: datagrams whose OPEN was lost with a path still open the flow (Accept
// has it once the OPEN sent again is here), and the kinds of flows are told apart by their ids.
func TestPacketImplicitOpen(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, Config{}, Config{})
		f := wire.Frame{Type: wire.TypeDatagram, Flow: 4, Seq: 1, Payload: []byte("x")}
		r.deliver(r.b, []wire.Frame{f, {Type: wire.TypeOpen, Flow: 4, Kind: wire.KindPacket}, {Type: wire.TypeOpen, Flow: 2, Kind: wire.KindPacket}})
		for _, want := range []uint64{2, 4} {
			if s := acceptPacket(t, r.b); s.ID() != want || !s.IsPacket() {
				t.Fatalf("accepted %d (packet %v), want packet flow %d", s.ID(), s.IsPacket(), want)
			}
		}
		bad := []wire.Frame{
			{Type: wire.TypeOpen, Flow: 6, Kind: wire.KindStream},            // kind against the id
			{Type: wire.TypeOpen, Flow: 7, Kind: wire.KindPacket},            // the same
			{Type: wire.TypeData, Flow: 4, Payload: []byte("bytes")},         // stream bytes on a packet flow
			{Type: wire.TypeDatagram, Flow: 1, Seq: 1, Payload: []byte("d")}, // a datagram on a stream
		}
		r.deliver(r.b, []wire.Frame{{Type: wire.TypeData, Flow: 1, Payload: []byte("s")}})
		for _, f := range bad {
			if err := r.b.Handle(&f); err == nil {
				t.Errorf("%v flow %d kind %d accepted", f.Type, f.Flow, f.Kind)
			}
		}
	})
}

func contextWithTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}

// TestPacketIdleHoldsNothing: a packet flow that has sent and read everything holds no
// datagram buffer, and a datagram that arrives after the peer's FIN (over a slower path) is
// dropped and counted, never delivered after io.EOF.
func TestPacketIdleHoldsNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, Config{}, Config{})
		s, _ := r.a.OpenPacket()
		for i := range 100 {
			s.WriteDatagram(dgram(i, 3000))
			if i%50 == 49 {
				synctest.Wait() // each takes a 16 KiB buffer: the 1 MiB send queue holds 64
			}
		}
		r.settle()
		peer := acceptPacket(t, r.b)
		buf := make([]byte, 4000)
		for range 100 {
			if _, err := peer.ReadDatagram(buf); err != nil {
				t.Fatal(err)
			}
		}
		r.b.mu.Lock()
		if r.b.mu.dgQueued != 0 {
			t.Errorf("%d datagram bytes still counted against the session after every datagram was read", r.b.mu.dgQueued)
		}
		for _, q := range []*dgRing{&s.pk.send, &peer.pk.recv} {
			for i, b := range q.slots {
				if b != nil {
					t.Errorf("slot %d still holds a %d-byte buffer", i, cap(b.b))
				}
			}
		}
		r.b.mu.Unlock()
		s.Close()
		r.settle()
		late := wire.Frame{Type: wire.TypeDatagram, Flow: s.ID(), Seq: 500, Payload: []byte("late")}
		r.deliver(r.b, []wire.Frame{late})
		if _, err := peer.ReadDatagram(buf); err != io.EOF {
			t.Fatalf("after the FIN: %v, want io.EOF", err)
		}
		if st := peer.PacketStats(); st.Late != 1 {
			t.Fatalf("stats %+v, want one late datagram", st)
		}
	})
}

// tightLink queues at most 128 KiB until taken, so each round has room for two records.
type tightLink struct{ fakeLink }

func (l *tightLink) Space() int { return max(0, 128<<10-l.Backlog()) }

// TestPacketLargeBesideBulk: a datagram too large for what a bulk stream leaves of a record
// still goes out (first in the next record). Without that, with the stream always ahead of it
// in the ready queue, it waited for ever while the stream moved megabytes.
func TestPacketLargeBesideBulk(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ra, rb := &routeRouter{}, &fakeRouter{}
		ab, ba := &tightLink{fakeLink{id: 1}}, &fakeLink{id: 1}
		ra.set(one(ab))
		rb.set(ba)
		a := New(Config{Dialer: true}, ra)
		b := New(Config{InitialWindow: 16 << 20, InitialSessionWindow: 64 << 20}, rb)
		defer a.Fail(ErrClosed)
		defer b.Fail(ErrClosed)
		bulk, _ := a.Open()
		pk, _ := a.OpenPacket()
		go func() {
			p := payload(1<<20, 3)
			for {
				if _, err := bulk.Write(p); err != nil {
					return
				}
			}
		}()
		go func() {
			if peer, err := b.Accept(t.Context()); err == nil {
				io.Copy(io.Discard, peer)
			}
		}()
		round := func() {
			synctest.Wait()
			for _, f := range frames(t, ab.take()) {
				if err := b.Handle(&f); err != nil {
					t.Fatal(err)
				}
			}
			a.Kick() // the link has room again (a path says so with Writable)
			synctest.Wait()
			for _, f := range frames(t, ba.take()) {
				if err := a.Handle(&f); err != nil {
					t.Fatal(err)
				}
			}
		}
		for range 50 { // the stream gets going: it is ahead in the ready queue from now on
			round()
		}
		if err := pk.WriteDatagram(make([]byte, 40000)); err != nil {
			t.Fatal(err)
		}
		for range 300 {
			round()
			if pk.PacketStats().Sent == 1 {
				return
			}
		}
		t.Fatalf("the large datagram was not sent: %+v", pk.PacketStats())
	})
}
