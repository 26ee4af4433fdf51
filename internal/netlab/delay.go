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
// Limits: the node is Go code in the lab's process, so a loaded machine, the race detector or
// a garbage-collection pause only ever add to the configured delay, and packets that should
// have left during such a stall leave together afterwards; the configured values are lower
// bounds, and so are round trips measured through the node. The rate is kept by giving each
// packet its departure time, not by the kernel, so it holds on average rather than per
// packet. A line holds at most 16384 packets (Dropped counts the rest). Only IPv4 crosses the
// node. tbf with a large latency (seconds, via `tc ... tbf latency 2s` through Lab.Exec) on
// c<i> or s<i> is the kernel's own bloated queue; a large QueueBytes is the same in the node.
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
	// LineStats.Lost.
	LossPercent float64
	// Seed seeds the pseudo-random loss and jitter, so that a run can be repeated: the
	// two directions draw from two streams of the same seed.
	Seed uint64
}

// LineStats counts what one direction of a delay node did with the packets it read.
type LineStats struct {
	// Forwarded and ForwardedBytes count the packets written out after their delay; the
	// bytes are whole IP packets.
	Forwarded, ForwardedBytes uint64
	// Dropped counts tail drops: the rate queue was full, or the line already held
	// maxHeldPackets, or the packet could not be written out.
	Dropped uint64
	// Lost counts the packets dropped by LossPercent.
	Lost uint64
}

// DelayStats holds the counters of both directions of a path's delay node.
type DelayStats struct {
	ToServer, ToClient LineStats
}

const (
	// maxDelay bounds Delay+Jitter: far beyond any real path, well short of a stuck test.
	maxDelay = 30 * time.Second
	// maxHeldPackets bounds what one line holds, queued and in flight: with RateBits the
	// queue and rate bound it already, without a rate this is what bounds the memory
	// (some 24 MiB of full-size packets).
	maxHeldPackets = 16384
	// defaultQueueTime and minQueueBytes give the default QueueBytes; 16 KiB keeps about
	// ten full-size packets at low rates.
	defaultQueueTime = 20 * time.Millisecond
	minQueueBytes    = 16 << 10
	// maxPacket is the read buffer: more than the MTU of the TUN devices, which never
	// hand over more than their MTU since they offer no offloads.
	maxPacket = 1 << 16
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

// next decides the fate of a packet of size bytes arriving at now and, when it is admitted,
// the time it is to leave the line.
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

// packet is one IP packet held by a line until its release.
type packet struct {
	data    []byte
	release time.Time
}

// line moves packets from one TUN device to another through a schedule. A reader goroutine
// reads, decides and queues; a writer goroutine waits for each release and writes. Both end
// when the line is stopped.
type line struct {
	in, out io.ReadWriteCloser
	sched   *schedule
	held    chan packet
	done    chan struct{}

	forwarded, forwardedBytes, dropped, lost atomic.Uint64
}

func newLine(cfg DelayConfig, stream uint64, in, out io.ReadWriteCloser) *line {
	return &line{
		in:    in,
		out:   out,
		sched: newSchedule(cfg, stream),
		held:  make(chan packet, maxHeldPackets),
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

func (ln *line) read() {
	buf := make([]byte, maxPacket)
	for {
		n, err := ln.in.Read(buf)
		if err != nil {
			// Closed by stop, or the device is gone; either way the line is over.
			return
		}
		if n == 0 {
			continue
		}
		release, v := ln.sched.next(time.Now(), n)
		switch v {
		case dropLoss:
			ln.lost.Add(1)
			continue
		case dropQueue:
			ln.dropped.Add(1)
			continue
		}
		select {
		case ln.held <- packet{data: append([]byte(nil), buf[:n]...), release: release}:
		default:
			ln.dropped.Add(1)
		}
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
		if _, err := ln.out.Write(p.data); err != nil {
			if errors.Is(err, os.ErrClosed) {
				return
			}
			ln.dropped.Add(1)
			continue
		}
		ln.forwarded.Add(1)
		ln.forwardedBytes.Add(uint64(len(p.data)))
	}
}

func (ln *line) stats() LineStats {
	return LineStats{
		Forwarded:      ln.forwarded.Load(),
		ForwardedBytes: ln.forwardedBytes.Load(),
		Dropped:        ln.dropped.Load(),
		Lost:           ln.lost.Load(),
	}
}

// delayNode is the running node of one path: two TUN devices in the router namespace and a
// line each way between them.
type delayNode struct {
	// clientTun carries the packets coming from the client side (read) and the ones
	// going back to it (written); serverTun likewise for the server side.
	clientTun, serverTun io.ReadWriteCloser
	up, down             *line // up: client to server
	done                 chan struct{}
	wg                   sync.WaitGroup
	stopOnce             sync.Once
}

func newDelayNode(cfg DelayConfig, clientTun, serverTun io.ReadWriteCloser) *delayNode {
	n := &delayNode{clientTun: clientTun, serverTun: serverTun, done: make(chan struct{})}
	n.up = newLine(cfg, 0, clientTun, serverTun)
	n.down = newLine(cfg, 1, serverTun, clientTun)
	n.up.start(&n.wg, n.done)
	n.down.start(&n.wg, n.done)
	return n
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
	return DelayStats{ToServer: n.up.stats(), ToClient: n.down.stats()}
}
