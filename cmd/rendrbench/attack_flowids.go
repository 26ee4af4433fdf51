package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/internal/handshake"
	"github.com/rendr-go/rendr/internal/path"
	"github.com/rendr-go/rendr/internal/wire"
	"github.com/rendr-go/rendr/transport/tcp"
)

// The flowids attack: an authenticated peer names huge and random flow ids. It runs in a
// process of its own (this binary with -attacker flowids-target), listener, legitimate client
// and attacker together, because a listener that does work linear in the id it is given would
// otherwise take this process's memory and time with it: the child stops itself when its
// heap has grown by flowIDsHeapCap, prints its result lines and exits without closing
// anything (a session stuck in such a loop would not let go).
const (
	flowIDsWindow   = 2 * time.Second // each of the baseline and the attack window
	flowIDsHeapCap  = 512 * mib       // growth at which the child gives up and reports
	flowIDsRecords  = 64              // records of attack frames
	flowIDsPerRec   = 512             // OPEN+DATA pairs per record
	flowIDsMaxID    = 1<<62 - 1
	flowIDsLegitBps = 8 * mib // the legitimate stream's rate, paced
)

// attackFlowIDs runs the flowids child and passes its lines on.
func attackFlowIDs(c *config) []result {
	exe, err := os.Executable()
	if err != nil {
		return []result{failure("attack", err)}
	}
	// Not started at the lowest CPU priority as the other attackers are: the listener runs in
	// the same process, and its share of the CPU is part of what is measured.
	cmd := exec.Command(exe, "-attacker", "flowids-target", "-attack-seconds", strconv.FormatFloat(flowIDsWindow.Seconds(), 'f', -1, 64),
		"-cpuprofile", c.cpuDir)
	cmd.Stderr = os.Stderr
	remove := atExit(func() { cmd.Process.Kill() })
	defer remove()
	c.logf("attack: flowids: starting the target process")
	t := time.AfterFunc(60*time.Second, func() { cmd.Process.Kill() })
	defer t.Stop()
	out, err := cmd.Output()
	if err != nil {
		return []result{failure("attack", fmt.Errorf("flowids target: %w", err))}
	}
	rs, err := readLines(out)
	if err != nil {
		return []result{failure("attack", fmt.Errorf("flowids target output: %w", err))}
	}
	return rs
}

// rawPeer is an authenticated peer built from the handshake and the path layer alone, with no
// flow engine: it sends whatever frames it is told to.
type rawPeer struct {
	p     *path.Path
	down  chan struct{}
	cause atomic.Value // error
}

func (r *rawPeer) Frame(*path.Path, *wire.Frame) error { return nil }
func (r *rawPeer) Writable(*path.Path)                 {}
func (r *rawPeer) Measured(*path.Path)                 {}
func (r *rawPeer) Down(_ *path.Path, cause error) {
	if cause == nil {
		cause = errors.New("closed")
	}
	r.cause.Store(cause)
	close(r.down)
}

// dialRaw founds a session as key over TCP to addr and returns the raw path.
func dialRaw(addr string, key rendr.PrivateKey, peer rendr.PublicKey) (*rawPeer, error) {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	kp, err := handshake.KeypairFrom(key)
	if err != nil {
		conn.Close()
		return nil, err
	}
	h := handshake.Hello{Time: uint64(time.Now().UnixNano()), Mode: handshake.ModeNew, Name: "raw"}
	rand.Read(h.Instance[:])
	rand.Read(h.Session[:])
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res, err := handshake.Initiate(ctx, conn, kp, peer, h, nil)
	if err != nil {
		conn.Close()
		return nil, err
	}
	if res.Reply.Status != handshake.StatusOK {
		conn.Close()
		return nil, fmt.Errorf("handshake status %d", res.Reply.Status)
	}
	r := &rawPeer{down: make(chan struct{})}
	r.p = path.New(1, conn, res.Send, res.Recv, path.Config{Name: "raw"}, r)
	r.p.Start()
	return r, nil
}

// send queues frames as one record, waiting while the path's queue is full.
func (r *rawPeer) send(frames []byte) error {
	for {
		select {
		case <-r.down:
			return fmt.Errorf("path down: %v", r.cause.Load())
		default:
		}
		rec := path.NewRecord()
		rec.B = append(rec.B, frames...)
		if r.p.Send(rec) {
			return nil
		}
		time.Sleep(time.Millisecond)
	}
}

// drainNote says whether the legitimate flow was at rest at both heap snapshots.
func drainNote(before, after bool) string {
	switch {
	case before && after:
		return "it was, both times"
	case !before && !after:
		return "NOT within 2 s either time"
	case !before:
		return "NOT within 2 s before the attack"
	}
	return "NOT within 2 s after the attack"
}

// runFlowIDsTarget is main for the flowids child: it prints the attack's result lines. With
// profDir set it writes heap profiles there at each snapshot.
func runFlowIDsTarget(profDir string) {
	if profDir != "" {
		// Every allocation sampled, so that a difference of a few hundred KiB between the
		// two heap profiles is seen where it is (the default samples one per 512 KiB). It
		// costs CPU: the flowids_cpu line of such a run is not comparable.
		runtime.MemProfileRate = 1
	}
	emitAll := func(rs ...result) {
		for _, r := range rs {
			emit(r)
		}
		os.Exit(0)
	}
	fail := func(err error) { emitAll(failure("attack", fmt.Errorf("flowids: %w", err))) }
	k, err := newBenchKeys()
	if err != nil {
		fail(err)
	}
	evil, err := rendr.NewKey()
	if err != nil {
		fail(err)
	}
	src, err := tcp.Listen("127.0.0.1:0")
	if err != nil {
		fail(err)
	}
	addr := src.Addr().String()
	al, err := newAttackListener(k, rendr.ListenConfig{}, src, evil.Public())
	if err != nil {
		fail(err)
	}

	// The legitimate client: one flow, 64 KiB writes paced at flowIDsLegitBps.
	d, err := rendr.NewDialer(rendr.DialerConfig{Key: k.cli, PeerKey: k.srv.Public(), Root: rendr.Path("legit", tcp.Dialer(addr))})
	if err != nil {
		fail(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	conn, err := d.DialContext(ctx)
	cancel()
	if err != nil {
		fail(err)
	}
	// wmu is held over each write, so that a heap snapshot can hold the writer still.
	var streamed atomic.Int64
	var wmu sync.Mutex
	go func() {
		b := make([]byte, 64<<10)
		tick := time.NewTicker(time.Second * time.Duration(len(b)) / flowIDsLegitBps)
		defer tick.Stop()
		for range tick.C {
			wmu.Lock()
			n, err := conn.Write(b)
			streamed.Add(int64(n))
			wmu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	// settled is HeapInuse with the legitimate flow at rest, so that the snapshots before and
	// after the attack are taken in the same state. Taken at any instant, the paced flow's
	// send queue, records and receive buffer hold a varying part of its last writes (about
	// 0.5 MiB from one snapshot to another in trials). So the writer is held still, and the
	// snapshot waits (bounded) until the server has read every byte written; at most the last
	// write, 64 KiB, may still wait for its acknowledgement. Two collections: buffers returned
	// to a sync.Pool (path records and read blocks, the raw attacker's among them) survive
	// the first one in the pool's victim cache, so after one collection HeapInuse still holds
	// whatever the last moments happened to pool; after two it holds what is reachable. (In
	// trials with one collection, up to 2.1 MiB of the raw attacker's own records, allocated
	// in rawPeer.send, were still pooled after the attack and read as 1.9 MiB of growth.)
	settled := func(name string) (heap uint64, drained bool) {
		wmu.Lock()
		defer wmu.Unlock()
		for end := time.Now().Add(2 * time.Second); al.received.Load() < streamed.Load() && time.Now().Before(end); {
			time.Sleep(time.Millisecond)
		}
		drained = al.received.Load() >= streamed.Load()
		runtime.GC()
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		writeHeapProfile(profDir, "attack-flowids-"+name)
		return m.HeapInuse, drained
	}

	// The heap is judged against a snapshot taken before the attacker came, not once its
	// session is up: the raw attacker runs in this process, and while its path is up its
	// own read block and records (about 0.3 MiB) are in this heap; the listener closes that
	// path at the first bad OPEN, so a snapshot with it up and one after the attack would
	// differ by the attacker's memory (and the listener's path buffers), a negative offset
	// that could hide as much real growth. Against the heap before it came, the growth counts
	// everything the attacker left behind at the listener, its idle session included.
	time.Sleep(300 * time.Millisecond) // the legitimate flow's window grows first
	heap0, drained0 := settled("before")
	raw, err := dialRaw(addr, evil, k.srv.Public())
	if err != nil {
		fail(fmt.Errorf("raw peer: %w", err))
	}
	// One ordinary flow first, so that the session is in use.
	if err := raw.send(wire.AppendData(wire.AppendOpen(nil, 1, wire.KindStream, nil), 1, 0, false, []byte("hello"))); err != nil {
		fail(err)
	}
	time.Sleep(300 * time.Millisecond)

	heapUp, _ := settled("attacker-up")

	// Baseline window.
	s0, c0, t0 := streamed.Load(), cpuTime(), time.Now()
	time.Sleep(flowIDsWindow)
	baseCPU := (cpuTime() - c0).Seconds() / time.Since(t0).Seconds()
	baseMiB := float64(streamed.Load()-s0) / mib / time.Since(t0).Seconds()

	// Attack window: the largest id first, then random ones, OPEN and DATA for each.
	rng := mrand.New(mrand.NewPCG(mrand.Uint64(), mrand.Uint64()))
	var sendErr error
	var sent atomic.Int64
	var wg sync.WaitGroup
	s1, c1, t1 := streamed.Load(), cpuTime(), time.Now()
	wg.Go(func() {
		for i := range flowIDsRecords {
			var b []byte
			for j := range flowIDsPerRec {
				id := uint64(flowIDsMaxID)
				if i > 0 || j > 0 {
					id = rng.Uint64N(flowIDsMaxID/2)*2 + 1 // odd: a stream id
				}
				b = wire.AppendOpen(b, id, wire.KindStream, nil)
				b = wire.AppendData(b, id, 0, false, []byte("x"))
			}
			if err := raw.send(b); err != nil {
				sendErr = err
				return
			}
			sent.Add(flowIDsPerRec)
		}
	})
	var peak, growth uint64
	capped := false
	for time.Since(t1) < flowIDsWindow {
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		peak = max(peak, m.HeapInuse)
		if m.HeapInuse > heap0+flowIDsHeapCap {
			capped = true
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	el := time.Since(t1).Seconds()
	atkCPU := (cpuTime() - c1).Seconds() / el
	atkMiB := float64(streamed.Load()-s1) / mib / el
	// The sender ends when its records are queued; a listener that stopped reading leaves
	// it waiting on a full queue, which the note says.
	sent2 := make(chan struct{})
	go func() { wg.Wait(); close(sent2) }()
	stuck := false
	if !capped {
		select {
		case <-sent2:
		case <-time.After(2 * time.Second):
			stuck = true
		}
	}
	var after uint64
	growing := ""
	drained1 := true
	if capped {
		after = peak
	} else {
		// The raw attacker lives in this process: the records it queued are its memory, not
		// the listener's. They go back to the pool once its path has written them or closed.
		for end := time.Now().Add(2 * time.Second); !raw.p.Flushed() && time.Now().Before(end); {
			select {
			case <-raw.down:
				end = time.Time{}
			case <-time.After(time.Millisecond):
			}
		}
		after, drained1 = settled("after")
		time.Sleep(250 * time.Millisecond)
		if later, _ := settled("later"); later > after+mib {
			growing = fmt.Sprintf("; the heap was still growing: %.1f MiB more 250 ms later", float64(later-after)/mib)
		}
	}
	if after > heap0 {
		growth = after - heap0
	}
	var pathState string
	select {
	case <-raw.down:
		pathState = fmt.Sprintf("the attacker's path went down (%v)", raw.cause.Load())
	default:
		pathState = "the attacker's path stayed up"
	}
	pathState += growing
	if stuck {
		pathState += "; the attacker's records were still waiting to be sent 2 s after the window: the listener had stopped reading its path"
	}
	if !stuck && !capped && sendErr != nil { // sendErr is the sender's until it is done
		pathState += fmt.Sprintf("; sending stopped: %v", sendErr)
	}
	st := al.ln.Stats()
	nice := "unknown"
	if lo, hi, err := threadNice(0); err == nil {
		nice = fmt.Sprintf("%d", lo)
		if hi != lo {
			nice = fmt.Sprintf("%d to %d", lo, hi)
		}
	}
	what := fmt.Sprintf("an authenticated raw peer (handshake and path layer, no flow engine) sent %d OPEN+DATA pairs in records of %d, the first for flow id 2^62-1, the others random odd ids below it; %s; listener sessions %d; the raw attacker runs in the listener's process, at its priority (nice %s): it cannot be lowered apart from the listener",
		sent.Load(), flowIDsPerRec, pathState, st.Sessions, nice)
	if capped {
		what += fmt.Sprintf("; STOPPED at the cap: the heap grew past %d MiB %.2f s into the attack, and the process was ended there (the growth had not stopped)", flowIDsHeapCap/mib, el)
	}
	h := result{Scenario: "attack", Metric: "flowids_heap_growth", Unit: "MiB", Runs: 1,
		Value: ptr(round(float64(growth) / mib)), Target: ptr("value < 1"),
		Note: fmt.Sprintf("HeapInuse of the listener's process after the attack window (%v) minus before the attacker connected (%.2f MiB after, %.2f before, %.2f with its session up before the attack; a negative difference counts as 0), each taken with the legitimate flow held still until the server had read every byte written (%s), after two collections (pooled buffers outlive one), and after the raw attacker's queued records had left its path; peak %.1f MiB; %s", flowIDsWindow, float64(after)/mib, float64(heap0)/mib, float64(heapUp)/mib, drainNote(drained0, drained1), float64(peak)/mib, what)}
	h.Pass = ptr(!capped && float64(growth) < mib)
	cpu := result{Scenario: "attack", Metric: "flowids_cpu", Unit: "% of a core", Runs: 1,
		Value: ptr(round(100 * atkCPU)), Baseline: ptr("same window, no attack"), BaselineValue: ptr(round(100 * baseCPU)),
		Target: ptr("value - baseline_value <= 10"),
		Note:   fmt.Sprintf("process CPU (listener, legitimate client paced at %d MiB/s, raw attacker) over the attack window against the window before it; the legitimate flow moved %.1f MiB/s during the attack, %.1f MiB/s before; the raw attacker runs in this process, at its priority (nice %s), and its CPU counts here", flowIDsLegitBps/mib, atkMiB, baseMiB, nice)}
	cpu.Ratio = ptr(round(atkCPU / baseCPU))
	cpu.Pass = ptr(100*(atkCPU-baseCPU) <= 10)
	emitAll(h, cpu)
}
