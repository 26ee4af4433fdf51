package path

import (
	"sync"
	"sync/atomic"
)

// block is the memory a path reads its carrier into. Records are opened in place, and a
// Handler may keep a payload by reference (Path.Hold) instead of copying it: the block then
// outlives its turn as the read buffer and goes back to the pool when its last holder lets go.
type block struct {
	b       []byte
	refs    atomic.Int32 // the opener's while it reads into the block, plus one per Hold
	charged atomic.Bool  // counted in budget: the opener has moved on while holds remained
	budget  *HoldBudget
}

var blockPool = sync.Pool{New: func() any { return &block{b: make([]byte, readBuffer)} }}

func newBlock(budget *HoldBudget) *block {
	b := blockPool.Get().(*block)
	b.refs.Store(1)
	b.charged.Store(false)
	b.budget = budget
	return b
}

// Unpin implements Pin: a holder lets the block go.
func (b *block) Unpin() {
	if b.refs.Add(-1) == 0 {
		if b.charged.Load() {
			b.budget.used.Add(-int64(len(b.b)))
		}
		b.budget = nil
		blockPool.Put(b)
	}
}

// retire is the opener leaving a block for a new one. If payloads in it are still held, the
// block now exists only for them, and counts against the budget until they let it go. The
// charge is made before the opener's reference is dropped, so whichever Unpin comes last sees
// it.
func (b *block) retire() {
	if b.refs.Load() > 1 && b.budget != nil {
		b.charged.Store(true)
		b.budget.used.Add(int64(len(b.b)))
	}
	b.Unpin()
}

// held reports whether a payload in the block may still be referenced. Only the path's reader
// takes holds, so a block the reader sees unheld stays unheld until the reader holds it again.
func (b *block) held() bool { return b.refs.Load() > 1 }

// HoldBudget bounds the memory that the paths sharing it (one session's) keep alive for held
// payloads beyond their own read buffers. A payload in a block can pin the whole block, so
// without a bound a peer sending one small payload per read could make a receiver keep many
// blocks for a few bytes each. When the budget is spent, Hold returns nil and the caller copies.
type HoldBudget struct {
	Limit int64 // bytes of retired read blocks that holds may keep alive
	used  atomic.Int64
}

// Used is the memory currently kept alive by holds beyond the paths' read buffers.
func (h *HoldBudget) Used() int64 { return h.used.Load() }

// Hold keeps the memory of the frame being handled alive until the returned Pin is let go:
// the payload of a DATA frame may then be kept by reference instead of copied. It may only be
// called from Handler.Frame for a DATA frame, which only the stream reader delivers (a
// DATAGRAM frame from a carrier datagram has no read block to hold), and returns nil (copy
// the payload) when the path has no HoldBudget or the budget is spent.
func (p *Path) Hold() Pin {
	b := p.opener.blk
	h := p.cfg.Hold
	if h == nil || b == nil || h.used.Load()+int64(len(b.b)) > h.Limit {
		return nil
	}
	b.refs.Add(1)
	return b
}
