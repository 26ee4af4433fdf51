package testkit

// Status: paths named p0, p1, ... and what a session's status says about them.

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rendr-go/rendr/status"
)

// PathName is the name of path i in a rig: p0, p1, ...
func PathName(i int) string { return fmt.Sprintf("p%d", i) }

// PathIndex maps a name made by PathName back to its index; it is -1 for any other name.
func PathIndex(name string) int {
	var i int
	if _, err := fmt.Sscanf(name, "p%d", &i); err != nil || PathName(i) != name {
		return -1
	}
	return i
}

// Active is the index of the path carrying traffic in st, or -1.
func Active(st status.Session) int {
	i, _ := ActiveID(st)
	return i
}

// ActiveID is Active plus the path's id, which changes each time the path is re-dialed.
func ActiveID(st status.Session) (int, uint32) {
	for _, p := range st.Paths {
		if p.Active && p.State != status.Down {
			return PathIndex(p.Name), p.ID
		}
	}
	return -1, 0
}

// Describe is the session's counters and one entry per path of st, for failure messages.
func Describe(st status.Session) string {
	var b strings.Builder
	fmt.Fprintf(&b, "migrations=%d", st.Migrations)
	for c, n := range st.Moves {
		if n > 0 {
			fmt.Fprintf(&b, " %v=%d", status.Cause(c), n)
		}
	}
	fmt.Fprintf(&b, " spurious=%d undone=%d flows=%d", st.Spurious, st.Undone, st.Flows)
	for _, p := range st.Paths {
		fmt.Fprintf(&b, " [%s id=%d %v active=%v srtt=%v dials=%d err=%q]", p.Name, p.ID, p.State, p.Active, p.SRTT, p.Dials, p.LastError)
	}
	return b.String()
}

// PathStatus is the path of st named name, Connecting when it has none by that name.
func PathStatus(st status.Session, name string) status.Path {
	for _, p := range st.Paths {
		if p.Name == name {
			return p
		}
	}
	return status.Path{Name: name, State: status.Connecting}
}

// AllUp reports whether st has n paths, all Up.
func AllUp(st status.Session, n int) bool {
	if len(st.Paths) != n {
		return false
	}
	for _, p := range st.Paths {
		if p.State != status.Up {
			return false
		}
	}
	return true
}

// WaitUntil polls cond every step for at most limit, and returns how long it took and
// whether cond came true. Inside a synctest bubble the steps are virtual time.
func WaitUntil(limit, step time.Duration, cond func() bool) (time.Duration, bool) {
	start := time.Now()
	for range int(limit/step) + 1 {
		if cond() {
			return time.Since(start), true
		}
		time.Sleep(step)
	}
	return time.Since(start), cond()
}

// WaitUp polls get until it shows n paths, all Up, for at most within; it fails the test
// with the last snapshot otherwise. The bound is generous: it stops a broken run, it does not
// measure anything.
func WaitUp(t testing.TB, what string, get func() status.Session, n int, within time.Duration) {
	t.Helper()
	end := time.Now().Add(within)
	var st status.Session
	for time.Now().Before(end) {
		st = get()
		up := 0
		for _, p := range st.Paths {
			if p.State == status.Up {
				up++
			}
		}
		if up == n && len(st.Paths) == n {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s: paths not all back up within %v: %s", what, within, Describe(st))
}

// Wait polls cond every few milliseconds for at most within and reports whether it held.
func Wait(within time.Duration, cond func() bool) bool {
	end := time.Now().Add(within)
	for !cond() {
		if time.Now().After(end) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}

// Seed picks a fresh seed for a randomized test and logs it, so a failure can be replayed by
// pinning the value at the call.
func Seed(t testing.TB) uint64 {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	return seed
}

// Migrations records the migrations a side reports through OnMigrate. The zero value is
// ready to use.
type Migrations struct {
	mu  sync.Mutex
	evs []status.Migration
}

// Record keeps ev; it has the signature of Options.OnMigrate.
func (m *Migrations) Record(ev status.Migration) {
	m.mu.Lock()
	m.evs = append(m.evs, ev)
	m.mu.Unlock()
}

// All is every migration recorded so far, in order.
func (m *Migrations) All() []status.Migration {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]status.Migration(nil), m.evs...)
}

// Moves counts migrations away from a path (every one but the first choice of a path).
func (m *Migrations) Moves() int {
	n := 0
	for _, ev := range m.All() {
		if ev.From != "" {
			n++
		}
	}
	return n
}

// String lists the migrations as from->to(cause).
func (m *Migrations) String() string {
	var b strings.Builder
	for _, ev := range m.All() {
		fmt.Fprintf(&b, "%s->%s(%v) ", ev.From, ev.To, ev.Cause)
	}
	return b.String()
}

// MustWait polls cond each millisecond (of virtual time, inside a synctest bubble) for at
// most limit and fails the test with the session's status from get if it never holds. The
// limit stops a broken run; it measures nothing. It returns how long cond took.
func MustWait(t testing.TB, what string, limit time.Duration, get func() status.Session, cond func() bool) time.Duration {
	t.Helper()
	d, ok := WaitUntil(limit, time.Millisecond, cond)
	if !ok {
		t.Fatalf("%s: not within %v; status %s", what, limit, Describe(get()))
	}
	return d
}
