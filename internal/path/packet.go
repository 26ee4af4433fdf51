package path

// Packet paths (docs/datagram-paths.md, docs/wire.md section 5, "Packet paths"): a path's
// state on a carrier that moves datagrams only, and what acknowledgements and losses do to it;
// the writer and reader are in packetio.go.
//
// On a carrier that moves datagrams (transport.PacketCarrier) every record is one datagram: an
// 8-byte packet number, then the frames sealed with that number as nonce (the datagram records
// of section 5, under the path's own datagram keys). The path acknowledges what arrives
// (PATH_ACK), declares lost what does not (RFC 9002: three later packets acknowledged, or 9/8
// of the RTT passed since a later one was), hands what a lost packet carried back to the
// engine, and sends no faster than CUBIC's window, paced. It finds the largest datagram the
// network carries (RFC 8899) and, on a carrier that can rebind, follows a peer to a new
// address once the peer proves it is there (PATH_CHALLENGE).

import (
	"cmp"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"math"
	"net"
	"slices"
	"time"

	"github.com/flynn/noise"

	"github.com/rendr-go/rendr/internal/wire"
	"github.com/rendr-go/rendr/transport"
)

// LossHandler is the Handler of a packet path: Lost hands back what a lost packet carried, to
// be sent again (flow.Engine.Lost). It is called from the path's goroutines without its lock,
// and must not keep cs.
type LossHandler interface {
	Lost(p *Path, cs []Carried)
}

const (
	maxAckDelay   = 10 * time.Millisecond // how long a receiver may sit on an acknowledgement
	initialRTT    = 100 * time.Millisecond
	ackReserve    = 48 // bytes of each packet kept for a PATH_ACK, PONG or the like
	maxAckRanges  = 32 // ranges remembered (and sent) of what arrived
	probeTries    = 3  // losses of one probe size before it counts as too large
	maxResponses  = 4  // PATH_RESPONSEs queued at once
	amplification = 3  // bytes sent to an unvalidated address per byte received from it
	maxThreshold  = 32 // the most packets that may overtake one before it counts as lost
	// maxPongsOut bounds the packets carrying a PONG that may be unacknowledged at once. A
	// PONG goes whatever the window says, and is tracked so that it goes again when lost; a
	// peer sending PINGs and never acknowledging would otherwise grow the packets tracked by
	// one per PING. A peer keeps one PING outstanding, so it never meets the bound.
	maxPongsOut = 4
	// blackHoleLosses full-size packets lost in a row bring the MTU back to the base size.
	blackHoleLosses = 10
	// probeRaiseAfter is how long a finished MTU search rests before it tries larger sizes
	// again (RFC 8899 suggests 600 s).
	probeRaiseAfter = 10 * time.Minute
	pkBatchBytes    = gatherSize
)

// sentPacket is an ack-eliciting packet in flight.
type sentPacket struct {
	pn       uint64
	at       time.Time
	size     int
	counted  bool // in bytes in flight (every packet but MTU probes)
	done     bool // acknowledged or declared lost
	carried  []Carried
	ping     uint64 // the PING it carried (0: none)
	pong     uint64 // the PONG it carried (0: none)
	probe    int    // an MTU probe of this size
	chal     bool   // a PATH_CHALLENGE
	critical []byte // frames that must arrive (a JOIN_PROOF): sent again when lost
}

// pkState is a packet path's state. Fields are guarded by Path.mu unless noted.
type pkState struct {
	c  transport.PacketCarrier
	rb transport.Rebinder         // nil: the peer's address never changes
	bw transport.BatchWriter      // nil: one Write per datagram
	cm transport.CongestionMarker // nil: the carrier marks nothing
	// keeper lends received datagrams for longer than one read: a Handler may hold a
	// payload where it arrived (Path.Hold). Nil: payloads are copied.
	keeper transport.PacketKeeper
	held   *heldPacket // the keep of the datagram being handled, once a payload of it is held (reader goroutine)

	seal dgSeal // writer goroutine only, once started
	open dgOpen // reader goroutine only

	// Sending.
	next         uint64       // the next packet number
	sent         []sentPacket // ack-eliciting packets, by packet number, from start
	start        int
	inflight     int
	cc           cubic
	pace         pacer
	hasAcked     bool
	largestAcked uint64
	latestRTT    time.Duration
	lossTime     time.Time // when the next packet may be declared lost by time (zero: none)
	lastSent     time.Time // the last ack-eliciting packet
	ptoCount     int
	ptoProbes    int // probe packets the PTO asked for
	timer        *time.Timer
	critical     int           // critical packets not yet acknowledged
	confirmed    chan struct{} // closed once every critical packet is acknowledged
	isConfirmed  bool
	lostPackets  uint64
	acked        uint64
	// Reordering: a packet declared lost that is acknowledged after all was only late. Each
	// such one raises the packet threshold (RFC 9002 allows adapting it), so a path that
	// reorders stops shrinking its window for losses that are not.
	threshold  uint64     // packets acknowledged after one before it is lost (starts at 3)
	recentLost [32]uint64 // the latest packets declared lost, plus one (0: empty slot)
	nextLost   int
	spurious   uint64
	marked     uint64 // the peer's count of our packets that met congestion (PATH_ACK_CE)
	pongsOut   int    // packets carrying a PONG, neither acknowledged nor lost
	pongsHeld  uint64 // PINGs whose answer waited for one of those to settle (maxPongsOut)

	// Receiving (what to acknowledge).
	ranges    []wire.AckRange // newest first
	largestAt time.Time       // when ranges[0].Hi arrived
	unacked   int             // ack-eliciting packets since the last PATH_ACK
	received  uint64          // ack-eliciting packets received
	ackAt     time.Time       // an acknowledgement is due then (zero: none pending)
	ackTimer  *time.Timer
	forged    uint64    // datagrams that did not authenticate, dropped
	markedIn  uint64    // packets received that the carrier marked as having met congestion
	markedAck uint64    // markedIn as the last PATH_ACK_CE said it
	markAckAt time.Time // when a PATH_ACK_CE last told of new marks

	// Path MTU (RFC 8899): mtu is the datagram size known to work; the search is over
	// (mtu, probeHi].
	mtu, probeHi int
	probeSize    int // the size of the outstanding probe (0: none)
	probeFails   int
	probeAt      time.Time // the next probe may go then
	probeRaise   bool      // the search is over; at probeAt it starts again (RFC 8899's raise timer)
	bigLosses    int       // packets over the base size lost in a row
	lastBigAck   time.Time // when one over the base size was last acknowledged
	lastSmallAck time.Time // and one at most the base size

	// Address validation.
	unvalidated bool      // the peer's own address is not proven yet (Config.Unvalidated)
	unvalRecv   int       // bytes received from it meanwhile (its first datagram counted)
	unvalSent   int       // bytes sent to it meanwhile
	cand        net.Addr  // an address the peer's packets came from, not validated yet
	candRecv    int       // bytes received from cand
	candSent    int       // bytes sent to cand
	chal        uint64    // the challenge sent to cand (0: none)
	chalDue     bool      // a PATH_CHALLENGE should go
	chalAt      time.Time // when the last one went
	responses   []response
	rebinds     uint64
}

type response struct {
	data uint64
	to   net.Addr // nil: the current peer
}

func newPkState(c transport.PacketCarrier, send, recv *noise.CipherState) *pkState {
	k := &pkState{c: c, confirmed: make(chan struct{}), threshold: 3}
	k.rb, _ = c.(transport.Rebinder)
	k.open.splits = true
	k.bw, _ = c.(transport.BatchWriter)
	k.cm, _ = c.(transport.CongestionMarker)
	k.keeper, _ = c.(transport.PacketKeeper)
	if send != nil && recv != nil {
		k.seal.seal, k.open.open = &recordCipher{}, &recordCipher{}
		k.seal.seal.setKey(dgKey(send))
		k.open.open.setKey(dgKey(recv))
	}
	k.probeHi = c.MaxDatagramSize()
	k.mtu = min(c.BaseDatagramSize(), k.probeHi)
	k.cc = newCubic(k.mtu)
	return k
}

// overhead is what a packet adds to its frames.
func (k *pkState) overhead() int {
	if k.seal.seal == nil {
		return dgCounterSize
	}
	return dgCounterSize + wire.TagSize
}

// maxRecord is a packet's room for frames: what the path MTU leaves after the packet's own
// overhead and room for a PATH_ACK or PONG to ride along.
func (k *pkState) maxRecord(p *Path) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return k.mtu - k.overhead() - ackReserve
}

// confirmation is closed once the critical packets and one more are acknowledged (onAck).
func (k *pkState) confirmation() <-chan struct{} { return k.confirmed }

// PacketStats are a packet path's counters.
type PacketStats struct {
	Sent             uint64 // packets
	Acked, Lost      uint64 // ack-eliciting packets
	Forged           uint64 // datagrams dropped as not authenticating
	MTU              int    // the datagram size in use
	Window, InFlight int    // congestion window and bytes in flight
	Rebinds          uint64 // moves to a new peer address
	// Packets that met congestion on the way (transport.CongestionMarker): ours, as the
	// peer reported them, and the peer's, as this side's carrier marked them.
	Marked, MarkedIn uint64
	// PINGs whose PONG waited because maxPongsOut packets carrying one were unacknowledged.
	PongsHeld uint64
}

// packetStats reads the counters under the path's lock.
func (k *pkState) packetStats(p *Path) (PacketStats, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return PacketStats{Sent: k.next, Acked: k.acked, Lost: k.lostPackets, Forged: k.forged,
		MTU: k.mtu, Window: int(k.cc.cwnd), InFlight: k.inflight, Rebinds: k.rebinds,
		Marked: k.marked, MarkedIn: k.markedIn, PongsHeld: k.pongsHeld}, true
}

// spaceLocked is Space on a packet path: bounded by the queue and by what the congestion
// window lets out, so the engine never queues far ahead of what it can send.
func (k *pkState) spaceLocked(p *Path) int {
	return min(p.queueSpaceLocked(), int(k.cc.cwnd)-k.inflight-p.mu.qBytes)
}

// probeAnsweredLocked times nothing: a packet path measures every acknowledged packet
// instead, and its PING may have been sent again, so the answer would time the wrong copy.
func (k *pkState) probeAnsweredLocked(*Path, time.Time, time.Duration) {}

// ptoLocked is the probe timeout before doubling (RFC 9002, 6.2.1).
func (p *Path) ptoLocked() time.Duration {
	e := &p.mu.est
	if e.samples == 0 {
		return 2 * initialRTT
	}
	return e.srtt + max(4*e.rttvar, time.Millisecond) + maxAckDelay
}

// armLocked sets the loss and probe timer for whichever comes first.
func (p *Path) armLocked(now time.Time) {
	k := p.pk
	if p.mu.closed {
		return
	}
	var at time.Time
	switch {
	case !k.lossTime.IsZero():
		at = k.lossTime
	case k.start < len(k.sent):
		at = k.lastSent.Add(p.ptoLocked() << min(k.ptoCount, 10))
	default:
		k.timer.Stop()
		return
	}
	k.timer.Reset(max(at.Sub(now), 0))
}

// lostSet collects what packets declared lost carried, for after the lock is let go.
type lostSet struct {
	carried  []Carried
	critical [][]byte
	ping     bool
}

// onTimer runs the loss and probe timer.
func (p *Path) onTimer() {
	now := time.Now()
	var ls lostSet
	p.mu.Lock()
	if p.mu.closed {
		p.mu.Unlock()
		return
	}
	k := p.pk
	switch {
	case !k.lossTime.IsZero():
		if !now.Before(k.lossTime) {
			p.detectLostLocked(now, &ls)
		} // else the timer was armed for a probe timeout that an acknowledgement moved
	case k.start < len(k.sent) && !now.Before(k.lastSent.Add(p.ptoLocked()<<min(k.ptoCount, 10))):
		// Nothing acknowledged for a probe timeout: send two probes, which the peer must
		// acknowledge, so the loss of what is in flight shows (RFC 9002, 6.2.4).
		k.ptoCount++
		k.ptoProbes = 2
	}
	p.armLocked(now)
	p.mu.Unlock()
	p.afterLoss(&ls)
	p.kickWriter()
}

// afterLoss hands the engine what lost packets carried and queues again what the path itself
// must resend.
func (p *Path) afterLoss(ls *lostSet) {
	if len(ls.carried) > 0 {
		if lh, ok := p.h.(LossHandler); ok {
			lh.Lost(p, ls.carried)
		}
	}
	for _, b := range ls.critical {
		r := NewRecord()
		r.B = append(r.B, b...)
		p.enqueueCritical(r)
	}
	if ls.ping {
		p.mu.Lock()
		seq, out := p.mu.pingSeq, !p.mu.pingAt.IsZero()
		p.mu.Unlock()
		if out {
			r := NewRecord()
			r.B = wire.AppendPing(r.B, seq)
			p.enqueue(r, true)
		}
	}
}

// detectLostLocked declares lost the packets below the largest acknowledged that three later
// ones overtook or that were sent 9/8 of the RTT before a later one was acknowledged.
func (p *Path) detectLostLocked(now time.Time, ls *lostSet) {
	k := p.pk
	k.lossTime = time.Time{}
	if !k.hasAcked {
		return
	}
	delay := max(max(p.mu.est.srtt, k.latestRTT)*9/8, time.Millisecond)
	var first, last time.Time
	for i := k.start; i < len(k.sent); i++ {
		sp := &k.sent[i]
		if sp.done {
			continue
		}
		if sp.pn > k.largestAcked {
			break
		}
		if k.largestAcked-sp.pn < k.threshold && now.Sub(sp.at) < delay {
			if t := sp.at.Add(delay); k.lossTime.IsZero() || t.Before(k.lossTime) {
				k.lossTime = t
			}
			continue
		}
		p.declareLostLocked(sp, now, ls)
		if sp.probe == 0 {
			if first.IsZero() {
				first = sp.at
			}
			last = sp.at
		}
	}
	// Persistent congestion (RFC 9002, 7.6): losses spanning three probe timeouts with nothing
	// acknowledged between them mean the window was far too large.
	if !first.IsZero() && last.Sub(first) > 3*p.ptoLocked() {
		k.cc.collapse(now)
	}
	k.trimLocked()
}

// declareLostLocked gives up on one packet.
func (p *Path) declareLostLocked(sp *sentPacket, now time.Time, ls *lostSet) {
	k := p.pk
	sp.done = true
	if sp.pong != 0 {
		k.pongsOut--
	}
	k.lostPackets++
	k.recentLost[k.nextLost] = sp.pn + 1
	k.nextLost = (k.nextLost + 1) % len(k.recentLost)
	if sp.counted {
		k.inflight -= sp.size
	}
	if sp.critical != nil {
		ls.critical = append(ls.critical, sp.critical)
		sp.critical = nil
	}
	if sp.probe > 0 {
		if sp.probe == k.probeSize {
			k.probeSize = 0
			k.probeFails++
			if k.probeFails >= probeTries {
				k.probeHi, k.probeFails = sp.probe-1, 0
			}
		}
		return // a probe's loss says its size is too large, nothing about congestion
	}
	if sp.chal {
		// A challenge to an address that never answers (a spoofed one) says nothing about
		// congestion either; it goes again while the address is still the candidate.
		if k.chal != 0 {
			k.chalDue = true
		}
		return
	}
	p.mu.est.loss += (1 - p.mu.est.loss) / 64
	k.cc.lost(sp.at, now)
	if sp.size > k.c.BaseDatagramSize() {
		// Black hole detection (RFC 8899, 4.3): full-size packets lost in a row, none
		// acknowledged for three probe timeouts while small ones were, mean the path's MTU
		// fell without an error saying so. A congested queue drops runs of large packets
		// too, but the ones after them arrive, well within that time.
		k.bigLosses++
		quiet := now.Sub(k.lastBigAck) > 3*p.ptoLocked() && k.lastSmallAck.After(k.lastBigAck)
		if k.bigLosses >= blackHoleLosses && quiet && k.mtu > k.c.BaseDatagramSize() {
			k.probeHi, k.probeFails, k.probeRaise = k.mtu-1, 0, false
			k.mtu, k.bigLosses = k.c.BaseDatagramSize(), 0
			k.probeAt = now.Add(time.Second)
			k.cc.setMSS(k.mtu)
		}
	}
	ls.carried = append(ls.carried, sp.carried...)
	if sp.ping != 0 && sp.ping == p.mu.pingSeq {
		ls.ping = true
	}
	if sp.pong != 0 && sp.pong == p.mu.pongSeq {
		p.mu.pongPending = true
	}
}

// trimLocked drops settled packets from the front of the queue.
func (k *pkState) trimLocked() {
	for k.start < len(k.sent) && k.sent[k.start].done {
		k.start++
	}
	if k.start == len(k.sent) {
		k.sent, k.start = k.sent[:0], 0
	} else if k.start > 1024 && k.start > len(k.sent)/2 {
		n := copy(k.sent, k.sent[k.start:])
		// The slots past n still point at carried lists the moved packets now own: clear
		// them, or trackLocked would reuse a live packet's list for a new one.
		clear(k.sent[n:])
		k.sent, k.start = k.sent[:n], 0
	}
}

// byNumber orders packets in flight by packet number, for binary searches of the queue.
func byNumber(sp sentPacket, pn uint64) int { return cmp.Compare(sp.pn, pn) }

// find returns the index of the packet numbered pn, or -1.
func (k *pkState) find(pn uint64) int {
	i, ok := slices.BinarySearchFunc(k.sent[k.start:], pn, byNumber)
	if !ok {
		return -1
	}
	return k.start + i
}

// onAck takes a PATH_ACK (reader goroutine).
func (p *Path) onAck(f *wire.Frame) error {
	now := time.Now()
	var ls lostSet
	p.mu.Lock()
	k := p.pk
	if f.Seq >= k.next {
		p.mu.Unlock()
		return fmt.Errorf("%w: PATH_ACK of packet %d, never sent", ErrRecord, f.Seq)
	}
	marks := 0 // our packets newly reported marked
	if f.Type == wire.TypePathAckCE && f.Limit > k.marked && k.newestAcked(f) != nil {
		// More of our packets met congestion (RFC 9002, 7.1), noted before the
		// acknowledged packets grow the window. The window answers the share marked when
		// the round ends (cubic.ackedRound); nothing is resent. Only an acknowledgement of
		// something new counts: a copy, or one overtaken by a later one, says nothing new.
		// A peer's count cannot make the round's sum overflow.
		marks = int(min(f.Limit-k.marked, 1<<30))
		k.marked = f.Limit
		k.cc.marked()
	}
	var newest *sentPacket
	newly := 0 // packets this acknowledgement acknowledges for the first time
	for rg := range wire.AckRanges(f) {
		for i, l := range k.recentLost {
			if l != 0 && l-1 >= rg.Lo && l-1 <= rg.Hi {
				k.recentLost[i] = 0
				k.spurious++
				k.threshold = min(k.threshold+1, maxThreshold)
			}
		}
		// Walk the packets in flight inside the range: from the first at or above Lo.
		i, _ := slices.BinarySearchFunc(k.sent[k.start:], rg.Lo, byNumber)
		for i += k.start; i < len(k.sent) && k.sent[i].pn <= rg.Hi; i++ {
			sp := &k.sent[i]
			if sp.done {
				continue
			}
			sp.done = true
			if sp.pong != 0 {
				k.pongsOut--
			}
			k.acked++
			newly++
			if newest == nil || sp.pn > newest.pn {
				newest = sp
			}
			if sp.counted {
				k.cc.acked(sp.size, sp.at, now, p.mu.est.srtt, k.inflight)
				k.inflight -= sp.size
				if sp.size > k.c.BaseDatagramSize() {
					k.bigLosses, k.lastBigAck = 0, now
				} else {
					k.lastSmallAck = now
				}
			}
			if sp.probe > 0 {
				if sp.probe > k.mtu {
					k.mtu = sp.probe
					k.cc.setMSS(k.mtu)
				}
				if sp.probe == k.probeSize {
					k.probeSize, k.probeFails = 0, 0
				}
			}
			if sp.critical != nil {
				sp.critical = nil
				k.critical--
			}
			p.mu.est.loss -= p.mu.est.loss / 64
		}
	}
	if newest != nil {
		k.cc.ackedRound(newly, marks, newest.at, now)
		if !k.hasAcked || f.Seq > k.largestAcked {
			k.hasAcked, k.largestAcked = true, f.Seq
		}
		if newest.pn == f.Seq {
			// An RTT sample (RFC 9002, 5.3): the peer's delay is taken off unless that
			// would make the sample shorter than the shortest seen.
			rtt := now.Sub(newest.at)
			k.latestRTT = rtt
			// Clamped before it becomes a Duration: a peer's huge value must not overflow.
			delay := time.Duration(min(f.Offset, uint64(maxAckDelay/time.Microsecond))) * time.Microsecond
			if e := &p.mu.est; e.samples > 0 && rtt-delay >= e.minRTT {
				rtt -= delay
			}
			if !p.spansPauseLocked(newest.at, now, rtt) {
				p.mu.est.sample(now, rtt, false)
			}
			if srtt := p.mu.est.srtt; srtt > 0 && float64(k.inflight+newest.size) >= k.cc.cwnd/2 {
				// The rate a Bond reads: what the window lets through per round trip, once
				// the window was what limited the path. Before that it stays unknown (0), so
				// a Bond tries the path instead of judging it by a window it never filled.
				p.rate.Store(math.Float64bits(k.cc.cwnd / srtt.Seconds()))
			}
		}
		k.ptoCount = 0
		p.detectLostLocked(now, &ls)
		if !k.isConfirmed && k.critical == 0 {
			k.isConfirmed = true
			close(k.confirmed)
		}
	}
	k.trimLocked()
	p.armLocked(now)
	notify := p.mu.wantWritable && k.spaceLocked(p) > 0 && !p.mu.closed
	if notify {
		p.mu.wantWritable = false
	}
	p.mu.Unlock()
	p.afterLoss(&ls)
	if notify {
		p.h.Writable(p)
	}
	p.kickWriter()
	return nil
}

// newestAcked is the highest packet in flight that f acknowledges, or nil.
func (k *pkState) newestAcked(f *wire.Frame) *sentPacket {
	for rg := range wire.AckRanges(f) {
		// The first packet above Hi, then down while still in the range.
		i, _ := slices.BinarySearchFunc(k.sent[k.start:], rg.Hi+1, byNumber)
		for i += k.start - 1; i >= k.start && k.sent[i].pn >= rg.Lo; i-- {
			if !k.sent[i].done {
				return &k.sent[i]
			}
		}
	}
	return nil
}

// received notes a packet that authenticated, for the next PATH_ACK (reader goroutine);
// marked says the carrier saw it meet congestion.
func (p *Path) receivedLocked(pn uint64, eliciting, marked bool, now time.Time) {
	k := p.pk
	inOrder := len(k.ranges) == 0 || pn == k.ranges[0].Hi+1
	switch {
	case len(k.ranges) == 0 || pn > k.ranges[0].Hi+1:
		k.ranges = slices.Insert(k.ranges, 0, wire.AckRange{Lo: pn, Hi: pn})
		k.largestAt = now
	case pn == k.ranges[0].Hi+1:
		k.ranges[0].Hi = pn
		k.largestAt = now
	default:
		// Below the newest: extend or fill in.
		for i := range k.ranges {
			r := &k.ranges[i]
			if pn >= r.Lo && pn <= r.Hi {
				break // a duplicate; the replay window drops those before here
			}
			if pn == r.Hi+1 {
				r.Hi = pn
				if i > 0 && k.ranges[i-1].Lo == pn+1 {
					k.ranges[i-1].Lo = r.Lo
					k.ranges = slices.Delete(k.ranges, i, i+1)
				}
				break
			}
			if pn+1 == r.Lo {
				r.Lo = pn
				if i+1 < len(k.ranges) && k.ranges[i+1].Hi+1 == pn {
					r.Lo = k.ranges[i+1].Lo
					k.ranges = slices.Delete(k.ranges, i+1, i+2)
				}
				break
			}
			if pn > r.Hi {
				k.ranges = slices.Insert(k.ranges, i, wire.AckRange{Lo: pn, Hi: pn})
				break
			}
			if i == len(k.ranges)-1 {
				k.ranges = append(k.ranges, wire.AckRange{Lo: pn, Hi: pn})
				break
			}
		}
	}
	if len(k.ranges) > maxAckRanges {
		k.ranges = k.ranges[:maxAckRanges]
	}
	if !eliciting {
		return
	}
	k.unacked++
	k.received++
	if marked {
		k.markedIn++
	}
	// Every second packet at first, so a new path's window grows at once; then every tenth,
	// as TCP with GRO acknowledges, since at a million packets a second each acknowledgement
	// is a system call at each end. Out of order, at once: the sender learns of a loss
	// sooner. Marked as having met congestion, at once too (once a round trip): the sender
	// should slow down before the queue overflows. Otherwise within a quarter of the RTT,
	// never more than maxAckDelay.
	every := 2
	if k.received > 100 {
		every = 10
	}
	// A mark is urgent once a round trip: the sender answers the share of packets marked
	// once per round trip, and every later acknowledgement carries the count, so an
	// acknowledgement for each would only cost the receiver, which is already behind.
	urgent := marked && now.Sub(k.markAckAt) >= p.mu.est.srtt
	if k.unacked >= every || !inOrder || urgent {
		k.ackAt = now
	} else if k.ackAt.IsZero() {
		d := maxAckDelay
		if e := &p.mu.est; e.samples > 0 {
			d = min(d, max(e.srtt/4, time.Millisecond))
		}
		k.ackAt = now.Add(d)
		k.ackTimer.Reset(d)
	}
}

// appendAckLocked appends the PATH_ACK due, if any, within room bytes.
func (p *Path) appendAckLocked(b []byte, room int, now time.Time, force bool) []byte {
	k := p.pk
	if k.unacked == 0 || (!force && now.Before(k.ackAt)) || len(k.ranges) == 0 {
		return b
	}
	// The reader may have noted the newest packet after the writer read the clock.
	delay := uint64(max(now.Sub(k.largestAt), 0) / time.Microsecond)
	n := len(k.ranges)
	for n > 0 && wire.PathAckLen(delay, k.ranges[:n], k.markedIn) > room {
		n--
	}
	if n == 0 {
		return b
	}
	k.unacked, k.ackAt = 0, time.Time{}
	if k.markedIn > k.markedAck {
		k.markedAck, k.markAckAt = k.markedIn, now
	}
	return wire.AppendPathAck(b, delay, k.ranges[:n], k.markedIn)
}

// newChallenge draws the data of a PATH_CHALLENGE: never 0, which means none.
func newChallenge() uint64 {
	var b [8]byte
	for {
		rand.Read(b[:])
		if v := binary.BigEndian.Uint64(b[:]); v != 0 {
			return v
		}
	}
}

// run runs a packet path: its timers, then its writer and its reader.
func (k *pkState) run(p *Path) {
	p.mu.Lock()
	k.timer = time.AfterFunc(time.Hour, p.onTimer)
	k.timer.Stop()
	k.ackTimer = time.AfterFunc(time.Hour, p.kickWriter)
	k.ackTimer.Stop()
	// Records queued before Start (a JOIN_PROOF) must arrive: they are sent again until
	// acknowledged, and Confirmed waits for them.
	for _, r := range p.mu.pq {
		r.SetCritical()
		k.critical++
	}
	p.startProbesLocked()
	p.mu.Unlock()
	p.launch(p.routineWritePackets, p.routineReadPackets)
	p.kickWriter()
}

// stopLocked stops the loss and acknowledgement timers (none before Start).
func (k *pkState) stopLocked(*Path) {
	if k.timer != nil {
		k.timer.Stop()
		k.ackTimer.Stop()
	}
}

// enqueueCritical queues again a critical record whose packet was lost.
func (p *Path) enqueueCritical(r *Record) {
	r.SetCritical()
	p.enqueue(r, true)
}
