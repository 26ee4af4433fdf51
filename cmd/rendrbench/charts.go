package main

import (
	"fmt"
	"image/color"
	"math"
	"slices"
	"time"
)

// The charts -plot writes, built from what the failover and bond scenarios record.

const (
	failPlotBefore = 300 * time.Millisecond // shown before the cut
	failPlotAfter  = 700 * time.Millisecond // shown after it, at least
	// A Bond's reader gets bytes in bursts, as the slow path's fill the gaps, and a carrier
	// writes in batches: rates over a second read better than their bursts.
	bondPlotWindow = time.Second
	bondPlotEvery  = 100 * time.Millisecond // how often a plotted Bond's paths are sampled, and its rates drawn
)

// failTrace is one failover run to draw: when each chunk was delivered, from the cut
// (gapRun.trace), and the run's gap as the scenario measured it.
type failTrace struct {
	trace []time.Duration
	gap   time.Duration
}

// failoverChart draws the data delivered around a blackhole, one step line per stack,
// counted from the cut so that both lines meet there whatever rate each sender kept up on
// a busy machine: each chunk delivered lifts a line by 1 KiB, so a gap is a flat stretch from
// zero and the resend after it a jump. A run without a trace is left out.
func failoverChart(rendrRun, mptcpRun failTrace) *chart {
	end := failPlotAfter
	for _, r := range []failTrace{rendrRun, mptcpRun} {
		end = max(end, (r.gap + 400*time.Millisecond).Round(100*time.Millisecond))
	}
	c := &chart{
		title:  "A blackholed path: a 1 KiB-per-ms stream over two 100 Mbit/s paths",
		xLabel: "ms from the cut of the path carrying the stream (the fault command's start)",
		yLabel: "KiB delivered, counted from the cut",
		width:  800, height: 400,
		xMin: -ms(failPlotBefore), xMax: ms(end),
		marks: []mark{{x: 0, label: "path blackholed"}},
	}
	for _, l := range []struct {
		name string
		run  failTrace
		s    series
	}{
		{"Linux MPTCP", mptcpRun, series{color: plotOrange}},
		{"rendr", rendrRun, series{color: plotBlue}},
	} {
		if len(l.run.trace) == 0 {
			continue
		}
		l.s.name = fmt.Sprintf("%s: gap %.0f ms", l.name, ms(l.run.gap))
		l.s.xs, l.s.ys = deliverySteps(l.run.trace, -failPlotBefore, end, float64(gapChunk)/1024)
		c.series = append(c.series, l.s)
	}
	return c
}

// deliverySteps turns delivery times into a step line of the amount delivered, counted from
// time 0 (negative before it), each delivery adding per, from from to to.
func deliverySteps(trace []time.Duration, from, to time.Duration, per float64) (xs, ys []float64) {
	n := 0.0
	for _, t := range trace {
		if t >= from && t <= 0 {
			n -= per
		}
	}
	xs, ys = []float64{ms(from)}, []float64{n}
	for _, t := range trace {
		if t < from || t > to {
			continue
		}
		xs, ys = append(xs, ms(t)), append(ys, n)
		n += per
		xs, ys = append(xs, ms(t)), append(ys, n)
	}
	return append(xs, ms(to)), append(ys, n)
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// bulkTrace is what a plotted bulk transfer records, every time from the transfer's start.
type bulkTrace struct {
	start    time.Time
	arrivals []time.Duration // when each chunk was read whole by the receiver
	// samples of the bytes each path had sent (rendr only), at the times in sampled.
	sampled []time.Duration
	sent    [][]int64 // [sample][path]
}

// bondChart draws a Bond's transfer over time: the rate each path's carrier sent at (records
// and their headers), the goodput the reader got, and MPTCP's goodput over the same paths.
func bondChart(rates []int, warm, measure time.Duration, rendrTr, mptcpTr *bulkTrace) *chart {
	nominal := 0
	for _, r := range rates {
		nominal += r
	}
	c := &chart{
		title:  fmt.Sprintf("One flow, Bond over %s Mbit/s paths: what each path carries, and goodput", joinInts(rates, " + ")),
		xLabel: fmt.Sprintf("seconds from the first write (each rate over the %v before)", bondPlotWindow),
		yLabel: "Mbit/s",
		width:  800, height: 400,
		xMin: 0, xMax: (warm + measure).Seconds(),
		yMin: 0, yMax: math.Ceil(float64(nominal)*1.15/20) * 20,
		marks: []mark{{x: warm.Seconds(), label: "measured window starts"}},
	}
	colors := []rgbaName{{plotGreen, "rendr, path 0 sends"}, {plotPurple, "rendr, path 1 sends"}, {plotRed, "rendr, path 2 sends"}}
	if mptcpTr != nil && len(mptcpTr.arrivals) > 0 {
		xs, ys := rateSeries(mptcpTr.arrivals, chunkCounts(len(mptcpTr.arrivals)), bondPlotWindow, bondPlotEvery, true)
		c.series = append(c.series, series{name: "Linux MPTCP, goodput", color: plotOrange, xs: xs, ys: ys})
	}
	if rendrTr != nil {
		for p := range rates {
			if p >= len(colors) || len(rendrTr.sent) == 0 || p >= len(rendrTr.sent[0]) {
				break
			}
			cum := make([]float64, len(rendrTr.sent))
			for i, s := range rendrTr.sent {
				cum[i] = float64(s[p])
			}
			xs, ys := rateSeries(rendrTr.sampled, cum, bondPlotWindow, bondPlotEvery, false)
			c.series = append(c.series, series{name: fmt.Sprintf("%s (%d Mbit/s)", colors[p].name, rates[p]), color: colors[p].color, xs: xs, ys: ys})
		}
		if len(rendrTr.arrivals) > 0 {
			xs, ys := rateSeries(rendrTr.arrivals, chunkCounts(len(rendrTr.arrivals)), bondPlotWindow, bondPlotEvery, true)
			c.series = append(c.series, series{name: "rendr, goodput", color: plotBlue, xs: xs, ys: ys})
		}
	}
	// Between the slow path's line and the fast one's, low, where nothing runs but the
	// deepest dips.
	c.legendAt = &[2]float64{0, float64(nominal) * 0.52}
	if len(c.series) > 0 {
		xs := c.series[0].xs
		c.legendAt[0] = xs[len(xs)-1] * 0.45
	}
	return c
}

type rgbaName struct {
	color color.RGBA
	name  string
}

// chunkCounts is the bytes delivered after each of n chunks.
func chunkCounts(n int) []float64 {
	cum := make([]float64, n)
	for i := range cum {
		cum[i] = float64(i+1) * bondChunk
	}
	return cum
}

// rateSeries turns a cumulative byte count, known at the times at, into Mbit/s averaged over
// the window before each point, a point every every from one window in. With step, the count
// changes only at those times (deliveries); otherwise it is taken as linear between them
// (samples).
func rateSeries(at []time.Duration, cum []float64, window, every time.Duration, step bool) (xs, ys []float64) {
	if len(at) == 0 || len(at) != len(cum) {
		return nil, nil
	}
	value := func(t time.Duration) float64 {
		i, found := slices.BinarySearch(at, t)
		switch {
		case step && found:
			return cum[i]
		case step && i == 0:
			return 0
		case step:
			return cum[i-1]
		case i == 0:
			// Before the first known time: from zero at 0.
			if at[0] <= 0 {
				return cum[0]
			}
			return cum[0] * float64(max(t, 0)) / float64(at[0])
		case i == len(at):
			return cum[len(cum)-1]
		}
		f := float64(t-at[i-1]) / float64(at[i]-at[i-1])
		return cum[i-1] + f*(cum[i]-cum[i-1])
	}
	for t := window; t <= at[len(at)-1]; t += every {
		xs = append(xs, t.Seconds())
		ys = append(ys, (value(t)-value(t-window))*8/window.Seconds()/1e6)
	}
	return xs, ys
}

func joinInts(v []int, sep string) string {
	s := ""
	for i, n := range v {
		if i > 0 {
			s += sep
		}
		s += fmt.Sprint(n)
	}
	return s
}
