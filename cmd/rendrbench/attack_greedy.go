package main

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/status"
	"github.com/rendr-go/rendr/transport/tcp"
)

const (
	greedySessions = 20    // Dialers of the greedy key, one session each: 16 is the bound
	greedyPaths    = 40    // paths of the first greedy session: 32 is the bound
	greedyFlows    = 70000 // flows the greedy peer opens on one session: 65536 is the bound
	greedyBytes    = 1024 * mib
)

// greedyListener is a rendr listener whose acceptor hands the victim's flows (told apart by
// their peer's key) to victim and keeps every other flow open and unread, as a server that
// waits for requests does.
type greedyListener struct {
	ln     *rendr.Listener
	victim chan *rendr.Conn
	vkey   rendr.PublicKey
	held   []*rendr.Conn
	wg     sync.WaitGroup
	heldMu sync.Mutex
}

func (g *greedyListener) accept() {
	for {
		c, err := g.ln.AcceptContext(context.Background())
		if err != nil {
			return
		}
		if c.RemoteAddr().(rendr.Addr).Key == g.vkey {
			g.victim <- c
			continue
		}
		g.heldMu.Lock()
		g.held = append(g.held, c)
		g.heldMu.Unlock()
	}
}

// victimTransfer writes greedyBytes on a new flow of d and returns the receiver's rate in
// MiB/s (bytes over the time from the first Write to the receiver's EOF) and the process's CPU
// seconds per GiB over the same time.
func victimTransfer(d *rendr.Dialer, g *greedyListener) (rate, cpuPerGiB float64, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	snd, err := d.DialContext(ctx)
	if err != nil {
		return 0, 0, err
	}
	defer snd.Close()
	b := make([]byte, 64<<10)
	start, c0 := time.Now(), cpuTime()
	werr := make(chan error, 1)
	go func() {
		var err error
		for n := 0; n < greedyBytes && err == nil; n += len(b) {
			_, err = snd.Write(b)
		}
		if err == nil {
			err = snd.CloseWrite()
		}
		werr <- err
	}()
	var rcv *rendr.Conn
	select {
	case rcv = <-g.victim:
	case <-ctx.Done():
		return 0, 0, errors.New("the victim's flow was never accepted")
	}
	defer rcv.Close()
	rcv.SetReadDeadline(time.Now().Add(30 * time.Second)) // a stalled transfer ends the run
	n, err := io.Copy(io.Discard, rcv)
	el, cpu := time.Since(start), cpuTime()-c0
	if err != nil {
		return 0, 0, err
	}
	if n != greedyBytes {
		return 0, 0, fmt.Errorf("received %d bytes of %d", n, greedyBytes)
	}
	if err := <-werr; err != nil {
		return 0, 0, err
	}
	return float64(n) / mib / el.Seconds(), cpu.Seconds() / (float64(n) / (1 << 30)), nil
}

// greedySetup is what the greedy peer process prints once it has taken what it could.
type greedySetup struct {
	Dialers      int     `json:"dialers"`       // Dialers that got a session
	Refused      int     `json:"refused"`       // Dialers that did not
	LastRefusal  string  `json:"last_refusal"`  // why the last one did not
	BondPaths    int     `json:"bond_paths"`    // attached paths of the first session
	BondRefused  int     `json:"bond_refused"`  // paths of the first session the listener refused
	Flows        int     `json:"flows"`         // flows opened on the second session
	FlowErrors   int     `json:"flow_errors"`   // flow dials that failed
	FlowError    string  `json:"flow_error"`    // the last failure
	FlowPath     string  `json:"flow_path"`     // the flows' session's path: state, dials, last error
	SessionsTook float64 `json:"sessions_took"` // seconds: the Dialers' sessions
	FlowsTook    float64 `json:"flows_took"`    // seconds: the flows
	Seconds      float64 `json:"seconds"`       // how long the whole setup took
	NiceLo       int     `json:"nice_lo"`       // the lowest and highest nice value of its threads
	NiceHi       int     `json:"nice_hi"`
}

// greedyReport is what it prints when told to stop.
type greedyReport struct {
	Sessions   int64   `json:"sessions"`    // more sessions tried after the setup
	SessionsOK int64   `json:"sessions_ok"` // of which granted
	Flows      int64   `json:"flows"`       // more flows opened after the setup
	CPU        float64 `json:"cpu_s"`       // the greedy process's own CPU seconds
	FlowPath   string  `json:"flow_path"`   // the flows' session's path at the end
	Closing    float64 `json:"closing"`     // seconds its Dialers took to close
}

// refusedByBound reports whether the listener refused one of the paths with ErrLimit: the
// Dialer then goes on asking (it backs off and dials again), and waiting longer for it only
// costs time.
func refusedByBound(st status.Session) bool {
	for _, p := range st.Paths {
		if strings.Contains(p.LastError, rendr.ErrLimit.Error()) {
			return true
		}
	}
	return false
}

// runGreedyPeer is main for the greedy peer process: one key (-attack-msg, hex) takes
// sessions, paths and flows from the listener at -attack-addr (public key -attack-key), prints
// a greedySetup line, then goes on asking (a new session every 20 ms, kept when granted, and a
// new flow every millisecond) until its stdin closes or -attack-seconds pass, closes its
// Dialers (so that the listener lets go of its sessions at once, not after their reconnect
// timeout: the next unloaded run must be unloaded) and prints a greedyReport line.
func runGreedyPeer(a attackerArgs) {
	atLowestPriority()
	runtime.GOMAXPROCS(1)
	c0 := cpuTime()
	die := func(err error) {
		fmt.Fprintln(os.Stderr, "rendrbench: greedy peer:", err)
		os.Exit(1)
	}
	pub, err := a.listenerKey()
	if err != nil {
		die(err)
	}
	kb, err := hex.DecodeString(a.msg)
	if err != nil || len(kb) != 32 {
		die(fmt.Errorf("bad -attack-msg"))
	}
	key, peer := rendr.PrivateKey(kb), rendr.PublicKey(pub)
	dial := tcp.Dialer(a.addr)
	var all []*rendr.Dialer
	newDialer := func(root *rendr.Target) *rendr.Dialer {
		d, err := rendr.NewDialer(rendr.DialerConfig{Key: key, PeerKey: peer, Root: root})
		if err != nil {
			die(err)
		}
		all = append(all, d)
		return d
	}
	var st greedySetup
	t0 := time.Now()
	var held []*rendr.Dialer
	for i := range greedySessions {
		root := rendr.Path("greedy", dial)
		if i == 0 {
			// A bond takes at most 16 children: bonds of bonds make the 40 paths.
			var groups, paths []*rendr.Target
			for j := range greedyPaths {
				paths = append(paths, rendr.Path(fmt.Sprintf("p%d", j), dial))
				if len(paths) == 14 || j == greedyPaths-1 {
					groups = append(groups, rendr.Bond(fmt.Sprintf("g%d", len(groups)), paths...))
					paths = nil
				}
			}
			root = rendr.Bond("greedy", groups...)
		}
		d := newDialer(root)
		// A refused Dialer would wait out its whole timeout: the dial ends as soon as the
		// listener has refused it, and the Dialer, left open, goes on asking. (Not the bond:
		// it founds its session first, and the paths it is refused come later.)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		go func() {
			for i > 0 && ctx.Err() == nil {
				if refusedByBound(d.Status()) {
					cancel()
					return
				}
				time.Sleep(2 * time.Millisecond)
			}
		}()
		_, err := d.DialContext(ctx)
		cancel()
		if err != nil {
			st.Refused++
			st.LastRefusal = err.Error()
			continue
		}
		held = append(held, d)
	}
	st.Dialers = len(held)
	if len(held) < 2 {
		die(fmt.Errorf("got %d sessions (%s)", len(held), st.LastRefusal))
	}
	st.SessionsTook = time.Since(t0).Seconds()
	tf := time.Now()
	fctx, fcancel := context.WithTimeout(context.Background(), 20*time.Second)
	for st.Flows+st.FlowErrors < greedyFlows && fctx.Err() == nil {
		// Held open and never written: the server keeps them.
		if _, err := held[1].DialContext(fctx); err != nil {
			st.FlowErrors++
			st.FlowError = err.Error()
			continue
		}
		st.Flows++
	}
	fcancel()
	st.FlowsTook = time.Since(tf).Seconds()
	// Every path of the bond attached, or refused once (bounded: a path that does neither
	// in 5 s counts as neither).
	for end := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		st.BondPaths, st.BondRefused = 0, 0
		ps := held[0].Status().Paths
		for _, p := range ps {
			if p.State == status.Up || p.State == status.Suspect {
				st.BondPaths++
			} else if strings.Contains(p.LastError, rendr.ErrLimit.Error()) {
				st.BondRefused++
			}
		}
		if st.BondPaths+st.BondRefused >= len(ps) || time.Now().After(end) {
			break
		}
	}
	for _, p := range held[1].Status().Paths {
		st.FlowPath = fmt.Sprintf("%v after %d dials, last error %q", p.State, p.Dials, p.LastError)
	}
	st.Seconds = time.Since(t0).Seconds()
	if st.NiceLo, st.NiceHi, err = threadNice(0); err != nil {
		die(err)
	}
	enc := json.NewEncoder(os.Stdout)
	if err := enc.Encode(st); err != nil {
		die(err)
	}

	stop := make(chan struct{})
	go func() {
		io.Copy(io.Discard, os.Stdin)
		close(stop)
	}()
	end := time.After(a.deadline().Sub(time.Now()))
	var rep greedyReport
	session := time.NewTicker(20 * time.Millisecond)
	flow := time.NewTicker(time.Millisecond)
loop:
	for {
		select {
		case <-stop:
			break loop
		case <-end:
			break loop
		case <-session.C:
			d := newDialer(rendr.Path("greedy", dial))
			ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			_, err := d.DialContext(ctx)
			cancel()
			rep.Sessions++
			if err == nil {
				rep.SessionsOK++
			}
		case <-flow.C:
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			if _, err := held[2%len(held)].DialContext(ctx); err == nil {
				rep.Flows++
			}
			cancel()
		}
	}
	session.Stop()
	flow.Stop()
	rep.FlowPath = "no path: the session has ended"
	for _, p := range held[1].Status().Paths {
		rep.FlowPath = fmt.Sprintf("%v after %d dials, last error %q", p.State, p.Dials, p.LastError)
	}
	// Every Dialer closes, the refused ones with the others: each tells the listener, which
	// ends the session and its flows at once.
	tc := time.Now()
	var wg sync.WaitGroup
	for _, d := range all {
		wg.Go(func() { d.Close() })
	}
	wg.Wait()
	rep.Closing = time.Since(tc).Seconds()
	rep.CPU = (cpuTime() - c0).Seconds()
	if err := enc.Encode(rep); err != nil {
		die(err)
	}
	os.Exit(0)
}

// greedyProc is a running greedy peer process.
type greedyProc struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	dec    *json.Decoder
	remove func()
	kill   *time.Timer
}

// startGreedy starts the greedy peer process (runGreedyPeer), bounded to 60 s of asking, and
// waits for its setup line.
func startGreedy(addr string, pub rendr.PublicKey, key rendr.PrivateKey) (*greedyProc, greedySetup, error) {
	var setup greedySetup
	exe, err := os.Executable()
	if err != nil {
		return nil, setup, err
	}
	cmd := exec.Command(exe, "-attacker", "greedy", "-attack-addr", addr,
		"-attack-key", base64.StdEncoding.EncodeToString(pub[:]), "-attack-msg", hex.EncodeToString(key[:]),
		"-attack-seconds", "60")
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, setup, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, setup, err
	}
	if err := cmd.Start(); err != nil {
		return nil, setup, err
	}
	p := &greedyProc{cmd: cmd, stdin: stdin, dec: json.NewDecoder(stdout)}
	p.remove = atExit(func() { cmd.Process.Kill() })
	p.kill = time.AfterFunc(100*time.Second, func() { cmd.Process.Kill() })
	if err := p.dec.Decode(&setup); err != nil {
		cmd.Process.Kill()
		p.end()
		return nil, setup, fmt.Errorf("greedy peer: %w", err)
	}
	return p, setup, nil
}

func (p *greedyProc) end() error {
	err := p.cmd.Wait()
	p.kill.Stop()
	p.remove()
	return err
}

// stop tells the greedy peer to stop (its stdin closes), and waits for its report and its end.
func (p *greedyProc) stop() (greedyReport, error) {
	var rep greedyReport
	p.stdin.Close()
	derr := p.dec.Decode(&rep)
	werr := p.end()
	if derr != nil || werr != nil {
		return rep, fmt.Errorf("greedy peer: %v, %v", derr, werr)
	}
	return rep, nil
}

// release closes the flows the acceptor held for the greedy peer, as a server closes flows
// that failed, and returns how many there were.
func (g *greedyListener) release() int {
	g.heldMu.Lock()
	held := g.held
	g.held = nil
	g.heldMu.Unlock()
	for _, c := range held {
		c.Close()
	}
	return len(held)
}

// greedyRound is one round of the greedy attack: a transfer alone, then one beside the
// greedy peer.
type greedyRound struct {
	alone, beside       float64 // MiB/s
	aloneCPU, besideCPU float64 // CPU s per GiB
	setup               greedySetup
	rep                 greedyReport
	held                int           // flows the server held for the greedy peer
	stats               string        // listener counters that moved over the round
	letGo               time.Duration // from the process's end until the listener held none of its sessions
	bounded             bool          // the bounds held and refused, this round
	refusals            uint64        // the listener's refusals over the round, all bounds
	// The listener process's CPU share over 1 s with no transfer, its heap in use after GC
	// and the listener's memory budget in use, before the greedy peer came and beside it.
	idleBefore, idleBeside float64
	heapBefore, heapBeside uint64
	memBefore, memBeside   int64
	memAfter               int64 // once the greedy peer's sessions were gone
}

func (r greedyRound) ratio() float64 { return r.beside / r.alone }

// attackGreedy measures another peer's bulk throughput alone with the listener and beside a
// greedy peer (a process of its own, runGreedyPeer) that opens sessions, paths and flows
// past the listener's bounds. The two are interleaved: each of -runs rounds is a transfer
// alone, then a greedy peer that takes what it can, a transfer beside it, and the greedy
// peer's end, waited for until the listener holds none of its sessions (then the server
// closes the flows it held for it).
// The unloaded runs are then truly unloaded, and a drift of the machine over the invocation
// (the transfer is CPU-bound, and this machine is shared) moves both sides of a round alike.
func attackGreedy(c *config) []result {
	fail := func(err error) []result { return []result{failure("attack", fmt.Errorf("greedy: %w", err))} }
	k, err := newBenchKeys()
	if err != nil {
		return fail(err)
	}
	greedy, err := rendr.NewKey()
	if err != nil {
		return fail(err)
	}
	src, err := tcp.Listen("127.0.0.1:0")
	if err != nil {
		return fail(err)
	}
	addr := src.Addr().String()
	ln, err := rendr.Listen(rendr.ListenConfig{Key: k.srv, Peers: []rendr.PublicKey{k.cli.Public(), greedy.Public()}}, src)
	if err != nil {
		return fail(err)
	}
	g := &greedyListener{ln: ln, victim: make(chan *rendr.Conn, 1), vkey: k.cli.Public()}
	g.wg.Go(g.accept)
	vd, err := rendr.NewDialer(rendr.DialerConfig{Key: k.cli, PeerKey: k.srv.Public(), Root: rendr.Path("victim", tcp.Dialer(addr))})
	if err != nil {
		return fail(err)
	}
	defer func() {
		vd.Close()
		ln.Close()
		g.wg.Wait()
		g.release()
	}()
	if _, _, err := victimTransfer(vd, g); err != nil { // warm-up, not measured
		return fail(err)
	}
	// Each measured transfer starts after a collection, so that neither kind pays for
	// garbage the other left (the greedy peer's setup makes plenty); the state it holds is
	// live and costs every collection during the transfer, as it should.
	transfer := func(kind string, round int) (float64, float64, error) {
		runtime.GC()
		stop := startProfile(c, fmt.Sprintf("attack-greedy-%s-%d", kind, round))
		defer stop()
		return victimTransfer(vd, g)
	}
	// The listener process's CPU with nothing to do, to compare with the same beside the
	// greedy peer: what its state and its asking cost apart from the victim's transfer.
	idle := func() float64 {
		t0, c0 := time.Now(), cpuTime()
		time.Sleep(time.Second)
		return (cpuTime() - c0).Seconds() / time.Since(t0).Seconds()
	}

	// The greatest number of sessions the listener holds, sampled from the first greedy
	// peer's start (its setup included) to the end.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var maxSess, over atomic.Int64
	defer func() {
		close(stop)
		wg.Wait()
	}()
	sample := func() {
		for {
			n := int64(ln.Stats().Sessions)
			if n > maxSess.Load() {
				maxSess.Store(n)
			}
			if n > 17 { // the victim's and 16 of the greedy key's
				over.Add(1)
			}
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}

	var rounds []greedyRound
	for round := range c.runs {
		var r greedyRound
		if r.alone, r.aloneCPU, err = transfer("unloaded", round); err != nil {
			return fail(err)
		}
		// The same pause in every round, before the greedy peer comes and after its setup: the
		// listener process's idle CPU and heap, and the rounds stay alike.
		r.idleBefore, r.heapBefore = idle(), heapInuse()
		st0 := ln.Stats()
		if round == 0 {
			wg.Go(sample)
		}
		gp, setup, err := startGreedy(addr, k.srv.Public(), greedy)
		if err != nil {
			return fail(err)
		}
		r.setup = setup
		stopProf := startProfile(c, fmt.Sprintf("attack-greedy-idle-beside-%d", round))
		r.idleBeside = idle()
		stopProf()
		r.heapBeside = heapInuse()
		r.memBefore, r.memBeside = st0.MemoryUsed, ln.Stats().MemoryUsed
		var runErr error
		r.beside, r.besideCPU, runErr = transfer("beside", round)
		stRun := ln.Stats()
		r.rep, err = gp.stop()
		if runErr != nil {
			return fail(runErr)
		}
		if err != nil {
			return fail(err)
		}
		// Until the listener holds the victim's session alone, one peer's: then the greedy
		// peer's sessions, with their paths and flows, are gone (a session gives its memory
		// budget back as it ends; the budget in use is no test of that, since the victim's own
		// share moves with its flow windows). Bounded: a listener that keeps them is a
		// finding, reported as such, not a reason to measure the next unloaded run beside them.
		t := time.Now()
		for {
			st := ln.Stats()
			if st.Sessions == st0.Sessions && st.Peers == st0.Peers {
				break
			}
			if time.Since(t) > 10*time.Second {
				return fail(fmt.Errorf("round %d: 10 s after the greedy peer closed its Dialers and ended, the listener still held %d sessions of %d peers (%d of %d before it came)",
					round, st.Sessions, st.Peers, st0.Sessions, st0.Peers))
			}
			time.Sleep(5 * time.Millisecond)
		}
		r.letGo = time.Since(t)
		// The server closes the flows it held for the greedy peer, which failed with its
		// session.
		r.held = g.release()
		stEnd := ln.Stats()
		r.memAfter = stEnd.MemoryUsed
		r.stats = statsDelta(listenerFields(st0), listenerFields(stEnd))
		r.refusals = stEnd.RefusedSessionsPerPeer + stEnd.RefusedSessions + stEnd.RefusedPaths + stEnd.RefusedMemory -
			(st0.RefusedSessionsPerPeer + st0.RefusedSessions + st0.RefusedPaths + st0.RefusedMemory)
		r.bounded = setup.Dialers <= 16 && setup.BondPaths <= 32 &&
			stEnd.RefusedSessionsPerPeer > st0.RefusedSessionsPerPeer && stEnd.RefusedPaths > st0.RefusedPaths
		c.logf("attack: greedy: round %d: alone %.0f MiB/s (%.2f CPU s/GiB), beside the greedy peer %.0f MiB/s (%.2f), ratio %.2f; idle CPU %.1f%% / %.1f%%, heap %.1f / %.1f MiB, memory budget used %.1f / %.1f / %.1f MiB; greedy setup %.1f s (sessions %.1f, flows %.1f): %d sessions, %d refused, %d paths on the first (%d refused), %d flows opened, %d held by the server; sessions during the run: %d; listener let go %.0f ms after the process ended (its Dialers took %.1f s to close); %s",
			round, r.alone, r.aloneCPU, r.beside, r.besideCPU, r.ratio(), 100*r.idleBefore, 100*r.idleBeside, float64(r.heapBefore)/mib, float64(r.heapBeside)/mib, float64(r.memBefore)/mib, float64(r.memBeside)/mib, float64(r.memAfter)/mib, setup.Seconds, setup.SessionsTook, setup.FlowsTook,
			setup.Dialers, setup.Refused, setup.BondPaths, setup.BondRefused, setup.Flows, r.held, stRun.Sessions, float64(r.letGo)/float64(time.Millisecond), r.rep.Closing, r.stats)
		rounds = append(rounds, r)
	}
	return greedyResults(rounds, maxSess.Load(), over.Load())
}

// greedyResults makes the greedy attack's lines from its rounds.
func greedyResults(rounds []greedyRound, maxSess, over int64) []result {
	var alone, beside, aloneCPU, besideCPU, ratios, cpuRatios []float64
	var pairs []string
	bounded := true
	for i, r := range rounds {
		alone, beside = append(alone, r.alone), append(beside, r.beside)
		aloneCPU, besideCPU = append(aloneCPU, r.aloneCPU), append(besideCPU, r.besideCPU)
		ratios, cpuRatios = append(ratios, r.ratio()), append(cpuRatios, r.aloneCPU/r.besideCPU)
		pairs = append(pairs, fmt.Sprintf("round %d: %.0f / %.0f MiB/s = %.2f (CPU %.2f / %.2f s/GiB)", i, r.beside, r.alone, r.ratio(), r.besideCPU, r.aloneCPU))
		bounded = bounded && r.bounded
	}
	first, last := rounds[0], rounds[len(rounds)-1]
	var sessTried, sessOK, flows int64
	var greedyCPU float64
	var held []string
	var idleBefore, idleBeside, heapBefore, heapBeside []float64
	for _, r := range rounds {
		sessTried, sessOK, flows, greedyCPU = sessTried+r.rep.Sessions, sessOK+r.rep.SessionsOK, flows+r.rep.Flows, greedyCPU+r.rep.CPU
		held = append(held, strconv.Itoa(r.held))
		idleBefore, idleBeside = append(idleBefore, 100*r.idleBefore), append(idleBeside, 100*r.idleBeside)
		heapBefore, heapBeside = append(heapBefore, float64(r.heapBefore)/mib), append(heapBeside, float64(r.heapBeside)/mib)
	}
	nice := fmt.Sprintf("nice %d to %d", first.setup.NiceLo, first.setup.NiceHi)
	if first.setup.NiceLo == first.setup.NiceHi {
		nice = fmt.Sprintf("nice %d", first.setup.NiceLo)
	}

	b := result{Scenario: "attack", Metric: "greedy_victim_unloaded", Unit: "MiB/s",
		Note: fmt.Sprintf("another peer's bulk transfer of %d MiB on one transport/tcp loopback path, 64 KiB writes, alone with the listener: in each round, before the greedy peer comes (in the first round, after the warm-up; in the others, once the listener held none of the previous greedy peer's sessions and the server had closed its flows); the transfers alone and beside the greedy peer alternate, round by round", greedyBytes/mib)}
	measured(&b, alone)
	b.CPUPerGiB = ptr(round(median(aloneCPU)))
	t := result{Scenario: "attack", Metric: "greedy_victim_throughput", Unit: "MiB/s",
		Note: fmt.Sprintf("the same transfer beside the greedy key (another process, one core, every thread at %s), started afresh in each round: it holds %d sessions at the listener (%d paths on the first) and %s flows held open by the server (per round), and keeps asking: %d more sessions tried during the runs (%d granted), %d more flows opened (greedy process CPU %.1f s in all); per round, beside / alone: %s; ratio is the median of the rounds' ratios, cpu_ratio the median of the rounds' CPU ratios; before each transfer a collection; the listener process's CPU over 1 s with no transfer, median of the rounds: %.1f%% of a core before the greedy peer came, %.1f%% beside it (after its setup, before the transfer); its heap in use after GC %.1f MiB before, %.1f MiB beside it; the path of the greedy session holding the flows: %s at the setup, %s at the end (last round); cpu_s_per_gib is the listener process's CPU (listener and victim) per GiB moved, less sensitive than the rate to other load on the machine",
			nice, first.setup.Dialers, first.setup.BondPaths, joinComma(held), sessTried, sessOK, flows, greedyCPU, joinComma(pairs),
			median(idleBefore), median(idleBeside), median(heapBefore), median(heapBeside), last.setup.FlowPath, last.rep.FlowPath)}
	measured(&t, beside)
	t.CPUPerGiB = ptr(round(median(besideCPU)))
	t.Baseline, t.BaselineValue = ptr(b.Metric), b.Value
	t.Ratio, t.CPURatio = ptr(round(median(ratios))), ptr(round(median(cpuRatios)))
	t.Target = ptr("ratio >= 0.9")
	t.Pass = ptr(*t.Ratio >= 0.9)
	// The victim holds one session; the rest are the greedy key's.
	greedyMax := maxSess - 1
	bounded = bounded && greedyMax <= 16
	var refusals []string
	for i, r := range rounds {
		refusals = append(refusals, fmt.Sprintf("round %d: %d of its %d Dialers got a session, %d refused (the last: %s), %d of %d bond paths attached, %d refused; flows: %d opened by one Dialer (%d dials failed, the last: %s), %d accepted and held by the server; the listener held none of its sessions %.0f ms after the process ended (memory budget in use %.1f MiB before it came, %.1f MiB beside it, %.1f MiB after); listener stats: %s",
			i, r.setup.Dialers, greedySessions, r.setup.Refused, r.setup.LastRefusal, r.setup.BondPaths, greedyPaths, r.setup.BondRefused,
			r.setup.Flows, r.setup.FlowErrors, r.setup.FlowError, r.held, float64(r.letGo)/float64(time.Millisecond),
			float64(r.memBefore)/mib, float64(r.memBeside)/mib, float64(r.memAfter)/mib, r.stats))
	}
	var refused float64
	for _, r := range rounds {
		refused += float64(r.refusals)
	}
	rr := result{Scenario: "attack", Metric: "greedy_refused", Unit: "refusals", Runs: len(rounds),
		Target: ptr("sessions held <= 16, paths per session <= 32, the rest refused (counted), in every round"),
		Pass:   ptr(bounded),
		Note: fmt.Sprintf("one key, a new greedy process each round (every thread at %s): %d Dialers, the first with %d paths, then one more every 20 ms during the run beside it; at most %d of its sessions at the listener at once (sampled every 10 ms over all rounds; %d samples above 16); %s; rendr's Dialer stops at 65536 flows a session by itself, so the listener's flow bound is not reached here, and the listener has no counter of refused flows (its accept backlog is 1024, and the Dialer sends its OPENs many to a record, so some are refused)",
			nice, greedySessions, greedyPaths, greedyMax, over, joinComma(refusals))}
	rr.Value = ptr(refused)
	return []result{b, t, rr}
}
