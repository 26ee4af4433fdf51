package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rendr-go/rendr"
)

// The first byte of every flow tells the listening side what the flow is for.
const (
	kindMain = 'M' // the long flow that streams both ways
	kindEcho = 'E' // a short flow whose bytes come straight back
)

// chunk is the size of each Write and Read on the main flow.
const chunk = 64 << 10

// direction is one direction of the main flow, seen from both of its ends. The two ends run
// in this process, so they can share it: the sender and the receiver each draw the same
// pseudo-random stream from a generator seeded alike, and each hashes what it handled.
type direction struct {
	name string // "up" (dialer to listener) or "down"
	seed [32]byte

	sent, recv atomic.Int64 // application bytes written and read so far
	finished   atomic.Bool  // the sender half-closed: from now on EOF is expected

	// Written once by the goroutine that owns each end, read after both are joined.
	sentSum, recvSum []byte
}

func newDirection(name string, seed uint64) *direction {
	return &direction{name: name, seed: sha256.Sum256(fmt.Appendf(nil, "rendr demo %d %s", seed, name))}
}

// send writes the direction's stream to c until stop closes, pacing it to rate bytes per
// second (0: as fast as rendr takes it), then half-closes so the receiver reads EOF.
func (d *direction) send(c *rendr.Conn, rate float64, stop <-chan struct{}, rep *report) {
	gen := rand.NewChaCha8(d.seed)
	sum := sha256.New()
	buf := make([]byte, chunk)
	p := pacer{rate: rate}
	defer func() { d.sentSum = sum.Sum(nil) }()
	for {
		select {
		case <-stop:
			d.finished.Store(true)
			if err := c.CloseWrite(); err != nil {
				rep.fail("%s: CloseWrite: %v", d.name, err)
			}
			return
		default:
		}
		gen.Read(buf)
		// Write blocks while the flow's window is full, including while a dead path is
		// being replaced: that is back-pressure, not an error.
		n, err := c.Write(buf)
		sum.Write(buf[:n])
		d.sent.Add(int64(n))
		if err != nil {
			rep.fail("%s: Write after %s: %v", d.name, size(d.sent.Load()), err)
			return
		}
		p.wait(n, stop)
	}
}

// receive reads the direction's stream from c until EOF. Besides hashing it, it compares each
// byte with its own copy of the sender's generator, so a corruption is reported at the exact
// offset where it happened rather than only as a digest mismatch at the end.
func (d *direction) receive(c *rendr.Conn, rep *report) {
	gen := rand.NewChaCha8(d.seed)
	sum := sha256.New()
	buf := make([]byte, chunk)
	want := make([]byte, chunk)
	defer func() { d.recvSum = sum.Sum(nil) }()
	mismatch := false
	for {
		n, err := c.Read(buf)
		if n > 0 {
			sum.Write(buf[:n])
			gen.Read(want[:n])
			if !mismatch && !bytes.Equal(buf[:n], want[:n]) {
				mismatch = true
				i := firstDiff(buf[:n], want[:n])
				rep.fail("%s: byte %d differs from what was sent", d.name, d.recv.Load()+int64(i))
			}
			d.recv.Add(int64(n))
		}
		switch {
		case err == nil:
		case errors.Is(err, io.EOF):
			// EOF is only right once the sender has closed and every byte it wrote arrived.
			if !d.finished.Load() {
				rep.fail("%s: unexpected EOF after %s: the sender never closed", d.name, size(d.recv.Load()))
			} else if got, sent := d.recv.Load(), d.sent.Load(); got != sent {
				rep.fail("%s: EOF after %d bytes, but %d were written", d.name, got, sent)
			}
			return
		default:
			rep.fail("%s: Read after %s: %v", d.name, size(d.recv.Load()), err)
			return
		}
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// pacer spaces writes so that a direction averages at most rate bytes per second. It does
// not catch up in a burst after a stall: time it could not use is forgotten.
type pacer struct {
	rate float64
	next time.Time
}

func (p *pacer) wait(n int, stop <-chan struct{}) {
	if p.rate <= 0 {
		return
	}
	now := time.Now()
	if p.next.Before(now.Add(-100 * time.Millisecond)) {
		p.next = now
	}
	p.next = p.next.Add(time.Duration(float64(n) / p.rate * float64(time.Second)))
	d := p.next.Sub(now)
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-stop:
	}
}

// serve is the listening application: it accepts flows until ctx ends and dispatches each
// by its first byte. The main flow is handed over on mainc; echo flows are served here.
func serve(ctx context.Context, ln *rendr.Listener, mainc chan<- *rendr.Conn, rep *report, wg *sync.WaitGroup) {
	defer wg.Done()
	for {
		c, err := ln.AcceptContext(ctx)
		if err != nil {
			if ctx.Err() == nil && !errors.Is(err, rendr.ErrClosed) {
				rep.fail("listener: Accept: %v", err)
			}
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			var kind [1]byte
			c.SetReadDeadline(time.Now().Add(flowTimeout))
			if _, err := io.ReadFull(c, kind[:]); err != nil {
				rep.fail("listener: flow %d: reading its kind: %v", c.FlowID(), err)
				c.Close()
				return
			}
			c.SetReadDeadline(time.Time{})
			switch kind[0] {
			case kindMain:
				mainc <- c // buffered: the main flow comes once
			case kindEcho:
				echo(c, rep)
			default:
				rep.fail("listener: flow %d: unknown kind %q", c.FlowID(), kind[0])
				c.Close()
			}
		}()
	}
}

// flowTimeout bounds each short flow, so that a flow that never finishes is reported as an
// error instead of hanging the demo.
const flowTimeout = 20 * time.Second

// echo sends back everything it reads, then half-closes.
func echo(c *rendr.Conn, rep *report) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(flowTimeout))
	if _, err := io.Copy(c, c); err != nil {
		rep.fail("listener: echo flow %d: %v", c.FlowID(), err)
		return
	}
	if err := c.CloseWrite(); err != nil {
		rep.fail("listener: echo flow %d: CloseWrite: %v", c.FlowID(), err)
	}
}

// shortFlows opens a short flow every so often until stop closes. Each one joins the running
// session, so opening it costs no handshake: it takes microseconds, and its session id is the
// main flow's.
func shortFlows(d *rendr.Dialer, session [16]byte, seed uint64, stop <-chan struct{}, rep *report) {
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	tick := time.NewTicker(1500 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		payload := make([]byte, 1+(16<<10)+rng.IntN(240<<10))
		for i := range payload {
			payload[i] = byte(rng.Uint32())
		}
		payload[0] = kindEcho
		shortFlow(d, session, payload, rep)
	}
}

func shortFlow(d *rendr.Dialer, session [16]byte, payload []byte, rep *report) {
	ctx, cancel := context.WithTimeout(context.Background(), flowTimeout)
	defer cancel()
	t0 := time.Now()
	c, err := d.DialContext(ctx)
	took := time.Since(t0)
	if err != nil {
		rep.fail("short flow: Dial: %v", err)
		return
	}
	defer c.Close()
	if c.Status().ID != session {
		rep.fail("short flow %d: opened a new session instead of joining the running one", c.FlowID())
	}
	c.SetDeadline(time.Now().Add(flowTimeout))

	// Write and read at once: the echo comes back while we send, and a flow's window is
	// smaller than the larger payloads.
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(payload)
		if err == nil {
			err = c.CloseWrite()
		}
		werr <- err
	}()
	got, rerr := io.ReadAll(c)
	if err := <-werr; err != nil {
		rep.fail("short flow %d: Write: %v", c.FlowID(), err)
		return
	}
	if rerr != nil {
		rep.fail("short flow %d: Read after %d bytes: %v", c.FlowID(), len(got), rerr)
		return
	}
	// The listener echoes everything after the kind byte.
	if !bytes.Equal(got, payload[1:]) {
		rep.fail("short flow %d: echo differs (%d bytes back of %d)", c.FlowID(), len(got), len(payload)-1)
		return
	}
	rep.shortFlows.Add(1)
	rep.event("flow %d: opened in %v, no handshake, %s echoed intact", c.FlowID(),
		took.Round(time.Microsecond), size(int64(len(got))))
}
