package main

// The vpn scenarios measure tunvpn (examples/tunvpn), rendr's reference VPN, as a program:
// both sides are tunvpn processes in the lab's namespaces, and what crosses the tunnel is
// iperf3's or the bench's own TCP to an address behind the server. The baseline is
// wireguard-go, built from the module rendr already requires and configured through its UAPI
// socket (the text protocol wg speaks; wireguard-tools is not needed), with the same TUN MTU
// (1420), in the same lab, one tunnel at a time.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/rendr-go/rendr/internal/netlab"
)

const (
	vpnSeconds = 10 // per iperf3 test in the vpn scenario, unless -seconds
	vpnTarget  = 1.0
	// vpnFailTargetMs bounds tunvpn's longest delivery gap when its active uplink goes dark.
	vpnFailTargetMs = 100
	vpnBlackhole    = time.Second // how long the failover scenario cuts the active uplink
)

// vpnCase is one row of the throughput scenarios: a tunnel to start for each run.
type vpnCase struct {
	metric string
	start  func() (*tunnel, error)
	mbit   []float64
	cpu    []float64 // CPU seconds of the tunnel's processes per GiB moved
	retr   []float64 // TCP retransmissions iperf3's sender counted
}

// vpnRun starts the case's tunnel, runs one iperf3 test through it and stops it, and records
// the rate and the tunnel's CPU per GiB over the test.
func (b *vpnBench) vpnRun(vc *vpnCase, seconds, omit int) error {
	t, err := vc.start()
	if err != nil {
		return err
	}
	r, use, err := func() (iperfResult, cpuUse, error) {
		c0, err := t.cpu()
		if err != nil {
			return iperfResult{}, nil, err
		}
		r, err := b.iperf(seconds, omit)
		if err != nil {
			return r, nil, err
		}
		c1, err := t.cpu()
		if err != nil {
			return r, nil, err
		}
		return r, c1.since(c0), nil
	}()
	if serr := b.stopTunnel(t); serr != nil {
		err = errors.Join(err, serr)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", vc.metric, err)
	}
	cpu := use.total()
	vc.mbit = append(vc.mbit, r.mbit())
	vc.cpu = append(vc.cpu, cpuPerGiB(cpu, r.Bytes))
	vc.retr = append(vc.retr, float64(r.Retransmits))
	perGiB := ""
	if omit == 0 { // else the CPU covers seconds whose bytes iperf3 does not count
		perGiB = fmt.Sprintf("%.2f s/GiB; ", cpuPerGiB(cpu, r.Bytes))
	}
	b.c.logf("%s: %-28s %8.1f Mbit/s, %d bytes in %.1f s, %d retransmissions, tunnel CPU %v (%suser+sys: %s)",
		b.scenario, vc.metric, r.mbit(), r.Bytes, r.Seconds, r.Retransmits, cpu.Round(10*time.Millisecond), perGiB, t.describe(use))
	return nil
}

// vpnRows runs every case c.runs times, interleaved and in a rotating order, so that machine
// noise hits every case alike.
func (b *vpnBench) vpnRows(cases []*vpnCase, seconds, omit int) error {
	for run := range b.c.runs {
		for k := range cases {
			if err := b.vpnRun(cases[(run+k)%len(cases)], seconds, omit); err != nil {
				return fmt.Errorf("run %d: %w", run, err)
			}
		}
	}
	return nil
}

func (vc *vpnCase) result(scenario, note string) result {
	r := result{Scenario: scenario, Metric: vc.metric, Unit: "Mbit/s", Note: note}
	measured(&r, vc.mbit)
	if len(vc.cpu) > 0 {
		r.CPUPerGiB = ptr(round(median(vc.cpu)))
		r.Note += fmt.Sprintf("; median %g TCP retransmissions per test", median(vc.retr))
	}
	return r
}

func secondsOr(c *config, def int) int {
	if c.seconds > 0 {
		return int(math.Ceil(c.seconds))
	}
	return def
}

// runVPN: one iperf3 TCP connection through each tunnel over one unshaped veth path.
func runVPN(c *config) []result {
	const sc = "vpn"
	if err := vpnAvailable(true); err != nil {
		return []result{{Scenario: sc, Metric: "throughput", Skipped: err.Error()}}
	}
	b, err := newVPNBench(c, sc, netlab.Config{Paths: 1, Name: "rvpn"})
	if err != nil {
		return []result{failure(sc, err)}
	}
	defer b.done()
	seconds := secondsOr(c, vpnSeconds)
	wg := &vpnCase{metric: "wireguard_go", start: b.startWireguard}
	tv := &vpnCase{metric: "tunvpn", start: func() (*tunnel, error) { return b.startTunvpn("selector", []int{0}) }}
	c.logf("vpn: %d runs of %d s per tunnel, one unshaped veth path", c.runs, seconds)
	if err := b.vpnRows([]*vpnCase{wg, tv}, seconds, 0); err != nil {
		return []result{failure(sc, err)}
	}
	const how = "one iperf3 TCP connection, client namespace to %s behind the server, %d s, one unshaped veth path; " +
		"cpu_s_per_gib: user+sys CPU of the tunnel's processes on both sides (/proc) over the test per GiB received"
	base := wg.result(sc, fmt.Sprintf(how, vpnFar, seconds)+"; wireguard-go from the module rendr requires, UAPI-configured, MTU 1420")
	r := tv.result(sc, fmt.Sprintf(how, vpnFar, seconds)+"; tunvpn client and server, one uplink, MTU 1420, no gateway")
	against(&r, &base, vpnTarget, true)
	return []result{base, r}
}

// runVPNBond: tunvpn with policy bond over two uplinks shaped by tbf, beside its best uplink
// alone, against the nominal sum of the rates.
func runVPNBond(c *config) []result {
	const sc = "vpn-bond"
	if err := vpnAvailable(true); err != nil {
		return []result{{Scenario: sc, Metric: "goodput", Skipped: err.Error()}}
	}
	cases := []bondCase{{"100+100", []int{100, 100}}, {"100+20", []int{100, 20}}}
	b, err := newVPNBench(c, sc, netlab.Config{Paths: 2, RateMbit: cases[0].rates, Name: "rvbond"})
	if err != nil {
		return []result{failure(sc, err)}
	}
	defer b.done()
	omit := int(bondWarm / time.Second)
	seconds := secondsOr(c, int(bondMeasure/time.Second))
	var out []result
	for _, bc := range cases {
		for i, r := range bc.rates {
			if err := b.lab.SetRate(i, r); err != nil {
				return append(out, failure(sc, err))
			}
		}
		name := "bond_" + bc.name
		single := &vpnCase{metric: name + "_tunvpn_path0", start: func() (*tunnel, error) { return b.startTunvpn("selector", []int{0}) }}
		bond := &vpnCase{metric: name + "_tunvpn", start: func() (*tunnel, error) { return b.startTunvpn("bond", []int{0, 1}) }}
		c.logf("vpn-bond %s: %d runs, %d s warm-up + %d s measured per test", bc.name, c.runs, omit, seconds)
		if err := b.vpnRows([]*vpnCase{single, bond}, seconds, omit); err != nil {
			return append(out, failure(sc, fmt.Errorf("%s: %w", bc.name, err)))
		}
		nominal := 0
		for _, r := range bc.rates {
			nominal += r
		}
		const how = "one iperf3 TCP connection through tunvpn to %s, %d s measured after %d s omitted, goodput at the receiver"
		sr := single.result(sc, fmt.Sprintf(how, vpnFar, seconds, omit)+fmt.Sprintf("; one uplink, path 0 alone (%d Mbit/s nominal), the best single uplink", bc.rates[0]))
		br := bond.result(sc, fmt.Sprintf(how, vpnFar, seconds, omit)+
			fmt.Sprintf("; policy bond over paths of %v Mbit/s (tbf); baseline: their nominal sum (plain TCP reaches about 0.955 of a tbf rate)", bc.rates))
		sr.CPUPerGiB, br.CPUPerGiB = nil, nil // the links are the limit here, not the machine
		nom := result{Metric: "nominal_sum", Value: ptr(float64(nominal))}
		against(&br, &nom, bondTarget, true)
		out = append(out, sr, br)
	}
	return out
}

// runVPNFailover: a paced stream through the tunnel while the uplink carrying it is cut for
// vpnBlackhole; the longest delivery gap. tunvpn has a second uplink to move to,
// wireguard-go (the baseline) has not: its gap is the cut plus the inner TCP's recovery.
func runVPNFailover(c *config) []result {
	const sc = "vpn-failover"
	if err := vpnAvailable(false); err != nil {
		return []result{{Scenario: sc, Metric: "gap", Skipped: err.Error()}}
	}
	b, err := newVPNBench(c, sc, netlab.Config{Paths: 2, Name: "rvfail"})
	if err != nil {
		return []result{failure(sc, err)}
	}
	defer b.done()
	type fcase struct {
		metric string
		start  func() (*tunnel, error)
		active func(*tunnel) (int, error)
		gap    []float64
		raw    []float64
		steady []float64
		stuck  int
		err    string
	}
	cases := []*fcase{
		{metric: "wireguard_go_blackhole_gap", start: b.startWireguard,
			active: func(*tunnel) (int, error) { return 0, nil }},
		{metric: "tunvpn_blackhole_gap", start: func() (*tunnel, error) { return b.startTunvpn("selector", []int{0, 1}) },
			active: tunvpnActive},
	}
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	c.logf("vpn-failover: %d events per tunnel, the active uplink cut for %v", c.runs, vpnBlackhole)
	for run := range c.runs {
		for k := range cases {
			fc := cases[(run+k)%len(cases)]
			r, err := b.failoverEvent(fc.start, fc.active)
			if err != nil {
				c.logf("vpn-failover: run %d %s: %v", run, fc.metric, err)
				fc.err = fmt.Sprintf("run %d: %v", run, err)
				continue
			}
			fc.gap = append(fc.gap, ms(r.gap))
			fc.raw = append(fc.raw, ms(r.rawGap))
			fc.steady = append(fc.steady, ms(r.steady))
			if r.stuck {
				fc.stuck++
			}
			c.logf("vpn-failover: run %d %-26s path %d gap %7.1f ms (raw %7.1f, worst delay %7.1f, before the cut %5.1f)",
				run, fc.metric, r.path, ms(r.gap), ms(r.rawGap), ms(r.delay), ms(r.steady))
		}
	}
	out := make([]result, len(cases))
	for i, fc := range cases {
		r := &out[i]
		*r = result{Scenario: sc, Metric: fc.metric, Unit: "ms"}
		measured(r, fc.gap)
		r.Note = fmt.Sprintf("longest delivery gap of a 1 KiB-per-ms TCP stream, client namespace to %s through the tunnel, "+
			"after the uplink carrying it was blackholed for %v (both directions at once), sender stalls excluded", vpnFar, vpnBlackhole)
		if len(fc.gap) > 0 {
			r.Note += fmt.Sprintf("; medians: raw inter-read gap %.1f ms, gap in the second before the cut %.1f ms", round(median(fc.raw)), round(median(fc.steady)))
		}
		if fc.stuck > 0 {
			r.Note += fmt.Sprintf("; in %d runs the stream was still stuck %v after the sender stopped: those gaps are lower bounds", fc.stuck, drainLimit)
		}
		if fc.err != "" {
			r.Error = fc.err
			r.Note += fmt.Sprintf("; %d of %d runs failed", c.runs-len(fc.gap), c.runs)
		}
	}
	out[0].Note += "; wireguard-go has one uplink: its gap is the cut plus the inner TCP's retransmission backoff"
	out[1].Note += "; tunvpn selector over two unshaped uplinks, the active one (tunvpn status) cut"
	against(&out[1], &out[0], 0, false)
	if out[1].Value != nil {
		// The bar: no application notices more than a tenth of a second.
		out[1].Target = ptr(fmt.Sprintf("value <= %d ms", vpnFailTargetMs))
		out[1].Pass = ptr(*out[1].Value <= vpnFailTargetMs)
	}
	return out
}

// failoverEvent starts a tunnel, streams through it, cuts the active uplink for vpnBlackhole
// and heals it, and stops the tunnel.
func (b *vpnBench) failoverEvent(start func() (*tunnel, error), active func(*tunnel) (int, error)) (r gapRun, err error) {
	t, err := start()
	if err != nil {
		return r, err
	}
	defer func() { err = errors.Join(err, b.stopTunnel(t)) }()
	// Plain TCP, not the MPTCP Go gives listeners by default: one thing less between the two.
	var lc net.ListenConfig
	lc.SetMultipathTCP(false)
	ln, err := b.lab.ListenConfig(netlab.Server, &lc, "tcp", net.JoinHostPort(vpnFar, "0"))
	if err != nil {
		return r, err
	}
	defer ln.Close()
	// tcpPair's Accept must not outlast a tunnel that never delivers the connection.
	ln.(*net.TCPListener).SetDeadline(time.Now().Add(vpnStartLimit))
	dial := b.lab.Dialer(netlab.Client, nil)
	ctx, cancel := context.WithTimeout(context.Background(), vpnStartLimit)
	defer cancel()
	snd, rcv, err := tcpPair(ctx, ln, func(ctx context.Context) (net.Conn, error) { return dial(ctx, "tcp", ln.Addr().String()) })
	if err != nil {
		return r, fmt.Errorf("connecting the probe through %s: %w", t.kind, err)
	}
	defer snd.Close()
	defer rcv.Close()
	var tf time.Time
	var healed chan error
	ends := &gapEnds{snd: snd, rcv: rcv, active: func() (int, error) { return active(t) }}
	r, err = measureGap(ends, failSteady, failAfter, func(i int) error {
		tf = time.Now()
		if err := fault(b.lab, i, false); err != nil {
			return err
		}
		healed = make(chan error, 1)
		time.AfterFunc(vpnBlackhole, func() { healed <- heal(b.lab, i) })
		return nil
	})
	if healed != nil {
		err = errors.Join(err, <-healed)
	}
	// Whatever happened (a fault half applied, say), the lab is whole for the next event.
	err = errors.Join(err, heal(b.lab, r.path))
	if t.status != "" && !tf.IsZero() {
		if st, serr := readTunvpnStatus(t.status); serr == nil {
			for _, m := range st.Migrations {
				if m.Time.After(tf.Add(-time.Second)) {
					b.c.logf("%s: tunvpn moved %v after the cut command began: %s -> %s (%s)", b.scenario, m.Time.Sub(tf).Round(time.Millisecond/10), m.From, m.To, m.Why)
				}
			}
		}
	}
	return r, err
}

// iperfResult is the part of iperf3's -J report the scenarios use: the receiver's totals over
// the measured (not omitted) seconds, and the sender's retransmissions.
type iperfResult struct {
	Bytes       int64
	Seconds     float64
	Retransmits int
}

func (r iperfResult) mbit() float64 {
	if r.Seconds <= 0 {
		return 0
	}
	return float64(r.Bytes) * 8 / r.Seconds / 1e6
}

// parseIperf reads iperf3's -J output. iperf3 reports its own failures inside the JSON (with
// an exit status of 1), so the "error" member is checked first.
func parseIperf(out []byte) (iperfResult, error) {
	var j struct {
		Error string `json:"error"`
		End   struct {
			SumSent struct {
				Retransmits int `json:"retransmits"`
			} `json:"sum_sent"`
			SumReceived struct {
				Bytes   int64   `json:"bytes"`
				Seconds float64 `json:"seconds"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err := json.Unmarshal(out, &j); err != nil {
		return iperfResult{}, fmt.Errorf("reading iperf3's JSON: %w", err)
	}
	if j.Error != "" {
		return iperfResult{}, errors.New(j.Error)
	}
	r := iperfResult{Bytes: j.End.SumReceived.Bytes, Seconds: j.End.SumReceived.Seconds, Retransmits: j.End.SumSent.Retransmits}
	if r.Seconds <= 0 || r.Bytes <= 0 {
		return r, fmt.Errorf("iperf3 received %d bytes in %g s", r.Bytes, r.Seconds)
	}
	return r, nil
}

// cpuPerGiB is CPU seconds per GiB moved; 0 when nothing moved.
func cpuPerGiB(cpu time.Duration, bytes int64) float64 {
	if bytes <= 0 {
		return 0
	}
	return cpu.Seconds() / (float64(bytes) / (1 << 30))
}

// parseProcStat returns the user and system CPU time, in clock ticks, from the text of
// /proc/<pid>/stat. The command name in parentheses may hold spaces and parentheses itself,
// so the fields are counted from the last ')'.
func parseProcStat(s string) (utime, stime uint64, err error) {
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, 0, errors.New("no ')' in /proc stat")
	}
	// After ") ": state (field 3), ..., utime (14), stime (15).
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, 0, fmt.Errorf("%d fields after the command name in /proc stat", len(f))
	}
	if utime, err = strconv.ParseUint(f[11], 10, 64); err != nil {
		return 0, 0, err
	}
	if stime, err = strconv.ParseUint(f[12], 10, 64); err != nil {
		return 0, 0, err
	}
	return utime, stime, nil
}
