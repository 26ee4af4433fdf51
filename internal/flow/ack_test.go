package flow

import (
	"errors"
	"io"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rendr-go/rendr/internal/wire"
)

// acks returns the ACK frames among fs.
func acks(fs []wire.Frame) []wire.Frame {
	var out []wire.Frame
	for _, f := range fs {
		if f.Type == wire.TypeAck {
			out = append(out, f)
		}
	}
	return out
}

// TestDelayedAck: DATA that arrives in order is acknowledged by one ACK within ackDelay, not
// one per frame; at an eighth of the window unacknowledged, an ACK goes at once; a frame ahead
// of a gap, one that closes it, or a duplicate, is acknowledged at once; and a delayed ACK
// rides data the receiver sends back.
func TestDelayedAck(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, Config{}, Config{})
		s, err := r.a.Open()
		if err != nil {
			t.Fatal(err)
		}
		// Small writes, each its own record: several DATA frames, one ACK.
		for range 4 {
			s.Write(make([]byte, 1000))
			synctest.Wait()
		}
		r.deliver(r.b, frames(t, r.ab.take()))
		synctest.Wait()
		if got := acks(frames(t, r.ba.take())); len(got) != 0 {
			t.Fatalf("%d ACKs at once for 4000 bytes in order", len(got))
		}
		time.Sleep(ackDelay)
		synctest.Wait()
		got := acks(frames(t, r.ba.take()))
		if len(got) != 1 || got[0].Delivered() != 4000 {
			t.Fatalf("after the ACK delay: %d ACKs (%v), want one for 4000 bytes", len(got), got)
		}
		peer := acceptNow(r.b.Accept)
		if peer == nil {
			t.Fatal("flow not accepted")
		}

		// An eighth of the 256 KiB window: the ACK does not wait. (40 KiB go as a 32 KiB
		// record and an 8 KiB one; the engine may run between the two, so the ACK at once
		// covers at least the first, and any rest follows within the delay.)
		s.Write(make([]byte, 40<<10))
		synctest.Wait()
		r.deliver(r.b, frames(t, r.ab.take()))
		synctest.Wait()
		got = acks(frames(t, r.ba.take()))
		if len(got) == 0 || got[0].Delivered() < 4000+32<<10 {
			t.Fatalf("40 KiB in order: ACKs at once %v, want one for at least 32 KiB of it", got)
		}
		if got[len(got)-1].Delivered() != 4000+40<<10 {
			time.Sleep(ackDelay)
			synctest.Wait()
			if got := acks(frames(t, r.ba.take())); len(got) != 1 || got[0].Delivered() != 4000+40<<10 {
				t.Fatalf("the rest of 40 KiB: ACKs %v, want one for all of it", got)
			}
		}

		// Ahead of a gap: at once.
		s.Write(make([]byte, 1000))
		synctest.Wait()
		first := frames(t, r.ab.take())
		s.Write(make([]byte, 1000))
		synctest.Wait()
		r.deliver(r.b, frames(t, r.ab.take()))
		synctest.Wait()
		if got := acks(frames(t, r.ba.take())); len(got) != 1 {
			t.Fatalf("data ahead of a gap: %d ACKs at once, want 1", len(got))
		}
		// The gap closes: at once too, for everything kept behind it.
		r.deliver(r.b, first)
		synctest.Wait()
		if got := acks(frames(t, r.ba.take())); len(got) != 1 || got[0].Delivered() != 6000+40<<10 {
			t.Fatalf("the gap closed: ACKs %v, want one at once for everything", got)
		}
		// A duplicate: at once.
		r.deliver(r.b, first)
		synctest.Wait()
		if got := acks(frames(t, r.ba.take())); len(got) != 1 || got[0].Delivered() != 6000+40<<10 {
			t.Fatalf("a duplicate: ACKs %v, want one at once for everything", got)
		}

		// A delayed ACK rides the receiver's own data.
		s.Write(make([]byte, 1000))
		synctest.Wait()
		r.deliver(r.b, frames(t, r.ab.take()))
		peer.Write([]byte("reply"))
		synctest.Wait()
		back := frames(t, r.ba.take())
		if got := acks(back); len(got) != 1 || got[0].Delivered() != 7000+40<<10 || len(back) < 2 {
			t.Fatalf("reply: frames %v, want the ACK along with the data", back)
		}
		time.Sleep(2 * ackDelay)
		synctest.Wait()
		if got := acks(frames(t, r.ba.take())); len(got) != 0 {
			t.Fatalf("%d more ACKs after the one that rode the reply", len(got))
		}
	})
}

// TestDelayedAckBeforeRemoval: the receiver's own side of a flow is done (its FIN
// acknowledged); the sender's FIN arrives before its last bytes (they were lost and resent).
// The bytes that close the gap are acknowledged at once with the end of the flow, and the
// reader that reads to the end and closes, which removes the flow, leaves no ACK owed: the
// sender settles without a stall or a resend.
func TestDelayedAckBeforeRemoval(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, Config{}, Config{})
		s, err := r.a.Open()
		if err != nil {
			t.Fatal(err)
		}
		s.Write(make([]byte, 1000))
		synctest.Wait()
		r.deliver(r.b, frames(t, r.ab.take()))
		peer := acceptNow(r.b.Accept)
		if peer == nil {
			t.Fatal("flow not accepted")
		}
		peer.CloseWrite()
		r.settle() // the receiver's FIN is acknowledged; its side is done
		s.Write(make([]byte, 2000))
		synctest.Wait()
		data := frames(t, r.ab.take())
		s.CloseWrite()
		synctest.Wait()
		r.deliver(r.b, frames(t, r.ab.take())) // the FIN first, acknowledged at once (a gap)
		synctest.Wait()
		r.deliver(r.a, frames(t, r.ba.take()))
		r.deliver(r.b, data)
		if b, err := io.ReadAll(peer); err != nil || len(b) != 3000 {
			t.Fatalf("read %d bytes, %v", len(b), err)
		}
		peer.Close() // the flow is done both ways: the receiver forgets it
		synctest.Wait()
		back := frames(t, r.ba.take())
		var last wire.Frame
		for _, f := range acks(back) {
			last = f
		}
		if last.Type != wire.TypeAck || last.Delivered() != 3000 || last.Flags&wire.AckFin == 0 {
			t.Fatalf("at once after the gap closed: last ACK %+v, want one for 3000 bytes with ACK_FIN", last)
		}
		r.deliver(r.a, back)
		r.settle()
		if st := r.a.Stats(); st.Busy != 0 || st.Resends != 0 || r.ra.stalls() != 0 {
			t.Fatalf("sender: %+v, %d stall verdicts: want settled, no resend, no stall", st, r.ra.stalls())
		}
	})
}

// TestFailLetsGoOfHeldBytes: when the session fails, bytes held past a gap (they can never be
// delivered now) and everything a flow that was never accepted received (nobody can read it)
// let go of what they held: a packet path's holds are a carrier's buffers, which it needs
// back. Delivered bytes of an accepted flow stay readable.
func TestFailLetsGoOfHeldBytes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, Config{}, Config{})
		var mu sync.Mutex
		var holds, unpins int
		h := &countingHolder{mu: &mu, holds: &holds, unpins: &unpins}
		hand := func(f wire.Frame) {
			t.Helper()
			if err := r.b.HandleFrom(&f, h); err != nil {
				t.Fatal(err)
			}
		}
		// Flow 1, accepted: 8 KiB delivered, 8 KiB held past a gap.
		// Flow 2, never accepted: 8 KiB delivered.
		var flows []*Stream
		for range 2 {
			s, err := r.a.Open()
			if err != nil {
				t.Fatal(err)
			}
			flows = append(flows, s)
		}
		for _, s := range flows {
			s.Write(make([]byte, 8<<10))
			synctest.Wait()
			for _, f := range frames(t, r.ab.take()) {
				hand(f)
			}
		}
		peer := acceptNow(r.b.Accept)
		if peer == nil || peer.ID() != flows[0].ID() {
			t.Fatal("first flow not accepted")
		}
		flows[0].Write(make([]byte, 8<<10))
		synctest.Wait()
		r.ab.take() // lost on the way: a gap
		flows[0].Write(make([]byte, 8<<10))
		synctest.Wait()
		for _, f := range frames(t, r.ab.take()) {
			hand(f) // past the gap: held there
		}
		mu.Lock()
		held := holds
		mu.Unlock()
		if held < 3 {
			t.Fatalf("only %d holds: the test needs the payloads held", held)
		}
		r.b.Fail(ErrClosed)
		mu.Lock()
		left := holds - unpins
		mu.Unlock()
		if left != 1 {
			t.Fatalf("%d holds left after Fail, want 1: the accepted flow's delivered bytes", left)
		}
		if b, err := io.ReadAll(peer); len(b) != 8<<10 || !errors.Is(err, ErrClosed) {
			t.Fatalf("read %d bytes, %v: want the 8 KiB delivered before the failure, then its error", len(b), err)
		}
		mu.Lock()
		defer mu.Unlock()
		if holds != unpins {
			t.Fatalf("%d holds, %d let go after the last bytes were read", holds, unpins)
		}
	})
}
