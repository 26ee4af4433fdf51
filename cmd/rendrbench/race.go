package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/internal/netlab"
)

const (
	raceRateMbit = 100
	raceLoss     = 10 // percent, on path 1, both directions
	raceStream   = 10 * time.Second
	// raceWarm is the start of a stream whose delays are not counted (every chunk must still
	// arrive, in order): TCP's slow start, which at a WAN round trip takes several of them,
	// and the paths' first measurements. The delays are those of the steady stream.
	raceWarm = time.Second
)

// raceRun is one paced stream's send-to-delivery delays; every chunk arrived, in order (the
// receiver checks, and a run that loses one fails).
type raceRun struct {
	p50, p99, max time.Duration
	lost, sent    int // packet runs: datagrams never delivered, of those sent
}

// runRace streams paced 1 KiB chunks (one per millisecond) over two 100 Mbit/s paths, path 1
// dropping 10% of its packets at random: through Race(p0, p1), and through each path alone;
// first on a stream flow, then as datagrams on a packet flow.
func runRace(c *config) []result {
	if err := netlab.Available(); err != nil {
		return []result{{Scenario: "race", Metric: "p99_delay", Skipped: err.Error()}}
	}
	keys, err := newBenchKeys()
	if err != nil {
		return []result{failure("race", err)}
	}
	lab, err := netlab.New(netlab.Config{Paths: 2, RateMbit: []int{raceRateMbit, raceRateMbit}, Name: "rrace"})
	if err != nil {
		return []result{failure("race", fmt.Errorf("building the lab: %w", err))}
	}
	defer lab.Close()
	defer atExit(func() { lab.Close() })()
	c.logf("race: 2 paths at %d Mbit/s, path 1 losing %d%%, %v of 1 KiB chunks every %v, %d runs", raceRateMbit, raceLoss, raceStream, chunkEvery, c.runs)
	return raceIn(c, "race", "", lab, keys, "")
}

// raceIn measures the race rows in lab (path 1 made to lose raceLoss% here), under scenario,
// each metric prefixed, TCP sockets with congestion control cc ("": the default).
func raceIn(c *config, scenario, prefix string, lab *netlab.Lab, keys benchKeys, cc string) []result {
	if err := lab.Loss(1, raceLoss); err != nil {
		return []result{failure(scenario, err)}
	}
	rows := []struct {
		metric, note string
		paths        int
		root         func([]*rendr.Target) *rendr.Target
	}{
		{"race_clean_alone", "rendr over the clean path alone", 1,
			func(p []*rendr.Target) *rendr.Target { return p[0] }},
		{"race_lossy_alone", fmt.Sprintf("rendr over the path losing %d%% alone", raceLoss), 1,
			func(p []*rendr.Target) *rendr.Target { return p[1] }},
		{"race_both", fmt.Sprintf("rendr over Race(clean, lossy %d%%)", raceLoss), 2,
			func(p []*rendr.Target) *rendr.Target { return rendr.Race("race", p...) }},
	}
	runs := make([][]raceRun, len(rows))
	pruns := make([][]raceRun, len(rows))
	for run := range c.runs {
		for k := range rows {
			i := (k + run) % len(rows)
			r, err := raceOnce(lab, keys, rows[i].paths, rows[i].root, cc)
			if err != nil {
				return []result{failure(scenario, fmt.Errorf("%s run %d: %w", rows[i].metric, run, err))}
			}
			c.logf("%s: run %d %-17s stream  p50 %v p99 %v max %v", scenario, run, prefix+rows[i].metric, r.p50, r.p99, r.max)
			runs[i] = append(runs[i], r)
			pr, err := raceOncePacket(lab, keys, rows[i].paths, rows[i].root, cc)
			if err != nil {
				return []result{failure(scenario, fmt.Errorf("%s packet run %d: %w", rows[i].metric, run, err))}
			}
			c.logf("%s: run %d %-17s packet  p50 %v p99 %v max %v lost %d of %d", scenario, run, prefix+rows[i].metric, pr.p50, pr.p99, pr.max, pr.lost, pr.sent)
			pruns[i] = append(pruns[i], pr)
		}
	}
	var out []result
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	var clean *result
	for i, row := range rows {
		var p99s []float64
		for _, r := range runs[i] {
			p99s = append(p99s, ms(r.p99))
		}
		d := result{Scenario: scenario, Metric: prefix + row.metric + "_p99_delay", Unit: "ms",
			Note: row.note + ": p99 send-to-delivery delay of a chunk; every chunk arrived, in order"}
		measured(&d, p99s)
		if clean != nil {
			against(&d, clean, 0, false)
		}
		out = append(out, d)
		if clean == nil {
			clean = &out[0]
		}
	}
	// The target of the issue: the race's p99 within 10% of the clean path alone.
	last := &out[len(out)-1]
	last.Target = ptr("ratio <= 1.1")
	last.Pass = ptr(last.Ratio != nil && *last.Ratio <= 1.1)
	// The same graphs carrying a packet flow: datagrams lost and p99 delay.
	var pclean *result
	for i, row := range rows {
		var p99s, lost []float64
		for _, r := range pruns[i] {
			p99s = append(p99s, ms(r.p99))
			lost = append(lost, float64(r.lost))
		}
		d := result{Scenario: scenario, Metric: prefix + "race_packet_" + strings.TrimPrefix(row.metric, "race_") + "_p99_delay", Unit: "ms",
			Note: row.note + ", a packet flow: p99 send-to-delivery delay of a 1 KiB datagram"}
		measured(&d, p99s)
		if pclean != nil {
			against(&d, pclean, 0, false)
		}
		l := result{Scenario: scenario, Metric: prefix + "race_packet_" + strings.TrimPrefix(row.metric, "race_") + "_lost", Unit: "datagrams",
			Note: row.note + fmt.Sprintf(", a packet flow: datagrams of %d never delivered (none may arrive twice; each run checks)", int(raceStream/chunkEvery))}
		measured(&l, lost)
		out = append(out, d, l)
		if pclean == nil {
			pclean = &out[len(out)-2]
		}
	}
	return out
}

// raceOncePacket streams paced 1 KiB datagrams with their number and send time and returns
// the delays of those delivered and how many never were.
func raceOncePacket(lab *netlab.Lab, k benchKeys, paths int, root func([]*rendr.Target) *rendr.Target, cc string) (raceRun, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ln, d, err := labRendr(lab, k, root, cc)
	if err != nil {
		return raceRun{}, err
	}
	defer ln.Close()
	defer d.Close()
	snd, err := d.DialPacket(ctx)
	if err != nil {
		return raceRun{}, err
	}
	defer snd.Close()
	if _, err := snd.Write([]byte("open")); err != nil {
		return raceRun{}, err
	}
	rcv, err := ln.AcceptPacket(ctx)
	if err != nil {
		return raceRun{}, err
	}
	defer rcv.Close()
	if err := waitUp(ctx, d.Status, paths); err != nil {
		return raceRun{}, err
	}
	b := make([]byte, gapChunk)
	rcv.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := rcv.Read(b); err != nil { // "open"
		return raceRun{}, err
	}
	n := int(raceStream / chunkEvery)
	go func() {
		t := time.NewTicker(chunkEvery)
		defer t.Stop()
		w := make([]byte, gapChunk)
		for i := range n {
			<-t.C
			binary.BigEndian.PutUint64(w, uint64(i))
			binary.BigEndian.PutUint64(w[8:], uint64(time.Now().UnixNano()))
			if _, err := snd.Write(w); err != nil {
				return
			}
		}
	}()
	seen := make([]bool, n)
	var delays []time.Duration
	got := 0
	rcv.SetReadDeadline(time.Now().Add(raceStream + 3*time.Second))
	for got < n {
		k, err := rcv.Read(b)
		if err != nil {
			break // the deadline: the rest is lost
		}
		if k != gapChunk {
			return raceRun{}, fmt.Errorf("a datagram of %d bytes", k)
		}
		i := binary.BigEndian.Uint64(b)
		if i >= uint64(n) || seen[i] {
			return raceRun{}, fmt.Errorf("datagram %d delivered twice or out of range", i)
		}
		seen[i] = true
		got++
		if i >= uint64(raceWarm/chunkEvery) {
			delays = append(delays, time.Since(time.Unix(0, int64(binary.BigEndian.Uint64(b[8:])))))
		}
	}
	if len(delays) == 0 {
		return raceRun{}, fmt.Errorf("no datagram sent after the first %v arrived", raceWarm)
	}
	slices.Sort(delays)
	return raceRun{p50: delays[len(delays)/2], p99: delays[len(delays)*99/100], max: delays[len(delays)-1],
		lost: n - got, sent: n}, nil
}

func raceOnce(lab *netlab.Lab, k benchKeys, paths int, root func([]*rendr.Target) *rendr.Target, cc string) (raceRun, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ln, d, err := labRendr(lab, k, root, cc)
	if err != nil {
		return raceRun{}, err
	}
	defer ln.Close()
	defer d.Close()
	snd, rcv, err := rendrPair(ctx, d, ln)
	if err != nil {
		return raceRun{}, err
	}
	defer snd.Close()
	defer rcv.Close()
	if err := waitPathsUp(ctx, snd, paths); err != nil {
		return raceRun{}, err
	}
	base := time.Now()
	stop := make(chan struct{})
	sent := make(chan error, 1)
	go func() { sent <- pacedSend(snd, base, stop) }()
	got := make(chan []arrival, 1)
	rerr := make(chan error, 1)
	go func() {
		a, err := timedReceive(rcv, base)
		got <- a
		rerr <- err
	}()
	time.Sleep(raceStream)
	close(stop)
	if err := <-sent; err != nil {
		return raceRun{}, err
	}
	var arr []arrival
	select {
	case arr = <-got:
	case <-time.After(20 * time.Second):
		return raceRun{}, fmt.Errorf("the stream did not end within 20s of its last chunk")
	}
	if err := <-rerr; err != nil {
		return raceRun{}, err
	}
	if len(arr) == 0 {
		return raceRun{}, fmt.Errorf("nothing arrived")
	}
	var delays []time.Duration
	for _, a := range arr {
		if a.sent.Sub(base) >= raceWarm {
			delays = append(delays, a.at.Sub(a.sent))
		}
	}
	if len(delays) == 0 {
		return raceRun{}, fmt.Errorf("nothing sent after the first %v arrived", raceWarm)
	}
	slices.Sort(delays)
	return raceRun{p50: delays[len(delays)/2], p99: delays[len(delays)*99/100], max: delays[len(delays)-1]}, nil
}
