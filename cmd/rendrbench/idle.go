package main

import (
	"context"
	"fmt"
	"runtime"
	"time"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/transport/tcp"
)

// Target per idle flow, both ends of the flow counted together.
const (
	idleBytesTarget = 4096
	// Flows are opened in batches no larger than the listener's accept backlog (1024 by
	// default), waiting for Accept to catch up, so none is refused for being early.
	idleBatch = 500
)

// runIdle opens c.flows flows on one session over one loopback path, writes nothing, and
// measures what they cost: the process's goroutines and live heap before and after, divided
// by the number of flows. Dialer and Listener live in this process, so the figures include
// both ends of every flow (the Conn and the engine's stream state on each side).
func runIdle(c *config) []result {
	res, err := idle(c)
	if err != nil {
		return []result{failure("idle", err)}
	}
	return res
}

func idle(c *config) ([]result, error) {
	gStart := runtime.NumGoroutine()
	keys, err := newBenchKeys()
	if err != nil {
		return nil, err
	}
	src, err := tcp.Listen("127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	ln, err := rendr.Listen(rendr.ListenConfig{Key: keys.srv, Peers: []rendr.PublicKey{keys.cli.Public()}}, src)
	if err != nil {
		src.Close()
		return nil, err
	}
	defer ln.Close()
	d, err := rendr.NewDialer(rendr.DialerConfig{Key: keys.cli, PeerKey: keys.srv.Public(),
		Root: rendr.Path("lo", tcp.Dialer(src.Addr().String()))})
	if err != nil {
		return nil, err
	}
	defer d.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// The session and its path exist before the baseline: the first flow starts them.
	first, firstPeer, err := rendrPair(ctx, d, ln)
	if err != nil {
		return nil, err
	}
	// Allocated before the baseline so that holding the Conns does not count as their cost.
	dialed := make([]*rendr.Conn, 0, c.flows)
	accepted := make([]*rendr.Conn, 0, c.flows)
	defer func() {
		for _, x := range append(dialed, accepted...) {
			x.Close()
		}
		first.Close()
		firstPeer.Close()
	}()
	settle()
	g0, h0 := snapshot()

	start := time.Now()
	for len(dialed) < c.flows {
		n := min(idleBatch, c.flows-len(dialed))
		for range n {
			x, err := d.DialContext(ctx)
			if err != nil {
				return nil, fmt.Errorf("dialing flow %d: %w", len(dialed)+1, err)
			}
			dialed = append(dialed, x)
		}
		for len(accepted) < len(dialed) {
			x, err := ln.AcceptContext(ctx)
			if err != nil {
				return nil, fmt.Errorf("accepted %d of %d flows: %w", len(accepted), len(dialed), err)
			}
			accepted = append(accepted, x)
		}
	}
	opened := time.Since(start)
	c.logf("idle: %d flows open on both sides in %v", c.flows, opened.Round(time.Millisecond))
	settle()
	g1, h1 := snapshot()
	if got := d.Status().Flows; got < c.flows {
		return nil, fmt.Errorf("dialer session reports %d flows, want at least %d", got, c.flows)
	}

	// Close everything now, in order, and check that the goroutines are gone with it.
	for _, x := range append(dialed, accepted...) {
		x.Close()
	}
	dialed, accepted = nil, nil
	first.Close()
	firstPeer.Close()
	d.Close()
	ln.Close()
	gEnd := runtime.NumGoroutine()
	for i := 0; i < 50 && gEnd > gStart; i++ {
		time.Sleep(20 * time.Millisecond)
		gEnd = runtime.NumGoroutine()
	}

	n := float64(c.flows)
	gPer := float64(g1-g0) / n
	bPer := float64(int64(h1)-int64(h0)) / n
	gr := result{Scenario: "idle", Metric: "goroutines_per_flow", Value: ptr(round(gPer)), Unit: "goroutines",
		// A session-wide goroutine that happens to be running is not a per-flow cost; a
		// count that grows with the flows is, so "0 per flow" is read as under 1 per 100.
		Runs: 1, Target: ptr("value < 0.01"), Pass: ptr(gPer < 0.01),
		Note: fmt.Sprintf("%d flows, dialer and listener in one process: %d goroutines before, %d after; %d before the session, %d after closing everything", c.flows, g0, g1, gStart, gEnd)}
	mr := result{Scenario: "idle", Metric: "heap_bytes_per_flow", Value: ptr(round(bPer)), Unit: "bytes",
		Runs: 1, Target: ptr(fmt.Sprintf("value <= %d", idleBytesTarget)), Pass: ptr(bPer <= idleBytesTarget),
		Note: fmt.Sprintf("HeapAlloc after two GCs, %d flows, both ends of each flow counted (dialer and listener in one process): %d bytes before, %d after; flows opened in %v",
			c.flows, h0, h1, opened.Round(time.Millisecond))}
	return []result{gr, mr}, nil
}

// settle lets OPEN frames, their acknowledgements and any timers of the flows run their
// course before a measurement.
func settle() { time.Sleep(1500 * time.Millisecond) }

// snapshot returns the goroutine count (the lowest of a few readings, to skip goroutines that
// only pass through) and the live heap after two collections (the second also empties the
// sync.Pool victim caches).
func snapshot() (goroutines int, heap uint64) {
	goroutines = runtime.NumGoroutine()
	for range 5 {
		time.Sleep(20 * time.Millisecond)
		goroutines = min(goroutines, runtime.NumGoroutine())
	}
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return goroutines, ms.HeapAlloc
}
