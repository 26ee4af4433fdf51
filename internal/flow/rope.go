// Receive stage, storage: a stream's receive buffer, which holds delivered bytes until the
// application reads them.

package flow

import "github.com/rendr-go/rendr/internal/record"

// holdMin is the smallest payload kept by reference in a receive buffer; smaller ones are
// copied, several to a chunk, so a run of small frames neither costs a piece each nor keeps a
// whole read block alive for a few bytes.
const holdMin = 4 << 10

// rope is a stream's receive buffer: bytes delivered and not yet read, as a queue of pieces.
// A large payload stays where its path opened it (a held read block) and costs no copy; small
// ones are copied into pooled chunks. Like buffer, it is guarded by the engine's lock, and an
// empty rope holds no memory.
type rope struct {
	segs []seg
	n    int // bytes buffered
}

// seg is one piece: unread bytes and what keeps them alive. A chunk's piece may grow into the
// chunk's free space (its capacity); a held payload's capacity ends with it.
type seg struct {
	b   []byte
	pin record.Pin
}

func (r *rope) len() int { return r.n }

// write appends a copy of p.
func (r *rope) write(p []byte) {
	r.n += len(p)
	if k := len(r.segs); k > 0 {
		last := &r.segs[k-1]
		if _, ok := last.pin.(*chunk); ok {
			m := copy(last.b[len(last.b):cap(last.b)], p)
			last.b = last.b[:len(last.b)+m]
			p = p[m:]
		}
	}
	for len(p) > 0 {
		c := newChunk()
		m := copy(c.b[:], p)
		r.segs = append(r.segs, seg{b: c.b[:m], pin: c})
		p = p[m:]
	}
}

// room is how many bytes write can still copy into the last chunk without taking a new one.
func (r *rope) room() int {
	if k := len(r.segs); k > 0 {
		if _, ok := r.segs[k-1].pin.(*chunk); ok {
			return cap(r.segs[k-1].b) - len(r.segs[k-1].b)
		}
	}
	return 0
}

// writeHeld appends p by reference: pin keeps it alive until the rope lets it go.
func (r *rope) writeHeld(p []byte, pin record.Pin) {
	r.n += len(p)
	r.segs = append(r.segs, seg{b: p[:len(p):len(p)], pin: pin})
}

// read moves bytes from the front into dst and lets go of the pieces it empties.
func (r *rope) read(dst []byte) int {
	done, used := 0, 0
	for used < len(r.segs) && done < len(dst) {
		s := &r.segs[used]
		k := copy(dst[done:], s.b)
		done += k
		s.b = s.b[k:]
		if len(s.b) > 0 {
			break
		}
		s.pin.Unpin()
		used++
	}
	r.drop(used)
	r.n -= done
	return done
}

// drop forgets the first k pieces, already let go.
func (r *rope) drop(k int) {
	if k == 0 {
		return
	}
	rest := copy(r.segs, r.segs[k:])
	clear(r.segs[rest:])
	r.segs = r.segs[:rest]
	if rest == 0 {
		r.segs = nil // idle flows keep nothing
	}
}

// reset lets go of everything.
func (r *rope) reset() {
	for _, s := range r.segs {
		s.pin.Unpin()
	}
	r.drop(len(r.segs))
	r.n = 0
}
