// Packet flows (docs/wire.md 8.11), every stage: they carry datagrams, each write one DATAGRAM
// frame, sent once and never again, and delivered at most once. They are Streams whose byte
// stream stays empty: OPEN, FIN (a DATA_FIN at offset 0), RESET and STOP work as for streams,
// so opening and closing are reliable while datagrams are not.

package flow

import (
	"context"
	"errors"
	"sync"

	"github.com/rendr-go/rendr/internal/deadline"
	"github.com/rendr-go/rendr/internal/record"
	"github.com/rendr-go/rendr/internal/wire"
)

// Queue bounds of a packet flow. A datagram that finds its queue full is dropped and counted,
// as a UDP socket drops what its buffer cannot hold: a writer never blocks, and a reader that
// falls behind loses datagrams instead of growing memory.
const (
	maxSendDatagrams = 256
	maxSendBytes     = 1 << 20
	maxRecvDatagrams = 512
	maxRecvBytes     = 2 << 20
	dedupWindow      = 1024 // sequence numbers remembered, to drop copies (a Race sends several)
)

// ErrTooLarge is returned for a datagram larger than a packet flow can carry (MaxDatagram).
var ErrTooLarge = errors.New("rendr: datagram too large")

// MaxDatagram is the largest datagram a packet flow carries.
const MaxDatagram = wire.MaxDatagram

// PacketStats counts a packet flow's datagrams.
type PacketStats struct {
	Sent, Received uint64 // handed to a path; delivered to the reader's queue
	SendDrops      uint64 // dropped by WriteDatagram: the send queue was full
	RecvDrops      uint64 // dropped on arrival: the receive queue was full
	Duplicates     uint64 // copies of a datagram already received (Race), dropped
	TooOld         uint64 // arrived more than 1024 sequence numbers behind the newest, dropped
	Truncated      uint64 // longer than the reader's buffer: the rest was cut off
	Late           uint64 // arrived after the peer closed the flow (over a slower path), dropped
	Oversize       uint64 // larger than the packets of the path it was to go on (a datagram path), dropped
	QueuedSend     int    // waiting to be sent now
	QueuedRecv     int    // waiting to be read now
}

// packetState is what a packet flow adds to a Stream. Guarded by the engine's lock.
type packetState struct {
	send, recv dgRing
	nextSeq    uint64 // last sequence number sent
	top        uint64 // highest sequence number received
	seen       [dedupWindow / 64]uint64
	stats      PacketStats
}

func newPacketState() *packetState {
	return &packetState{
		send: dgRing{max: maxSendDatagrams, maxBytes: maxSendBytes},
		recv: dgRing{max: maxRecvDatagrams, maxBytes: maxRecvBytes},
	}
}

// dgRing is a bounded FIFO of datagrams. Each datagram is copied into a buffer from a pool
// shared by every flow, returned when the datagram is read or sent: a warm flow allocates
// nothing per datagram, and an idle one holds no datagram memory.
type dgRing struct {
	slots          []*dgBuf
	head, n, bytes int
	max, maxBytes  int
}

// dgBuf is a pooled datagram buffer; a pointer, so the pool holds it without allocating.
type dgBuf struct {
	b      []byte
	hash   uint64 // pinned datagrams: which link of a Bond carries it (hash mod links)
	pinned bool
}

// dgClasses are the buffer sizes datagrams are pooled by, so a small datagram never pins a
// 64 KiB buffer.
var dgClasses = [...]int{2 << 10, 16 << 10, MaxDatagram}

// dgPools hold free datagram buffers, one pool per size class.
var dgPools = [len(dgClasses)]sync.Pool{}

// bufClass is the size of the buffer a datagram of n bytes takes.
func bufClass(n int) int {
	for _, c := range dgClasses {
		if n <= c {
			return c
		}
	}
	return n
}

func getBuf(n int) *dgBuf {
	for i, c := range dgClasses {
		if n <= c {
			if b, ok := dgPools[i].Get().(*dgBuf); ok {
				return b
			}
			return &dgBuf{b: make([]byte, 0, c)}
		}
	}
	panic("rendr: datagram over MaxDatagram")
}

func putBuf(b *dgBuf) {
	for i, c := range dgClasses {
		if cap(b.b) == c {
			b.b = b.b[:0]
			dgPools[i].Put(b)
			return
		}
	}
}

// push copies p in; false when the ring is full.
func (r *dgRing) push(p []byte) bool { return r.pushPinned(p, 0, false) }

// pushPinned copies p in with its pin; false when the ring is full.
func (r *dgRing) pushPinned(p []byte, hash uint64, pinned bool) bool {
	if r.n == r.max || (r.bytes+bufClass(len(p)) > r.maxBytes && r.n > 0) {
		return false
	}
	if r.n == len(r.slots) {
		// Grow, keeping the order (only while the flow warms up).
		ns := make([]*dgBuf, min(max(2*len(r.slots), 8), r.max))
		for i := range r.n {
			ns[i] = r.slots[(r.head+i)%len(r.slots)]
		}
		r.slots, r.head = ns, 0
	}
	b := getBuf(len(p))
	b.b = append(b.b[:0], p...)
	b.hash, b.pinned = hash, pinned
	r.slots[(r.head+r.n)%len(r.slots)] = b
	r.n++
	r.bytes += cap(b.b) // what the datagram keeps alive, not just its length
	return true
}

// front is the oldest datagram; valid until pop.
func (r *dgRing) front() []byte { return r.slots[r.head].b }

// at is the i-th oldest datagram's buffer.
func (r *dgRing) at(i int) *dgBuf { return r.slots[(r.head+i)%len(r.slots)] }

// remove takes the i-th oldest datagram out, keeping the order of the others.
func (r *dgRing) remove(i int) {
	if i == 0 {
		r.pop()
		return
	}
	b := r.at(i)
	for j := i; j < r.n-1; j++ {
		r.slots[(r.head+j)%len(r.slots)] = r.slots[(r.head+j+1)%len(r.slots)]
	}
	r.slots[(r.head+r.n-1)%len(r.slots)] = nil
	r.n--
	r.bytes -= cap(b.b)
	putBuf(b)
}

func (r *dgRing) pop() {
	b := r.slots[r.head]
	r.slots[r.head] = nil
	r.bytes -= cap(b.b)
	putBuf(b)
	r.head = (r.head + 1) % len(r.slots)
	r.n--
	if r.n == 0 {
		r.head = 0
	}
}

// release drops every queued datagram and the slot array (a closed flow keeps no memory).
func (r *dgRing) release() {
	for r.n > 0 {
		r.pop()
	}
	r.slots, r.head, r.bytes = nil, 0, 0
}

// OpenPacket starts a new packet flow (dialer side); no round trip.
func (e *Engine) OpenPacket() (*Stream, error) { return e.open(wire.KindPacket, nil) }

// AcceptPacket waits for a packet flow the peer opened.
func (e *Engine) AcceptPacket(ctx context.Context) (*Stream, error) {
	return e.accept(ctx, wire.KindPacket)
}

// IsPacket reports whether s is a packet flow.
func (s *Stream) IsPacket() bool { return s.pk != nil }

// WriteDatagram queues p as one datagram. It never blocks: when the send queue is full the
// datagram is dropped and counted (SendDrops), and WriteDatagram still returns nil, as a UDP
// socket would. A datagram over MaxDatagram is refused with ErrTooLarge.
func (s *Stream) WriteDatagram(p []byte) error { return s.writeDatagram(p, 0, false) }

// WriteDatagramPinned is WriteDatagram for a datagram pinned by hash: over a Bond, every
// datagram with the same hash goes on the same path (the hash modulo the paths carrying
// traffic, ordered by id), as ECMP keeps one connection on one link; a Race still sends it on
// every path.
func (s *Stream) WriteDatagramPinned(p []byte, hash uint64) error {
	return s.writeDatagram(p, hash, true)
}

func (s *Stream) writeDatagram(p []byte, hash uint64, pinned bool) error {
	if s.pk == nil {
		return errors.New("rendr: not a packet flow")
	}
	if len(p) > MaxDatagram {
		return ErrTooLarge
	}
	e := s.e
	e.mu.Lock()
	defer e.mu.Unlock()
	if s.wdl != nil && deadline.Closed(s.wdl.Wait()) {
		return ErrTimeout
	}
	switch {
	case s.appClosed:
		return ErrClosed
	case s.sendErr != nil:
		return s.sendErr
	case s.err != nil:
		return s.err
	case s.finQueued:
		return ErrWriteClosed
	}
	if !s.pk.send.pushPinned(p, hash, pinned) {
		s.pk.stats.SendDrops++
		e.mu.dg.SendDrops++
		return nil
	}
	if pinned {
		e.mu.pinnedQueued++
	}
	e.readyLocked(s)
	return nil
}

// ReadDatagram reads the next datagram into p and returns its length; a datagram longer than
// p is cut to fit (Truncated counts it). It returns io.EOF once the peer closed the flow and
// every datagram that arrived before was read.
func (s *Stream) ReadDatagram(p []byte) (int, error) {
	if s.pk == nil {
		return 0, errors.New("rendr: not a packet flow")
	}
	e := s.e
	for {
		e.mu.Lock()
		dl, err := s.readGateLocked()
		if err != nil {
			return 0, err
		}
		if q := &s.pk.recv; q.n > 0 {
			d := q.front()
			n := copy(p, d)
			if n < len(d) {
				s.pk.stats.Truncated++
			}
			e.mu.dgQueued -= bufClass(len(d))
			q.pop()
			s.tookLocked(q.n > 0)
			return n, nil
		}
		err = s.readEndLocked()
		e.mu.Unlock()
		if err := s.readPause(err, nil, dl); err != nil {
			return 0, err
		}
	}
}

// PacketStats returns the flow's datagram counters.
func (s *Stream) PacketStats() PacketStats {
	if s.pk == nil {
		return PacketStats{}
	}
	s.e.mu.Lock()
	defer s.e.mu.Unlock()
	st := s.pk.stats
	st.QueuedSend, st.QueuedRecv = s.pk.send.n, s.pk.recv.n
	return st
}

// datagramLocked takes one DATAGRAM: dropped if it is a copy already received, too far behind
// to tell, or the receive queue is full; queued for the reader otherwise.
func (s *Stream) datagramLocked(f *wire.Frame) error {
	pk := s.pk
	if pk == nil {
		return errors.New("rendr: DATAGRAM for a stream flow")
	}
	if s.readClosed || s.resetRecv {
		return nil // nobody will read it
	}
	if s.finRecv {
		// Sent before the FIN but over a slower path (a Bond): the reader may have seen
		// io.EOF already, so it is dropped rather than delivered after the end.
		pk.stats.Late++
		s.e.mu.dg.Late++
		return nil
	}
	seq := f.Seq
	switch {
	case seq <= pk.top && pk.top-seq >= dedupWindow:
		pk.stats.TooOld++
		s.e.mu.dg.TooOld++
		return nil
	case seq <= pk.top && pk.marked(pk.top-seq):
		pk.stats.Duplicates++
		s.e.mu.dg.Duplicates++
		return nil
	}
	e := s.e
	if e.mu.dgQueued+bufClass(len(f.Payload)) > e.cfg.MaxSessionWindow || !pk.recv.push(f.Payload) {
		// Not marked as received: a copy on another path may still find room.
		pk.stats.RecvDrops++
		e.mu.dg.RecvDrops++
		return nil
	}
	e.mu.dgQueued += bufClass(len(f.Payload))
	if seq > pk.top {
		pk.shift(seq - pk.top)
		pk.top = seq
	}
	pk.mark(pk.top - seq)
	pk.stats.Received++
	e.mu.dg.Received++
	signal(s.readSig)
	return nil
}

// mark notes sequence number top-i as received in the dedup window: bit i of seen.
func (pk *packetState) mark(i uint64) { pk.seen[i/64] |= 1 << (i % 64) }

// marked reports whether sequence number top-i was received.
func (pk *packetState) marked(i uint64) bool { return pk.seen[i/64]&(1<<(i%64)) != 0 }

// shift moves the window forward by n sequence numbers.
func (pk *packetState) shift(n uint64) {
	if n >= dedupWindow {
		clear(pk.seen[:])
		return
	}
	words, bits := int(n/64), n%64
	for i := len(pk.seen) - 1; i >= 0; i-- {
		var v uint64
		if j := i - words; j >= 0 {
			v = pk.seen[j] << bits
			if bits > 0 && j > 0 {
				v |= pk.seen[j-1] >> (64 - bits)
			}
		}
		pk.seen[i] = v
	}
}

// emitDatagramsLocked appends queued datagrams to r while they fit, and reports whether more
// are waiting. A datagram that does not fit the room left waits for the next record. When the
// engine routes over several links (e.pin), a pinned datagram goes only in a record for its
// link (e.dest); others wait for a record of theirs.
func (s *Stream) emitDatagramsLocked(r *record.Record) bool {
	pk, e := s.pk, s.e
	for i := 0; i < pk.send.n; {
		d := pk.send.at(i)
		if d.pinned && len(e.pin) > 1 {
			if e.dest == nil || e.pin[d.hash%uint64(len(e.pin))] != e.dest {
				i++ // another link's
				continue
			}
		} else if e.pinnedOnly {
			i++ // this record is for pinned datagrams only
			continue
		}
		if need := wire.DatagramOverhead(s.id, pk.nextSeq+1, len(d.b)) + len(d.b); need > r.Cap() {
			// Larger than this link's packets (a datagram path) can ever hold: it would
			// block every datagram and the FIN behind it.
			if d.pinned {
				e.mu.pinnedQueued--
			}
			pk.send.remove(i)
			pk.stats.Oversize++
			e.mu.dg.Oversize++
			continue
		}
		if wire.DatagramOverhead(s.id, pk.nextSeq+1, len(d.b))+len(d.b) > r.Room() {
			// It needs more room than this record has left: go first in the next one, or a
			// large datagram could wait forever behind a stream that fills part of each.
			s.first = true
			return true
		}
		pk.nextSeq++
		r.B = wire.AppendDatagram(r.B, s.id, pk.nextSeq, d.b)
		if d.pinned {
			e.mu.pinnedQueued--
		}
		pk.send.remove(i)
		pk.stats.Sent++
		e.mu.dg.Sent++
	}
	return pk.send.n > 0
}

// releaseSendLocked drops the datagrams waiting to be sent.
func (s *Stream) releaseSendLocked() {
	for i := range s.pk.send.n {
		if s.pk.send.at(i).pinned {
			s.e.mu.pinnedQueued--
		}
	}
	s.pk.send.release()
}

// releaseRecvLocked drops the datagrams waiting to be read and their session-wide count.
func (s *Stream) releaseRecvLocked() {
	s.e.mu.dgQueued -= s.pk.recv.bytes
	s.pk.recv.release()
}
