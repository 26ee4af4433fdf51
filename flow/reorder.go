package flow

import (
	"sort"

	"github.com/rendr-go/rendr/path"
)

// maxReorderPieces bounds the pieces a session keeps ahead of gaps, over all its flows. Every
// byte of them is within a flow window, but a peer sending one-byte frames at every other
// offset would otherwise cost a piece per byte. Past the bound, bytes ahead of a gap are
// dropped and counted; the sender sends them again when its stall check rewinds.
const maxReorderPieces = 16384

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

// insert keeps the bytes of p at off that no piece holds yet, and returns how many pieces it
// added. budget is how many more pieces may be added; src may let a large payload be held.
func (q *reorder) insert(off uint64, p []byte, src Holder, budget int) (added int) {
	end := off + uint64(len(p))
	i := sort.Search(len(q.segs), func(i int) bool { return q.segs[i].end() > off })
	// Walk the gaps between existing pieces that [off, end) covers.
	var adds []oooSeg
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
	q.segs = append(q.segs, adds...)
	sort.Slice(q.segs, func(a, b int) bool { return q.segs[a].off < q.segs[b].off })
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
