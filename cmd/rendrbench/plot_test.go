package main

import (
	"bytes"
	"image"
	"image/color"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// TestChartDrawsTheData renders two known series and a mark, reads the PNG back, and looks
// for each series' colour where its data lies and nowhere near a point neither passes through.
func TestChartDrawsTheData(t *testing.T) {
	rising := series{name: "rising", color: plotBlue}
	flat := series{name: "flat", color: plotOrange}
	for x := 0.0; x <= 10; x += 0.5 {
		rising.xs, rising.ys = append(rising.xs, x), append(rising.ys, x)
		flat.xs, flat.ys = append(flat.xs, x), append(flat.ys, 5)
	}
	c := &chart{title: "test", xLabel: "x", yLabel: "y", width: 480, height: 300,
		series: []series{rising, flat}, marks: []mark{{x: 2.5, label: "cut"}}}
	path := filepath.Join(t.TempDir(), "sub", "chart.png")
	if err := c.writePNG(path); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("the chart is not a PNG: %v", err)
	}
	if got := img.Bounds(); got != image.Rect(0, 0, 480, 300) {
		t.Fatalf("bounds %v, want 480x300", got)
	}
	// near reports whether a pixel of col lies within r pixels of the data point (x, y).
	near := func(x, y float64, col color.RGBA, r int) bool {
		p := c.toPixel(x, y)
		for dy := -r; dy <= r; dy++ {
			for dx := -r; dx <= r; dx++ {
				if color.RGBAModel.Convert(img.At(p.X+dx, p.Y+dy)) == col {
					return true
				}
			}
		}
		return false
	}
	// Away from x = 5, where the lines cross and the later one is drawn over the earlier.
	for _, x := range []float64{1, 2, 3, 7, 8, 9} {
		if !near(x, x, plotBlue, 1) {
			t.Errorf("no pixel of the rising series at (%g, %g)", x, x)
		}
		if !near(x, 5, plotOrange, 1) {
			t.Errorf("no pixel of the flat series at (%g, 5)", x)
		}
	}
	for _, p := range [][2]float64{{8, 2}, {3, 8}, {9, 7}} {
		if near(p[0], p[1], plotBlue, 3) || near(p[0], p[1], plotOrange, 3) {
			t.Errorf("a series is drawn at (%g, %g), where neither passes", p[0], p[1])
		}
	}
	// The mark is a dashed vertical line over the plot area: black pixels along its x.
	a, m := c.area(), c.toPixel(2.5, 0)
	black := 0
	for y := a.Min.Y; y < a.Max.Y; y++ {
		if color.RGBAModel.Convert(img.At(m.X, y)) == plotBlack {
			black++
		}
	}
	if black < a.Dy()/2 {
		t.Errorf("the mark at x=2.5 has %d black pixels of %d", black, a.Dy())
	}
	// Every series has a swatch in the legend, and the legend is not empty space: the
	// series' colour appears in the region above the data at the top left.
	for _, s := range c.series {
		found := false
		for y := a.Min.Y; y < a.Min.Y+80 && !found; y++ {
			for x := a.Min.X; x < a.Min.X+60 && !found; x++ {
				found = color.RGBAModel.Convert(img.At(x, y)) == s.color
			}
		}
		if !found {
			t.Errorf("no legend swatch for %q", s.name)
		}
	}
	if len(b) > 40<<10 {
		t.Errorf("the chart's PNG is %d bytes; a few KiB expected", len(b))
	}
}

// TestChartAxes: the ranges come from the data (from zero, with headroom, for y), and the
// ticks fall on round numbers.
func TestChartAxes(t *testing.T) {
	c := &chart{width: 400, height: 300, series: []series{{xs: []float64{-300, 700}, ys: []float64{3, 87}}}}
	x0, x1, y0, y1 := c.ranges()
	if x0 != -300 || x1 != 700 || y0 != 0 || y1 < 87 || y1 > 100 {
		t.Errorf("ranges x %g..%g y %g..%g, want x -300..700, y 0..(87 to 100]", x0, x1, y0, y1)
	}
	for _, tc := range []struct {
		span float64
		n    int
		want float64
	}{{1000, 8, 200}, {95, 6, 20}, {1, 5, 0.2}, {12, 6, 2}} {
		if got := niceStep(tc.span, tc.n); got != tc.want {
			t.Errorf("niceStep(%g, %d) = %g, want %g", tc.span, tc.n, got, tc.want)
		}
	}
	if got := tickLabel(0.4, 0.2); got != "0.4" {
		t.Errorf("tickLabel(0.4, 0.2) = %q", got)
	}
	if got := tickLabel(-200, 100); got != "-200" {
		t.Errorf("tickLabel(-200, 100) = %q", got)
	}
}

// TestRateSeries: a count growing at a known rate gives that rate in every bin, read as
// samples or as deliveries; read as deliveries, a stall shows as bins with nothing.
func TestRateSeries(t *testing.T) {
	// 1.25 MB every 100 ms is 100 Mbit/s.
	var at []time.Duration
	var cum []float64
	for i := 1; i <= 40; i++ {
		at = append(at, time.Duration(i)*100*time.Millisecond)
		cum = append(cum, float64(i)*1.25e6)
	}
	xs, ys := rateSeries(at, cum, 250*time.Millisecond, 250*time.Millisecond, false)
	if len(xs) != 16 || xs[0] != 0.25 || xs[15] != 4 {
		t.Fatalf("points at %v, want 16 from 0.25 s to 4 s", xs)
	}
	for i, y := range ys {
		if math.Abs(y-100) > 1e-9 {
			t.Errorf("bin %d: %g Mbit/s, want 100", i, y)
		}
	}
	// A stall: nothing from 1 s to 2 s, then the same rate again.
	for i := range at {
		if at[i] > time.Second {
			at[i] += time.Second
		}
	}
	_, ys = rateSeries(at, cum, 500*time.Millisecond, 500*time.Millisecond, true)
	if ys[0] != 100 || ys[2] != 0 || ys[3] != 0 || ys[4] != 100 {
		t.Errorf("rates %v, want 100 Mbit/s, nothing from 1 to 2 s, then 100 again", ys)
	}
	// A window longer than the spacing of the points: a moving average.
	xs, ys = rateSeries(at, cum, time.Second, 500*time.Millisecond, true)
	if xs[0] != 1 || ys[0] != 100 || ys[2] != 0 || ys[3] != 50 {
		t.Errorf("moving rates %v at %v, want 100 Mbit/s at 1 s, 0 at 2 s, 50 at 2.5 s", ys, xs)
	}
}

// TestDeliverySteps: a flat stretch for each gap, a step per delivery, counted from the cut.
func TestDeliverySteps(t *testing.T) {
	ms := func(v ...int) (d []time.Duration) {
		for _, x := range v {
			d = append(d, time.Duration(x)*time.Millisecond)
		}
		return d
	}
	tr := ms(-400, -2, -1, 0, 40, 41, 300)
	xs, ys := deliverySteps(tr, -300*time.Millisecond, 200*time.Millisecond, 1)
	wantX := []float64{-300, -2, -2, -1, -1, 0, 0, 40, 40, 41, 41, 200}
	wantY := []float64{-3, -3, -2, -2, -1, -1, 0, 0, 1, 1, 2, 2}
	if !slices.Equal(xs, wantX) || !slices.Equal(ys, wantY) {
		t.Errorf("steps\n x %v\n y %v\nwant\n x %v\n y %v", xs, ys, wantX, wantY)
	}
	// A long gap widens the chart to show its end; a run without a trace is left out.
	c := failoverChart(failTrace{trace: tr, gap: 900 * time.Millisecond}, failTrace{})
	if c.xMax < 1200 || len(c.series) != 1 || c.series[0].name != "rendr: gap 900 ms" {
		t.Errorf("chart to %g ms with %d series, want at least 1200 ms and rendr's alone", c.xMax, len(c.series))
	}
}

// TestBondChart: a line per path at the rate it sent, the goodput, and MPTCP's beside.
func TestBondChart(t *testing.T) {
	const end = 4 * time.Second
	rendrTr, mptcpTr := &bulkTrace{}, &bulkTrace{}
	for at := time.Duration(0); at <= end; at += bondPlotEvery {
		rendrTr.sampled = append(rendrTr.sampled, at)
		rendrTr.sent = append(rendrTr.sent, []int64{int64(at.Seconds() * 95e6 / 8), int64(at.Seconds() * 19e6 / 8)})
	}
	chunks := func(mbit float64) (arr []time.Duration) {
		every := time.Duration(float64(time.Second) * bondChunk * 8 / (mbit * 1e6))
		for at := every; at <= end; at += every {
			arr = append(arr, at)
		}
		return arr
	}
	rendrTr.arrivals, mptcpTr.arrivals = chunks(114), chunks(112)
	c := bondChart([]int{100, 20}, 2*time.Second, 2*time.Second, rendrTr, mptcpTr)
	want := map[string]float64{
		"Linux MPTCP, goodput":             112,
		"rendr, path 0 sends (100 Mbit/s)": 95,
		"rendr, path 1 sends (20 Mbit/s)":  19,
		"rendr, goodput":                   114,
	}
	if len(c.series) != len(want) {
		t.Fatalf("%d series, want %d", len(c.series), len(want))
	}
	for _, s := range c.series {
		w, ok := want[s.name]
		if !ok || len(s.ys) == 0 {
			t.Errorf("series %q (%d points) not expected", s.name, len(s.ys))
			continue
		}
		// Goodput counts whole 64 KiB chunks, a few percent either way over one second.
		if m := median(s.ys); math.Abs(m-w) > w*0.05 {
			t.Errorf("%s: median %.1f Mbit/s, want %.0f", s.name, m, w)
		}
	}
	if img := c.render(); img.Bounds().Dx() != c.width {
		t.Errorf("rendered %v", img.Bounds())
	}
}
