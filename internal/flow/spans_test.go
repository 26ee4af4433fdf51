package flow

import (
	"math/rand/v2"
	"testing"
)

// TestSpans checks the set against a bitmap of the same operations.
func TestSpans(t *testing.T) {
	rng := rand.New(rand.NewPCG(4, 5))
	for round := range 200 {
		var s spans
		var want [256]bool
		base := uint64(0)
		for range 40 {
			switch rng.IntN(4) {
			case 0, 1:
				lo := uint64(rng.IntN(250))
				hi := lo + uint64(rng.IntN(20))
				s.add(max(lo, base), min(hi, 256)) // the engine adds only unacknowledged bytes
				for i := lo; i < min(hi, 256); i++ {
					if i >= base {
						want[i] = true
					}
				}
			case 2:
				base = max(base, uint64(rng.IntN(256)))
				s.trim(base)
				for i := range base {
					want[i] = false
				}
			case 3:
				if len(s) > 0 {
					f := s.first()
					n := uint64(1 + rng.IntN(int(f.hi-f.lo)))
					s.cut(n)
					for i := f.lo; i < f.lo+n; i++ {
						want[i] = false
					}
				}
			}
			var got [256]bool
			for i, x := range s {
				if x.lo >= x.hi || (i > 0 && s[i-1].hi >= x.lo) {
					t.Fatalf("round %d: spans not sorted, disjoint and separated: %v", round, s)
				}
				for j := x.lo; j < x.hi; j++ {
					got[j] = true
				}
			}
			if got != want {
				t.Fatalf("round %d: spans %v differ from the bitmap", round, s)
			}
		}
	}
}
