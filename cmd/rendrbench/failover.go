package main

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/internal/netlab"
	"github.com/rendr-go/rendr/status"
)

const (
	failRateMbit  = 100
	failSteady    = 2 * time.Second // flow before the fault, so estimators have settled
	failAfter     = 3 * time.Second // flow after a blackhole
	failAfterKill = 2 * time.Second // flow after a reset
	failTargetMs  = 50
)

// A failover case: which stack carries the stream and how the path fails.
type failCase struct {
	metric string
	mptcp  bool
	reset  bool // kill the path's sockets with RST instead of blackholing it
}

func runFailover(c *config) []result {
	if err := netlab.Available(); err != nil {
		return []result{{Scenario: "failover", Metric: "gap", Skipped: err.Error()}}
	}
	lab, err := netlab.New(netlab.Config{Paths: 2, RateMbit: []int{failRateMbit, failRateMbit}, Name: "rbench"})
	if err != nil {
		return []result{failure("failover", fmt.Errorf("building the lab: %w", err))}
	}
	defer lab.Close()
	defer atExit(func() { lab.Close() })()
	keys, err := newBenchKeys()
	if err != nil {
		return []result{failure("failover", err)}
	}
	c.logf("failover: 2 paths at %d Mbit/s, %d runs per case", failRateMbit, c.runs)
	return failoverIn(c, failLab{scenario: "failover", lab: lab, keys: keys, plot: c.plotDir != ""})
}

// failLab is where failoverIn runs its cases: a lab of two paths, the scenario and metric
// prefix its lines carry, and the congestion control of its TCP sockets ("": the default).
type failLab struct {
	scenario, prefix, cc string
	lab                  *netlab.Lab
	keys                 benchKeys
	plot                 bool    // -plot draws this lab's runs
	ratioTarget          float64 // rendr's gap at most this share of MPTCP's; 0: failTargetMs
}

// failoverIn measures every failover case in fl.lab, run after run, and returns the lines.
func failoverIn(c *config, fl failLab) []result {
	lab, keys := fl.lab, fl.keys
	mptcpSkip := ""
	if _, err := os.Stat("/proc/sys/net/mptcp/enabled"); err != nil {
		mptcpSkip = "kernel without MPTCP: " + err.Error()
	} else if err := lab.EnableMPTCP(); err != nil {
		mptcpSkip = "enabling MPTCP in the lab: " + err.Error()
	}
	cases := []failCase{
		{metric: "rendr_blackhole_gap"},
		{metric: "mptcp_blackhole_gap", mptcp: true},
		{metric: "rendr_reset_gap", reset: true},
		{metric: "mptcp_reset_gap", mptcp: true, reset: true},
	}
	type acc struct {
		gap, raw, delay, steady, fault, detect []float64
		stuck                                  int
		traces                                 [][]time.Duration // per run, for -plot
	}
	accs := make([]acc, len(cases))
	errs := make([]string, len(cases))
	for run := range c.runs {
		for i, fc := range cases {
			if fc.mptcp && mptcpSkip != "" {
				continue
			}
			var r gapRun
			var det time.Duration
			var err error
			if fc.mptcp {
				r, err = mptcpRun(lab, fc.reset, fl.cc)
			} else {
				r, det, err = rendrRun(lab, keys, fc.reset, fl.cc, c.logf)
			}
			// Heal the lab whatever happened, so the next case starts clean.
			if herr := heal(lab, r.path); herr != nil {
				err = errors.Join(err, herr)
			}
			if err != nil {
				c.logf("%s: run %d %s%s: %v", fl.scenario, run, fl.prefix, fc.metric, err)
				errs[i] = fmt.Sprintf("run %d: %v", run, err)
				continue
			}
			a := &accs[i]
			a.gap = append(a.gap, ms(r.gap))
			a.raw = append(a.raw, ms(r.rawGap))
			a.delay = append(a.delay, ms(r.delay))
			a.steady = append(a.steady, ms(r.steady))
			a.fault = append(a.fault, ms(r.fault))
			a.traces = append(a.traces, r.trace)
			if r.stuck {
				a.stuck++
			}
			if det > 0 {
				a.detect = append(a.detect, ms(det))
			}
			c.logf("%s: run %d %-20s path %d gap %6.1f ms (raw %6.1f, worst delay %6.1f, before fault %5.1f, fault applied in %5.1f, detect %5.1f)",
				fl.scenario, run, fl.prefix+fc.metric, r.path, ms(r.gap), ms(r.rawGap), ms(r.delay), ms(r.steady), ms(r.fault), ms(det))
		}
	}
	out := make([]result, len(cases))
	for i, fc := range cases {
		r := &out[i]
		*r = result{Scenario: fl.scenario, Metric: fl.prefix + fc.metric, Unit: "ms"}
		if fc.mptcp && mptcpSkip != "" {
			r.Skipped = mptcpSkip
			continue
		}
		a := accs[i]
		measured(r, a.gap)
		if len(a.gap) > 0 {
			r.Note = fmt.Sprintf("longest delivery gap after the fault (1 KiB chunk per ms, sender stalls excluded); "+
				"medians: raw inter-read gap %.1f ms, worst send-to-delivery delay %.1f ms, gap in the second before the fault %.1f ms, fault applied in %.1f ms",
				round(median(a.raw)), round(median(a.delay)), round(median(a.steady)), round(median(a.fault)))
		}
		if a.stuck > 0 {
			r.Note += fmt.Sprintf("; in %d runs the stream was still stuck %v after the sender stopped, so those gaps are lower bounds", a.stuck, drainLimit)
		}
		if errs[i] != "" {
			r.Error = errs[i]
			r.Note += fmt.Sprintf("; %d of %d runs failed", c.runs-len(a.gap), c.runs)
		}
	}
	// Cases come in pairs: rendr, then MPTCP under the same fault.
	for i := 0; i < len(cases); i += 2 {
		rr, mr := &out[i], &out[i+1]
		against(rr, mr, fl.ratioTarget, false)
		if fl.ratioTarget == 0 && rr.Value != nil {
			rr.Target = ptr(fmt.Sprintf("value <= %d ms", failTargetMs))
			rr.Pass = ptr(*rr.Value <= failTargetMs)
		}
	}
	for i, fc := range cases {
		if fc.mptcp {
			continue
		}
		kind := pick(fc.reset, "reset", "blackhole")
		det := result{Scenario: fl.scenario, Metric: fl.prefix + "rendr_" + kind + "_detect", Unit: "ms",
			Note: "informational: from the start of the fault command to the migration event (Conn.OnMigrate); the gap is the outage at the receiver"}
		measured(&det, accs[i].detect)
		out = append(out, det)
	}
	if fl.plot {
		// Cases 0 and 1 are the blackhole's: the fault a failover has to detect by itself.
		r, m := medianRun(accs[0].gap, accs[0].traces), medianRun(accs[1].gap, accs[1].traces)
		path := filepath.Join(c.plotDir, "failover.png")
		if err := failoverChart(r, m).writePNG(path); err != nil {
			out = append(out, failure("failover", fmt.Errorf("plot: %w", err)))
		} else {
			c.logf("failover: wrote %s", path)
		}
	}
	return out
}

// medianRun is the run whose gap (in ms) is the median, the lower middle one of an even
// count; the zero failTrace without runs.
func medianRun(gaps []float64, traces [][]time.Duration) failTrace {
	if len(gaps) == 0 || len(gaps) != len(traces) {
		return failTrace{}
	}
	idx := make([]int, len(gaps))
	for i := range idx {
		idx[i] = i
	}
	slices.SortFunc(idx, func(a, b int) int { return cmp.Compare(gaps[a], gaps[b]) })
	i := idx[(len(idx)-1)/2]
	return failTrace{trace: traces[i], gap: time.Duration(gaps[i] * float64(time.Millisecond))}
}

// rendrRun runs one rendr case: a fresh Listener in the server namespace with a source on
// each path, a fresh Dialer in the client namespace with a path per veth pair.
func rendrRun(lab *netlab.Lab, k benchKeys, reset bool, cc string, logf func(string, ...any)) (gapRun, time.Duration, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ln, d, err := labRendr(lab, k, func(paths []*rendr.Target) *rendr.Target { return rendr.Selector("paths", paths...) }, cc)
	if err != nil {
		return gapRun{}, 0, err
	}
	defer ln.Close()
	defer d.Close()
	snd, rcv, err := rendrPair(ctx, d, ln)
	if err != nil {
		return gapRun{}, 0, err
	}
	defer snd.Close()
	defer rcv.Close()
	if err := waitPathsUp(ctx, snd, lab.Paths()); err != nil {
		return gapRun{}, 0, err
	}
	var mu sync.Mutex
	var moves []status.Migration
	snd.OnMigrate(func(m status.Migration) {
		mu.Lock()
		moves = append(moves, m)
		mu.Unlock()
	})
	var tf time.Time
	ends := &gapEnds{snd: snd, rcv: rcv, active: func() (int, error) { return activePath(snd) }}
	r, err := measureGap(ends, failSteady, pick(reset, failAfterKill, failAfter), func(i int) error {
		tf = time.Now()
		return fault(lab, i, reset)
	})
	var det time.Duration
	mu.Lock()
	if r.gap > failTargetMs*time.Millisecond {
		// Say what the session did, to tell a slow failover from a starved machine.
		for _, m := range moves {
			logf("failover: migration %v after the fault: %s -> %s (%v)", m.Time.Sub(tf).Round(time.Millisecond/10), m.From, m.To, m.Cause)
		}
		for _, p := range snd.Paths() {
			logf("failover: path %s %v active=%v srtt=%v dials=%d last error: %s", p.Name, p.State, p.Active, p.SRTT, p.Dials, p.LastError)
		}
	}
	for _, m := range moves {
		if m.Time.After(tf) && m.FromID != 0 {
			det = m.Time.Sub(tf)
			break
		}
	}
	mu.Unlock()
	return r, det, err
}

func pick[T any](cond bool, a, b T) T {
	if cond {
		return a
	}
	return b
}

// waitPathsUp waits until n paths of c's session are Up, so that every run starts with a
// path to fail over to.
func waitPathsUp(ctx context.Context, c *rendr.Conn, n int) error {
	return waitUp(ctx, c.Status, n)
}

// waitUp waits until n paths of the session st describes are Up.
func waitUp(ctx context.Context, st func() status.Session, n int) error {
	for {
		up := 0
		for _, p := range st().Paths {
			if p.State == status.Up {
				up++
			}
		}
		if up >= n {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("only %d of %d paths up: %w", up, n, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func activePath(c *rendr.Conn) (int, error) {
	for _, p := range c.Paths() {
		if p.Active {
			var i int
			if _, err := fmt.Sscanf(p.Name, "p%d", &i); err != nil {
				return 0, fmt.Errorf("path name %q: %w", p.Name, err)
			}
			return i, nil
		}
	}
	return 0, errors.New("no active path")
}

// lowatListener gives the lab's accepted sockets the tuning transport/tcp gives its own
// (TCP_NOTSENT_LOWAT, see lowatControl; keepalive off), since the lab creates sockets inside a
// namespace with its own listener.
type lowatListener struct{ net.Listener }

func (l lowatListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	if tc, ok := c.(*net.TCPConn); ok {
		if rc, err := tc.SyscallConn(); err == nil {
			lowatControl("", "", rc)
		}
	}
	return c, nil
}

// fault breaks path i: a silent blackhole of both directions, or a reset of its sockets.
func fault(lab *netlab.Lab, i int, reset bool) error {
	if reset {
		return killPath(lab, i)
	}
	if err := cutPath(lab, i); err != nil {
		return err
	}
	return lab.Blackhole(i, true)
}

// heal undoes fault on path i, whichever kind it was.
func heal(lab *netlab.Lab, i int) error {
	var errs []error
	if out, err := lab.Exec(netlab.Server, "nft", "list", "tables"); err != nil {
		errs = append(errs, err)
	} else if strings.Contains(string(out), cutTable) {
		_, err := lab.Exec(netlab.Server, "nft", "delete", "table", "netdev", cutTable)
		errs = append(errs, err)
	}
	errs = append(errs, lab.Blackhole(i, false))
	return errors.Join(errs...)
}

const cutTable = "rendrbench"

// cutPath drops both directions of path i at one instant: a single nft transaction in the
// server namespace hooks ingress and egress of the path's server end. lab.Blackhole alone
// updates the client namespace first and the server's some milliseconds later (two nft
// runs); while only the client end drops, data still reaches the server and only the
// acknowledgements are lost, which hides part of a failover from the receiver's clock and
// rewards a stack that happens to have nothing in flight at the cut. The lab's own blackhole
// is applied right after, so the lab's state says what happened. Egress drops are silent to
// TCP: the segment is lost, the socket sees no error.
func cutPath(lab *netlab.Lab, i int) error {
	script := fmt.Sprintf(`add table netdev %[1]s
add chain netdev %[1]s in { type filter hook ingress device %[2]q priority -10; policy accept; }
add chain netdev %[1]s out { type filter hook egress device %[2]q priority -10; policy accept; }
add rule netdev %[1]s in drop
add rule netdev %[1]s out drop
`, cutTable, lab.ServerIface(i))
	f, err := os.CreateTemp("", "rendrbench-*.nft")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.WriteString(script); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	_, err = lab.Exec(netlab.Server, "nft", "-f", f.Name())
	return err
}

// killPath aborts every established TCP socket of path i in the client namespace (ss -K): the
// kernel sends a RST to the peer and fails the local socket, like an abrupt reset.
func killPath(lab *netlab.Lab, i int) error {
	_, err := lab.Exec(netlab.Client, "ss", "-K", "-tn", "state", "established",
		"src", lab.ClientAddr(i).String())
	return err
}

// mptcpRun runs one Linux MPTCP case in the same lab: the initial subflow on path 0, the
// second added by the kernel from the client's endpoint on path 1.
func mptcpRun(lab *netlab.Lab, reset bool, cc string) (gapRun, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ln, snd, rcv, err := mptcpPair(ctx, lab, cc)
	if err != nil {
		return gapRun{}, err
	}
	defer ln.Close()
	defer snd.Close()
	defer rcv.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	// The kernel's path manager adds the second subflow once the connection is fully
	// established, which takes the first data: wait for it once the stream runs.
	ready := func() error {
		for {
			sf, err := subflows(lab, port)
			if err != nil {
				return err
			}
			all := true
			for i := range lab.Paths() {
				_, ok := sf[lab.ClientAddr(i)]
				all = all && ok
			}
			if all {
				return nil
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("MPTCP subflows from %v only, not one per path, once data flowed: %v",
					slices.Collect(maps.Keys(sf)), ctx.Err())
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	ends := &gapEnds{snd: snd, rcv: rcv, ready: ready, active: func() (int, error) { return mptcpActive(lab, port) }}
	return measureGap(ends, failSteady, pick(reset, failAfterKill, failAfter), func(i int) error {
		return fault(lab, i, reset)
	})
}

// subflows maps the client address of each established subflow to the number of bytes the
// server has acknowledged on it (ss -ti in the client namespace).
func subflows(lab *netlab.Lab, port int) (map[netip.Addr]uint64, error) {
	out, err := lab.Exec(netlab.Client, "ss", "-Htni", "state", "established", "dport", "=", fmt.Sprintf(":%d", port))
	if err != nil {
		return nil, err
	}
	sf := map[netip.Addr]uint64{}
	var cur netip.Addr
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "\t") && !strings.HasPrefix(line, " ") {
			// "recv-q send-q local:port peer:port": the first address is ours.
			cur = netip.Addr{}
			for _, f := range strings.Fields(line) {
				// A socket bound to a device prints as addr%dev:port.
				if i, j := strings.IndexByte(f, '%'), strings.LastIndexByte(f, ':'); i >= 0 && j > i {
					f = f[:i] + f[j:]
				}
				if ap, err := netip.ParseAddrPort(f); err == nil {
					cur = ap.Addr()
					sf[cur] = 0
					break
				}
			}
			continue
		}
		for _, f := range strings.Fields(line) {
			if v, ok := strings.CutPrefix(f, "bytes_acked:"); ok && cur.IsValid() {
				n, _ := strconv.ParseUint(v, 10, 64)
				sf[cur] = n
			}
		}
	}
	return sf, nil
}

// mptcpActive picks the path whose subflow the kernel's scheduler is using: the one whose
// acknowledged bytes grow the most over a short interval.
func mptcpActive(lab *netlab.Lab, port int) (int, error) {
	a, err := subflows(lab, port)
	if err != nil {
		return 0, err
	}
	time.Sleep(200 * time.Millisecond)
	b, err := subflows(lab, port)
	if err != nil {
		return 0, err
	}
	best, bestGrow := -1, uint64(0)
	for i := range lab.Paths() {
		ip := lab.ClientAddr(i)
		g := b[ip] - min(a[ip], b[ip])
		if best < 0 || g > bestGrow {
			best, bestGrow = i, g
		}
	}
	if bestGrow == 0 {
		return 0, fmt.Errorf("no subflow is moving data (ss: %v then %v)", a, b)
	}
	return best, nil
}
