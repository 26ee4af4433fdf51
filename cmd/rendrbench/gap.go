package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"
)

// The failover stream: the sender writes one chunk every chunkEvery (8 Mbit/s, well below
// the 100 Mbit/s of a path, so every gap comes from the fault and not from queueing), each
// carrying its sequence number and send time; the receiver timestamps every chunk it
// completes.
const (
	gapChunk   = 1024
	chunkEvery = time.Millisecond
	// drainLimit bounds the wait for the stream's last bytes after the sender stops.
	drainLimit = 5 * time.Second
)

// gapEnds is a connected stream for one failover run, whichever stack carries it.
type gapEnds struct {
	snd, rcv net.Conn
	// ready, if set, is called once the stream runs; the steady period starts when it
	// returns.
	ready func() error
	// active returns the index of the lab path carrying the stream now.
	active func() (int, error)
	close  func()
}

// gapRun is what one failover run measured. Times are taken on the monotonic clock; sender
// and receiver share the process, so send and delivery times compare directly.
type gapRun struct {
	path int // lab path that was faulted
	// gap is the longest time the receiver went without a delivery after the fault began
	// while a chunk had already been written: for consecutive deliveries p and a, the wait
	// a.at-p.at less any part of it before a was even written. On a quiet machine it equals
	// the raw gap; on a loaded one it keeps the sender's own scheduling stalls out.
	gap    time.Duration
	rawGap time.Duration // longest time between consecutive deliveries after the fault began
	steady time.Duration // gap over the second before the fault: the noise floor
	delay  time.Duration // worst send-to-delivery time of a chunk delivered after the fault
	fault  time.Duration // how long applying the fault took
	// stuck: the stream had not recovered when the run ended; gap is then a lower bound.
	stuck bool
	// trace is when each chunk was delivered, from the instant the fault began (negative
	// before it): what -plot draws.
	trace []time.Duration
}

type arrival struct {
	at   time.Time
	sent time.Time
}

// measureGap streams for steady, applies fault to the active path, streams for after, then
// stops the sender and drains the receiver. Every wait is bounded.
func measureGap(e *gapEnds, steady, after time.Duration, fault func(path int) error) (gapRun, error) {
	var run gapRun
	base := time.Now()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var sendErr, recvErr error
	var got []arrival
	var limit time.Time
	wg.Add(2)
	go func() {
		defer wg.Done()
		sendErr = pacedSend(e.snd, base, stop)
	}()
	go func() {
		defer wg.Done()
		got, recvErr = timedReceive(e.rcv, base)
	}()
	// Whatever happens below, the goroutines end: the deadlines bound both directions.
	finish := func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		limit = time.Now().Add(drainLimit)
		e.snd.SetWriteDeadline(limit)
		e.rcv.SetReadDeadline(limit)
		wg.Wait()
	}

	if e.ready != nil {
		if err := e.ready(); err != nil {
			finish()
			return run, err
		}
	}
	time.Sleep(steady)
	i, err := e.active()
	if err != nil {
		finish()
		return run, fmt.Errorf("finding the active path: %w", err)
	}
	run.path = i
	tf := time.Now()
	if err := fault(i); err != nil {
		finish()
		return run, fmt.Errorf("fault on path %d: %w", i, err)
	}
	run.fault = time.Since(tf)
	time.Sleep(after)
	end := time.Now()
	finish()
	// A deadline means the stream was still stuck after the drain limit: a result (the gap
	// runs at least to the limit), not a failure of the bench.
	for _, err := range []error{sendErr, recvErr} {
		if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			return run, fmt.Errorf("stream: %w", err)
		}
		if err != nil {
			run.stuck = true
		}
	}
	if run.stuck {
		// A delivery at the limit with no send time: the wait since the previous one counts
		// whole.
		got = append(got, arrival{at: limit})
	}
	// Chunks delivered after end, while the receiver drains, count too: their wait is
	// part of the outage when the stream had not recovered by then.
	var prev time.Time
	delivered := false
	for _, a := range got {
		if !prev.IsZero() {
			raw := a.at.Sub(prev)
			g := a.at.Sub(maxTime(prev, a.sent))
			switch {
			case a.at.After(tf):
				run.rawGap = max(run.rawGap, raw)
				run.gap = max(run.gap, g)
			case a.at.After(tf.Add(-time.Second)):
				run.steady = max(run.steady, g)
			}
		}
		if !a.sent.IsZero() {
			run.trace = append(run.trace, a.at.Sub(tf))
		}
		if a.at.After(tf) && !a.sent.IsZero() {
			delivered = true
			run.delay = max(run.delay, a.at.Sub(a.sent))
		}
		prev = a.at
	}
	if !delivered {
		if !prev.IsZero() {
			run.gap = end.Sub(prev)
			run.rawGap = run.gap
		}
		return run, fmt.Errorf("nothing delivered in the %v after the fault", after)
	}
	return run, nil
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// pacedSend writes chunks stamped with their send time (nanoseconds since base on the
// monotonic clock) until stop, then half-closes.
func pacedSend(c net.Conn, base time.Time, stop <-chan struct{}) error {
	t := time.NewTicker(chunkEvery)
	defer t.Stop()
	buf := make([]byte, gapChunk)
	for seq := uint64(0); ; seq++ {
		select {
		case <-stop:
			return c.(closeWriter).CloseWrite()
		case <-t.C:
		}
		binary.BigEndian.PutUint64(buf[0:], seq)
		binary.BigEndian.PutUint64(buf[8:], uint64(time.Since(base)))
		if _, err := c.Write(buf); err != nil {
			return fmt.Errorf("chunk %d: %w", seq, err)
		}
	}
}

// timedReceive reads chunks to EOF, checking that none is lost, duplicated or reordered.
func timedReceive(c net.Conn, base time.Time) ([]arrival, error) {
	out := make([]arrival, 0, 16384)
	buf := make([]byte, gapChunk)
	for seq := uint64(0); ; seq++ {
		_, err := io.ReadFull(c, buf)
		now := time.Now()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, fmt.Errorf("after %d chunks: %w", seq, err)
		}
		if got := binary.BigEndian.Uint64(buf); got != seq {
			return out, fmt.Errorf("chunk %d arrived where %d was due: the stream lost or reordered bytes", got, seq)
		}
		sent := base.Add(time.Duration(binary.BigEndian.Uint64(buf[8:])))
		out = append(out, arrival{at: now, sent: sent})
	}
}
