package rendr_test

import (
	"testing"
	"testing/synctest"
	"time"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/status"
)

// TestSynctestControlUnderLoad changes the graph of a running session while flows stream both
// ways: the active path is removed, a path is added, the active one is made a backup, and a
// target is selected by name. Every byte arrives once and in order, and each change shows in
// the status.
func TestSynctestControlUnderLoad(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var targets map[string]*rendr.Target
		lb := stNewLabGraph(t, rendr.Options{RecoverDwell: 100 * time.Millisecond}, func(p map[string]*rendr.Target) *rendr.Target {
			targets = p
			return rendr.Selector("root", p["a"], p["b"])
		}, stLinkSpec{name: "a", ab: stGoodLink, ba: stGoodLink},
			stLinkSpec{name: "b", ab: stGoodLink, ba: stGoodLink},
			stLinkSpec{name: "c", ab: stGoodLink, ba: stGoodLink})
		dc, lc := lb.open()
		has := func(name string) bool {
			for _, p := range lb.status().Paths {
				if p.Name == name {
					return true
				}
			}
			return false
		}
		lb.mustWait("a and b up", 10*time.Second, func() bool {
			return lb.pathStatus("a").State == status.Up && lb.pathStatus("b").State == status.Up
		})
		if has("c") {
			t.Fatal("c is in the status before it was added")
		}
		up, down := stDuplex(dc, lc, 16<<20, 71)
		time.Sleep(200 * time.Millisecond)

		// Remove the path carrying traffic.
		first := lb.active()
		if err := lb.d.Remove(first); err != nil {
			t.Fatal(err)
		}
		lb.mustWait("the removed path gone", 5*time.Second, func() bool { return !has(first) && lb.active() != "" })
		lb.mustWait("the removed path's carrier closed", 5*time.Second, func() bool {
			for _, ss := range lb.ln.Sessions() {
				for _, p := range ss.Paths {
					if p.Name == first && p.State != status.Down {
						return false
					}
				}
			}
			return true
		})
		time.Sleep(3 * time.Second) // longer than the backoff of a path that would re-dial
		if has(first) || lb.paths[first].dials() != 1 {
			t.Fatalf("the removed path came back: %d dials", lb.paths[first].dials())
		}
		other := map[string]string{"a": "b", "b": "a"}[first]
		if lb.active() != other {
			t.Fatalf("after removing %s, %q carries traffic; want %s", first, lb.active(), other)
		}
		// Add a third path.
		if err := lb.d.Add("root", targets["c"]); err != nil {
			t.Fatal(err)
		}
		lb.mustWait("c up", 10*time.Second, func() bool { return lb.pathStatus("c").State == status.Up })
		// Make the active path a backup: the other primary takes over after RecoverDwell.
		if err := lb.d.SetTier(other, 1); err != nil {
			t.Fatal(err)
		}
		lb.mustWait("traffic off the backup", 5*time.Second, func() bool { return lb.active() == "c" })
		// Select the backup by name: it alone carries traffic, whatever its tier; then back.
		if err := lb.d.Select(other); err != nil {
			t.Fatal(err)
		}
		lb.mustWait("the selected path active", 5*time.Second, func() bool { return lb.active() == other })
		time.Sleep(200 * time.Millisecond)
		if err := lb.d.Select(""); err != nil {
			t.Fatal(err)
		}
		lb.mustWait("the whole graph again", 5*time.Second, func() bool { return lb.active() == "c" })
		up.check(t, "up", 2*time.Minute)
		down.check(t, "down", 2*time.Minute)

		// Bad changes are refused and change nothing.
		for name, err := range map[string]error{
			"add under a path":   lb.d.Add("c", targets["a"]),
			"add a known name":   lb.d.Add("root", targets["c"]),
			"remove the root":    lb.d.Remove("root"),
			"remove unknown":     lb.d.Remove("zz"),
			"select unknown":     lb.d.Select("zz"),
			"tier of unknown":    lb.d.SetTier("zz", 1),
			"remove last of two": func() error { lb.d.Remove(other); return lb.d.Remove("c") }(),
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
