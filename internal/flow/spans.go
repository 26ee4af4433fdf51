// Recovery stage, bookkeeping: the byte ranges a lossy link lost, which a flow sends again
// before new bytes (Lost, emitRetxLocked).

package flow

// spans is a set of byte ranges [lo, hi), sorted and disjoint: a flow's bytes to send again
// because a lossy link reported the records carrying them lost. Adjacent and overlapping
// ranges merge, so a burst of losses costs one entry.
type spans []span

type span struct{ lo, hi uint64 }

// add puts [lo, hi) in the set.
func (s *spans) add(lo, hi uint64) {
	if lo >= hi {
		return
	}
	v := *s
	i := 0
	for i < len(v) && v[i].hi < lo {
		i++
	}
	j := i
	for j < len(v) && v[j].lo <= hi {
		lo, hi = min(lo, v[j].lo), max(hi, v[j].hi)
		j++
	}
	if i == j {
		v = append(v, span{})
		copy(v[i+1:], v[i:])
		v[i] = span{lo, hi}
	} else {
		v[i] = span{lo, hi}
		v = append(v[:i+1], v[j:]...)
	}
	*s = v
}

// trim drops everything below base (acknowledged bytes need no resend).
func (s *spans) trim(base uint64) {
	v := *s
	i := 0
	for i < len(v) && v[i].hi <= base {
		i++
	}
	v = v[i:]
	if len(v) > 0 && v[0].lo < base {
		v[0].lo = base
	}
	*s = v
}

// first is the lowest range; only when the set is not empty.
func (s spans) first() span { return s[0] }

// cut removes [lo, lo+n) from the front of the lowest range.
func (s *spans) cut(n uint64) {
	v := *s
	v[0].lo += n
	if v[0].lo >= v[0].hi {
		v = v[1:]
	}
	*s = v
}

// bytes is the total the set covers.
func (s spans) bytes() uint64 {
	var n uint64
	for _, x := range s {
		n += x.hi - x.lo
	}
	return n
}
