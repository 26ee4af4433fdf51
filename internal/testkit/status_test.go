package testkit

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rendr-go/rendr/status"
)

func TestPathNames(t *testing.T) {
	for i := range 12 {
		if got := PathIndex(PathName(i)); got != i {
			t.Fatalf("PathIndex(PathName(%d)) = %d", i, got)
		}
	}
	for _, name := range []string{"", "p", "p01", "q1", "p1x", "root"} {
		if got := PathIndex(name); got != -1 {
			t.Fatalf("PathIndex(%q) = %d, want -1", name, got)
		}
	}
}

func TestActive(t *testing.T) {
	st := status.Session{Paths: []status.Path{
		{Name: "p0", ID: 4, State: status.Up},
		{Name: "p1", ID: 9, State: status.Down, Active: true}, // a dead path still flagged
		{Name: "p2", ID: 7, State: status.Up, Active: true},
	}}
	if i, id := ActiveID(st); i != 2 || id != 7 {
		t.Fatalf("ActiveID = %d, %d; want 2, 7", i, id)
	}
	st.Paths[2].Active = false
	if i := Active(st); i != -1 {
		t.Fatalf("Active with none carrying = %d, want -1", i)
	}
}

func TestMigrationsMoves(t *testing.T) {
	var m Migrations
	m.Record(status.Migration{To: "p0"})
	m.Record(status.Migration{From: "p0", To: "p1"})
	m.Record(status.Migration{To: "p2"})
	m.Record(status.Migration{From: "p1", To: "p2"})
	if got := m.Moves(); got != 2 {
		t.Fatalf("Moves = %d, want 2 (first choices are not moves)", got)
	}
	if got := len(m.All()); got != 4 {
		t.Fatalf("All has %d, want 4", got)
	}
}

func TestPathStatusAndAllUp(t *testing.T) {
	st := status.Session{Paths: []status.Path{
		{Name: "a", State: status.Up, ID: 3},
		{Name: "b", State: status.Connecting},
	}}
	if p := PathStatus(st, "a"); p.ID != 3 || p.State != status.Up {
		t.Fatalf("PathStatus(a) = %+v", p)
	}
	if p := PathStatus(st, "z"); p.Name != "z" || p.State != status.Connecting {
		t.Fatalf("PathStatus of a path not in the status = %+v, want it Connecting", p)
	}
	if AllUp(st, 2) {
		t.Fatal("AllUp with a path Connecting")
	}
	st.Paths[1].State = status.Up
	if !AllUp(st, 2) || AllUp(st, 3) {
		t.Fatal("AllUp must hold for exactly the paths shown, all Up")
	}
}

// WaitUntil reports the condition and stops polling once it holds; in a synctest bubble the
// time it reports is exact.
func TestWaitUntil(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := 0
		took, ok := WaitUntil(time.Second, 10*time.Millisecond, func() bool { n++; return n == 5 })
		if !ok || took != 40*time.Millisecond {
			t.Fatalf("WaitUntil = %v, %v; want 40ms, true", took, ok)
		}
		took, ok = WaitUntil(100*time.Millisecond, 10*time.Millisecond, func() bool { return false })
		if ok || took != 110*time.Millisecond {
			t.Fatalf("WaitUntil of a false condition = %v, %v; want 110ms, false", took, ok)
		}
	})
}

// MustWait returns once cond holds, and fails the test (showing the status) when it never does.
func TestMustWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := 0
		none := func() status.Session { return status.Session{} }
		if d := MustWait(t, "fifth poll", time.Second, none, func() bool { n++; return n == 5 }); d != 4*time.Millisecond {
			t.Fatalf("MustWait took %v, want 4ms", d)
		}
	})
	var ft failT
	synctest.Test(t, func(*testing.T) {
		st := status.Session{Paths: []status.Path{{Name: "p0", State: status.Down}}}
		done := make(chan struct{})
		go func() { // Fatalf ends the goroutine it runs in
			defer close(done)
			MustWait(&ft, "never", 10*time.Millisecond, func() status.Session { return st }, func() bool { return false })
		}()
		<-done
	})
	if !strings.Contains(ft.msg, "never: not within 10ms") || !strings.Contains(ft.msg, "[p0 ") {
		t.Fatalf("failure message %q", ft.msg)
	}
}

// failT records a Fatalf and ends its goroutine, as testing.T does.
type failT struct {
	testing.TB
	msg string
}

func (f *failT) Helper() {}
func (f *failT) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}
