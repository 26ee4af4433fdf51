package main

import (
	"bufio"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/status"
	"github.com/rendr-go/rendr/transport/tcp"
)

// The stability scenario: two equally healthy loopback TCP paths under a Selector, many flows
// each moving 16 KiB every 100ms both ways, for a minute, under three loads: none, CPU hogs
// (processes spinning on every core), and the listening process stopped (SIGSTOP) for 300ms
// every 5s. Nothing is wrong with any path, so every move is a false alarm and every death a
// healthy path lost: the targets are at most one move a minute and no death. The listening
// side runs in a process of its own (this binary started again with -stability-peer), so that
// it can be stopped, and reports its own moves when the dialing side is done.

const (
	stabFlows   = 200
	stabChunk   = 16 << 10
	stabEvery   = 100 * time.Millisecond
	stabSeconds = 60
	stabStopFor = 300 * time.Millisecond
	stabStopGap = 5 * time.Second
)

// stabReport is what each side's session counted.
type stabReport struct {
	Moves    [status.Causes]int `json:"moves"` // by cause
	Spurious int                `json:"spurious"`
	Undone   int                `json:"undone"`
	Redials  int                `json:"redials"` // dialing side: carriers dialed beyond one a path
	Err      string             `json:"error,omitempty"`
}

// moveCounter counts a side's migrations by cause, as Options.OnMigrate reports them.
type moveCounter struct {
	mu sync.Mutex
	by [status.Causes]int
}

func (m *moveCounter) record(ev status.Migration) {
	m.mu.Lock()
	if int(ev.Cause) < len(m.by) {
		m.by[ev.Cause]++
	}
	m.mu.Unlock()
}

// reportOf is a side's report: its moves as counted, its session's spurious and undone moves
// and re-dials.
func reportOf(moves *moveCounter, st status.Session) stabReport {
	moves.mu.Lock()
	r := stabReport{Moves: moves.by, Spurious: st.Spurious, Undone: st.Undone}
	moves.mu.Unlock()
	for _, p := range st.Paths {
		r.Redials += max(p.Dials-1, 0)
	}
	return r
}

// falseMoves is every move but the first choice of a path: on healthy paths, each is one too
// many.
func (r stabReport) falseMoves() int {
	n := 0
	for c, m := range r.Moves {
		if status.Cause(c) != status.CauseFirst {
			n += m
		}
	}
	return n
}

func (r stabReport) String() string {
	var b strings.Builder
	for c, m := range r.Moves {
		if m > 0 && status.Cause(c) != status.CauseFirst {
			fmt.Fprintf(&b, "%v %d, ", status.Cause(c), m)
		}
	}
	fmt.Fprintf(&b, "spurious %d, undone %d", r.Spurious, r.Undone)
	return b.String()
}

func runStability(c *config) []result {
	secs := c.seconds
	if secs <= 0 {
		secs = stabSeconds
	}
	d := time.Duration(secs * float64(time.Second))
	var out []result
	for _, load := range []string{"quiet", "cpu_hogs", "peer_stopped"} {
		c.logf("stability: %s, %d flows, %v", load, stabFlows, d)
		dial, peer, err := stabilityRun(c, load, d)
		if errors.Is(err, errors.ErrUnsupported) {
			out = append(out, result{Scenario: "stability", Metric: load + "_moves_per_min", Skipped: err.Error()})
			continue
		}
		if err != nil {
			out = append(out, failure("stability", fmt.Errorf("%s: %w", load, err)))
			continue
		}
		c.logf("stability: %s: dialing side %v; listening side %v; carriers re-dialed %d", load, dial, peer, dial.Redials)
		per := 60 / secs
		moves := float64(dial.falseMoves()+peer.falseMoves()) * per
		mr := result{Scenario: "stability", Metric: load + "_moves_per_min", Value: ptr(round(moves)), Unit: "moves", Runs: 1,
			Target: ptr("value <= 1"), Pass: ptr(moves <= 1),
			Note: fmt.Sprintf("moves on both sides but the first choice, per 60 s; dialing side: %v; listening side: %v", dial, peer)}
		deaths := float64(dial.Redials)
		dr := result{Scenario: "stability", Metric: load + "_deaths", Value: ptr(deaths), Unit: "paths", Runs: 1,
			Target: ptr("value == 0"), Pass: ptr(deaths == 0),
			Note: "carriers dialed again because a healthy path was declared dead"}
		out = append(out, mr, dr)
	}
	return out
}

// stabilityRun runs one minute under load and returns what each side counted.
func stabilityRun(c *config, load string, d time.Duration) (dial, peer stabReport, err error) {
	keys, err := newBenchKeys()
	if err != nil {
		return dial, peer, err
	}
	exe, err := os.Executable()
	if err != nil {
		return dial, peer, err
	}
	cliPub := keys.cli.Public()
	cmd := exec.Command(exe, "-stability-peer", hex.EncodeToString(keys.srv[:])+":"+hex.EncodeToString(cliPub[:]))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return dial, peer, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return dial, peer, err
	}
	if err := cmd.Start(); err != nil {
		return dial, peer, err
	}
	defer atExit(func() { resumeProcess(cmd.Process); cmd.Process.Kill() })()
	defer func() {
		resumeProcess(cmd.Process)
		stdin.Close()
		cmd.Wait()
	}()
	lines := bufio.NewScanner(stdout)
	if !lines.Scan() {
		return dial, peer, fmt.Errorf("the listening process said nothing: %v", lines.Err())
	}
	addrs := strings.Split(lines.Text(), ",")

	var paths []*rendr.Target
	for i, a := range addrs {
		paths = append(paths, rendr.Path(fmt.Sprintf("p%d", i), tcp.Dialer(a)))
	}
	moves := &moveCounter{}
	dl, err := rendr.NewDialer(rendr.DialerConfig{Key: keys.cli, PeerKey: keys.srv.Public(), Root: rendr.Selector("root", paths...),
		Options: rendr.Options{OnMigrate: moves.record}})
	if err != nil {
		return dial, peer, err
	}
	defer dl.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conns := make([]*rendr.Conn, 0, stabFlows)
	defer func() {
		for _, cn := range conns {
			cn.Close()
		}
	}()
	for range stabFlows {
		cn, err := dl.DialContext(ctx)
		if err != nil {
			return dial, peer, fmt.Errorf("dial: %w", err)
		}
		conns = append(conns, cn)
	}
	if err := waitUp(ctx, dl.Status, len(addrs)); err != nil {
		return dial, peer, err
	}

	stopLoad, err := startLoad(load, cmd.Process, exe)
	if err != nil {
		return dial, peer, err
	}
	var wg sync.WaitGroup
	var sent, echoed atomic.Int64
	var flowErr atomic.Pointer[error]
	end := time.Now().Add(d)
	for i, cn := range conns {
		wg.Add(2)
		go func() { // writer: a chunk every interval, spread over the interval by flow
			defer wg.Done()
			b := make([]byte, stabChunk)
			time.Sleep(time.Duration(i) * stabEvery / stabFlows)
			for time.Now().Before(end) {
				if _, err := cn.Write(b); err != nil {
					flowErr.CompareAndSwap(nil, &err)
					return
				}
				sent.Add(stabChunk)
				time.Sleep(stabEvery)
			}
			cn.CloseWrite()
		}()
		go func() { // reader: the echo, to its end
			defer wg.Done()
			n, err := io.Copy(io.Discard, cn)
			echoed.Add(n)
			if err != nil {
				flowErr.CompareAndSwap(nil, &err)
			}
		}()
	}
	wg.Wait()
	stopLoad()
	if p := flowErr.Load(); p != nil {
		err = *p
	}
	if err == nil && sent.Load() != echoed.Load() {
		err = fmt.Errorf("sent %d bytes, %d echoed", sent.Load(), echoed.Load())
	}
	dial = reportOf(moves, dl.Status())
	stdin.Close() // the listening side reports and ends
	if !lines.Scan() {
		return dial, peer, errors.Join(err, fmt.Errorf("the listening process did not report: %v", lines.Err()))
	}
	if jerr := json.Unmarshal(lines.Bytes(), &peer); jerr != nil {
		return dial, peer, errors.Join(err, jerr)
	}
	if peer.Err != "" {
		err = errors.Join(err, errors.New("listening side: "+peer.Err))
	}
	return dial, peer, err
}

// startLoad starts what loads the machine during a run, and returns what stops it.
func startLoad(load string, peer *os.Process, exe string) (stop func(), err error) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	switch load {
	case "quiet":
	case "cpu_hogs":
		// A process spinning on every core, at normal priority, beside both ends.
		hog := exec.Command(exe, "-stability-hog")
		if err := hog.Start(); err != nil {
			return nil, err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-done
			hog.Process.Kill()
			hog.Wait()
		}()
	case "peer_stopped":
		if err := stopProcess(peer); err != nil {
			return nil, err
		}
		resumeProcess(peer)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-done:
					return
				case <-time.After(stabStopGap):
				}
				stopProcess(peer)
				time.Sleep(stabStopFor)
				resumeProcess(peer)
			}
		}()
	}
	return func() { close(done); wg.Wait() }, nil
}

// runStabilityPeer is the listening process: a Listener on two loopback TCP sources, keyed
// "PRIVATE:PEERPUBLIC" (hex), that echoes every flow. It prints its sources' addresses, and
// when its stdin ends, its session's counts.
func runStabilityPeer(keys string) {
	priv, pub, _ := strings.Cut(keys, ":")
	k, err1 := hex.DecodeString(priv)
	p, err2 := hex.DecodeString(pub)
	if err1 != nil || err2 != nil || len(k) != 32 || len(p) != 32 {
		fmt.Fprintln(os.Stderr, "rendrbench: -stability-peer: bad keys")
		os.Exit(2)
	}
	var srcs []net.Listener
	var addrs []string
	for range 2 {
		l, err := tcp.Listen("127.0.0.1:0")
		if err != nil {
			fmt.Fprintln(os.Stderr, "rendrbench: -stability-peer:", err)
			os.Exit(1)
		}
		srcs = append(srcs, l)
		addrs = append(addrs, l.Addr().String())
	}
	moves := &moveCounter{}
	ln, err := rendr.Listen(rendr.ListenConfig{Key: rendr.PrivateKey(k), Peers: []rendr.PublicKey{rendr.PublicKey(p)},
		Options: rendr.Options{Backlog: 2 * stabFlows, OnMigrate: moves.record}}, srcs...)
	if err != nil {
		fmt.Fprintln(os.Stderr, "rendrbench: -stability-peer:", err)
		os.Exit(1)
	}
	fmt.Println(strings.Join(addrs, ","))
	var last atomic.Pointer[rendr.Conn]
	go func() {
		for {
			cn, err := ln.AcceptContext(context.Background())
			if err != nil {
				return
			}
			last.Store(cn)
			go func() {
				defer cn.Close()
				io.Copy(cn, cn)
				cn.CloseWrite()
			}()
		}
	}()
	io.Copy(io.Discard, os.Stdin)
	var rep stabReport
	if cn := last.Load(); cn != nil {
		rep = reportOf(moves, cn.Status())
	} else {
		rep.Err = "no flow was accepted"
	}
	b, _ := json.Marshal(rep)
	fmt.Println(string(b))
	ln.Close()
}

// runHog spins on every core until killed.
func runHog() {
	for range runtime.NumCPU() {
		go func() {
			x := 0
			for {
				x++
			}
		}()
	}
	select {}
}
