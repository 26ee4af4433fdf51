package flow

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rendr-go/rendr/internal/budget"
)

// The listening side's flows and session-window growth draw on Config.Budget: past it, flows
// are refused and the window stays as it is, the session still moves its bytes, and Fail
// gives back everything.
func TestBudgetFlowsAndWindow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pool := budget.New(3*FlowCost, nil) // three flows, no room for the window to grow
		r := newRig(t, Config{}, Config{Budget: pool})
		var opened []*Stream
		for range 5 {
			s, _ := r.a.Open()
			s.Write([]byte("x"))
			opened = append(opened, s)
		}
		r.settle()
		st := r.b.Stats()
		if st.Flows != 3 || st.Refused != 2 || st.BudgetDenied < 2 {
			t.Fatalf("stats %+v: want 3 flows, 2 refused for the budget", st)
		}
		if pool.Used() != 3*FlowCost || st.BudgetHeld != 3*FlowCost {
			t.Fatalf("budget used %d, engine holds %d: want %d", pool.Used(), st.BudgetHeld, 3*FlowCost)
		}
		for _, s := range opened[3:] {
			if _, err := s.Write([]byte("?")); err == nil {
				t.Fatalf("flow %d past the budget was not refused", s.ID())
			}
		}
		// A bulk transfer read at 2 MiB per round trip (10 ms) wants the session window to
		// grow to 4 MiB; the budget has no room for it: the 1 MiB window stays, and every
		// byte still arrives.
		peer := accept(t, r.b)
		data := payload(4<<20, 3)
		go func() {
			opened[0].Write(data)
			opened[0].CloseWrite()
		}()
		got := pacedRead(t, r, peer, 1+len(data), 512<<10, 2500*time.Microsecond)
		if !bytes.Equal(got[1:], data) {
			t.Fatalf("delivered %d of %d bytes", len(got), 1+len(data))
		}
		if pool.Used() > pool.Limit() {
			t.Fatalf("budget used %d over its %d", pool.Used(), pool.Limit())
		}
		if r.b.Stats().BudgetDenied <= st.BudgetDenied {
			t.Fatal("the window grew past the budget without a denial counted")
		}
		r.b.Fail(ErrClosed)
		if pool.Used() != 0 {
			t.Fatalf("%d bytes still reserved after Fail", pool.Used())
		}
	})
}

// The dialing side opens at most MaxOpening flows its peer has not answered: a burst of
// opens is paced by the peer's answers, so the peer never holds more refused ids than it
// may (4096) however fast the application opens flows.
func TestOpeningBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, Config{MaxFlows: 4 * MaxOpening}, Config{Backlog: 8, MaxFlows: 4 * MaxOpening})
		for i := range MaxOpening {
			if _, err := r.a.Open(); err != nil {
				t.Fatalf("open %d: %v", i, err)
			}
		}
		if _, err := r.a.Open(); !errors.Is(err, ErrOpening) {
			t.Fatalf("open past MaxOpening: %v, want ErrOpening", err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		waited := make(chan error, 1)
		go func() { waited <- r.a.WaitOpening(ctx) }()
		synctest.Wait()
		select {
		case err := <-waited:
			t.Fatalf("WaitOpening returned %v with no answer from the peer", err)
		default:
		}
		r.settle() // the peer takes 8 and refuses the rest: every OPEN is answered
		if err := <-waited; err != nil {
			t.Fatalf("WaitOpening after the answers: %v", err)
		}
		cancel()
		if _, err := r.a.Open(); err != nil {
			t.Fatalf("open after the answers: %v", err)
		}
		if st := r.b.Stats(); st.Refused != MaxOpening-8 || st.RefusedPending > MaxOpening {
			t.Fatalf("peer stats %+v", st)
		}
	})
}

// Flows opened and left idle (no byte either way) are answered all the same: the dialing
// side may open any number of them, MaxOpening at a time.
func TestIdleOpensAnswered(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, Config{MaxFlows: 4 * MaxOpening}, Config{MaxFlows: 4 * MaxOpening, Backlog: 4 * MaxOpening})
		for i := range 3 * MaxOpening {
			if err := r.a.WaitOpening(context.Background()); err != nil {
				t.Fatal(err)
			}
			if _, err := r.a.Open(); err != nil {
				t.Fatalf("open %d: %v", i, err)
			}
			if i%MaxOpening == MaxOpening-1 {
				r.settle()
			}
		}
		r.settle()
		if st := r.b.Stats(); st.Flows != 3*MaxOpening || st.Refused != 0 {
			t.Fatalf("peer stats %+v: want every idle flow taken", st)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if err := r.a.WaitOpening(ctx); err != nil {
			t.Fatalf("after every OPEN was answered, WaitOpening: %v", err)
		}
	})
}
