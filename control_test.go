// Control: changes to a running session's graph take effect under load with every byte
// delivered once, changes made at once apply in the order made, and a graph too large for a
// ROUTE frame is refused up front.

package rendr_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/internal/testkit"
	"github.com/rendr-go/rendr/status"
)

// TestSynctestControlUnderLoad changes the graph of a running session while flows stream both
// ways: the active path is removed, a path is added, the active one is made a backup, and a
// target is selected by name. Every byte arrives once and in order, and each change shows in
// the status.
func TestSynctestControlUnderLoad(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var targets map[string]*rendr.Target
		lb := testkit.NewMemLabGraph(t, rendr.Options{RecoverDwell: 100 * time.Millisecond}, func(p map[string]*rendr.Target) *rendr.Target {
			targets = p
			return rendr.Selector("root", p["a"], p["b"])
		}, testkit.LinkSpec{Name: "a", AB: stGoodLink, BA: stGoodLink},
			testkit.LinkSpec{Name: "b", AB: stGoodLink, BA: stGoodLink},
			testkit.LinkSpec{Name: "c", AB: stGoodLink, BA: stGoodLink})
		dc, lc := lb.Open()
		has := func(name string) bool {
			for _, p := range lb.Status().Paths {
				if p.Name == name {
					return true
				}
			}
			return false
		}
		lb.MustWait("a and b up", 10*time.Second, func() bool {
			return lb.PathStatus("a").State == status.Up && lb.PathStatus("b").State == status.Up
		})
		if has("c") {
			t.Fatal("c is in the status before it was added")
		}
		up, down := stDuplex(dc, lc, 16<<20, 71)
		time.Sleep(200 * time.Millisecond)

		var causes []status.Cause
		var cmu sync.Mutex
		dc.OnMigrate(func(m status.Migration) {
			cmu.Lock()
			causes = append(causes, m.Cause)
			cmu.Unlock()
		})
		// Remove the path carrying traffic.
		first := lb.Active()
		if err := lb.D.Remove(first); err != nil {
			t.Fatal(err)
		}
		lb.MustWait("the removed path gone", 5*time.Second, func() bool { return !has(first) && lb.Active() != "" })
		lb.MustWait("the removed path's carrier closed", 5*time.Second, func() bool {
			for _, ss := range lb.LN.Sessions() {
				for _, p := range ss.Paths {
					if p.Name == first && p.State != status.Down {
						return false
					}
				}
			}
			return true
		})
		time.Sleep(3 * time.Second) // longer than the backoff of a path that would re-dial
		if has(first) || lb.Paths[first].Dials() != 1 {
			t.Fatalf("the removed path came back: %d dials", lb.Paths[first].Dials())
		}
		other := map[string]string{"a": "b", "b": "a"}[first]
		cmu.Lock()
		if len(causes) == 0 || causes[0] != status.CauseControl {
			t.Errorf("the move off the removed path was reported with causes %v, want control", causes)
		}
		cmu.Unlock()
		if lb.Active() != other {
			t.Fatalf("after removing %s, %q carries traffic; want %s", first, lb.Active(), other)
		}
		// Add a third path.
		if err := lb.D.Add("root", targets["c"]); err != nil {
			t.Fatal(err)
		}
		lb.MustWait("c up", 10*time.Second, func() bool { return lb.PathStatus("c").State == status.Up })
		// Make the active path a backup: the other primary takes over after RecoverDwell.
		if err := lb.D.SetTier(other, 1); err != nil {
			t.Fatal(err)
		}
		if tier := lb.PathStatus(other).Tier; tier != 1 {
			t.Fatalf("the status shows tier %d for %s after SetTier(1)", tier, other)
		}
		lb.MustWait("traffic off the backup", 5*time.Second, func() bool { return lb.Active() == "c" })
		// Select the backup by name: it alone carries traffic, whatever its tier; then back.
		if err := lb.D.Select(other); err != nil {
			t.Fatal(err)
		}
		lb.MustWait("the selected path active", 5*time.Second, func() bool { return lb.Active() == other })
		time.Sleep(200 * time.Millisecond)
		if err := lb.D.Select(""); err != nil {
			t.Fatal(err)
		}
		lb.MustWait("the whole graph again", 5*time.Second, func() bool { return lb.Active() == "c" })
		up.check(t, "up", 2*time.Minute)
		down.check(t, "down", 2*time.Minute)

		// Bad changes are refused and change nothing.
		for name, err := range map[string]error{
			"add under a path":   lb.D.Add("c", targets["a"]),
			"add a known name":   lb.D.Add("root", targets["c"]),
			"remove the root":    lb.D.Remove("root"),
			"remove unknown":     lb.D.Remove("zz"),
			"select unknown":     lb.D.Select("zz"),
			"tier of unknown":    lb.D.SetTier("zz", 1),
			"remove last of two": func() error { lb.D.Remove(other); return lb.D.Remove("c") }(),
			"empty name":         lb.D.Add("root", rendr.Path("", noDial)),
			"long name":          lb.D.Add("root", rendr.Path(strings.Repeat("n", 65), noDial)),
			"group named a path": lb.D.Add("root", rendr.Race("c", rendr.Path("x", noDial), rendr.Path("y", noDial))),
		} {
			if err == nil {
				t.Errorf("%s: accepted", name)
			}
		}
		if !has("c") {
			t.Fatal("the last path was removed")
		}
	})
}

func noDial(context.Context) (net.Conn, error) { return nil, errors.New("test: no dial") }

// blockDial never connects: paths stay Connecting, which is all these tests need.
func blockDial(ctx context.Context) (net.Conn, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

// TestControlConcurrentChanges: changes made at once from many goroutines are applied to the
// running session in the order they were made, so it ends with the Dialer's graph.
func TestControlConcurrentChanges(t *testing.T) {
	for iter := range 20 {
		var kids []*rendr.Target
		for i := range 16 {
			kids = append(kids, rendr.Path(fmt.Sprintf("p%d", i), blockDial))
		}
		d, err := rendr.NewDialer(rendr.DialerConfig{Key: rendr.MustNewKey(), PeerKey: rendr.MustNewKey().Public(),
			Root: rendr.Selector("root", kids...)})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
		d.DialContext(ctx) // starts the session; no path can connect
		cancel()
		var wg sync.WaitGroup
		for i := 1; i < 16; i++ {
			wg.Go(func() { d.Remove(fmt.Sprintf("p%d", i)) })
		}
		wg.Wait()
		var names []string
		for _, p := range d.Status().Paths {
			names = append(names, p.Name)
		}
		d.Close()
		if len(names) != 1 || names[0] != "p0" {
			t.Fatalf("iteration %d: the session runs %v after every path but p0 was removed", iter, names)
		}
	}
}

// TestGraphLimits: a graph whose routes would not fit a ROUTE frame is refused up front.
func TestGraphLimits(t *testing.T) {
	leaves := func(n int) []*rendr.Target {
		var out []*rendr.Target
		for i := range n {
			out = append(out, rendr.Path(fmt.Sprintf("l%d", i), blockDial))
		}
		return out
	}
	deep := rendr.Path("leaf", blockDial)
	for i := range 8 {
		deep = rendr.Selector(fmt.Sprintf("g%d", i), deep)
	}
	many := []*rendr.Target{}
	for g := range 5 {
		var kids []*rendr.Target
		for i := range 13 {
			kids = append(kids, rendr.Path(fmt.Sprintf("m%d.%d", g, i), blockDial))
		}
		many = append(many, rendr.Bond(fmt.Sprintf("b%d", g), kids...))
	}
	for name, root := range map[string]*rendr.Target{
		"17 children":   rendr.Race("r", leaves(17)...),
		"a long name":   rendr.Path(strings.Repeat("n", 65), blockDial),
		"an empty name": rendr.Selector("", rendr.Path("p", blockDial)),
		"9 levels":      deep,
		"71 targets":    rendr.Selector("root", many...),
		"a name twice":  rendr.Selector("p", rendr.Path("p", blockDial)),
	} {
		if _, err := rendr.NewDialer(rendr.DialerConfig{Key: rendr.MustNewKey(), PeerKey: rendr.MustNewKey().Public(), Root: root}); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := rendr.NewDialer(rendr.DialerConfig{Key: rendr.MustNewKey(), PeerKey: rendr.MustNewKey().Public(),
		Root: rendr.Race("r", leaves(16)...)}); err != nil {
		t.Errorf("16 children: %v", err)
	}
}

// TestSynctestRedial: Redial of a path that lost its network ends its wait between dials. Once
// its network is back the path dials at the instant of the call (no virtual time passes),
// where it would have waited up to 2 s. Redial of a live path closes its carrier and dials
// another, and every byte of the flows arrives once. A name that is not a path is an error.
func TestSynctestRedial(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		lb := testkit.NewMemLab(t, rendr.Options{}, testkit.LinkSpec{Name: "a", AB: stGoodLink, BA: stGoodLink},
			testkit.LinkSpec{Name: "b", AB: stGoodLink, BA: stGoodLink})
		dc, lc := lb.Open()
		lb.MustWait("a and b up", 10*time.Second, func() bool { return lb.AllUp() })
		up, down := stDuplex(dc, lc, 8<<20, 91)

		// b loses its network: its carrier dies and every dial fails, long enough for the
		// wait between dials to grow to its longest.
		b := lb.Paths["b"]
		b.SetCut(true)
		b.Live().Kill(false)
		time.Sleep(10 * time.Second)
		if st := lb.PathStatus("b").State; st == status.Up {
			t.Fatalf("b is %v with its network gone", st)
		}
		b.SetCut(false)
		before, start := b.Dials(), time.Now()
		if err := lb.D.Redial("b"); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if b.Dials() != before+1 || time.Since(start) != 0 {
			t.Fatalf("after Redial: %d dials (want %d) after %v of virtual time (want none)", b.Dials(), before+1, time.Since(start))
		}
		lb.MustWait("b up again", 5*time.Second, func() bool { return lb.PathStatus("b").State == status.Up })

		// A live path: its carrier is closed and another dialed.
		a := lb.Paths["a"]
		live := a.Live()
		if err := lb.D.Redial("a"); err != nil {
			t.Fatal(err)
		}
		lb.MustWait("a on a new carrier", 5*time.Second, func() bool {
			return a.Live() != live && lb.PathStatus("a").State == status.Up
		})
		up.check(t, "up", 2*time.Minute)
		down.check(t, "down", 2*time.Minute)

		for _, name := range []string{"nope", "root"} {
			if err := lb.D.Redial(name); err == nil || !strings.Contains(err.Error(), name) {
				t.Errorf("Redial(%q): %v", name, err)
			}
		}
	})
}
