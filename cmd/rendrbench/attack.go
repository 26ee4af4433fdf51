package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/internal/handshake"
	"github.com/rendr-go/rendr/status"
	"github.com/rendr-go/rendr/transport"
	"github.com/rendr-go/rendr/transport/tcp"
	"github.com/rendr-go/rendr/transport/udpflow"
)

// runAttack measures what floods and greedy peers cost a rendr listener, each beside an
// unloaded baseline taken in the same invocation, while a legitimate client dials and
// streams. Every flood is bounded in count and time, and every packet goes to 127.0.0.1.
// -rows picks attacks by name: flowids, udpflood, hsflood, greedy, gvisor.
func runAttack(c *config) []result {
	type attack struct {
		name string
		run  func(*config) []result
	}
	all := []attack{{"flowids", attackFlowIDs}, {"udpflood", attackUDPFlood}, {"hsflood", attackHandshakeFlood},
		{"greedy", attackGreedy}, {"gvisor", attackGVisor}}
	var out []result
	for _, a := range onlyRows(c, all, func(a attack) string { return a.name }) {
		start := time.Now()
		out = append(out, a.run(c)...)
		c.logf("attack: %s done in %v", a.name, time.Since(start).Round(time.Millisecond))
	}
	return out
}

// attackListener is a rendr listener with an acceptor that reads every flow to its end, as a
// server would, so that flows opened by anyone cost what they cost in practice.
type attackListener struct {
	ln       *rendr.Listener
	wg       sync.WaitGroup
	received atomic.Int64 // bytes read from the flows of the legitimate client's key
}

// countWriter counts what is written to it and drops it.
type countWriter struct{ n *atomic.Int64 }

func (w countWriter) Write(b []byte) (int, error) {
	w.n.Add(int64(len(b)))
	return len(b), nil
}

func newAttackListener(k benchKeys, cfg rendr.ListenConfig, src net.Listener, more ...rendr.PublicKey) (*attackListener, error) {
	cfg.Key = k.srv
	cfg.Peers = append([]rendr.PublicKey{k.cli.Public()}, more...)
	ln, err := rendr.Listen(cfg, src)
	if err != nil {
		src.Close()
		return nil, err
	}
	a := &attackListener{ln: ln}
	legit := k.cli.Public()
	a.wg.Go(func() {
		for {
			c, err := ln.AcceptContext(context.Background())
			if err != nil {
				return
			}
			var w io.Writer = io.Discard
			if c.RemoteAddr().(rendr.Addr).Key == legit {
				w = countWriter{&a.received}
			}
			a.wg.Go(func() {
				io.Copy(w, c)
				c.Close()
			})
		}
	})
	return a, nil
}

func (a *attackListener) close() {
	a.ln.Close()
	a.wg.Wait()
}

// dialSample is what a run of legitimate dials saw.
type dialSample struct {
	times    []time.Duration // each successful dial: DialContext of a new Dialer to an open flow
	fails    int
	lastErr  error
	wall     time.Duration // the whole run, dials and pauses
	cpu      time.Duration // process CPU over the run
	streamed int64         // bytes written on the dialed flows
}

// legitDials dials n times, starting one every `every` (or at once when behind), each a new
// Dialer founding a new session within timeout; each dial writes 16 KiB on its flow and
// closes it. The process CPU is measured over the run.
func legitDials(k benchKeys, dial transport.DialFunc, n int, every, timeout time.Duration) dialSample {
	var s dialSample
	t0, c0 := time.Now(), cpuTime()
	payload := make([]byte, 16<<10)
	for i := range n {
		if w := time.Until(t0.Add(time.Duration(i) * every)); w > 0 {
			time.Sleep(w)
		}
		d, err := rendr.NewDialer(rendr.DialerConfig{Key: k.cli, PeerKey: k.srv.Public(), Root: rendr.Path("legit", dial)})
		if err != nil {
			s.fails++
			s.lastErr = err
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		start := time.Now()
		conn, err := d.DialContext(ctx)
		el := time.Since(start)
		cancel()
		if err != nil {
			s.fails++
			s.lastErr = err
			d.Close()
			continue
		}
		s.times = append(s.times, el)
		if n, err := conn.Write(payload); err == nil {
			s.streamed += int64(n)
		}
		conn.Close()
		d.Close()
	}
	s.wall, s.cpu = time.Since(t0), cpuTime()-c0
	return s
}

// concurrentDials starts n dials as legitDials makes them, one every `every`, each in its own
// goroutine, so that all of them begin within n*every whatever each one takes.
func concurrentDials(k benchKeys, dial transport.DialFunc, n int, every, timeout time.Duration) dialSample {
	var mu sync.Mutex
	var s dialSample
	var wg sync.WaitGroup
	t0 := time.Now()
	for i := range n {
		time.Sleep(time.Until(t0.Add(time.Duration(i) * every)))
		wg.Go(func() {
			one := legitDials(k, dial, 1, 0, timeout)
			mu.Lock()
			defer mu.Unlock()
			s.times = append(s.times, one.times...)
			s.fails += one.fails
			if one.lastErr != nil {
				s.lastErr = one.lastErr
			}
			s.streamed += one.streamed
		})
	}
	wg.Wait()
	s.wall = time.Since(t0)
	return s
}

// cpuShare is the fraction of one core the process used over the sample's run.
func (s dialSample) cpuShare() float64 { return s.cpu.Seconds() / s.wall.Seconds() }

// percentile is the nearest-rank q-quantile (q in 0..1) of v, in ms: the ceil(q*n)-th
// smallest. p99 of 100 samples is the 99th, of 50 or 10 their maximum.
func percentile(v []time.Duration, q float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	s := slices.Clone(v)
	slices.Sort(s)
	i := max(int(math.Ceil(q*float64(len(s))))-1, 0)
	return float64(s[i]) / float64(time.Millisecond)
}

// attacker is a running attacker process.
type attacker struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser // closing it stops the flood
	out    bytes.Buffer
	remove func()
	start  time.Time
	end    time.Time // when it stops sending at the latest
}

// startAttacker starts this binary again as an attacker with the given role (attackers.go).
func startAttacker(c *config, role, addr string, key rendr.PublicKey, msg []byte, seconds float64, count int) (*attacker, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	args := []string{"-attacker", role, "-attack-addr", addr,
		"-attack-key", base64.StdEncoding.EncodeToString(key[:]),
		"-attack-seconds", strconv.FormatFloat(seconds, 'f', -1, 64),
		"-attack-count", strconv.Itoa(count)}
	if msg != nil {
		args = append(args, "-attack-msg", hex.EncodeToString(msg))
	}
	a := &attacker{cmd: exec.Command(exe, args...)}
	a.cmd.Stdout = &a.out
	a.cmd.Stderr = os.Stderr
	if a.stdin, err = a.cmd.StdinPipe(); err != nil {
		return nil, err
	}
	if err := a.cmd.Start(); err != nil {
		return nil, err
	}
	a.start = time.Now()
	a.end = a.start.Add(time.Duration(seconds * float64(time.Second)))
	a.remove = atExit(func() { a.cmd.Process.Kill() })
	c.logf("attack: started %s attacker, pid %d, nice %d, %.1f s at most", role, a.cmd.Process.Pid, attackerNice, seconds)
	return a, nil
}

// attackerNice is the CPU priority of every attacker process (atLowestPriority): the lowest
// there is. On a real
// network the attacker's CPU is another machine's; on this one its CPU competes with the
// listener's, and whatever it takes from the listener, or costs the listener's process in
// being descheduled, would be counted as the listener's cost. At nice 19 it gets the CPU the
// listener and the legitimate client leave (and nearly nothing while they want both cores):
// the flood is then weaker on a busy machine, which its report (sent, rate) shows.
const attackerNice = 19

// threadNice is the lowest and highest nice value among the threads of the process pid
// (0: this one), from /proc.
func threadNice(pid int) (lo, hi int, err error) {
	dir := "/proc/self/task"
	if pid != 0 {
		dir = fmt.Sprintf("/proc/%d/task", pid)
	}
	tasks, err := os.ReadDir(dir)
	if err != nil {
		return 0, 0, err
	}
	lo, hi = math.MaxInt, math.MinInt
	for _, t := range tasks {
		b, err := os.ReadFile(filepath.Join(dir, t.Name(), "stat"))
		if err != nil {
			continue // the thread has ended
		}
		// The fields after the command name, which is in parentheses and may hold spaces:
		// state is field 3 of proc(5), nice field 19.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			return 0, 0, fmt.Errorf("%s/stat: unexpected format", t.Name())
		}
		f := bytes.Fields(b[i+1:])
		if len(f) < 17 {
			return 0, 0, fmt.Errorf("%s/stat: unexpected format", t.Name())
		}
		n, err := strconv.Atoi(string(f[16]))
		if err != nil {
			return 0, 0, fmt.Errorf("%s/stat: nice: %w", t.Name(), err)
		}
		lo, hi = min(lo, n), max(hi, n)
	}
	if lo > hi {
		return 0, 0, fmt.Errorf("%s: no thread", dir)
	}
	return lo, hi, nil
}

// niceNote says at which CPU priority an attacker process ran, as it reported it.
func niceNote(lo, hi int) string {
	if lo == hi {
		return fmt.Sprintf("every thread of the attacker process at nice %d", lo)
	}
	return fmt.Sprintf("the attacker process's threads at nice %d to %d", lo, hi)
}

// stopNow asks the attacker to stop before its bounds (its stdin ends).
func (a *attacker) stopNow() { a.stdin.Close() }

// wait waits for the attacker to finish (killing it 5 s past its own bound) and returns its
// report.
func (a *attacker) wait() (attackerReport, error) {
	defer a.remove()
	t := time.AfterFunc(time.Until(a.end)+5*time.Second, func() { a.cmd.Process.Kill() })
	defer t.Stop()
	var rep attackerReport
	if err := a.cmd.Wait(); err != nil {
		return rep, fmt.Errorf("attacker: %w", err)
	}
	err := json.Unmarshal(a.out.Bytes(), &rep)
	return rep, err
}

// heapInuse is the heap in use after two collections: buffers returned to a sync.Pool survive
// the first one (in the pool's victim cache), so after one the figure holds whatever the last
// moments happened to pool.
func heapInuse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// heapPeak samples HeapInuse every 50 ms until stop is closed and returns the highest seen;
// the first time it passes limit, it calls over.
func heapPeak(stop <-chan struct{}, limit uint64, over func()) <-chan uint64 {
	out := make(chan uint64, 1)
	go func() {
		var peak uint64
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			var m runtime.MemStats
			runtime.ReadMemStats(&m)
			peak = max(peak, m.HeapInuse)
			if over != nil && m.HeapInuse > limit {
				over()
				over = nil
			}
			select {
			case <-stop:
				out <- peak
				return
			case <-t.C:
			}
		}
	}()
	return out
}

const mib = 1 << 20

// attackUDPFlood floods a udpflow source of a rendr listener with hellos from another process
// while a legitimate rendr client dials it over udpflow: 10 dials unloaded, then 10 under the
// flood, each within 1 s.
func attackUDPFlood(c *config) []result {
	const (
		dials    = 10
		dialTime = time.Second
		every    = 20 * time.Millisecond
		seconds  = 4.0
		count    = 1_000_000
		// heapCap ends the flood early: past it the target is missed fifty times over, and
		// more only takes memory from whoever else uses the machine.
		heapCap = 3 << 30
	)
	fail := func(err error) []result { return []result{failure("attack", fmt.Errorf("udpflood: %w", err))} }
	k, err := newBenchKeys()
	if err != nil {
		return fail(err)
	}
	second, err := rendr.NewKey()
	if err != nil {
		return fail(err)
	}
	src, err := udpflow.Listen("127.0.0.1:0")
	if err != nil {
		return fail(err)
	}
	addr := src.Addr().String()
	al, err := newAttackListener(k, rendr.ListenConfig{}, src, second.Public())
	if err != nil {
		return fail(err)
	}
	defer al.close()
	dial := udpflow.Dialer(addr)
	heap0 := heapInuse()
	base := concurrentDials(k, dial, dials, every, dialTime)
	// The dials under the flood use another allowed key: the baseline's sessions outlive
	// their Dialers for a while (over udpflow the listener learns of a closed path only by
	// its silence), and would count against the key's 16 sessions.
	k2 := benchKeys{srv: k.srv, cli: second}
	c.logf("attack: udpflood: unloaded %d/%d dials, p99 %.1f ms", len(base.times), dials, percentile(base.times, 0.99))

	a, err := startAttacker(c, "udpflood", addr, k.srv.Public(), nil, seconds, count)
	if err != nil {
		return fail(err)
	}
	stop := make(chan struct{})
	var capped atomic.Int64 // unix nanos when the cap stopped the flood
	peak := heapPeak(stop, heapCap, func() {
		capped.Store(time.Now().UnixNano())
		a.cmd.Process.Kill()
	})
	time.Sleep(50 * time.Millisecond) // the flood starts first
	st0 := al.ln.Stats()
	under := concurrentDials(k2, dial, dials, every, dialTime)
	dialsEnd := time.Now()
	inFlood := dialsEnd.Before(a.end)
	rep, err := a.wait()
	if capped.Load() != 0 {
		// Killed: its report is lost; what it sent is not known.
		rep, err = attackerReport{Seconds: time.Duration(capped.Load() - a.start.UnixNano()).Seconds()}, nil
	}
	close(stop)
	peakHeap := <-peak
	st1 := al.ln.Stats()
	if err != nil {
		return fail(err)
	}
	c.logf("attack: udpflood: %d hellos in %.1f s (%.0f/s), %d bytes back; under flood %d/%d dials, p99 %.1f ms; heap peak %.1f MiB",
		rep.Sent, rep.Seconds, float64(rep.Sent)/rep.Seconds, rep.BytesBack, len(under.times), dials, percentile(under.times, 0.99), float64(peakHeap)/mib)
	flood := fmt.Sprintf("flood: %d udpflow hellos of 1200 bytes (random connection ids, a first message with a valid mac1 from a random key in each) in %.1f s from one core of another process (%s), %.0f/s, %d send errors; %d bytes came back to it (%.4f per byte sent); listener stats during the dials: %s",
		rep.Sent, rep.Seconds, niceNote(rep.NiceLo, rep.NiceHi), float64(rep.Sent)/rep.Seconds, rep.Errors, rep.BytesBack, float64(rep.BytesBack)/math.Max(float64(rep.BytesSent), 1), statsDelta(listenerFields(st0), listenerFields(st1)))
	if at := capped.Load(); at != 0 {
		t := time.Unix(0, at)
		flood = fmt.Sprintf("the flood (udpflow hellos of 1200 bytes, random connection ids, a first message with a valid mac1 from a random key in each, from one core of another process started at nice %d) was STOPPED when the heap passed %d MiB, %.1f s after it began (its counts are lost with it); the dials began 0.05 s after it and ended %.1f s after it; listener stats during the dials: %s",
			attackerNice, heapCap/mib, t.Sub(a.start).Seconds(), dialsEnd.Sub(a.start).Seconds(), statsDelta(listenerFields(st0), listenerFields(st1)))
	} else if !inFlood {
		flood += "; the dials outlasted the flood"
	}
	h := result{Scenario: "attack", Metric: "udpflood_heap_peak", Unit: "MiB", Runs: 1,
		Value: ptr(round(float64(peakHeap) / mib)), Target: ptr("value < 64"),
		Note: fmt.Sprintf("HeapInuse of the listener's process (listener and legitimate client), highest of samples every 50 ms during the flood; %.1f MiB after GC before it; %s", float64(heap0)/mib, flood)}
	h.Pass = ptr(*h.Value < 64)
	d := result{Scenario: "attack", Metric: "udpflood_dials_ok", Unit: "dials", Runs: 1,
		Value: ptr(float64(len(under.times))), Baseline: ptr("unloaded"), BaselineValue: ptr(float64(len(base.times))),
		Target: ptr(fmt.Sprintf("value == %d, each within %v", dials, dialTime)),
		Note: fmt.Sprintf("rendr dials over udpflow (new Dialer, new session, one flow, 16 KiB written), one begun every %v (each in its own goroutine), each given %v; %s; the flood from a process started at nice %d",
			every, dialTime, errNote(under), attackerNice)}
	d.Pass = ptr(len(under.times) == dials)
	d.Ratio = ptr(round(*d.Value / math.Max(*d.BaselineValue, 1)))
	p := result{Scenario: "attack", Metric: "udpflood_dial_p99", Unit: "ms", Runs: 1,
		Value: ptr(round(percentile(under.times, 0.99))), Baseline: ptr("unloaded"), BaselineValue: ptr(round(percentile(base.times, 0.99))),
		Target: ptr("value <= 1000"), Note: fmt.Sprintf("p99 (nearest rank: the slowest of 10) of the successful dials under the flood; the flood from a process started at nice %d", attackerNice)}
	if len(under.times) == 0 {
		p.Value = nil
	}
	if p.Value != nil && p.BaselineValue != nil && *p.BaselineValue > 0 {
		p.Ratio = ptr(round(*p.Value / *p.BaselineValue))
	}
	p.Pass = ptr(p.Value != nil && *p.Value <= 1000 && len(under.times) == dials)
	if at := capped.Load(); at != 0 && time.Unix(0, at).Before(dialsEnd) {
		// The dials outlived the flood: they say nothing about a dial under it.
		d.Pass, p.Pass = nil, nil
		d.Note += "; NOT JUDGED: the flood was stopped at the heap cap before the dials ended"
		p.Note += "; NOT JUDGED: the flood was stopped at the heap cap before the dials ended"
	}
	return []result{h, d, p}
}

func errNote(s dialSample) string {
	if s.fails == 0 {
		return "no dial failed"
	}
	return fmt.Sprintf("%d failed, the last with: %v", s.fails, s.lastErr)
}

// statsDelta names the counters that moved between two snapshots, with how much.
func statsDelta(a, b []statField) string {
	var out []string
	for i := range b {
		if d := b[i].v - a[i].v; d != 0 || b[i].always {
			out = append(out, fmt.Sprintf("%s %+d", b[i].name, d))
		}
	}
	if len(out) == 0 {
		return "no counter moved"
	}
	return joinComma(out)
}

// listenerFields lists a rendr listener's counters.
func listenerFields(s status.Listener) []statField {
	return []statField{
		{"Sessions", int64(s.Sessions), false}, {"Handshakes", int64(s.Handshakes), true}, {"BadMAC1", int64(s.BadMAC1), true},
		{"CookiesSent", int64(s.CookiesSent), true}, {"BadCookie", int64(s.BadCookie), false}, {"RateLimited", int64(s.RateLimited), true},
		{"Evicted", int64(s.Evicted), false}, {"RefusedSessionsPerPeer", int64(s.RefusedSessionsPerPeer), false},
		{"RefusedSessions", int64(s.RefusedSessions), false}, {"RefusedPaths", int64(s.RefusedPaths), false},
		{"RefusedMemory", int64(s.RefusedMemory), false},
	}
}

func joinComma(s []string) string {
	var b bytes.Buffer
	for i, x := range s {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(x)
	}
	return b.String()
}

type statField struct {
	name   string
	v      int64
	always bool // printed even when it did not move
}

// recordedInitiation is one valid first message of an allowed key, captured before it reached
// the listener: what an observer on the path records and replays.
func recordedInitiation(key rendr.PrivateKey, peer rendr.PublicKey) ([]byte, error) {
	kp, err := handshake.KeypairFrom(key)
	if err != nil {
		return nil, err
	}
	return firstMessage(kp, peer, false)
}

// attackHandshakeFlood floods a transport/tcp source with first messages from another
// process while a legitimate client makes hsDials dials, against as many dials without a
// flood. It reports the listener's CPU beyond the baseline's and the dials' p99.
func attackHandshakeFlood(c *config) []result {
	const (
		// 100 dials make the nearest-rank p99 the 99th of 100, a percentile that one slow dial
		// does not decide (of 50, p99 is the slowest).
		dials = 100
		// Under load the listener lets a host open 16 carriers a second (burst 32) and start
		// 16 handshakes a second (burst 16); one dial every 65 ms (15.4 a second) stays below
		// both, so that the legitimate client meets no limit of its own making.
		every = 65 * time.Millisecond
		// The dials begin 0.5 s into the flood and take about 6.8 s; the flood is stopped
		// when they are done, and is bounded at 12 s and count connections.
		seconds = 12.0
		count   = 1_000_000
	)
	fail := func(err error) []result { return []result{failure("attack", fmt.Errorf("hsflood: %w", err))} }
	k, err := newBenchKeys()
	if err != nil {
		return fail(err)
	}
	// The replayed initiation is another allowed peer's, so that the session it founds (the
	// first copy is fresh) does not count against the legitimate client's sessions.
	victim, err := rendr.NewKey()
	if err != nil {
		return fail(err)
	}
	src, err := tcp.Listen("127.0.0.1:0")
	if err != nil {
		return fail(err)
	}
	addr := src.Addr().String()
	al, err := newAttackListener(k, rendr.ListenConfig{}, src, victim.Public())
	if err != nil {
		return fail(err)
	}
	defer al.close()
	dial := tcp.Dialer(addr)
	legitDials(k, dial, 5, 0, 5*time.Second) // warm-up, not measured
	var out []result
	for _, role := range []string{"hsflood-random", "hsflood-replay", "hsflood-full"} {
		var msg []byte
		if role == "hsflood-replay" {
			if msg, err = recordedInitiation(victim, k.srv.Public()); err != nil {
				return fail(err)
			}
		}
		base := legitDials(k, dial, dials, every, 5*time.Second)
		// Let the unloaded guard forget the baseline's handshakes (its rate bucket refills).
		time.Sleep(300 * time.Millisecond)
		a, err := startAttacker(c, role, addr, k.srv.Public(), msg, seconds, count)
		if err != nil {
			return fail(err)
		}
		time.Sleep(500 * time.Millisecond) // measured once under load
		st0 := al.ln.Stats()
		stopProf := startProfile(c, "attack-"+role)
		under := legitDials(k, dial, dials, every, 5*time.Second)
		stopProf()
		st1 := al.ln.Stats()
		inFlood := time.Now().Before(a.end)
		a.stopNow()
		rep, err := a.wait()
		if err != nil {
			return fail(err)
		}
		extra := under.cpuShare() - base.cpuShare()
		name := map[string]string{"hsflood-random": "hsflood_random_keys", "hsflood-replay": "hsflood_replay", "hsflood-full": "hsflood_full_initiators"}[role]
		what := map[string]string{
			"hsflood-random": "first messages from 256 random static keys, each with a valid mac1 and no mac2, each connection closed once written (answers not read)",
			"hsflood-replay": "one recorded valid first message of an allowed key, replayed on every connection, each closed once written (answers not read)",
			"hsflood-full":   "whole initiations from 64 random static keys (handshake.Initiate), following cookie replies with mac2 as a real initiator does",
		}[role]
		c.logf("attack: %s: %d connections in %.1f s (%.0f/s, attacker CPU %.2f s), %d answered, %d bytes back; listener CPU %.1f%% of a core vs %.1f%% unloaded; dial p99 %.1f ms vs %.1f ms; %s",
			role, rep.Sent, rep.Seconds, float64(rep.Sent)/rep.Seconds, rep.CPU, rep.Answers, rep.BytesBack,
			100*under.cpuShare(), 100*base.cpuShare(), percentile(under.times, 0.99), percentile(base.times, 0.99), statsDelta(listenerFields(st0), listenerFields(st1)))
		answered := fmt.Sprintf("%d answered (%d bytes back), %d handshakes completed", rep.Answers, rep.BytesBack, rep.Completed)
		if role != "hsflood-full" {
			answered = "answers not read"
		}
		note := fmt.Sprintf("flood: %s, over TCP from %s, %d connections in %.1f s (%.0f/s) from one core of another process (%s), %d errors, %s; listener stats over the measured window: %s; process CPU (listener and legitimate client; the kernel's loopback TCP work counts where it lands) %.1f%% of a core under the flood, %.1f%% over the same %d dials unloaded",
			what, attackSource, rep.Sent, rep.Seconds, float64(rep.Sent)/rep.Seconds, niceNote(rep.NiceLo, rep.NiceHi), rep.Errors, answered,
			statsDelta(listenerFields(st0), listenerFields(st1)), 100*under.cpuShare(), 100*base.cpuShare(), dials)
		note += fmt.Sprintf("; the legitimate flows moved %d KiB under the flood", under.streamed>>10)
		if !inFlood {
			note += "; the dials outlasted the flood"
		}
		cpu := result{Scenario: "attack", Metric: name + "_cpu_extra", Unit: "% of a core", Runs: 1,
			Value: ptr(round(100 * extra)), Target: ptr("value <= 10"), Note: note}
		cpu.Pass = ptr(100*extra <= 10)
		p := result{Scenario: "attack", Metric: name + "_dial_p99", Unit: "ms", Runs: 1,
			Value: ptr(round(percentile(under.times, 0.99))), Baseline: ptr("unloaded"), BaselineValue: ptr(round(percentile(base.times, 0.99))),
			Target: ptr("ratio <= 3"),
			Note: fmt.Sprintf("p99 (nearest rank: the 99th of %d) of legitimate rendr dials over transport/tcp from 127.0.0.1 (new Dialer and session, one flow, 16 KiB written), one every %v; under the flood %s; unloaded %s; the flood from a process at nice %d (%s)",
				dials, every, errNote(under), errNote(base), attackerNice, niceNote(rep.NiceLo, rep.NiceHi))}
		if len(under.times) == 0 || len(base.times) == 0 {
			p.Value, p.Pass = nil, ptr(false)
		} else {
			p.Ratio = ptr(round(*p.Value / *p.BaselineValue))
			p.Pass = ptr(*p.Ratio <= 3 && under.fails == 0)
		}
		out = append(out, cpu, p)
	}
	return out
}

// readLines passes through the JSON result lines a child process printed.
func readLines(b []byte) ([]result, error) {
	var out []result
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	for sc.Scan() {
		var r result
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, sc.Err()
}

// startProfile writes a CPU profile of this process to -cpuprofile DIR/name.pprof until the
// returned func is called; without -cpuprofile it does nothing.
func startProfile(c *config, name string) (stop func()) {
	if c.cpuDir == "" {
		return func() {}
	}
	f, err := os.Create(filepath.Join(c.cpuDir, name+".pprof"))
	if err != nil {
		c.logf("cpuprofile: %v", err)
		return func() {}
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		c.logf("cpuprofile: %v", err)
		f.Close()
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}

// writeHeapProfile writes the heap profile as of the last collection to DIR/name.heap, when
// a directory is given (-cpuprofile): `go tool pprof -sample_index=inuse_space -diff_base
// A.heap B.heap` then says which allocation sites hold what one snapshot has more of.
func writeHeapProfile(dir, name string) {
	if dir == "" {
		return
	}
	f, err := os.Create(filepath.Join(dir, name+".heap"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "rendrbench: heap profile:", err)
		return
	}
	defer f.Close()
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		fmt.Fprintln(os.Stderr, "rendrbench: heap profile:", err)
	}
}
