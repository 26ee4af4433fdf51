package path

import (
	"bytes"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rendr-go/rendr/internal/record"
	"github.com/rendr-go/rendr/internal/wire"
	"github.com/rendr-go/rendr/transport"
)

// keepEnd is a pktEnd that lends what it reads (transport.PacketKeeper): each datagram is read
// into a buffer that goes back to a free list, to be overwritten by a later datagram, when the
// next one is read, unless it was kept.
type keepEnd struct {
	*pktEnd
	cur  *keepBuf
	mu   sync.Mutex
	free []*keepBuf
	out  atomic.Int64 // pins given and not yet let go
	lent atomic.Int64 // buffers returned by ReadPacket or kept, not yet back
}

type keepBuf struct {
	e    *keepEnd
	b    []byte
	refs atomic.Int32
}

var _ transport.PacketKeeper = (*keepEnd)(nil)

func (e *keepEnd) ReadPacket() ([]byte, net.Addr, error) {
	if e.cur != nil {
		e.cur.release()
		e.cur = nil
	}
	e.mu.Lock()
	var kb *keepBuf
	if n := len(e.free); n > 0 {
		kb, e.free = e.free[n-1], e.free[:n-1]
	} else {
		kb = &keepBuf{e: e, b: make([]byte, e.max+1)}
	}
	e.mu.Unlock()
	kb.refs.Store(1)
	e.lent.Add(1)
	n, from, err := e.pktEnd.ReadFrom(kb.b)
	if err != nil {
		kb.release()
		return nil, nil, err
	}
	e.cur = kb
	return kb.b[:n:n], from, nil
}

func (e *keepEnd) Keep() (transport.Pin, int) {
	if e.cur == nil {
		return nil, 0
	}
	e.cur.refs.Add(1)
	e.out.Add(1)
	return keepPin{e.cur}, cap(e.cur.b)
}

type keepPin struct{ kb *keepBuf }

func (p keepPin) Unpin() {
	p.kb.e.out.Add(-1)
	p.kb.release()
}

func (kb *keepBuf) release() {
	if kb.refs.Add(-1) == 0 {
		kb.e.lent.Add(-1)
		kb.e.mu.Lock()
		kb.e.free = append(kb.e.free, kb)
		kb.e.mu.Unlock()
	}
}

// keepPair starts two encrypted packet paths over a 1400-byte link, 1 ms each way, whose b end
// lends what it reads (keepEnd); b's path has handler hb and the hold budget (nil: none).
func keepPair(t *testing.T, seed uint64, hb Handler, budget *HoldBudget) (pa, pb *Path, ha *pktHandler, kb *keepEnd) {
	cfg := pktConfig{Delay: time.Millisecond}
	_, a, b := newPktLink(seed, cfg, cfg, 1400, 1400)
	kb = &keepEnd{pktEnd: b}
	sa, ra, sb, rb := cipherPair(t)
	ha = newPktHandler()
	pa = New(1, a, sa, ra, Config{}, ha)
	pb = New(1, kb, sb, rb, Config{Hold: budget}, hb)
	pa.Start()
	pb.Start()
	return pa, pb, ha, kb
}

// sendKept sends data from pa in records of 1000 bytes of one DATA frame each, as the engine
// would (only while Space allows). cuts(i) are where record i's payload is cut into pieces
// kept aside, which the path seals as parts of their own; none: the payload inline.
func sendKept(t *testing.T, pa *Path, ha *pktHandler, data []byte, cuts func(i int) []int) {
	t.Helper()
	for i := range len(data) / 1000 {
		for pa.Space() <= 0 {
			<-ha.writable
		}
		off := i * 1000
		p := data[off : off+1000]
		r := NewRecord()
		r.SetLimit(pa.MaxRecord())
		if cs := cuts(i); len(cs) == 0 {
			r.B = wire.AppendData(r.B, 1, uint64(off), false, p)
		} else {
			r.B = wire.AppendDataHeader(r.B, 1, uint64(off), false, len(p))
			from := 0
			for _, c := range append(cs, len(p)) {
				r.AppendExt(p[from:c], &countPin{})
				from = c
			}
		}
		r.Carried = append(r.Carried, Carried{Kind: record.CarriedData, Flow: 1, Off: uint64(off), Len: 1000})
		if !pa.Send(r) {
			t.Fatalf("record %d: path closed: %v", i, pa.Cause())
		}
	}
}

// TestPacketPathHoldsKeptDatagrams: over a carrier that lends datagrams, a handler holding
// every payload gets them kept where they arrived, plain and split packets alike (one keep,
// and one charge, per datagram however many payloads of it are held), until the session's
// budget is spent; then it is refused and copies, and the budget is never exceeded. What was
// held still reads as sent after the carrier reused its other buffers, and the budget and the
// carrier get everything back when the holds are let go.
func TestPacketPathHoldsKeptDatagrams(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		hb := &holdingHandler{down: make(chan error, 1)}
		budget := &HoldBudget{Limit: 40 * 1400}
		pa, pb, ha, kb := keepPair(t, 5, hb, budget)
		data := payload(100*1000, 9)
		// Plain packets and split ones (the payload sealed in two parts of its own) in turn.
		sendKept(t, pa, ha, data, func(i int) []int {
			if i%2 == 0 {
				return nil
			}
			return []int{400}
		})
		for {
			hb.mu.Lock()
			seen := hb.bytes
			hb.mu.Unlock()
			if seen >= len(data) {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		pa.Close(nil)
		pb.Close(nil)
		pa.Wait()
		pb.Wait()
		<-hb.down
		hb.mu.Lock()
		held, refused := hb.held, hb.refused
		hb.mu.Unlock()
		if len(held) == 0 || refused == 0 {
			t.Fatalf("%d payloads held, %d refused: want some of each with a budget of 40 datagrams", len(held), refused)
		}
		for _, x := range held {
			if !bytes.Equal(x.b, data[x.offset:int(x.offset)+len(x.b)]) {
				t.Fatalf("held payload at %d was overwritten", x.offset)
			}
		}
		// One keep per datagram: a split packet's two parts share theirs.
		used, out := budget.Used(), kb.out.Load()
		if used > budget.Limit || used != out*1401 || out >= int64(len(held)) || out < int64(len(held)+1)/2 {
			t.Fatalf("budget used %d of %d, %d keeps of 1401-byte buffers for %d held payloads", used, budget.Limit, out, len(held))
		}
		for _, x := range held {
			x.pin.Unpin()
		}
		if used, out := budget.Used(), kb.out.Load(); used != 0 || out != 0 {
			t.Fatalf("after every hold was let go: budget used %d, %d pins out", used, out)
		}
	})
}

// TestPacketPathLetsGoOnBadFrame: a packet that authenticates but holds a frame that does not
// parse closes the path, and the datagram the carrier lent for it goes back.
func TestPacketPathLetsGoOnBadFrame(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pa, pb, _, kb := keepPair(t, 7, newPktHandler(), nil)
		defer func() {
			pa.Close(nil)
			pa.Wait()
		}()
		r := NewRecord()
		r.B = append(r.B, 0x00, 1, 2, 3) // type 0 is no frame
		pa.SendControl(r)
		pb.Wait()
		if !errors.Is(pb.Cause(), ErrRecord) {
			t.Fatalf("the path closed with %v, want ErrRecord", pb.Cause())
		}
		if n := kb.lent.Load(); n != 0 {
			t.Fatalf("%d lent datagrams not given back after the path stopped", n)
		}
	})
}

// unpinningHandler holds every DATA payload and lets it go at once, as a reader that takes
// the bytes as they arrive would: the first part of a split packet is let go before the
// second is held.
type unpinningHandler struct {
	*pktHandler
	holds atomic.Int64
}

func (h *unpinningHandler) Frame(p *Path, f *wire.Frame) error {
	if f.Type == wire.TypeData {
		if pin := p.Hold(); pin != nil {
			h.holds.Add(1)
			pin.Unpin()
		}
	}
	return h.pktHandler.Frame(p, f)
}

// TestPacketPathHoldLetGoAtOnce: payloads of one datagram held and let go one after another
// keep the datagram's keep alive until the last is let go and the reader has moved on; the
// budget and the carrier's buffers all come back.
func TestPacketPathHoldLetGoAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		hb := &unpinningHandler{pktHandler: newPktHandler()}
		budget := &HoldBudget{Limit: 1 << 20}
		pa, pb, ha, kb := keepPair(t, 8, hb, budget)
		const n = 50
		sendKept(t, pa, ha, payload(n*1000, 4), func(int) []int { return []int{300, 700} })
		settled(t, ha, hb.pktHandler, 0, n)
		pa.Close(nil)
		pb.Close(nil)
		pa.Wait()
		pb.Wait()
		if hb.holds.Load() < 3*n/2 {
			t.Fatalf("%d holds for %d three-part packets", hb.holds.Load(), n)
		}
		if used, out, lent := budget.Used(), kb.out.Load(), kb.lent.Load(); used != 0 || out != 0 || lent != 0 {
			t.Fatalf("after the path: budget used %d, %d keeps and %d lent buffers not back", used, out, lent)
		}
	})
}
