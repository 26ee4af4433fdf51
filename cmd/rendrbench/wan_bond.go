package main

import (
	"fmt"
	"os"
	"slices"
	"time"
)

// wanBond is a Bond over two emulated WAN links of different rates and round trips.
type wanBond struct {
	name  string
	links []wanLink
}

// wanBondCases: a fast uplink beside a slow one whose queue is deep (an LTE modem holding
// 2 s) or shallow (10 ms).
func wanBondCases() []wanBond {
	fast := wanLink{rtt: 50 * time.Millisecond, mbit: 100}
	slow := wanLink{rtt: 80 * time.Millisecond, mbit: 20}
	deep, shallow := slow, slow
	deep.queue, shallow.queue = 2*time.Second, 10*time.Millisecond
	return []wanBond{
		{"bond_deep", []wanLink{fast, deep}},
		{"bond_shallow", []wanLink{fast, shallow}},
	}
}

// wanBondCase measures, run after run: plain TCP alone on each link, one rendr flow over
// Bond(p0, p1) and one MPTCP connection with a subflow per link.
func wanBondCase(c *config, keys benchKeys, bc wanBond) ([]result, error) {
	lab, done, err := wanLab("rwbond", bc.links)
	if err != nil {
		return nil, err
	}
	defer done()
	mptcpSkip := ""
	if _, err := os.Stat("/proc/sys/net/mptcp/enabled"); err != nil {
		mptcpSkip = "kernel without MPTCP: " + err.Error()
	} else if err := lab.EnableMPTCP(); err != nil {
		mptcpSkip = "enabling MPTCP in the lab: " + err.Error()
	}
	measure := bondMeasure
	if c.seconds > 0 {
		measure = time.Duration(c.seconds * float64(time.Second))
	}
	c.logf("wan %s: %d runs, %v warm-up + %v measured per transfer", bc.name, c.runs, bondWarm, measure)
	single := make([][]bulkRun, lab.Paths())
	var rendrRuns, mptcpRuns []bulkRun
	for run := range c.runs {
		for i := range lab.Paths() {
			r, err := tcpBulk(lab, i, measure, wanCC)
			if err != nil {
				return nil, fmt.Errorf("tcp on path %d: %w", i, err)
			}
			c.logf("wan %s: run %d tcp_path%d %7.1f Mbit/s p99 delay %v", bc.name, run, i, r.mbit, r.p99)
			single[i] = append(single[i], r)
		}
		tr := &bulkTrace{}
		r, err := rendrBulk(lab, keys, measure, tr, wanCC)
		if err != nil {
			return nil, fmt.Errorf("rendr: %w", err)
		}
		var split []int64
		if n := len(tr.sent); n > 0 {
			split = tr.sent[n-1]
		}
		st, _ := lab.DelayStats(1)
		c.logf("wan %s: run %d rendr_bond %7.1f Mbit/s p99 delay %v, %d route changes, bytes per path %v (slow node: %d dropped)",
			bc.name, run, r.mbit, r.p99, r.moves, split, st.ToServer.Dropped)
		rendrRuns = append(rendrRuns, r)
		if mptcpSkip == "" {
			r, err := mptcpBulk(lab, measure, nil, wanCC)
			if err != nil {
				return nil, fmt.Errorf("mptcp: %w", err)
			}
			c.logf("wan %s: run %d mptcp %7.1f Mbit/s p99 delay %v", bc.name, run, r.mbit, r.p99)
			mptcpRuns = append(mptcpRuns, r)
		}
	}
	desc := fmt.Sprintf("links %v/%v at %d/%d Mbit/s, queues %v/%v",
		bc.links[0].rtt, bc.links[1].rtt, bc.links[0].mbit, bc.links[1].mbit, bc.links[0].queueTime(), bc.links[1].queueTime())
	var out []result
	sum, best := 0.0, 0
	for i, rs := range single {
		m := median(mbits(rs))
		sum += m
		if m > median(mbits(single[best])) {
			best = i
		}
		r := result{Scenario: "wan", Metric: fmt.Sprintf("%s_tcp_path%d", bc.name, i), Unit: "Mbit/s",
			Note: fmt.Sprintf("plain TCP alone on path %d (%v, %d Mbit/s); %s", i, bc.links[i].rtt, bc.links[i].mbit, desc)}
		measured(&r, mbits(rs))
		out = append(out, r)
	}
	sumRes := result{Scenario: "wan", Metric: bc.name + "_tcp_sum", Unit: "Mbit/s",
		Note: "sum over the paths of plain TCP's goodput alone on each (medians)"}
	sumRes.Value, sumRes.Runs = ptr(round(sum)), c.runs
	bestRes := out[best]
	rendrRes := result{Scenario: "wan", Metric: bc.name + "_rendr", Unit: "Mbit/s",
		Note: "one rendr flow, Bond over the paths (transport TCP), goodput at the receiver; " + desc}
	measured(&rendrRes, mbits(rendrRuns))
	// Never worse than the best path alone, in every run: the worst run is the value judged.
	worst := rendrRes
	worst.Metric = bc.name + "_rendr_worst_vs_best_path"
	worst.Note = "the worst run of the Bond against plain TCP alone on the best path (median): never worse, in any run"
	if len(rendrRuns) > 0 {
		worst.Value = ptr(round(slices.Min(mbits(rendrRuns))))
	}
	against(&worst, &bestRes, 1.0, true)
	out = append(out, sumRes, rendrRes, worst)
	if bc.name == "bond_shallow" {
		v := rendrRes
		v.Metric += "_vs_sum"
		against(&v, &sumRes, 0.9, true)
		out = append(out, v)
	}
	out = append(out, bondTail("wan", bc.name, &sumRes, single[0], rendrRuns, mptcpRuns, mptcpSkip, 2.0)...)
	return out, nil
}
