package netlab

import (
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// DelayConfig describes the delay node of one path: an emulated WAN link that the path's
// packets cross in both directions. Each direction gets its own delay line with these settings
// (the link is symmetric) and its own counters. The zero value means no node: the path is a
// plain veth pair, as in a lab without delays.
//
// A packet entering a line first meets random loss, then the rate stage, a FIFO served at
// RateBits, whose queue holds at most QueueBytes (tail drop), then the propagation delay,
// Delay plus a jitter drawn uniformly from [-Jitter, +Jitter]. Packets leave in the order they
// came: one whose draw would overtake its predecessor leaves right after it instead, so with
// packets closer together than the jitter the delay distribution leans upwards.
//
// Offloads. Moving every packet through the node's code costs a read and a write each, which
// at a gigabit is most of a core taken from the programs under test. So where it changes
// nothing that matters, the node's TUN devices offer the kernel TCP segmentation (and UDP
// segmentation where the kernel has it, Linux 6.2 on) and checksum offload: the kernel then
// hands the node the super-packets its senders built (up to 64 KiB, one read) and the node
// writes them on whole, for the kernel to segment or deliver as they are. The node counts a
// super-packet as the packets it stands for: the rate stage and the queue take the bytes its
// segments would have on the wire, headers included, and the counters count segments. What
// differs from a line that sees every segment: a super-packet leaves when its last segment
// would have, so the segments before it leave up to its serialisation time late; it is
// queued or tail-dropped whole; its segments share one delay draw. The node therefore uses
// offloads only without RateBits or at rates that serialise 64 KiB within a millisecond
// (about 524 Mbit/s and more), and never with LossPercent, which must hit packets one by one
// (a lossy node reads them one at a time). DisableOffload turns them off; a kernel that
// refuses them gets the same. DelayStats.Offload says which mode a node is in.
//
// Limits: the node is Go code in the lab's process, so a loaded machine, the race detector or
// a garbage-collection pause only ever add to the configured delay, and packets that should
// have left during such a stall leave together afterwards; the configured values are lower
// bounds, and so are round trips measured through the node. The rate is kept by giving each
// packet its departure time, not by the kernel, so it holds on average rather than per
// packet. A line's memory is sized for what it can hold, RateBits times Delay+Jitter in
// flight plus the queue, with a quarter to spare (24 MiB to 256 MiB; 32 MiB without a
// rate), and it holds at most one packet (or super-packet) per KiB of that, and at least
// 16384; Dropped counts the rest. Only IPv4 crosses the node. tbf with a large latency
// (seconds, via `tc ... tbf latency 2s` through Lab.Exec) on c<i> or s<i> is the kernel's own
// bloated queue; a large QueueBytes is the same in the node.
type DelayConfig struct {
	// Delay is the one-way delay of each direction; the round trip is twice as long, plus
	// the time the packets wait in the queue.
	Delay time.Duration
	// Jitter spreads each packet's delay uniformly over Delay±Jitter, never below zero.
	Jitter time.Duration
	// RateBits is the link rate in bits per second; 0 means unlimited (no queue).
	RateBits int64
	// QueueBytes bounds the bytes waiting for, or in, serialisation at RateBits; a packet
	// that does not fit is dropped and counted in LineStats.Dropped. An empty queue always
	// takes one packet, whatever its size. 0 means 20 ms worth of RateBits, at least
	// 16 KiB. Seconds worth of RateBits make a bloated cellular queue. It needs RateBits.
	QueueBytes int
	// LossPercent drops that share of the packets at random, in 0..100, counted in
	// LineStats.Lost. It turns the node's offloads off.
	LossPercent float64
	// Seed seeds the pseudo-random loss and jitter, so that a run can be repeated: the
	// two directions draw from two streams of the same seed.
	Seed uint64
	// DisableOffload makes the node read every packet on its own even where offloads
	// would do (see above): exact per-packet timing, for a lot more CPU at high rates.
	DisableOffload bool
}

// LineStats counts what one direction of a delay node did with the packets it read. A
// super-packet counts as the packets it stands for.
type LineStats struct {
	// Forwarded and ForwardedBytes count the packets written out after their delay, and
	// their bytes on the wire, whole IP packets.
	Forwarded, ForwardedBytes uint64
	// Dropped counts tail drops: the rate queue was full, or the line already held as
	// much as it may, or the packet could not be written out.
	Dropped uint64
	// Lost counts the packets dropped by LossPercent.
	Lost uint64
	// Reads and Writes count the node's reads from one TUN device and its writes to the
	// other, which is what the devices' own packet counters show: with offloads one of
	// them may carry a super-packet of many packets.
	Reads, Writes uint64
}

// DelayStats holds the counters of both directions of a path's delay node.
type DelayStats struct {
	ToServer, ToClient LineStats
	// Offload is what the node's devices hand it per read (see DelayConfig).
	Offload Offload
}

const (
	// maxDelay bounds Delay+Jitter: far beyond any real path, well short of a stuck test.
	maxDelay = 30 * time.Second
	// defaultQueueTime and minQueueBytes give the default QueueBytes; 16 KiB keeps about
	// ten full-size packets at low rates.
	defaultQueueTime = 20 * time.Millisecond
	minQueueBytes    = 16 << 10
	// maxRead is the largest frame a read can return: a 64 KiB super-packet behind its
	// virtio header. Without offloads no packet exceeds the devices' MTU.
	maxRead = vnetHdrLen + 1<<16
	// maxBurstTime is the longest a super-packet may take to serialise at RateBits for the
	// node to use offloads (see DelayConfig).
	maxBurstTime = time.Millisecond
	// The bytes a line holds (see holdBytes). minHoldBytes is what 16384 full-size packets
	// take, which lines held before they had rings: a node that cannot keep up, such as
	// one reading packet by packet at a gigabit on a busy machine, falls that far behind
	// before it drops. Without a rate, defaultHoldBytes holds a 25 ms delay at 10 Gbit/s.
	minHoldBytes     = 24 << 20
	defaultHoldBytes = 32 << 20
	maxHoldBytes     = 256 << 20
	// A line holds at most one packet per KiB of its bytes, and at least minHeldPackets,
	// so that small packets cannot pile up in a large ring without end.
	minHeldPackets = 16384
)

func (c DelayConfig) isZero() bool { return c == DelayConfig{} }

func (c DelayConfig) validate(i int) error {
	var errs []error
	if c.Delay < 0 || c.Jitter < 0 || c.Delay > maxDelay || c.Jitter > maxDelay-c.Delay {
		errs = append(errs, fmt.Errorf("Delay and Jitter must not be negative and sum to at most %v, got %v and %v", maxDelay, c.Delay, c.Jitter))
	}
	if c.RateBits < 0 {
		errs = append(errs, fmt.Errorf("RateBits is negative (%d)", c.RateBits))
	}
	if c.QueueBytes < 0 {
		errs = append(errs, fmt.Errorf("QueueBytes is negative (%d)", c.QueueBytes))
	} else if c.QueueBytes > 0 && c.RateBits == 0 {
		errs = append(errs, fmt.Errorf("QueueBytes (%d) needs a RateBits: without a rate there is no queue", c.QueueBytes))
	}
	if !(c.LossPercent >= 0 && c.LossPercent <= 100) {
		errs = append(errs, fmt.Errorf("LossPercent must be in 0..100, got %v", c.LossPercent))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("netlab: Delay[%d]: %w", i, err)
	}
	return nil
}

// queueBytes is QueueBytes with its default applied.
func (c DelayConfig) queueBytes() int {
	if c.QueueBytes > 0 {
		return c.QueueBytes
	}
	b := int(c.RateBits / 8 * int64(defaultQueueTime) / int64(time.Second))
	return max(b, minQueueBytes)
}

// offload is the mode the node asks its devices for; they may give less.
func (c DelayConfig) offload() Offload {
	if c.DisableOffload || c.LossPercent > 0 {
		return OffloadNone
	}
	if c.RateBits > 0 && float64(1<<16)*8/float64(c.RateBits) > maxBurstTime.Seconds() {
		return OffloadNone
	}
	return OffloadTCPUDP
}

// holdBytes is the size of each line's ring: what the line holds at most when its queue is
// full, RateBits times Delay+Jitter serialised and waiting out their delay plus QueueBytes,
// with a quarter to spare for the room a ring loses at its end, for the virtio headers and
// for a writer running late, and never less than minHoldBytes.
func (c DelayConfig) holdBytes() int {
	if c.RateBits == 0 {
		return defaultHoldBytes
	}
	inFlight := float64(c.RateBits) / 8 * (c.Delay + c.Jitter).Seconds()
	b := (inFlight+float64(c.queueBytes()))*5/4 + 2*maxRead
	return int(min(max(b, minHoldBytes), maxHoldBytes))
}

// heldPackets bounds the packets (or super-packets) a line holds.
func (c DelayConfig) heldPackets() int {
	return max(c.holdBytes()>>10, minHeldPackets)
}

// schedule is the timing state of one line: the rate stage and the order of departures. It
// is a plain value driven by explicit times so that its arithmetic is tested without a clock.
type schedule struct {
	cfg         DelayConfig
	queue       int
	rng         *rand.Rand
	busyUntil   time.Time // when the rate stage has serialised everything admitted
	lastRelease time.Time
}

type verdict int

const (
	admit verdict = iota
	dropQueue
	dropLoss
)

func newSchedule(cfg DelayConfig, stream uint64) *schedule {
	return &schedule{cfg: cfg, queue: cfg.queueBytes(), rng: rand.New(rand.NewPCG(cfg.Seed, stream))}
}

// next decides the fate of a packet of size bytes on the wire arriving at now and, when it
// is admitted, the time it is to leave the line. A super-packet comes as one, with its
// segments' bytes; the loss draw is then never made, as a lossy node has no offloads.
func (s *schedule) next(now time.Time, size int) (time.Time, verdict) {
	if s.cfg.LossPercent > 0 && s.rng.Float64()*100 < s.cfg.LossPercent {
		return time.Time{}, dropLoss
	}
	out := now
	if r := s.cfg.RateBits; r > 0 {
		var backlog float64 // bytes not yet serialised
		if s.busyUntil.After(now) {
			backlog = float64(s.busyUntil.Sub(now)) * float64(r) / 8e9
		} else {
			s.busyUntil = now
		}
		if backlog > 0 && backlog+float64(size) > float64(s.queue) {
			return time.Time{}, dropQueue
		}
		s.busyUntil = s.busyUntil.Add(time.Duration(math.Ceil(float64(size) * 8e9 / float64(r))))
		out = s.busyUntil
	}
	d := s.cfg.Delay
	if j := s.cfg.Jitter; j > 0 {
		d += time.Duration(s.rng.Int64N(2*int64(j)+1)) - j
		d = max(d, 0)
	}
	release := out.Add(d)
	if release.Before(s.lastRelease) {
		release = s.lastRelease
	}
	s.lastRelease = release
	return release, admit
}

// packet is one frame held by a line until its release: where it sits in the line's ring,
// and the packets on the wire and the bytes it stands for.
type packet struct {
	start, end     int64
	release        time.Time
	packets, bytes int
}

// line moves packets from one TUN device to another through a schedule. A reader goroutine
// reads, decides and queues; a writer goroutine waits for each release and writes. Both end
// when the line is stopped. Frames carry a virtio header when vnet is set (see vnet.go).
type line struct {
	in, out io.ReadWriteCloser
	vnet    bool
	sched   *schedule
	ring    *ring
	held    chan packet
	done    chan struct{}

	forwarded, forwardedBytes, dropped, lost, reads, writes atomic.Uint64
}

func newLine(cfg DelayConfig, stream uint64, vnet bool, in, out io.ReadWriteCloser) *line {
	return &line{
		in:    in,
		out:   out,
		vnet:  vnet,
		sched: newSchedule(cfg, stream),
		ring:  newRing(cfg.holdBytes()),
		held:  make(chan packet, cfg.heldPackets()),
	}
}

func (ln *line) start(wg *sync.WaitGroup, done chan struct{}) {
	ln.done = done
	wg.Add(2)
	go func() {
		defer wg.Done()
		ln.read()
	}()
	go func() {
		defer wg.Done()
		ln.write()
	}()
}

// read reads each frame straight into the ring, where it stays until the writer is done
// with it. Only when the ring has no room for the largest frame does a read go to a spare
// buffer, and its frame into the ring if it fits there.
func (ln *line) read() {
	var spare []byte
	for {
		start, buf := ln.ring.reserve(maxRead)
		inRing := buf != nil
		if !inRing {
			if spare == nil {
				spare = make([]byte, maxRead)
			}
			buf = spare
		}
		n, err := ln.in.Read(buf)
		if err != nil {
			// Closed by stop, or the device is gone; either way the line is over.
			return
		}
		if n == 0 {
			continue
		}
		ln.reads.Add(1)
		frame := buf[:n]
		pkts, size := wireSize(frame, ln.vnet)
		if n == len(buf) {
			// It may have been cut short; no device sends that much in one packet.
			ln.dropped.Add(uint64(pkts))
			continue
		}
		release, v := ln.sched.next(time.Now(), size)
		switch v {
		case dropLoss:
			ln.lost.Add(uint64(pkts))
			continue
		case dropQueue:
			ln.dropped.Add(uint64(pkts))
			continue
		}
		// Only this goroutine sends, so a channel with room now still has it below.
		if len(ln.held) == cap(ln.held) {
			ln.dropped.Add(uint64(pkts))
			continue
		}
		if !inRing {
			if start, buf = ln.ring.reserve(n); buf == nil {
				ln.dropped.Add(uint64(pkts))
				continue
			}
			copy(buf, frame)
		}
		end := start + int64(n)
		ln.ring.commit(end)
		ln.held <- packet{start: start, end: end, release: release, packets: pkts, bytes: size}
	}
}

func (ln *line) write() {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		var p packet
		select {
		case <-ln.done:
			return
		case p = <-ln.held:
		}
		if d := time.Until(p.release); d > 0 {
			timer.Reset(d)
			select {
			case <-ln.done:
				return
			case <-timer.C:
			}
		}
		_, err := ln.out.Write(ln.ring.at(p.start, p.end))
		ln.ring.release(p.end)
		if err != nil {
			if errors.Is(err, os.ErrClosed) {
				return
			}
			ln.dropped.Add(uint64(p.packets))
			continue
		}
		ln.writes.Add(1)
		ln.forwarded.Add(uint64(p.packets))
		ln.forwardedBytes.Add(uint64(p.bytes))
	}
}

func (ln *line) stats() LineStats {
	return LineStats{
		Forwarded:      ln.forwarded.Load(),
		ForwardedBytes: ln.forwardedBytes.Load(),
		Dropped:        ln.dropped.Load(),
		Lost:           ln.lost.Load(),
		Reads:          ln.reads.Load(),
		Writes:         ln.writes.Load(),
	}
}

// delayNode is the running node of one path: two TUN devices in the router namespace and a
// line each way between them.
type delayNode struct {
	// clientTun carries the packets coming from the client side (read) and the ones
	// going back to it (written); serverTun likewise for the server side.
	clientTun, serverTun io.ReadWriteCloser
	offload              Offload
	up, down             *line // up: client to server
	done                 chan struct{}
	wg                   sync.WaitGroup
	stopOnce             sync.Once
}

// newDelayNode makes the node on two devices that both hand over frames as offload says;
// start starts it.
func newDelayNode(cfg DelayConfig, offload Offload, clientTun, serverTun io.ReadWriteCloser) *delayNode {
	n := &delayNode{clientTun: clientTun, serverTun: serverTun, offload: offload, done: make(chan struct{})}
	vnet := offload != OffloadNone
	n.up = newLine(cfg, 0, vnet, clientTun, serverTun)
	n.down = newLine(cfg, 1, vnet, serverTun, clientTun)
	return n
}

func (n *delayNode) start() {
	n.up.start(&n.wg, n.done)
	n.down.start(&n.wg, n.done)
}

// stop ends both lines and closes the devices, which removes them; packets still held are
// discarded. It returns once every goroutine of the node has returned.
func (n *delayNode) stop() error {
	var err error
	n.stopOnce.Do(func() {
		close(n.done)
		err = errors.Join(n.clientTun.Close(), n.serverTun.Close())
		n.wg.Wait()
	})
	return err
}

func (n *delayNode) stats() DelayStats {
	return DelayStats{ToServer: n.up.stats(), ToClient: n.down.stats(), Offload: n.offload}
}
