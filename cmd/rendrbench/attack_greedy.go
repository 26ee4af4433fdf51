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
	heldN  atomic.Int64
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
		g.heldN.Add(1)
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
	Dialers     int     `json:"dialers"`      // Dialers that got a session
	Refused     int     `json:"refused"`      // Dialers that did not
	LastRefusal string  `json:"last_refusal"` // why the last one did not
	BondPaths   int     `json:"bond_paths"`   // attached paths of the first session
	Flows       int     `json:"flows"`        // flows opened on the second session
	FlowErrors  int     `json:"flow_errors"`  // flow dials that failed
	FlowError   string  `json:"flow_error"`   // the last failure
	FlowPath    string  `json:"flow_path"`    // the flows' session's path: state, dials, last error
	Seconds     float64 `json:"seconds"`      // how long the setup took
}

// greedyReport is what it prints when told to stop.
type greedyReport struct {
	Sessions   int64   `json:"sessions"`    // more sessions tried after the setup
	SessionsOK int64   `json:"sessions_ok"` // of which granted
	Flows      int64   `json:"flows"`       // more flows opened after the setup
	CPU        float64 `json:"cpu_s"`       // the greedy process's own CPU seconds
	FlowPath   string  `json:"flow_path"`   // the flows' session's path at the end
}

// runGreedyPeer is main for the greedy peer process: one key (-attack-msg, hex) takes
// sessions, paths and flows from the listener at -attack-addr (public key -attack-key), prints
// a greedySetup line, then goes on asking (a new session every 20 ms, kept when granted, and a
// new flow every millisecond) until its stdin closes or -attack-seconds pass, and prints a
// greedyReport line.
func runGreedyPeer(a attackerArgs) {
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
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
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
	time.Sleep(500 * time.Millisecond) // the last paths of the bond attach, or are refused
	for _, p := range held[1].Status().Paths {
		st.FlowPath = fmt.Sprintf("%v after %d dials, last error %q", p.State, p.Dials, p.LastError)
	}
	for _, p := range held[0].Status().Paths {
		if p.State == status.Up || p.State == status.Suspect {
			st.BondPaths++
		}
	}
	st.Seconds = time.Since(t0).Seconds()
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
	rep.CPU = (cpuTime() - c0).Seconds()
	if err := enc.Encode(rep); err != nil {
		die(err)
	}
	// Nothing is closed: the process ends, the listener sees its carriers go.
	os.Exit(0)
}

// attackGreedy measures another peer's bulk throughput with and without a greedy peer (a
// process of its own, runGreedyPeer) that opens sessions, paths and flows past the
// listener's bounds.
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
		for _, c := range g.held {
			c.Close()
		}
	}()
	if _, _, err := victimTransfer(vd, g); err != nil { // warm-up, not measured
		return fail(err)
	}
	var base, baseCPU []float64
	for run := range c.runs {
		r, cpu, err := victimTransfer(vd, g)
		if err != nil {
			return fail(err)
		}
		c.logf("attack: greedy: unloaded run %d: %.0f MiB/s, %.2f CPU s/GiB", run, r, cpu)
		base, baseCPU = append(base, r), append(baseCPU, cpu)
	}

	// The listener process's CPU with nothing to do, to compare with the same beside the
	// greedy peer: what its state and its asking cost apart from the victim's transfer.
	idle := func() float64 {
		t0, c0 := time.Now(), cpuTime()
		time.Sleep(time.Second)
		return (cpuTime() - c0).Seconds() / time.Since(t0).Seconds()
	}
	idleBefore, heapBefore := idle(), heapInuse()

	// The greedy peer, bounded: 60 s at most after its setup, or until its stdin closes.
	exe, err := os.Executable()
	if err != nil {
		return fail(err)
	}
	pub := k.srv.Public()
	cmd := exec.Command(exe, "-attacker", "greedy", "-attack-addr", addr,
		"-attack-key", base64.StdEncoding.EncodeToString(pub[:]), "-attack-msg", hex.EncodeToString(greedy[:]),
		"-attack-seconds", "60")
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return fail(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return fail(err)
	}
	if err := cmd.Start(); err != nil {
		return fail(err)
	}
	remove := atExit(func() { cmd.Process.Kill() })
	defer remove()
	kill := time.AfterFunc(100*time.Second, func() { cmd.Process.Kill() })
	defer kill.Stop()
	dec := json.NewDecoder(stdout)
	var setup greedySetup
	if err := dec.Decode(&setup); err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return fail(fmt.Errorf("greedy peer: %w", err))
	}
	stSetup := ln.Stats()
	idleBeside, heapBeside := idle(), heapInuse()
	c.logf("attack: greedy: %d sessions held, %d refused; %d paths on the first; %d flows opened, %d accepted; %s",
		setup.Dialers, setup.Refused, setup.BondPaths, setup.Flows, g.heldN.Load(), statsDelta(listenerFields(status.Listener{}), listenerFields(stSetup)))

	// The greatest number of sessions the listener holds is sampled during the runs.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var maxSess, over atomic.Int64
	maxSess.Store(int64(stSetup.Sessions))
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			n := int64(ln.Stats().Sessions)
			if n > maxSess.Load() {
				maxSess.Store(n)
			}
			if n > 17 { // the victim's and 16 of the greedy key's
				over.Add(1)
			}
		}
	})
	var loaded, loadedCPU []float64
	var runErr error
	stopProf := startProfile(c, "attack-greedy-beside")
	for run := range c.runs {
		r, cpu, err := victimTransfer(vd, g)
		if err != nil {
			runErr = err
			break
		}
		c.logf("attack: greedy: run %d beside the greedy peer: %.0f MiB/s, %.2f CPU s/GiB", run, r, cpu)
		loaded, loadedCPU = append(loaded, r), append(loadedCPU, cpu)
	}
	stopProf()
	close(stop)
	wg.Wait()
	st := ln.Stats()
	stdin.Close()
	var rep greedyReport
	derr := dec.Decode(&rep)
	werr := cmd.Wait()
	if runErr != nil {
		return fail(runErr)
	}
	if derr != nil || werr != nil {
		return fail(fmt.Errorf("greedy peer: %v, %v", derr, werr))
	}

	b := result{Scenario: "attack", Metric: "greedy_victim_unloaded", Unit: "MiB/s",
		Note: fmt.Sprintf("another peer's bulk transfer of %d MiB on one transport/tcp loopback path, 64 KiB writes, alone with the listener", greedyBytes/mib)}
	measured(&b, base)
	b.CPUPerGiB = ptr(round(median(baseCPU)))
	t := result{Scenario: "attack", Metric: "greedy_victim_throughput", Unit: "MiB/s",
		Note: fmt.Sprintf("the same transfer while the greedy key (another process, one core) holds %d sessions at the listener (%d paths on the first) and %d flows held open by the server, and keeps asking: %d more sessions tried during the runs (%d granted), %d more flows opened (greedy process CPU %.1f s in all); listener stats over the runs: %s; the path of the greedy session holding 65535 flows: %s at the setup, %q at the end; the listener process's CPU over 1 s with no transfer: %.1f%% of a core before the greedy peer came, %.1f%% beside it; its heap in use after GC %.1f MiB before, %.1f MiB beside it; the runs without and with the greedy peer follow each other, not interleaved; cpu_s_per_gib is the listener process's CPU (listener and victim) per GiB moved, less sensitive than the rate to other load on the machine",
			stSetup.Sessions-1, setup.BondPaths, g.heldN.Load(), rep.Sessions, rep.SessionsOK, rep.Flows, rep.CPU,
			statsDelta(listenerFields(stSetup), listenerFields(st)), setup.FlowPath, rep.FlowPath, 100*idleBefore, 100*idleBeside,
			float64(heapBefore)/mib, float64(heapBeside)/mib)}
	measured(&t, loaded)
	t.CPUPerGiB = ptr(round(median(loadedCPU)))
	against(&t, &b, 0.9, true)
	// The victim holds one session; the rest are the greedy key's.
	greedyMax := maxSess.Load() - 1
	bounded := greedyMax <= 16 && setup.BondPaths <= 32 && st.RefusedSessionsPerPeer > 0 && st.RefusedPaths > 0
	r := result{Scenario: "attack", Metric: "greedy_refused", Unit: "refusals", Runs: 1,
		Value:  ptr(float64(st.RefusedSessionsPerPeer + st.RefusedSessions + st.RefusedPaths + st.RefusedMemory)),
		Target: ptr("sessions held <= 16, paths per session <= 32, the rest refused (counted)"),
		Pass:   ptr(bounded),
		Note: fmt.Sprintf("one key: %d Dialers, the first with %d paths, then one more every 20 ms during the runs; at most %d of its sessions at the listener at once (sampled every 10 ms; %d samples above 16), %d attached paths on the first; %d of its Dialers got a session at setup, %d refused (the last: %s); listener stats: %s; flows: %d opened by the greedy Dialer on one session (%d dials failed, the last: %s; its path then: %s), %d accepted by the server over the whole run, the others refused by the listener (its accept backlog is 1024, and the Dialer sends its OPENs many to a record); rendr's Dialer stops at 65536 flows a session by itself, so the listener's flow bound is not reached here, and the listener has no counter of refused flows",
			greedySessions, greedyPaths, greedyMax, over.Load(), setup.BondPaths, setup.Dialers, setup.Refused, setup.LastRefusal,
			statsDelta(listenerFields(status.Listener{}), listenerFields(st)), setup.Flows, setup.FlowErrors, setup.FlowError, setup.FlowPath, g.heldN.Load())}
	return []result{b, t, r}
}
