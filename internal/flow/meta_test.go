package flow

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rendr-go/rendr/internal/wire"
)

// evenMeta takes metadata whose first byte is even.
func evenMeta(m []byte) error {
	if m[0]%2 == 1 {
		return errors.New("odd metadata")
	}
	return nil
}

// TestOpenMeta: a flow's metadata rides its OPEN to the listening side, whose every ACK of
// the flow then says AckOpen; an OPEN without metadata is taken as before.
func TestOpenMeta(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, Config{}, Config{CheckMeta: evenMeta})
		meta := []byte{2, 10, 0, 0, 1}
		s, err := r.a.OpenMeta(false, meta)
		if err != nil {
			t.Fatal(err)
		}
		meta[1] = 99 // the engine keeps its own copy
		p, err := r.a.OpenMeta(true, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Write([]byte("hello")); err != nil {
			t.Fatal(err)
		}
		if err := p.WriteDatagram([]byte("dg")); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		fs := frames(t, r.ab.take())
		if fs[0].Type != wire.TypeOpen || !bytes.Equal(fs[0].Payload, []byte{2, 10, 0, 0, 1}) {
			t.Fatalf("first frame %+v, want the OPEN with the metadata", fs[0])
		}
		r.deliver(r.b, fs)
		peer := accept(t, r.b)
		if !bytes.Equal(peer.Meta(), []byte{2, 10, 0, 0, 1}) {
			t.Fatalf("accepted metadata %v", peer.Meta())
		}
		if pp := acceptPacket(t, r.b); pp.Meta() != nil {
			t.Fatalf("packet flow without metadata accepted with %v", pp.Meta())
		}
		r.settle()
		if !s.openAcked || !p.openAcked {
			t.Fatal("the listening side's ACKs did not confirm the OPENs")
		}
		if b := readN(t, peer, 5); string(b) != "hello" {
			t.Fatalf("read %q", b)
		}
	})
}

// TestOpenMetaRejected: a flow whose metadata the listening side does not take is turned down:
// it never reaches Accept, the dialing side's Read and Write say ErrRejected, both sides forget
// it, and the listening side counts it. Without CheckMeta every flow with metadata is.
func TestOpenMetaRejected(t *testing.T) {
	for _, check := range []func([]byte) error{evenMeta, nil} {
		synctest.Test(t, func(t *testing.T) {
			r := newRig(t, Config{}, Config{CheckMeta: check})
			s, err := r.a.OpenMeta(false, []byte{1, 2})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.Write([]byte("hello")); err != nil {
				t.Fatal(err)
			}
			r.settle()
			if _, err := s.Write([]byte("more")); !errors.Is(err, ErrRejected) {
				t.Fatalf("Write after the rejection: %v, want ErrRejected", err)
			}
			if _, err := s.Read(make([]byte, 1)); !errors.Is(err, ErrRejected) {
				t.Fatalf("Read after the rejection: %v, want ErrRejected", err)
			}
			s.Close()
			r.settle()
			if st := r.b.Stats(); st.Rejected != 1 || st.Flows != 0 || st.Violations != 0 {
				t.Fatalf("listener stats %+v, want 1 rejected and no flow left", st)
			}
			if st := r.a.Stats(); st.Flows != 0 {
				t.Fatalf("dialer keeps %d flows", st.Flows)
			}
			ctx, cancel := shortContext()
			defer cancel()
			if f, err := r.b.Accept(ctx); err == nil {
				t.Fatalf("the rejected flow %d was accepted", f.ID())
			}
		})
	}
}

// TestOpenMetaSurvivesRewind: the record with a flow's OPEN is lost with its path, while the
// flow's later data arrives by another: the listening side holds the flow (and its bytes)
// without handing it to Accept, since it has no metadata yet. The dialing side has had no
// AckOpen, so after the rewind the OPEN goes again, with its metadata, and the flow is
// accepted with it and every byte.
func TestOpenMetaSurvivesRewind(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, Config{}, Config{CheckMeta: evenMeta})
		s, err := r.a.OpenMeta(false, []byte{4, 4})
		if err != nil {
			t.Fatal(err)
		}
		data := payload(64<<10, 3)
		if _, err := s.Write(data[:1000]); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		r.ab.take() // the OPEN and the first bytes are lost with the path
		second := &fakeLink{id: 2}
		r.ra.set(second)
		if _, err := s.Write(data[1000:]); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		// What the dialing side sent on the new link, without any OPEN: its later bytes
		// only, as a Bond might have spread them.
		var later []wire.Frame
		for _, f := range frames(t, second.take()) {
			if f.Type != wire.TypeOpen {
				later = append(later, f)
			}
		}
		r.deliver(r.b, later)
		ctx, cancel := shortContext()
		if f, err := r.b.Accept(ctx); err == nil {
			t.Fatalf("flow %d accepted before its OPEN", f.ID())
		}
		cancel()
		// The listening side's ACKs (no AckOpen) reach the dialing side; then the path dies
		// and every flow rewinds onto a third link.
		r.deliver(r.a, frames(t, r.ba.take()))
		if s.openAcked {
			t.Fatal("an ACK without AckOpen confirmed the OPEN")
		}
		r.ra.set(&fakeLink{id: 3})
		r.a.Kick()
		r.settle()
		peer := accept(t, r.b)
		if !bytes.Equal(peer.Meta(), []byte{4, 4}) {
			t.Fatalf("metadata %v after the rewind", peer.Meta())
		}
		if b := readN(t, peer, len(data)); !bytes.Equal(b, data) {
			t.Fatal("bytes differ after the rewind")
		}
		if !s.openAcked {
			t.Fatal("the OPEN was never confirmed")
		}
		// The OPEN sent again with other metadata is a protocol error.
		f := wire.Frame{Type: wire.TypeOpen, Flow: s.ID(), Payload: []byte{6}}
		if err := r.b.Handle(&f); err == nil {
			t.Fatal("an OPEN with other metadata was taken")
		}
	})
}

// TestRejectAccepted: a listening application that turns down a flow it accepted (its
// destination refused it) makes the dialing side's Read and Write say ErrRejected.
func TestRejectAccepted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, Config{}, Config{CheckMeta: evenMeta})
		s, err := r.a.OpenMeta(false, []byte{8})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Write([]byte("GET /")); err != nil {
			t.Fatal(err)
		}
		r.settle()
		peer := accept(t, r.b)
		peer.Reject(CodeRejected)
		peer.Reject(CodeRejected) // twice: nothing more
		r.settle()
		if _, err := s.Read(make([]byte, 1)); !errors.Is(err, ErrRejected) {
			t.Fatalf("Read: %v, want ErrRejected", err)
		}
		if _, err := s.Write([]byte("x")); !errors.Is(err, ErrRejected) {
			t.Fatalf("Write: %v, want ErrRejected", err)
		}
		if _, err := peer.Write([]byte("x")); !errors.Is(err, ErrClosed) {
			t.Fatalf("the rejecting side's Write: %v, want ErrClosed", err)
		}
		s.Close()
		r.settle()
		if a, b := r.a.Stats().Flows, r.b.Stats().Flows; a != 0 || b != 0 {
			t.Fatalf("flows left: dialer %d, listener %d", a, b)
		}
	})
}

// TestOpenMetaTooLong: more metadata than an OPEN carries is the caller's error.
func TestOpenMetaTooLong(t *testing.T) {
	r := newRig(t, Config{}, Config{})
	if _, err := r.a.OpenMeta(false, make([]byte, wire.MaxMeta+1)); err == nil {
		t.Fatal("metadata past MaxMeta was taken")
	}
}

// shortContext is a context that ends after a second of (virtual) time.
func shortContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), time.Second)
}

// TestWaitOpenHeld: with HoldMeta, a flow with metadata is taken only when the listening side
// confirms it: the dialing side's WaitOpen waits until then, while its bytes flow, and says
// why when the flow is turned down instead. A flow without metadata is taken at once.
func TestWaitOpenHeld(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, Config{}, Config{CheckMeta: evenMeta, HoldMeta: true})
		plain, err := r.a.Open()
		if err != nil {
			t.Fatal(err)
		}
		held, err := r.a.OpenMeta(false, []byte{2})
		if err != nil {
			t.Fatal(err)
		}
		turned, err := r.a.OpenMeta(true, []byte{4})
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range []*Stream{plain, held} {
			if _, err := s.Write([]byte("x")); err != nil {
				t.Fatal(err)
			}
		}
		if err := turned.WriteDatagram([]byte("y")); err != nil {
			t.Fatal(err)
		}
		r.settle()
		ctx, cancel := shortContext()
		defer cancel()
		if err := plain.WaitOpen(ctx); err != nil {
			t.Fatalf("the flow without metadata: WaitOpen %v", err)
		}
		if err := held.WaitOpen(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("the held flow before Confirm: WaitOpen %v, want the context's deadline", err)
		}
		accept(t, r.b) // the plain flow
		peer := accept(t, r.b)
		if b := readN(t, peer, 1); string(b) != "x" {
			t.Fatalf("the held flow's bytes: %q", b)
		}
		done := make(chan error, 1)
		go func() { done <- held.WaitOpen(context.Background()) }()
		peer.Confirm()
		r.settle()
		if err := <-done; err != nil {
			t.Fatalf("WaitOpen after Confirm: %v", err)
		}
		pk := acceptPacket(t, r.b)
		pk.Reject(CodeDestRefused)
		r.settle()
		ctx2, cancel2 := shortContext()
		defer cancel2()
		if err := turned.WaitOpen(ctx2); !errors.Is(err, ErrDestRefused) || !errors.Is(err, ErrRejected) {
			t.Fatalf("the flow turned down: WaitOpen %v, want ErrDestRefused (an ErrRejected)", err)
		}
		if err := turned.WriteDatagram([]byte("z")); !errors.Is(err, ErrDestRefused) {
			t.Fatalf("WriteDatagram after the refusal: %v", err)
		}
	})
}

// TestOpenLostFlowDone: a flow's record with its OPEN alone is lost with its path, and
// everything else of the flow (its bytes, its FIN, the close of its reading side) arrives by
// another, so the flow is done both ways before any rewind. The listening side holds it
// without its OPEN; the dialing side does not forget it before the OPEN is confirmed, and
// sends it again, so the listener's Accept gets it, and neither side keeps it after.
func TestOpenLostFlowDone(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, Config{}, Config{CheckMeta: evenMeta})
		s, err := r.a.OpenMeta(false, []byte{2})
		if err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if fs := frames(t, r.ab.take()); len(fs) != 1 || fs[0].Type != wire.TypeOpen {
			t.Fatalf("the first record: %+v, want the OPEN alone", fs)
		}
		second := &fakeLink{id: 1} // same id: a path joining, no rewind
		r.ra.set(second)
		if _, err := s.Write([]byte("all of it")); err != nil {
			t.Fatal(err)
		}
		s.Close()
		r.settle()
		peer := accept(t, r.b)
		if b := readN(t, peer, 9); string(b) != "all of it" {
			t.Fatalf("read %q", b)
		}
		peer.Close()
		r.settle()
		if a, b := r.a.Stats().Flows, r.b.Stats().Flows; a != 0 || b != 0 {
			t.Fatalf("flows left: dialer %d, listener %d", a, b)
		}
	})
}
