// Receive stage, reordering: bytes that arrive ahead of a gap wait here until the bytes
// before them come.

package flow

import (
	"slices"
	"sort"

	"github.com/rendr-go/rendr/internal/record"
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
	pin record.Pin // nil: b is a private copy
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

// mergeMax bounds a piece grown by merging: a run of small pieces (a datagram path's records
// after a loss) becomes one piece instead of thousands, without one huge buffer.
const mergeMax = 256 << 10

// insert keeps the bytes of p at off that no piece holds yet. It reports how many pieces it
// added, and false when it kept nothing because the new pieces would be more than budget. A
// small piece that continues a copied one is appended to it instead of added, so a run of
// small frames costs one piece. src may let a large payload be held where it arrived.
func (q *reorder) insert(off uint64, p []byte, src Holder, budget int) (added int, kept bool) {
	adds, i := q.gaps(off, p)
	if len(adds) == 0 {
		return 0, false
	}
	// Where each goes, and whether it extends the copied piece just before it.
	type place struct {
		at    int
		merge bool
	}
	places := make([]place, len(adds))
	need := 0
	j := i
	for k, a := range adds {
		for j < len(q.segs) && q.segs[j].off < a.off {
			j++
		}
		places[k].at = j
		if j > 0 {
			l := &q.segs[j-1]
			places[k].merge = l.pin == nil && l.end() == a.off && len(a.b) < holdMin && len(l.b)+len(a.b) <= mergeMax
		}
		if !places[k].merge {
			need++
		}
	}
	if need > budget {
		return 0, false
	}
	// Insert from the last, so that earlier positions stay valid.
	for k := len(adds) - 1; k >= 0; k-- {
		a := adds[k]
		q.n += len(a.b)
		if pl := places[k]; pl.merge {
			l := &q.segs[pl.at-1]
			l.b = append(l.b, a.b...)
			continue
		}
		if len(adds) == 1 && len(a.b) >= holdMin && src != nil {
			a.pin = src.Hold()
		}
		if a.pin == nil {
			a.b = append([]byte(nil), a.b...)
		} else {
			a.b = a.b[:len(a.b):len(a.b)]
		}
		q.segs = slices.Insert(q.segs, places[k].at, a)
		added++
	}
	return added, true
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
