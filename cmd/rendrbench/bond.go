package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/internal/netlab"
)

const (
	bondWarm     = 2 * time.Second // not counted: slow start, rate estimates, subflows
	bondMeasure  = 8 * time.Second // counted, unless -seconds says otherwise
	bondChunk    = 64 << 10        // one Write; its first 16 bytes carry the send time
	bondTarget   = 0.95
	bondMaxDrain = 20 * time.Second
)

// bondCase is one pair of path rates.
type bondCase struct {
	name  string
	rates []int // Mbit/s per path
}

// bulkRun is one measured bulk transfer.
type bulkRun struct {
	mbit   float64       // goodput over the measured window
	p99    time.Duration // p99 send-to-delivery delay of a chunk in the measured window
	minDel time.Duration // smallest such delay: the unloaded path
	moves  int           // rendr: route changes during the transfer (each may resend)
}

func runBond(c *config) []result {
	if err := netlab.Available(); err != nil {
		return []result{{Scenario: "bond", Metric: "goodput", Skipped: err.Error()}}
	}
	keys, err := newBenchKeys()
	if err != nil {
		return []result{failure("bond", err)}
	}
	var out []result
	cases := []bondCase{{"100+100", []int{100, 100}}, {"100+20", []int{100, 20}}}
	for i, bc := range cases {
		res, err := bondCaseRun(c, keys, bc, i == len(cases)-1)
		if err != nil {
			return append(out, failure("bond", fmt.Errorf("%s: %w", bc.name, err)))
		}
		out = append(out, res...)
	}
	return out
}

// plotted says whether -plot draws this case.
func bondCaseRun(c *config, keys benchKeys, bc bondCase, plotted bool) ([]result, error) {
	lab, err := netlab.New(netlab.Config{Paths: len(bc.rates), RateMbit: bc.rates, Name: "rbond"})
	if err != nil {
		return nil, fmt.Errorf("building the lab: %w", err)
	}
	defer lab.Close()
	defer atExit(func() { lab.Close() })()
	mptcpSkip := ""
	if _, err := os.Stat("/proc/sys/net/mptcp/enabled"); err != nil {
		mptcpSkip = "kernel without MPTCP: " + err.Error()
	} else if err := lab.EnableMPTCP(); err != nil {
		mptcpSkip = "enabling MPTCP in the lab: " + err.Error()
	}
	var single [][]bulkRun // per path: plain TCP alone on it
	single = make([][]bulkRun, lab.Paths())
	var rendrRuns, mptcpRuns []bulkRun
	measure := bondMeasure
	if c.seconds > 0 {
		measure = time.Duration(c.seconds * float64(time.Second))
	}
	c.logf("bond %s: %d runs, %v warm-up + %v measured per transfer", bc.name, c.runs, bondWarm, measure)
	// -plot draws the first run of the last case, where the paths' rates differ.
	var rendrTr, mptcpTr *bulkTrace
	for run := range c.runs {
		if c.plotDir != "" && run == 0 && plotted {
			rendrTr, mptcpTr = &bulkTrace{}, &bulkTrace{}
		} else {
			rendrTr, mptcpTr = nil, nil
		}
		for i := range lab.Paths() {
			r, err := tcpBulk(lab, i, measure, "")
			if err != nil {
				return nil, fmt.Errorf("tcp on path %d: %w", i, err)
			}
			c.logf("bond %s: run %d tcp_path%d %7.1f Mbit/s p99 delay %v", bc.name, run, i, r.mbit, r.p99)
			single[i] = append(single[i], r)
		}
		r, err := rendrBulk(lab, keys, measure, rendrTr, "")
		if err != nil {
			return nil, fmt.Errorf("rendr: %w", err)
		}
		c.logf("bond %s: run %d rendr_bond %7.1f Mbit/s p99 delay %v, %d route changes", bc.name, run, r.mbit, r.p99, r.moves)
		rendrRuns = append(rendrRuns, r)
		if mptcpSkip == "" {
			r, err := mptcpBulk(lab, measure, mptcpTr, "")
			if err != nil {
				return nil, fmt.Errorf("mptcp: %w", err)
			}
			c.logf("bond %s: run %d mptcp %7.1f Mbit/s p99 delay %v", bc.name, run, r.mbit, r.p99)
			mptcpRuns = append(mptcpRuns, r)
		}
		if rendrTr != nil {
			if mptcpSkip != "" {
				mptcpTr = nil
			}
			path := filepath.Join(c.plotDir, "bond.png")
			if err := bondChart(bc.rates, bondWarm, measure, rendrTr, mptcpTr).writePNG(path); err != nil {
				return nil, fmt.Errorf("plot: %w", err)
			}
			c.logf("bond %s: wrote %s", bc.name, path)
		}
	}
	sum := 0.0
	nominal := 0
	for i, rs := range single {
		sum += median(mbits(rs))
		nominal += bc.rates[i]
	}
	name := "bond_" + bc.name
	sumRes := result{Scenario: "bond", Metric: name + "_tcp_sum", Unit: "Mbit/s",
		Note: fmt.Sprintf("sum over the paths of plain TCP's goodput alone on each (medians); nominal rates %v Mbit/s, sum %d", bc.rates, nominal)}
	measured(&sumRes, nil)
	sumRes.Value, sumRes.Runs = ptr(round(sum)), c.runs
	rendrRes := result{Scenario: "bond", Metric: name + "_rendr", Unit: "Mbit/s",
		Note: "one rendr flow, Bond over the paths (transport TCP, encrypted records), goodput at the receiver"}
	measured(&rendrRes, mbits(rendrRuns))
	against(&rendrRes, &sumRes, bondTarget, true)
	out := []result{sumRes, rendrRes}
	out = append(out, bondTail("bond", name, &sumRes, single[0], rendrRuns, mptcpRuns, mptcpSkip, 0)...)
	return out, nil
}

// bondTail is the lines a Bond case ends with: MPTCP's goodput against sum (or why it was
// skipped), and the p99 delay of a 64 KiB write through plain TCP alone on path 0, through
// rendr's Bond (at most delayTarget times TCP's; 0: no target) and through MPTCP.
func bondTail(scenario, name string, sum *result, path0, rendrRuns, mptcpRuns []bulkRun, mptcpSkip string, delayTarget float64) []result {
	mptcpRes := result{Scenario: scenario, Metric: name + "_mptcp", Unit: "Mbit/s",
		Note: "one Linux MPTCP connection, a subflow per path, default scheduler"}
	if mptcpSkip != "" {
		mptcpRes.Skipped = mptcpSkip
	} else {
		measured(&mptcpRes, mbits(mptcpRuns))
		against(&mptcpRes, sum, 0, true)
	}
	base := result{Scenario: scenario, Metric: name + "_tcp_path0_p99_delay", Unit: "ms",
		Note: "p99 send-to-delivery delay of a 64 KiB write, plain TCP alone on path 0 (bulk, TCP_NOTSENT_LOWAT 128 KiB)"}
	measured(&base, p99s(path0))
	rd := result{Scenario: scenario, Metric: name + "_rendr_p99_delay", Unit: "ms",
		Note: "p99 send-to-delivery delay of a 64 KiB write through the Bond (bulk); against plain TCP on path 0"}
	measured(&rd, p99s(rendrRuns))
	against(&rd, &base, delayTarget, false)
	out := []result{mptcpRes, base, rd}
	if mptcpSkip == "" {
		md := result{Scenario: scenario, Metric: name + "_mptcp_p99_delay", Unit: "ms", Note: "the same through MPTCP"}
		measured(&md, p99s(mptcpRuns))
		against(&md, &base, 0, false)
		out = append(out, md)
	}
	return out
}

// bulk writes stamped chunks from snd as fast as it takes them for warm-up plus measure, and
// returns the goodput and chunk delays the receiver saw over the measured window. With tr,
// it records when each chunk arrived, from tr.start (from its own start if tr.start is zero).
func bulk(snd, rcv net.Conn, measure time.Duration, tr *bulkTrace) (bulkRun, error) {
	return bulkFor(snd, rcv, bondWarm, measure, tr)
}

// bulkFor is bulk with a warm-up of its own.
func bulkFor(snd, rcv net.Conn, warm, measure time.Duration, tr *bulkTrace) (bulkRun, error) {
	start := time.Now()
	if tr != nil && tr.start.IsZero() {
		tr.start = start
	}
	stop := start.Add(warm + measure)
	werr := make(chan error, 1)
	go func() {
		b := make([]byte, bondChunk)
		for seq := uint64(0); time.Now().Before(stop); seq++ {
			binary.BigEndian.PutUint64(b, seq)
			binary.BigEndian.PutUint64(b[8:], uint64(time.Now().UnixNano()))
			if _, err := snd.Write(b); err != nil {
				werr <- err
				return
			}
		}
		werr <- nil
	}()
	b := make([]byte, bondChunk)
	var counted int64
	var delays []time.Duration
	rcv.SetReadDeadline(stop.Add(bondMaxDrain))
	measureFrom := start.Add(warm)
	for seq := uint64(0); ; seq++ {
		if _, err := io.ReadFull(rcv, b); err != nil {
			return bulkRun{}, fmt.Errorf("reading chunk %d: %w", seq, err)
		}
		if got := binary.BigEndian.Uint64(b); got != seq {
			return bulkRun{}, fmt.Errorf("chunk %d arrived as %d", seq, got)
		}
		now := time.Now()
		if now.After(stop) {
			break
		}
		if tr != nil {
			tr.arrivals = append(tr.arrivals, now.Sub(tr.start))
		}
		if now.After(measureFrom) {
			counted += bondChunk
			delays = append(delays, now.Sub(time.Unix(0, int64(binary.BigEndian.Uint64(b[8:])))))
		}
	}
	// Unblock the writer (its peer stops reading now) and collect it.
	snd.Close()
	rcv.Close()
	// The writer ends with whatever error closing its stream under it gives (each stack says
	// it its own way); one that failed before would have left the reader short of the end.
	<-werr
	if len(delays) == 0 {
		return bulkRun{}, errors.New("nothing arrived in the measured window")
	}
	slices.Sort(delays)
	return bulkRun{
		mbit:   float64(counted) * 8 / measure.Seconds() / 1e6,
		p99:    delays[len(delays)*99/100],
		minDel: delays[0],
	}, nil
}

func isConnReset(err error) bool {
	var ne *net.OpError
	return errors.As(err, &ne) || errors.Is(err, rendr.ErrClosed) || errors.Is(err, rendr.ErrReset)
}

// tcpBulk is plain TCP alone on path i (with rendr's socket options), with congestion control
// cc ("": the namespace's default).
func tcpBulk(lab *netlab.Lab, i int, measure time.Duration, cc string) (bulkRun, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	lc := &net.ListenConfig{KeepAlive: -1, Control: labControl(true, cc)}
	ln, err := lab.ListenConfig(netlab.Server, lc, "tcp", netip.AddrPortFrom(lab.ServerAddr(i), 0).String())
	if err != nil {
		return bulkRun{}, err
	}
	defer ln.Close()
	dial := lab.Dialer(netlab.Client, &net.Dialer{KeepAlive: -1, Control: labControl(true, cc),
		LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(lab.ClientAddr(i), 0))})
	snd, rcv, err := tcpPair(ctx, lowatListener{ln}, func(ctx context.Context) (net.Conn, error) {
		return dial(ctx, "tcp", ln.Addr().String())
	})
	if err != nil {
		return bulkRun{}, err
	}
	return bulk(snd, rcv, measure, nil)
}

// rendrBulk is one rendr flow over Bond(p0, p1, ...), its TCP paths with congestion control cc
// ("": the default). With tr, it also samples the bytes each path has sent, every
// bondPlotEvery.
func rendrBulk(lab *netlab.Lab, k benchKeys, measure time.Duration, tr *bulkTrace, cc string) (bulkRun, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ln, d, err := labRendr(lab, k, func(paths []*rendr.Target) *rendr.Target { return rendr.Bond("bond", paths...) }, cc)
	if err != nil {
		return bulkRun{}, err
	}
	defer ln.Close()
	defer d.Close()
	snd, rcv, err := rendrPair(ctx, d, ln)
	if err != nil {
		return bulkRun{}, err
	}
	if err := waitPathsUp(ctx, snd, lab.Paths()); err != nil {
		return bulkRun{}, err
	}
	m0 := snd.Status().Migrations
	var stopSampling func()
	if tr != nil {
		tr.start = time.Now()
		stopSampling = samplePaths(snd, tr, lab.Paths())
	}
	r, err := bulk(snd, rcv, measure, tr)
	if stopSampling != nil {
		stopSampling()
	}
	r.moves = d.Status().Migrations - m0
	return r, err
}

// samplePaths records the bytes each of n paths (named p0, p1, ...) has sent, from tr.start
// every bondPlotEvery, into tr.sampled and tr.sent until the returned func is called.
func samplePaths(c *rendr.Conn, tr *bulkTrace, n int) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	var at []time.Duration
	var sent [][]int64
	wg.Go(func() {
		t := time.NewTicker(bondPlotEvery)
		defer t.Stop()
		for {
			row := make([]int64, n)
			for _, p := range c.Status().Paths {
				var i int
				if _, err := fmt.Sscanf(p.Name, "p%d", &i); err == nil && i >= 0 && i < n {
					row[i] = p.BytesSent
				}
			}
			at, sent = append(at, time.Since(tr.start)), append(sent, row)
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	})
	return func() {
		close(done)
		wg.Wait()
		tr.sampled, tr.sent = at, sent
	}
}

// mptcpBulk is one MPTCP connection with a subflow per path, congestion control cc ("": the
// default).
func mptcpBulk(lab *netlab.Lab, measure time.Duration, tr *bulkTrace, cc string) (bulkRun, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ln, snd, rcv, err := mptcpPair(ctx, lab, cc)
	if err != nil {
		return bulkRun{}, err
	}
	defer ln.Close()
	return bulk(snd, rcv, measure, tr)
}

// mptcpPair connects an MPTCP client on path 0's client address to an MPTCP listener on path
// 0's server address; the kernel adds a subflow per other path once data flows.
func mptcpPair(ctx context.Context, lab *netlab.Lab, cc string) (ln net.Listener, snd, rcv net.Conn, err error) {
	lc := net.ListenConfig{Control: labControl(false, cc)}
	lc.SetMultipathTCP(true)
	ln, err = lab.ListenConfig(netlab.Server, &lc, "tcp", netip.AddrPortFrom(lab.ServerAddr(0), 0).String())
	if err != nil {
		return nil, nil, nil, err
	}
	d := &net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(lab.ClientAddr(0), 0)), Control: labControl(false, cc)}
	d.SetMultipathTCP(true)
	snd, rcv, err = tcpPair(ctx, ln, func(ctx context.Context) (net.Conn, error) {
		return lab.Dialer(netlab.Client, d)(ctx, "tcp", ln.Addr().String())
	})
	if err != nil {
		ln.Close()
		return nil, nil, nil, err
	}
	for _, c := range []net.Conn{snd, rcv} {
		if mp, err := c.(*net.TCPConn).MultipathTCP(); err != nil || !mp {
			snd.Close()
			rcv.Close()
			ln.Close()
			return nil, nil, nil, fmt.Errorf("%v: not an MPTCP connection (%v)", c.LocalAddr(), err)
		}
	}
	return ln, snd, rcv, nil
}

// labRendr starts a Listener in the server namespace with one source per path and a Dialer in
// the client namespace whose paths each dial from their own client address, under the graph
// root makes of them, with congestion control cc ("": the default).
func labRendr(lab *netlab.Lab, k benchKeys, root func([]*rendr.Target) *rendr.Target, cc string) (*rendr.Listener, *rendr.Dialer, error) {
	ln, err := rendr.Listen(rendr.ListenConfig{Key: k.srv, Peers: []rendr.PublicKey{k.cli.Public()}})
	if err != nil {
		return nil, nil, err
	}
	var paths []*rendr.Target
	for i := range lab.Paths() {
		lc := &net.ListenConfig{KeepAlive: -1, Control: labControl(true, cc)}
		src, err := lab.ListenConfig(netlab.Server, lc, "tcp", netip.AddrPortFrom(lab.ServerAddr(i), 0).String())
		if err != nil {
			ln.Close()
			return nil, nil, err
		}
		if err := ln.AddSource(lowatListener{src}); err != nil {
			src.Close()
			ln.Close()
			return nil, nil, err
		}
		dial := lab.Dialer(netlab.Client, &net.Dialer{KeepAlive: -1, Control: labControl(true, cc),
			LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(lab.ClientAddr(i), 0))})
		addr := src.Addr().String()
		paths = append(paths, rendr.Path(fmt.Sprintf("p%d", i), func(ctx context.Context) (net.Conn, error) {
			return dial(ctx, "tcp", addr)
		}))
	}
	d, err := rendr.NewDialer(rendr.DialerConfig{Key: k.cli, PeerKey: k.srv.Public(), Root: root(paths)})
	if err != nil {
		ln.Close()
		return nil, nil, err
	}
	return ln, d, nil
}

// labControl is the Control of the lab's TCP sockets: rendr's TCP_NOTSENT_LOWAT when lowat is
// set (see lowatControl), and congestion control cc unless it is "".
func labControl(lowat bool, cc string) func(network, address string, rc syscall.RawConn) error {
	return func(network, address string, rc syscall.RawConn) error {
		if lowat {
			if err := lowatControl(network, address, rc); err != nil {
				return err
			}
		}
		if cc != "" {
			return setCongestion(rc, cc)
		}
		return nil
	}
}

// mbits is the goodput of each run.
func mbits(rs []bulkRun) []float64 {
	var v []float64
	for _, r := range rs {
		v = append(v, r.mbit)
	}
	return v
}

// p99s is the p99 delay of each run, in milliseconds.
func p99s(rs []bulkRun) []float64 {
	var v []float64
	for _, r := range rs {
		v = append(v, float64(r.p99)/float64(time.Millisecond))
	}
	return v
}
