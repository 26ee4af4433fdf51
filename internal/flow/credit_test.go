package flow

import (
	"bytes"
	"io"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rendr-go/rendr/internal/wire"
)

// pumpRead reads n bytes from s in a goroutine while the rig exchanges records, and reports
// what was read once the exchange goes quiet for good (bounded in virtual time).
func pumpRead(t *testing.T, r *rig, s *Stream, n int) []byte {
	t.Helper()
	got := make(chan []byte, 1)
	s.SetReadDeadline(time.Now().Add(time.Minute)) // virtual: a stuck flow ends the read
	go func() {
		b := make([]byte, n)
		k, _ := io.ReadFull(s, b)
		got <- b[:k]
	}()
	for range 200 {
		r.settle()
		if len(got) == 1 {
			break
		}
		time.Sleep(time.Second)
	}
	return <-got
}

// pacedRead reads n bytes from s in reads of at most chunk bytes, one every `every` of virtual
// time, while the engines exchange what they have: a reader with a rate the windows can
// measure (pumpRead's reader takes everything at once, in no time).
func pacedRead(t *testing.T, r *rig, s *Stream, n, chunk int, every time.Duration) []byte {
	t.Helper()
	got := make([]byte, 0, n)
	b := make([]byte, chunk)
	s.SetReadDeadline(time.Now().Add(time.Minute)) // virtual: a stuck flow ends the read
	for len(got) < n {
		r.settle()
		k, err := s.Read(b[:min(chunk, n-len(got))])
		got = append(got, b[:k]...)
		if err != nil {
			break
		}
		time.Sleep(every)
	}
	return got
}

// Bytes the dialer sent on flows the listener refused are counted against the session credit
// on the dialing side (emitLocked) but never on the listening side (refusedLocked counts
// nothing, and the RESET's final size is not taken as consumed), so the peer never returns
// that credit. Refusals that add up to the session window freeze every flow of the session.
func TestRefusedFlowsKeepSessionCredit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, Config{}, Config{Backlog: 1})
		first, _ := r.a.Open()
		first.Write([]byte("x"))
		r.settle() // flow 1 waits in the backlog, which is now full
		var refused []*Stream
		for range 4 {
			s, _ := r.a.Open()
			s.Write(payload(PeerInitialWindow, 7)) // within the flow window: sent at once
			refused = append(refused, s)
		}
		r.settle()
		for _, s := range refused {
			if _, err := s.Write([]byte("?")); err == nil {
				t.Fatalf("flow %d was not refused", s.ID())
			}
			s.Close()
		}
		r.settle()
		// The refusals are settled on both sides. The accepted flow must still move data.
		peer := accept(t, r.b)
		data := payload(256<<10, 8)
		go func() {
			first.Write(data)
			first.CloseWrite()
		}()
		got := pumpRead(t, r, peer, 1+len(data))
		if len(got) != 1+len(data) || !bytes.Equal(got[1:], data) {
			t.Fatalf("the accepted flow delivered %d of %d bytes after four refusals: "+
				"the refused flows' bytes still hold the session credit", len(got), 1+len(data))
		}
	})
}

// Flows waiting in the accept backlog receive data up to their flow window, and that data
// holds session credit until the application accepts and reads them. With the defaults
// (256 KiB flows, 1 MiB session), four such flows stop every other flow of the session: a
// server that handles one accepted flow at a time (read it to the end, then Accept again)
// never finishes the first one. Separate net.Conns must not block each other like that.
func TestBacklogHoldsSessionWindow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, Config{}, Config{})
		first, _ := r.a.Open()
		first.Write([]byte("x"))
		r.settle()
		peer := accept(t, r.b) // the server handles flow 1 first
		for range 4 {
			s, _ := r.a.Open()
			s.Write(payload(PeerInitialWindow, 9)) // queued in the backlog, not yet accepted
		}
		r.settle()
		data := payload(256<<10, 10)
		go func() {
			first.Write(data)
			first.CloseWrite()
		}()
		got := pumpRead(t, r, peer, 1+len(data))
		if len(got) != 1+len(data) || !bytes.Equal(got[1:], data) {
			t.Fatalf("flow 1 delivered %d of %d bytes while four unaccepted flows hold the "+
				"session window", len(got), 1+len(data))
		}
	})
}

// With two concurrent Reads, the one that registered its buffer for direct delivery can miss
// the wakeup: bytes land in its buffer (and are acknowledged and counted as read), but the
// signal wakes the other Read, which finds nothing and waits again. A spurious wakeup, such as
// a duplicate DATA after a rewind, puts the direct reader behind the other one in the queue.
func TestConcurrentReadsLoseWakeup(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, Config{}, Config{})
		data := func(off uint64, p string) wire.Frame {
			return wire.Frame{Type: wire.TypeData, Flow: 1, Offset: off, Payload: []byte(p)}
		}
		f := wire.Frame{Type: wire.TypeOpen, Flow: 1}
		if err := r.b.Handle(&f); err != nil {
			t.Fatal(err)
		}
		f = data(0, "a")
		if err := r.b.Handle(&f); err != nil {
			t.Fatal(err)
		}
		s := accept(t, r.b)
		if b := readN(t, s, 1); string(b) != "a" {
			t.Fatalf("read %q", b)
		}
		type result struct {
			n   int
			err error
			b   []byte
		}
		results := make(chan result, 2)
		read := func() {
			b := make([]byte, 16)
			n, err := s.Read(b)
			results <- result{n, err, b[:n]}
		}
		go read() // registers its buffer for direct delivery
		synctest.Wait()
		go read() // finds the slot taken and waits on the signal
		synctest.Wait()
		dup := data(0, "a") // resent after a rewind: nothing new, but it signals readers
		if err := r.b.Handle(&dup); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		fresh := data(1, "hello")
		if err := r.b.Handle(&fresh); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		var got []result
		for len(results) > 0 {
			got = append(got, <-results)
		}
		s.SetReadDeadline(time.Now()) // releases every Read still waiting
		for range 2 - len(got) {
			<-results
		}
		if len(got) != 1 || string(got[0].b) != "hello" {
			t.Fatalf("after \"hello\" was delivered, %d Reads returned (%+v); want one with the "+
				"bytes: they sit in a sleeping Read's buffer", len(got), got)
		}
	})
}

// Close must unblock every pending Read and Write (the net.Conn contract). It signals each
// direction once, and a call that returns ErrClosed does not pass the signal on, so with two
// blocked Reads (or Writes) one of them stays blocked after Close.
func TestCloseWakesEveryCall(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, Config{}, Config{})
		s, _ := r.a.Open()
		errs := make(chan error, 4)
		for range 2 {
			go func() {
				_, err := s.Read(make([]byte, 8))
				errs <- err
			}()
			go func() {
				_, err := s.Write(make([]byte, 4<<20)) // beyond every window: blocks
				errs <- err
			}()
		}
		synctest.Wait()
		if len(errs) != 0 {
			t.Fatalf("a call returned before Close: %v", <-errs)
		}
		s.Close()
		synctest.Wait()
		returned := len(errs)
		// Release what Close left blocked, so the test ends either way.
		s.SetReadDeadline(time.Now())
		s.SetWriteDeadline(time.Now())
		for range 4 {
			<-errs
		}
		if returned != 4 {
			t.Fatalf("Close unblocked %d of 4 pending calls (2 Reads, 2 Writes)", returned)
		}
	})
}
