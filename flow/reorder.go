package flow

import (
	"slices"
	"sort"

	"github.com/rendr-go/rendr/path"
)

// maxReorderPieces bounds the pieces a session keeps ahead of gaps, over all its flows, and
// maxReorderFlow those of one flow, so that one flow cannot take them all. Every byte of them
// is within a flow window, but a peer sending one-byte frames at every other offset would
// otherwise cost a piece per byte. Past a bound, bytes ahead of a gap are dropped and counted;
// the sender sends them again when no acknowledgement comes (Engine.resendStuckLocked).
const (
	maxReorderPieces = 16384
	maxReorderFlow   = 4096
)

// reorder holds a stream's bytes that arrived ahead of a gap: when several paths carry one
// flow (Race, Bond), a faster path delivers later offsets before a slower one delivers
// earlier ones. Pieces are sorted by offset and never overlap. Large pieces are held where
// the path opened them (pin set); small ones are copies of their own (pin nil).
type reorder struct {
	segs []oooSeg
	n    int // bytes held
}

type oooSeg struct {
	off uint64
	b   []byte
	pin path.Pin // nil: b is a private copy
}

func (s *oooSeg) end() uint64 { return s.off + uint64(len(s.b)) }

func (s *oooSeg) release() {
	if s.pin != nil {
		s.pin.Unpin()
	}
	*s = oooSeg{}
}

// gaps returns the parts of [off, off+len(p)) that no piece holds yet, in order, and the index
// of the first piece that ends after off.
func (q *reorder) gaps(off uint64, p []byte) (adds []oooSeg, i int) {
	end := off + uint64(len(p))
	i = sort.Search(len(q.segs), func(i int) bool { return q.segs[i].end() > off })
	cur := off
	for j := i; cur < end; j++ {
		next := end
		if j < len(q.segs) && q.segs[j].off < end {
			next = q.segs[j].off
		}
		if next > cur {
			adds = append(adds, oooSeg{off: cur, b: p[cur-off : next-off]})
		}
		if j >= len(q.segs) || q.segs[j].off >= end {
			break
		}
		cur = max(cur, q.segs[j].end())
	}
	return adds, i
}

// wouldAdd is how many pieces insert would add for p at off.
func (q *reorder) wouldAdd(off uint64, p []byte) int {
	adds, _ := q.gaps(off, p)
	return len(adds)
}

// insert keeps the bytes of p at off that no piece holds yet, and returns how many pieces it
// added: none if that would be more than budget. src may let a large payload be held.
func (q *reorder) insert(off uint64, p []byte, src Holder, budget int) (added int) {
	adds, i := q.gaps(off, p)
	if len(adds) == 0 || len(adds) > budget {
		return 0
	}
	for k := range adds {
		a := &adds[k]
		if len(adds) == 1 && len(a.b) >= holdMin && src != nil {
			a.pin = src.Hold()
		}
		if a.pin == nil {
			a.b = append([]byte(nil), a.b...)
		} else {
			a.b = a.b[:len(a.b):len(a.b)]
		}
		q.n += len(a.b)
	}
	// The new pieces fill gaps between existing ones, in order: insert each where it goes.
	j := i
	for _, a := range adds {
		for j < len(q.segs) && q.segs[j].off < a.off {
			j++
		}
		q.segs = slices.Insert(q.segs, j, a)
		j++
	}
	return len(adds)
}

// next removes and returns the first piece if it starts at or before at, trimmed to begin at
// at; ok is false when the first byte ahead is still missing. Pieces wholly before at are
// dropped on the way (dup counts their bytes).
func (q *reorder) next(at uint64) (seg oooSeg, dup uint64, ok bool) {
	for len(q.segs) > 0 && q.segs[0].off <= at {
		s := q.segs[0]
		q.segs[0] = oooSeg{}
		q.segs = q.segs[1:]
		q.n -= len(s.b)
		if s.end() <= at {
			dup += uint64(len(s.b))
			s.release()
			continue
		}
		dup += at - s.off
		s.b = s.b[at-s.off:]
		s.off = at
		if len(q.segs) == 0 {
			q.segs = nil
		}
		return s, dup, true
	}
	if len(q.segs) == 0 {
		q.segs = nil // idle flows keep nothing
	}
	return oooSeg{}, dup, false
}

// pieces is how many pieces q holds.
func (q *reorder) pieces() int { return len(q.segs) }

// reset lets go of everything.
func (q *reorder) reset() {
	for i := range q.segs {
		q.segs[i].release()
	}
	q.segs, q.n = nil, 0
}
