// Command rendrbench measures rendr against baselines run in the same invocation and prints
// one JSON object per result line on stdout (progress goes to stderr; -v=false silences it).
//
//	go run ./cmd/rendrbench [-scenario throughput|failover|idle|bond|race|pps|attack|stability|wan|vpn|vpn-bond|vpn-failover|all]
//		[-runs N] [-bytes N] [-seconds N] [-cpuprofile DIR] [-flows N] [-rows a,b] [-cases a,b] [-plot DIR]
//
// -scenario takes several names, comma-separated, and runs them in that order. all is every
// scenario but wan and the vpn ones, which are named on their own: wan takes about 15 minutes
// with -runs 3; the vpn ones add about 6 minutes, and they need the go command and this
// repository at run time (they build tunvpn and wireguard-go) and iperf3.
//
// Scenarios:
//   - throughput: one flow over one loopback TCP path, bulk transfer one way (-bytes, or
//     -seconds when set), 64 KiB writes and reads, rate measured at the receiver. Rows: raw
//     TCP, TCP with rendr's socket options, crypto/tls 1.3, rendr with encrypted records and
//     rendr over a carrier declared secure. Runs are interleaved (run i of every row, then
//     run i+1, in a rotating order) so that machine noise hits every row alike; each row
//     reports the median of its runs, and the process CPU time per GiB beside the rate.
//     -cpuprofile DIR writes a CPU profile of every measured transfer.
//   - failover: two 100 Mbit/s veth paths between two network namespaces (needs root); a
//     paced stream client to server; the longest delivery gap when the path carrying it is
//     silently blackholed or reset, for rendr and, in the same lab, for Linux MPTCP.
//     -plot DIR writes DIR/failover.png: data delivered over time around the cut.
//   - idle: -flows idle flows on one session; goroutines and live heap per flow.
//   - bond: one flow over Bond(p0, p1) on veth paths of 100+100 and 100+20 Mbit/s (needs
//     root): goodput against the sum of plain TCP's on each path alone, beside one Linux
//     MPTCP connection with a subflow per path; p99 delay of a 64 KiB write. Each transfer
//     is measured for 8 s after 2 s of warm-up, or for -seconds: a Bond delivers in bursts
//     as the slow path's bytes fill gaps, so a longer window judges small differences better.
//     -plot DIR writes DIR/bond.png: each path's rate and the goodput over time, 100+20.
//   - race: paced 1 KiB chunks over Race(clean, lossy) where the lossy path drops 10% by
//     nftables (needs root), beside each path alone: p99 send-to-delivery delay of the chunks
//     sent after the first second (slow start), every chunk checked to arrive in order.
//   - pps: one packet flow over one loopback path, 1200-byte datagrams: datagrams per second
//     delivered and heap allocations per datagram, encrypted and over a secure carrier.
//   - attack: floods and greedy peers against a rendr listener on 127.0.0.1 while a
//     legitimate client dials and streams, each beside an unloaded baseline: an authenticated
//     peer naming huge flow ids (heap and CPU), a udpflow hello flood (heap, dials within
//     1 s), TCP handshake floods of random keys, replays and whole initiations (CPU beyond the
//     baseline, dial p99), a greedy key opening sessions, paths and flows past the bounds
//     (another peer's throughput), spoofed SYNs to a transport/gvisor listener (bytes
//     reflected). The floods run in a process of their own: this binary again, with the
//     hidden -attacker flag, at nice 19, so that their CPU is not counted as the listener's
//     and takes as little of it as may be. -runs is the greedy attack's rounds, each a
//     transfer alone and one beside a fresh greedy peer.
//   - stability: two healthy loopback TCP paths under a Selector, 200 flows each moving 16 KiB
//     every 100ms both ways for 60 s (-seconds), three times: on a quiet machine, beside a
//     process spinning on every core, and with the listening process (this binary again,
//     with the hidden -stability-peer flag) stopped by SIGSTOP for 300ms every 5 s. Every
//     move but a path's first choice is a false alarm, and every carrier dialed again a
//     healthy path declared dead: moves on both sides per minute, and deaths.
//   - wan: everything crosses the lab's delay node (netlab.DelayConfig, needs root), an
//     emulated WAN link with a round trip, a rate and a queue of a chosen depth; the lab's
//     hosts allow 64 MiB socket buffers and every TCP socket runs CUBIC, Linux's default
//     (the machine's own may differ; BBR would never fill a deep queue). Cases (-cases takes
//     prefixes of their names):
//     bond_deep and bond_shallow: one flow over Bond(100 Mbit/s at 50 ms, 20 Mbit/s at 80 ms)
//     with 2 s and 10 ms of queue on the slow link, beside plain TCP alone on each link and
//     one MPTCP connection; targets: the worst run at least the best link alone, at least
//     0.9 of the sum with the shallow queue, p99 delay of a 64 KiB write at most twice plain
//     TCP's on the fast link. failover_50ms_100M_: the failover scenario's cases on two
//     such links, target rendr's gap at most half MPTCP's. 50ms_100M_race_: the race
//     scenario's rows on two such links. 50ms_1G, 50ms_100M, 200ms_1G, 200ms_100M: one
//     flow (-rows tcp, rendr_tcp, rendr_udpflow, quic), 3 s warm-up and 8 s (-seconds)
//     measured; targets: rendr over TCP at least 0.9 of kernel TCP, rendr over udpflow at
//     least 0.9 of rendr over TCP and at least quic-go's rate. At 1 Gbit/s the node's Go
//     code and both ends share this machine's CPU.
//   - vpn: tunvpn (examples/tunvpn, built for the run) against wireguard-go (built from the
//     module rendr requires, configured through its UAPI socket), one tunnel at a time in the
//     same lab, over one unshaped veth path (needs root and iperf3): one iperf3 TCP connection
//     from the client namespace to an address behind the server for 10 s (-seconds), Mbit/s
//     and the tunnel processes' CPU per GiB (both sides, user+sys from /proc).
//   - vpn-bond: tunvpn with policy bond over two uplinks of 100+100 and 100+20 Mbit/s (tbf),
//     beside tunvpn over the 100 Mbit/s uplink alone: one iperf3 TCP connection, 8 s measured
//     after 2 s omitted (-seconds), goodput against the nominal sum of the rates.
//   - vpn-failover: a 1 KiB-per-ms TCP stream through the tunnel while the uplink carrying it
//     is blackholed for 1 s: the longest delivery gap, tunvpn (selector over two unshaped
//     uplinks) against wireguard-go (one uplink, nothing to move to); target: tunvpn's gap
//     at most 100 ms. -runs is the events per tunnel.
//
// Every line carries scenario, metric, value, unit, baseline, baseline_value, ratio, runs,
// target and pass (null where they do not apply), plus min and max of the runs and a note.
// ratio is always value/baseline_value. For throughput that is rendr's rate as a fraction of
// the baseline's: higher is better and the targets read "ratio >= x". For failover it is
// rendr's gap as a fraction of MPTCP's: lower is better, and the target applies to the value
// itself ("value <= 50 ms"). A scenario that cannot run here prints one line with "skipped"
// set to the reason; one that fails prints a line with "error" and the exit status is 1.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

type config struct {
	scenario string
	runs     int
	bytes    int64
	seconds  float64
	cpuDir   string
	flows    int
	verbose  bool
	rows     string // comma-separated row names to run (throughput, pps); empty: all
	plotDir  string // failover, bond: write PNG plots here; empty: none
	cases    string // wan: comma-separated prefixes of the cases to run; empty: all
}

// onlyRows keeps the rows -rows names, in their order; all of them when -rows is empty.
func onlyRows[R any](c *config, rows []R, name func(R) string) []R {
	if c.rows == "" {
		return rows
	}
	want := map[string]bool{}
	for _, n := range strings.Split(c.rows, ",") {
		want[strings.TrimSpace(n)] = true
	}
	var out []R
	for _, r := range rows {
		if want[name(r)] {
			out = append(out, r)
		}
	}
	return out
}

// result is one output line. Pointer fields print as null when they do not apply.
type result struct {
	Scenario      string   `json:"scenario"`
	Metric        string   `json:"metric"`
	Value         *float64 `json:"value"`
	Unit          string   `json:"unit"`
	Baseline      *string  `json:"baseline"`
	BaselineValue *float64 `json:"baseline_value"`
	Ratio         *float64 `json:"ratio"`
	Runs          int      `json:"runs"`
	Target        *string  `json:"target"`
	Pass          *bool    `json:"pass"`

	// Spread of the runs behind Value, and anything else worth knowing about the line.
	Min *float64 `json:"min,omitempty"`
	Max *float64 `json:"max,omitempty"`
	// CPU seconds the whole process (both ends) spent per GiB moved, median of the runs:
	// less sensitive than the rate to what else the machine is running.
	CPUPerGiB *float64 `json:"cpu_s_per_gib,omitempty"`
	// The baseline's CPU per GiB over this row's: the rate ratio to expect when the machine
	// is the limit. Oriented like ratio (higher is better for rendr).
	CPURatio *float64 `json:"cpu_ratio,omitempty"`
	Note     string   `json:"note,omitempty"`
	Skipped  string   `json:"skipped,omitempty"`
	Error    string   `json:"error,omitempty"`
}

func ptr[T any](v T) *T { return &v }

// round keeps the output readable: four decimal places (one from 1000 up) are far below the
// run-to-run noise.
func round(v float64) float64 {
	if math.Abs(v) >= 1000 {
		return math.Round(v*10) / 10
	}
	return math.Round(v*10000) / 10000
}

// measured fills Value, Min, Max and Runs from the samples of one row.
func measured(r *result, samples []float64) {
	r.Runs = len(samples)
	if len(samples) == 0 {
		return
	}
	r.Value = ptr(round(median(samples)))
	r.Min = ptr(round(slices.Min(samples)))
	r.Max = ptr(round(slices.Max(samples)))
}

// against compares r with a baseline row. higherBetter orients the target: the ratio must be
// at least target when higher is better, at most target otherwise.
func against(r *result, base *result, target float64, higherBetter bool) {
	if r == nil || base == nil || base.Value == nil || r.Value == nil {
		return
	}
	r.Baseline = ptr(base.Metric)
	r.BaselineValue = base.Value
	if *base.Value != 0 {
		r.Ratio = ptr(round(*r.Value / *base.Value))
	}
	if base.CPUPerGiB != nil && r.CPUPerGiB != nil && *r.CPUPerGiB != 0 {
		r.CPURatio = ptr(round(*base.CPUPerGiB / *r.CPUPerGiB))
	}
	if target == 0 {
		return
	}
	if higherBetter {
		r.Target = ptr(fmt.Sprintf("ratio >= %g", target))
		r.Pass = ptr(r.Ratio != nil && *r.Ratio >= target)
	} else {
		r.Target = ptr(fmt.Sprintf("ratio <= %g", target))
		r.Pass = ptr(r.Ratio != nil && *r.Ratio <= target)
	}
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func emit(r result) {
	// No HTML escaping: targets contain ">=" and should read as written.
	enc := json.NewEncoder(os.Stdout)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(r); err != nil {
		fmt.Fprintln(os.Stderr, "rendrbench: writing result:", err)
		cleanUp(1)
	}
}

// logf reports progress on stderr, so stdout stays one JSON object per line.
func (c *config) logf(format string, args ...any) {
	if c.verbose {
		fmt.Fprintf(os.Stderr, "rendrbench: "+format+"\n", args...)
	}
}

// cleanups run when a signal ends the program early, so that nothing outlives it (network
// namespaces above all, which the kernel would otherwise keep).
var cleanups struct {
	sync.Mutex
	fns map[int]func()
	seq int
}

// atExit registers f to run if a signal ends the program; the returned func unregisters it.
func atExit(f func()) (remove func()) {
	cleanups.Lock()
	defer cleanups.Unlock()
	if cleanups.fns == nil {
		cleanups.fns = map[int]func(){}
	}
	cleanups.seq++
	id := cleanups.seq
	cleanups.fns[id] = f
	return func() {
		cleanups.Lock()
		delete(cleanups.fns, id)
		cleanups.Unlock()
	}
}

func handleSignals() {
	// A closed stdout must not kill the program before it cleans up: with SIGPIPE ignored
	// the write fails instead, and emit exits through cleanUp. (Notifying SIGPIPE would not
	// do: it also fires for sockets whose peer went away, which the benchmarks cause.)
	signal.Ignore(syscall.SIGPIPE)
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		sig := <-ch
		fmt.Fprintf(os.Stderr, "rendrbench: %v: cleaning up\n", sig)
		cleanUp(1)
	}()
}

// cleanUp runs the registered cleanups and exits.
func cleanUp(code int) {
	cleanups.Lock()
	for _, f := range cleanups.fns {
		f()
	}
	cleanups.Unlock()
	os.Exit(code)
}

func main() {
	handleSignals()
	var c config
	flag.StringVar(&c.scenario, "scenario", "all", "throughput, failover, idle, bond, race, pps, attack, stability, wan, vpn, vpn-bond, vpn-failover or all (all but wan and the vpn ones); several, comma-separated, run in that order")
	flag.IntVar(&c.runs, "runs", 5, "measured runs per row; each row reports the median")
	flag.Int64Var(&c.bytes, "bytes", 1<<30, "throughput: bytes per transfer")
	flag.Float64Var(&c.seconds, "seconds", 0, "throughput: transfer for this many seconds instead of -bytes; bond, vpn-bond: measure this many seconds per transfer instead of 8; vpn: per iperf3 test instead of 10")
	flag.StringVar(&c.cpuDir, "cpuprofile", "", "throughput: write a CPU profile of every measured transfer to this directory; attack: of the listener under each handshake flood, of each greedy round (transfers alone and beside, the idle second beside), and heap profiles around the flowids attack")
	flag.IntVar(&c.flows, "flows", 10000, "idle: flows to open")
	flag.BoolVar(&c.verbose, "v", true, "progress on stderr")
	flag.StringVar(&c.plotDir, "plot", "", "failover: write DIR/failover.png, delivery over time across a blackholed path, rendr beside MPTCP (the run of median gap); bond: write DIR/bond.png, the bytes each path carries and the goodput over time on 100+20 Mbit/s (the first run), beside MPTCP's goodput")
	flag.StringVar(&c.cases, "cases", "", "wan: run only the cases whose names start with one of these comma-separated prefixes (50ms_1G, 200ms, bond, failover, race...)")
	flag.StringVar(&c.rows, "rows", "", "throughput, pps: only these rows (comma-separated names), a ratio needing its baseline row too; attack: only these attacks (flowids, udpflood, hsflood, greedy, gvisor)")
	// Hidden: the attack scenario starts this binary again as an attacker (attackers.go).
	var atk attackerArgs
	flag.StringVar(&atk.role, "attacker", "", "internal: run as an attack scenario's attacker process")
	flag.StringVar(&atk.addr, "attack-addr", "", "internal: the attacker's target")
	flag.StringVar(&atk.key, "attack-key", "", "internal: the listener's public key, base64")
	flag.StringVar(&atk.msg, "attack-msg", "", "internal: a recorded first message, hex")
	flag.Float64Var(&atk.seconds, "attack-seconds", 5, "internal: the attacker's time bound")
	flag.IntVar(&atk.count, "attack-count", 1000, "internal: the attacker's count bound")
	// Hidden: the stability scenario's listening process and CPU hog (stability.go).
	stabPeer := flag.String("stability-peer", "", "internal: run as the stability scenario's listening process, keyed PRIVATE:PEERPUBLIC (hex)")
	stabHog := flag.Bool("stability-hog", false, "internal: spin on every core until killed")
	flag.Parse()
	switch {
	case *stabPeer != "":
		runStabilityPeer(*stabPeer)
		return
	case *stabHog:
		runHog()
		return
	}
	switch atk.role {
	case "":
	case "flowids-target":
		runFlowIDsTarget(c.cpuDir)
		return
	case "greedy":
		runGreedyPeer(atk)
		return
	default:
		runAttacker(atk)
		return
	}
	if c.runs < 1 || c.bytes < 1 || c.seconds < 0 || c.flows < 1 {
		fmt.Fprintln(os.Stderr, "rendrbench: -runs, -bytes and -flows must be positive, -seconds not negative")
		os.Exit(2)
	}
	scenarios := map[string]func(*config) []result{
		"throughput":   runThroughput,
		"failover":     runFailover,
		"idle":         runIdle,
		"bond":         runBond,
		"race":         runRace,
		"pps":          runPPS,
		"attack":       runAttack,
		"stability":    runStability,
		"vpn":          runVPN,
		"vpn-bond":     runVPNBond,
		"vpn-failover": runVPNFailover,
		"wan":          runWAN,
	}
	var order []string
	for _, name := range strings.Split(c.scenario, ",") {
		switch name = strings.TrimSpace(name); {
		case name == "all":
			order = append(order, "throughput", "failover", "idle", "bond", "race", "pps", "attack", "stability")
		case scenarios[name] != nil:
			order = append(order, name)
		default:
			fmt.Fprintf(os.Stderr, "rendrbench: unknown scenario %q (throughput, failover, idle, bond, race, pps, attack, stability, wan, vpn, vpn-bond, vpn-failover or all)\n", name)
			os.Exit(2)
		}
	}
	if c.cpuDir != "" {
		if err := os.MkdirAll(c.cpuDir, 0o755); err != nil {
			fmt.Fprintln(os.Stderr, "rendrbench: -cpuprofile:", err)
			os.Exit(2)
		}
	}
	if c.plotDir != "" {
		if err := os.MkdirAll(c.plotDir, 0o755); err != nil {
			fmt.Fprintln(os.Stderr, "rendrbench: -plot:", err)
			os.Exit(2)
		}
	}
	failed := false
	for _, name := range order {
		start := time.Now()
		c.logf("%s: start", name)
		for _, r := range scenarios[name](&c) {
			// A missed target is a result, not a failure of the tool.
			if r.Error != "" {
				failed = true
			}
			emit(r)
		}
		c.logf("%s: done in %v", name, time.Since(start).Round(time.Millisecond))
	}
	if failed {
		os.Exit(1)
	}
}

// failure is the line printed when a scenario cannot complete.
func failure(scenario string, err error) result {
	fmt.Fprintf(os.Stderr, "rendrbench: %s: %v\n", scenario, err)
	return result{Scenario: scenario, Metric: "error", Error: err.Error()}
}
