package path

// Holding received payloads: the read blocks a stream path opens records in, and a packet
// path's lent datagrams, kept alive for a Handler within a HoldBudget.

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
// payloads beyond their own read buffers: retired read blocks of stream paths, and carrier
// buffers of packet paths. A payload in a block can pin the whole block, so without a bound a
// peer sending one small payload per read could make a receiver keep many blocks for a few
// bytes each. When the budget is spent, Hold returns nil and the caller copies.
type HoldBudget struct {
	Limit int64 // bytes that holds may keep alive
	used  atomic.Int64
}

// Used is the memory currently kept alive by holds beyond the paths' read buffers.
func (h *HoldBudget) Used() int64 { return h.used.Load() }

// Hold keeps the memory of the frame being handled alive until the returned Pin is let go:
// the payload of a DATA frame may then be kept by reference instead of copied. It may only be
// called from Handler.Frame for a DATA frame. On a stream path it holds the read block the
// record was opened in; on a packet path, the carrier's buffer the datagram lies in, when the
// carrier lends it for longer (transport.PacketKeeper). It returns nil (copy the payload) when
// the path has no HoldBudget, the budget is spent or the carrier cannot spare the memory.
func (p *Path) Hold() Pin {
	h := p.cfg.Hold
	if h == nil {
		return nil
	}
	return p.mode().hold(h)
}

// hold keeps the read block the record being handled was opened in (reader goroutine).
func (s *streamState) hold(h *HoldBudget) Pin {
	b := s.opener.blk
	if b == nil || h.used.Load()+int64(len(b.b)) > h.Limit {
		return nil
	}
	b.refs.Add(1)
	return b
}

// hold keeps the datagram being handled (reader goroutine): all the payloads of one datagram
// (a split packet's parts, several DATA frames) share one keep of it, and one charge to the
// budget, of what the carrier says the datagram keeps from reuse.
func (k *pkState) hold(h *HoldBudget) Pin {
	if k.keeper == nil {
		return nil
	}
	if hp := k.held; hp != nil {
		hp.refs.Add(1)
		return hp
	}
	if h.used.Load() >= h.Limit {
		return nil
	}
	pin, size := k.keeper.Keep()
	if pin == nil {
		return nil
	}
	if h.used.Add(int64(size)) > h.Limit {
		h.used.Add(-int64(size))
		pin.Unpin()
		return nil
	}
	hp := heldPool.Get().(*heldPacket)
	hp.pin, hp.budget, hp.size = pin, h, int64(size)
	// The handler's reference, and the reader's (k.held) until it moves to the next datagram:
	// without it, a payload read and let go at once would recycle hp while a later payload
	// of the same datagram still took a reference to it.
	hp.refs.Store(2)
	k.held = hp
	return hp
}

// letGoHeld drops the reader's reference to the datagram it was handling (reader goroutine).
func (k *pkState) letGoHeld() {
	if k.held != nil {
		k.held.Unpin()
		k.held = nil
	}
}

// heldPacket is a carrier's lent datagram held by a Handler, with its charge to the budget;
// refs counts the payloads of it held, plus one while the reader is still on its datagram.
type heldPacket struct {
	pin    Pin
	budget *HoldBudget
	size   int64
	refs   atomic.Int32
}

var heldPool = sync.Pool{New: func() any { return new(heldPacket) }}

// Unpin implements Pin.
func (hp *heldPacket) Unpin() {
	if hp.refs.Add(-1) != 0 {
		return
	}
	hp.budget.used.Add(-hp.size)
	hp.pin.Unpin()
	hp.pin, hp.budget, hp.size = nil, nil, 0
	heldPool.Put(hp)
}
