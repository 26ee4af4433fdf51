package path

// A packet path's writer and reader: the writer packs, seals and sends what the window,
// the pacer and address validation allow; the reader opens, acknowledges and dispatches.

import (
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/rendr-go/rendr/internal/record"
	"github.com/rendr-go/rendr/internal/wire"
	"github.com/rendr-go/rendr/transport"
)

// pkItem is one packet the writer is about to send.
type pkItem struct {
	r     *Record  // the engine's or a control record; nil: path frames alone
	pre   [2]int   // path frames ahead of the record's: the writer's scratch[pre[0]:pre[1]]
	pong  uint64   // the PONG among those frames (0: none)
	size  int      // the datagram's size once sealed
	pad   int      // an MTU probe: pad the frames to this datagram size
	to    net.Addr // nil: the current peer
	pn    uint64
	probe bool
	split bool // sealed in parts, the payload straight from the send buffer (packetsplit.go)
}

// pkWriter is the writer goroutine's scratch.
type pkWriter struct {
	items   []pkItem
	scratch []byte
	dgrams  [][]byte
	pace    *time.Timer
}

// routineWritePackets is the writer of a packet path: it sends what the window and the pacer
// allow, then sleeps until a kick (new records, an acknowledgement) or the pacer's time.
func (p *Path) routineWritePackets() {
	defer p.exit()
	w := &pkWriter{}
	w.pace = time.AfterFunc(time.Hour, p.kickWriter)
	w.pace.Stop()
	defer w.pace.Stop()
	for {
		select {
		case <-p.kick:
		case <-p.done:
			p.releaseItems(w)
			return
		}
		for {
			wait, more, err := p.writePackets(w)
			if err != nil {
				p.Close(err)
				return
			}
			if !more {
				if wait > 0 {
					w.pace.Reset(wait)
				}
				break
			}
		}
	}
}

// dropFront removes q's first n records, keeping its array: reslicing from the front would
// shrink its capacity until the next append allocates a new one.
func dropFront(q []*Record, n int) []*Record {
	if n == 0 {
		return q
	}
	rest := copy(q, q[n:])
	clear(q[rest:])
	return q[:rest]
}

func (p *Path) releaseItems(w *pkWriter) {
	for i := range w.items {
		if r := w.items[i].r; r != nil {
			r.Release()
			w.items[i].r = nil
		}
	}
}

// writePackets sends one batch. more says another may follow at once; wait, when not, how
// long until the pacer lets the next packet go (0: until a kick).
func (p *Path) writePackets(w *pkWriter) (wait time.Duration, more bool, err error) {
	now := time.Now()
	k := p.pk
	w.items, w.scratch = w.items[:0], w.scratch[:0]
	p.mu.Lock()
	if p.mu.closed {
		p.mu.Unlock()
		return 0, false, nil
	}
	over := k.overhead()
	room := k.mtu - over // frame bytes in one packet
	batch := 0
	if k.unvalidated && k.unvalSent+k.mtu > amplification*k.unvalRecv {
		// Nothing more to an address that has not proven itself (a forged source could
		// aim us at a victim); its first authenticated packet lifts this.
		p.mu.Unlock()
		return 0, false, nil
	}
	// fits says a packet of size bytes may go to the peer now: always, once its address is
	// proven.
	fits := func(size int) bool {
		return !k.unvalidated || k.unvalSent+size <= amplification*k.unvalRecv
	}
	add := func(it pkItem, frames int) {
		it.size = over + frames
		if it.pad > it.size {
			it.size = it.pad
		}
		it.pn = k.next
		k.next++
		batch += it.size
		if k.unvalidated && it.to == nil {
			k.unvalSent += it.size
		}
		w.items = append(w.items, it)
	}
	// Answers to challenges go where the challenge came from.
	for _, rs := range k.responses {
		s := len(w.scratch)
		w.scratch = wire.AppendPathResponse(w.scratch, rs.data)
		add(pkItem{pre: [2]int{s, len(w.scratch)}, to: rs.to}, len(w.scratch)-s)
	}
	clear(k.responses)
	k.responses = k.responses[:0]
	if k.chalDue && k.cand != nil && k.candSent+over+9 <= amplification*k.candRecv {
		s := len(w.scratch)
		w.scratch = wire.AppendPathChallenge(w.scratch, k.chal)
		add(pkItem{pre: [2]int{s, len(w.scratch)}, to: k.cand}, 9)
		k.candSent += over + 9
		k.chalDue = false
		k.chalAt = now
		p.trackLocked(&w.items[len(w.items)-1], now, func(sp *sentPacket) { sp.chal, sp.counted = true, false })
	}
	// The path's own frames for the peer ride the first packet to it.
	pre := len(w.scratch)
	w.scratch = p.appendAckLocked(w.scratch, room-ackReserve/2, now, false)
	var pong uint64
	if p.mu.pongPending && k.pongsOut < maxPongsOut {
		pong = p.mu.pongSeq
		w.scratch = wire.AppendPong(w.scratch, pong)
		p.mu.pongPending = false
	}
	preEnd := len(w.scratch)
	hasPre := preEnd > pre
	takePre := func(it *pkItem) {
		it.pre, it.pong = [2]int{pre, preEnd}, pong
		hasPre = false
	}
	// Control records (probes, a JOIN_PROOF) do not wait for the window.
	for len(p.mu.pq) > 0 && batch < pkBatchBytes && fits(over+preEnd-pre+len(p.mu.pq[0].Frames())) {
		r := p.mu.pq[0]
		p.mu.pq = dropFront(p.mu.pq, 1)
		it := pkItem{r: r}
		if hasPre && preEnd-pre+len(r.Frames()) <= room {
			takePre(&it)
		}
		add(it, it.pre[1]-it.pre[0]+len(r.Frames()))
		p.trackLocked(&w.items[len(w.items)-1], now, nil)
	}
	// Data records, as the window and the pacer allow. After a probe timeout two packets go
	// whatever the window says.
	paced := time.Duration(0)
	dataBytes := 0 // bytes leaving the data queue, for Space and Writable
	nq := 0        // records taken from the data queue
	for nq < len(p.mu.q) && batch < pkBatchBytes {
		r := p.mu.q[nq]
		// Sealed in parts when the payload is still in the send buffer (read once, by the
		// cipher), if the parts' overhead fits; the path's own frames ride along only if
		// they do not stop that.
		split := 0
		if n := len(r.Ext); n > 0 && n < wire.MaxParts && k.seal.seal != nil && allNonEmpty(r.Ext) &&
			over+r.Len()-2+record.SplitOverhead(n) <= k.mtu {
			split = record.SplitOverhead(n)
		}
		size := over + r.Len() - 2 + split
		withPre := hasPre && size+preEnd-pre <= k.mtu
		if withPre {
			size += preEnd - pre
		}
		if !fits(size) {
			break
		}
		if k.ptoProbes == 0 && k.inflight > 0 && k.inflight+size > int(k.cc.cwnd) {
			break // the window is full; an acknowledgement kicks the writer
		}
		if k.ptoProbes == 0 {
			if d := k.pace.allow(size, now, &k.cc, p.mu.est.srtt); d > 0 {
				paced = d
				break
			}
		} else {
			k.ptoProbes--
		}
		nq++
		dataBytes += r.Len()
		it := pkItem{r: r, split: split > 0}
		if withPre {
			takePre(&it)
		}
		add(it, size-over)
		p.trackLocked(&w.items[len(w.items)-1], now, nil)
	}
	p.mu.q = dropFront(p.mu.q, nq)
	// Probe timeout with nothing to resend: PINGs, which the peer acknowledges at once.
	for ; k.ptoProbes > 0 && fits(over+16); k.ptoProbes-- {
		s := len(w.scratch)
		w.scratch = wire.AppendPing(w.scratch, p.mu.pingSeq)
		it := pkItem{pre: [2]int{s, len(w.scratch)}}
		add(it, len(w.scratch)-s)
		p.trackLocked(&w.items[len(w.items)-1], now, nil)
	}
	// One MTU probe at a time, once the path is confirmed, when the window has room for it.
	if size := p.probeSizeLocked(now); size > 0 && !k.unvalidated {
		s := len(w.scratch)
		w.scratch = wire.AppendPing(w.scratch, p.mu.pingSeq)
		it := pkItem{pre: [2]int{s, len(w.scratch)}, pad: size, probe: true}
		add(it, len(w.scratch)-s)
		k.probeSize = size
		p.trackLocked(&w.items[len(w.items)-1], now, func(sp *sentPacket) { sp.probe, sp.counted = size, false })
	}
	if hasPre && fits(over+preEnd-pre) {
		// An acknowledgement or PONG with nothing to ride on: a packet of its own. Only a
		// PONG makes it one the peer acknowledges, and one to resend when lost.
		var it pkItem
		takePre(&it)
		add(it, preEnd-pre)
		if pong != 0 {
			p.trackLocked(&w.items[len(w.items)-1], now, nil)
		}
	}
	p.mu.qBytes -= dataBytes
	queued := len(p.mu.q) > 0
	p.armLocked(now)
	p.mu.Unlock()

	if len(w.items) == 0 {
		return paced, false, nil
	}
	sent, err := p.sealAndSend(w)
	p.bytesSent.Add(int64(sent))
	if err != nil {
		p.releaseItems(w)
		return 0, false, err
	}
	p.mu.Lock()
	notify := p.mu.wantWritable && k.spaceLocked(p) > 0 && !p.mu.closed
	if notify {
		p.mu.wantWritable = false
	}
	p.mu.Unlock()
	if notify {
		p.h.Writable(p)
	}
	return paced, queued && paced == 0 && batch >= pkBatchBytes, nil
}

// trackLocked records the item just added as a packet in flight; set adjusts the record.
func (p *Path) trackLocked(it *pkItem, now time.Time, set func(*sentPacket)) {
	k := p.pk
	if n := len(k.sent); n < cap(k.sent) {
		k.sent = k.sent[:n+1] // reuse the slot's carried list
	} else {
		k.sent = append(k.sent, sentPacket{})
	}
	sp := &k.sent[len(k.sent)-1]
	*sp = sentPacket{pn: it.pn, at: now, size: it.size, counted: true, carried: sp.carried[:0]}
	sp.pong = it.pong
	if r := it.r; r != nil {
		sp.carried = append(sp.carried, r.Carried...)
		if r.Critical() {
			sp.critical = append([]byte(nil), r.Frames()...)
		}
		// A probe's PING is resent when lost. Only the first byte is looked at otherwise: a
		// data record's frames end in a payload kept aside (Ext), which Parse would take
		// for a truncated frame, at the cost of an error per packet.
		if fr := r.Frames(); len(fr) > 0 && wire.Type(fr[0]) == wire.TypePing {
			if f, _, err := wire.Parse(fr); err == nil {
				sp.ping = f.Seq
			}
		}
	}
	if set != nil {
		set(sp)
	}
	if sp.pong != 0 {
		k.pongsOut++
	}
	if sp.counted {
		k.inflight += sp.size
	}
	k.lastSent = now
}

// probeSizeLocked is the size of the MTU probe to send now, or 0.
func (p *Path) probeSizeLocked(now time.Time) int {
	k := p.pk
	if k.probeSize != 0 || !k.isConfirmed || now.Before(k.probeAt) {
		return 0
	}
	if k.probeHi-k.mtu < 32 {
		if k.probeRaise {
			// The search has rested: the path may carry more now (a route changed).
			k.probeHi, k.probeFails, k.probeRaise = k.c.MaxDatagramSize(), 0, false
		}
		if k.probeHi-k.mtu < 32 {
			// Close enough: stop searching until the raise timer.
			k.probeHi, k.probeRaise, k.probeAt = k.mtu, true, now.Add(probeRaiseAfter)
			return 0
		}
	}
	// The carrier's own limit first: on most links it holds or fails at once. A probe is one
	// packet at a time and not counted in flight (its loss says nothing about congestion),
	// so it does not wait for the window: a busy path finds its size while it is busy.
	size := k.probeHi
	if k.probeFails > 0 || k.probeHi < k.c.MaxDatagramSize() {
		size = (k.mtu + k.probeHi + 1) / 2
	}
	return size
}

// sealAndSend builds, seals and writes the batch's packets, and releases its records.
func (p *Path) sealAndSend(w *pkWriter) (int, error) {
	k := p.pk
	bp := gatherPool.Get().(*[]byte)
	defer gatherPool.Put(bp)
	arena := (*bp)[:0]
	w.dgrams = w.dgrams[:0]
	sent := 0
	flush := func() error {
		if len(w.dgrams) == 0 {
			return nil
		}
		var err error
		if k.bw != nil && len(w.dgrams) > 1 {
			err = k.bw.WriteBatch(w.dgrams)
		} else {
			for _, d := range w.dgrams {
				if _, err = k.c.Write(d); err != nil {
					break
				}
			}
		}
		w.dgrams = w.dgrams[:0]
		return err
	}
	// fail handles a write error of items [from, to): nil when the packets are only lost (too
	// large for the path), so the batch goes on; every item must still be sealed, in order,
	// or the packet numbers the items were given would go unused.
	fail := func(from, to int, err error) error {
		if err == nil {
			return nil
		}
		return p.writeFailed(w, from, to, err)
	}
	batchStart := 0
	for i := range w.items {
		it := &w.items[i]
		if len(arena)+it.size > cap(arena) {
			if err := fail(batchStart, i, flush()); err != nil {
				return sent, err
			}
			batchStart, arena = i, arena[:0]
		}
		start := len(arena)
		if it.split {
			d, err := p.sealSplitItem(it, w.scratch[it.pre[0]:it.pre[1]], arena, start)
			if err != nil {
				return sent, err
			}
			arena = arena[:start+len(d)]
			sent += len(d)
			w.dgrams = append(w.dgrams, d)
			continue
		}
		arena = arena[:start+dgCounterSize]
		arena = append(arena, w.scratch[it.pre[0]:it.pre[1]]...)
		if r := it.r; r != nil {
			arena = append(arena, r.Frames()...)
			for _, e := range r.Ext {
				arena = append(arena, e...)
			}
			r.Release()
			it.r = nil
		}
		if it.pad > 0 {
			if n := it.pad - (len(arena) - start) - (k.overhead() - dgCounterSize); n >= 2 {
				arena = wire.AppendPadding(arena, n)
			}
		}
		d, pn, err := k.seal.sealCounted(arena[start:])
		if err != nil {
			return sent, err
		}
		if pn != it.pn {
			return sent, fmt.Errorf("path: packet %d sealed as %d", it.pn, pn)
		}
		arena = arena[:start+len(d)]
		sent += len(d)
		if it.to == nil && !it.probe {
			w.dgrams = append(w.dgrams, d)
			continue
		}
		// Probes and packets to another address go alone, so an error is theirs.
		if err := fail(batchStart, i, flush()); err != nil {
			return sent, err
		}
		batchStart = i + 1
		if it.to != nil && k.rb != nil {
			_, err = k.rb.WriteTo(d, it.to)
		} else {
			_, err = k.c.Write(d)
		}
		if err := fail(i, i+1, err); err != nil {
			return sent, err
		}
	}
	return sent, fail(batchStart, len(w.items), flush())
}

// allNonEmpty reports whether no piece is empty: an empty part would be a bare tag, which a
// receiver refuses.
func allNonEmpty(ps [][]byte) bool {
	for _, p := range ps {
		if len(p) == 0 {
			return false
		}
	}
	return true
}

// sealSplitItem seals a split item at arena[start:] (room was checked when it was added) and
// releases its record: the payload is read once, by the cipher, from the send buffer.
func (p *Path) sealSplitItem(it *pkItem, pre, arena []byte, start int) ([]byte, error) {
	k := p.pk
	r := it.r
	hdr := splitHeader(1 + len(r.Ext))
	arena = arena[:start+hdr]
	arena = append(arena, pre...)
	arena = append(arena, r.Frames()...)
	frames := len(arena) - start - hdr
	d, pn, err := k.seal.sealSplit(arena[start:], frames, r.Ext)
	r.Release()
	it.r = nil
	if err != nil {
		return nil, err
	}
	if pn != it.pn {
		return nil, fmt.Errorf("path: packet %d sealed as %d", it.pn, pn)
	}
	return d, nil
}

// writeFailed handles a write error for items [from, to). A datagram refused as too large is
// not the carrier's death: a probe's size failed, or the path MTU fell (the packets are lost,
// and the size starts over from the base). Any other error is returned.
func (p *Path) writeFailed(w *pkWriter, from, to int, err error) error {
	if !errors.Is(err, transport.ErrDatagramTooLarge) {
		return err
	}
	now := time.Now()
	var ls lostSet
	p.mu.Lock()
	k := p.pk
	for i := from; i < to; i++ {
		it := &w.items[i]
		if it.probe {
			k.probeHi = min(k.probeHi, it.size-1)
			k.probeFails = 0
		} else if k.mtu > k.c.BaseDatagramSize() {
			k.probeHi = k.mtu - 1
			k.mtu = min(k.c.BaseDatagramSize(), k.mtu)
			k.cc.setMSS(k.mtu)
		}
		if j := k.find(it.pn); j >= 0 && !k.sent[j].done {
			if it.probe {
				k.probeSize = 0
				k.sent[j].done = true
			} else {
				p.declareLostLocked(&k.sent[j], now, &ls)
			}
		}
	}
	k.trimLocked()
	p.mu.Unlock()
	p.afterLoss(&ls)
	return nil
}

// routineReadPackets reads a packet path's datagrams.
func (p *Path) routineReadPackets() {
	defer p.exit()
	k := p.pk
	pr, _ := k.c.(transport.PacketReader)
	var buf []byte
	if pr == nil {
		buf = make([]byte, k.c.MaxDatagramSize()+1)
	}
	f := new(wire.Frame)
	var cause error
	for cause == nil {
		var b []byte
		var from net.Addr
		var err error
		switch {
		case pr != nil:
			b, from, err = pr.ReadPacket() // opened where it lies, no copy
			if k.rb == nil {
				from = nil // a carrier that cannot rebind has one peer
			}
		case k.rb != nil:
			var n int
			n, from, err = k.rb.ReadFrom(buf)
			b = buf[:n]
		default:
			var n int
			n, err = k.c.Read(buf)
			b = buf[:n]
		}
		if err != nil {
			cause = err
			break
		}
		n := len(b)
		k.letGoHeld() // a new datagram: holds of the last one are theirs alone
		marked := k.cm != nil && k.cm.Marked()
		frames, pn, err := k.open.openCounted(b)
		if errors.Is(err, errReplay) || errors.Is(err, errOld) {
			continue // a copy, or too old to tell: a network may duplicate and delay
		}
		if err != nil {
			// Anyone can send a datagram to a UDP port: what does not authenticate is
			// dropped, never the path's death.
			p.mu.Lock()
			k.forged++
			p.mu.Unlock()
			continue
		}
		now := time.Now()
		p.bytesRecv.Add(int64(n))
		if from != nil {
			p.fromElsewhere(from, pn, n)
		} else {
			p.lastRecv.Store(now.UnixNano())
			if k.unvalidated {
				p.mu.Lock()
				k.unvalidated = false
				p.mu.Unlock()
				p.kickWriter()
			}
		}
		cause = p.handlePacket(frames, k.open.parts, pn, from, marked, now, f)
	}
	k.letGoHeld()
	p.Close(cause)
	if pr != nil {
		// The carrier is closed, so this returns at once; it lets go of the datagram lent
		// last, which a path that stopped on a bad frame still held.
		pr.ReadPacket()
	}
}

// handlePacket acts on the frames of a packet that authenticated, numbered pn, from the
// address from (nil: the peer's), with parts the payload of a split packet (reader
// goroutine). f is the reader's scratch frame. A non-nil error closes the path.
func (p *Path) handlePacket(frames []byte, parts [][]byte, pn uint64, from net.Addr, marked bool, now time.Time, f *wire.Frame) error {
	k := p.pk
	eliciting := false
	var cause error
	for (len(frames) > 0 || len(parts) > 0) && cause == nil {
		var split bool
		if split, cause = p.nextFrame(&frames, &parts, f); split || cause != nil {
			eliciting = eliciting || split
			break
		}
		switch f.Type {
		case wire.TypePathAck, wire.TypePathAckCE:
			cause = p.onAck(f)
			continue
		case wire.TypePadding:
			continue
		case wire.TypePathChallenge:
			p.mu.Lock()
			if len(k.responses) < maxResponses {
				k.responses = append(k.responses, response{data: f.Seq, to: from})
			}
			p.mu.Unlock()
		case wire.TypePathResponse:
			p.validated(f.Seq, from)
		case wire.TypePing:
			p.mu.Lock()
			p.mu.pongSeq, p.mu.pongPending = f.Seq, true
			if k.pongsOut >= maxPongsOut {
				k.pongsHeld++ // answered once one of those is acknowledged or lost
			}
			p.mu.Unlock()
		case wire.TypePong:
			p.pong(f.Seq)
		default:
			cause = p.h.Frame(p, f)
		}
		eliciting = true
	}
	if cause != nil {
		return cause
	}
	p.mu.Lock()
	p.receivedLocked(pn, eliciting, marked, now)
	due := k.unacked > 0 && !now.Before(k.ackAt) || p.mu.pongPending || len(k.responses) > 0
	p.mu.Unlock()
	if due {
		p.kickWriter()
	}
	return nil
}

// fromElsewhere notes an authentic packet from an address other than the peer's. The newest
// packet from a new address starts its validation; nothing moves until it answers.
func (p *Path) fromElsewhere(from net.Addr, pn uint64, n int) {
	k := p.pk
	p.mu.Lock()
	defer p.mu.Unlock()
	if k.cand == nil || k.cand.String() != from.String() {
		if pn+1 < k.open.high {
			return // an older packet from there, overtaken: not where the peer is now
		}
		if k.cand != nil && time.Since(k.chalAt) < 3*p.ptoLocked() {
			// A challenge is out to another address: let it finish, or copies from spoofed
			// addresses, each newer than the last, would keep a real move from validating.
			return
		}
		k.cand, k.candRecv, k.candSent = from, 0, 0
		k.chal = newChallenge()
		k.chalDue = true
	}
	k.candRecv += n
	if k.chal != 0 {
		k.chalDue = k.chalDue || k.candSent == 0
	}
	p.kickWriter()
}

// validated takes a PATH_RESPONSE: from the address challenged, with its data, the peer is
// there, and the path moves to it.
func (p *Path) validated(data uint64, from net.Addr) {
	k := p.pk
	p.mu.Lock()
	defer p.mu.Unlock()
	if k.chal == 0 || data != k.chal || from == nil || k.cand == nil || from.String() != k.cand.String() {
		return
	}
	k.rb.SetPeer(from)
	k.cand, k.chal, k.chalDue = nil, 0, false
	k.rebinds++
	p.lastRecv.Store(time.Now().UnixNano())
}
