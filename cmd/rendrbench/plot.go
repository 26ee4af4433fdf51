package main

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"
)

// A chart is a line plot small enough to read at a glance: axes with labelled ticks, a grid,
// a legend, and vertical marks for events such as the instant a path was cut. It draws with
// a fixed palette and no anti-aliasing, so the PNG it writes is small and every pixel of a
// series has exactly that series' colour (which is what the test checks).
type chart struct {
	title          string
	xLabel, yLabel string
	width, height  int
	series         []series
	marks          []mark
	// The axes' ranges. When a range is empty (min >= max) it is taken from the data.
	xMin, xMax float64
	yMin, yMax float64
	// legendAt is where the legend's top left corner goes, in data units; nil: the plot
	// area's top left. Put it where no line runs.
	legendAt *[2]float64
}

// series is one line: points joined in order, xs and ys of equal length.
type series struct {
	name   string
	color  color.RGBA
	xs, ys []float64
}

// mark is a vertical line at x with a label beside it.
type mark struct {
	x     float64
	label string
}

// The palette: the series colours are distinct for readers with the common colour vision
// deficiencies (the Okabe–Ito set).
var (
	plotBlue   = color.RGBA{0x00, 0x72, 0xb2, 0xff}
	plotOrange = color.RGBA{0xe6, 0x9f, 0x00, 0xff}
	plotGreen  = color.RGBA{0x00, 0x9e, 0x73, 0xff}
	plotRed    = color.RGBA{0xd5, 0x5e, 0x00, 0xff}
	plotPurple = color.RGBA{0xcc, 0x79, 0xa7, 0xff}
	plotBlack  = color.RGBA{0x20, 0x20, 0x20, 0xff}
	plotGrid   = color.RGBA{0xe4, 0xe4, 0xe4, 0xff}
	plotAxis   = color.RGBA{0x70, 0x70, 0x70, 0xff}
	plotWhite  = color.RGBA{0xff, 0xff, 0xff, 0xff}
)

// The plot area's margins, in pixels: room for the title, tick labels and axis labels.
const (
	plotLeft   = 64
	plotRight  = 16
	plotTop    = 40
	plotBottom = 44
	plotLine   = 2 // series line width
)

// area is the rectangle the data is drawn in.
func (c *chart) area() image.Rectangle {
	return image.Rect(plotLeft, plotTop, c.width-plotRight, c.height-plotBottom)
}

// ranges fills empty axis ranges from the data and widens degenerate ones.
func (c *chart) ranges() (x0, x1, y0, y1 float64) {
	x0, x1, y0, y1 = c.xMin, c.xMax, c.yMin, c.yMax
	fitX, fitY := x0 >= x1, y0 >= y1
	if fitX {
		x0, x1 = math.Inf(1), math.Inf(-1)
	}
	if fitY {
		y0, y1 = 0, math.Inf(-1) // zero is always shown
	}
	for _, s := range c.series {
		for i := range s.xs {
			if fitX {
				x0, x1 = math.Min(x0, s.xs[i]), math.Max(x1, s.xs[i])
			}
			if fitY {
				y0, y1 = math.Min(y0, s.ys[i]), math.Max(y1, s.ys[i])
			}
		}
	}
	if math.IsInf(x0, 0) || math.IsInf(x1, 0) || x0 >= x1 {
		x0, x1 = 0, 1
	}
	if math.IsInf(y1, 0) || y0 >= y1 {
		y1 = y0 + 1
	}
	if fitY {
		// Headroom above the highest point; both ends on a tick.
		step := niceStep(y1-y0, 6)
		y0 = math.Floor(y0/step) * step
		y1 = math.Ceil((y1+(y1-y0)*0.05)/step) * step
	}
	return x0, x1, y0, y1
}

// toPixel maps a data point to the image, clamped to the plot area.
func (c *chart) toPixel(x, y float64) image.Point {
	x0, x1, y0, y1 := c.ranges()
	a := c.area()
	px := float64(a.Min.X) + (x-x0)/(x1-x0)*float64(a.Dx()-1)
	py := float64(a.Max.Y-1) - (y-y0)/(y1-y0)*float64(a.Dy()-1)
	p := image.Pt(int(math.Round(px)), int(math.Round(py)))
	return image.Pt(min(max(p.X, a.Min.X), a.Max.X-1), min(max(p.Y, a.Min.Y), a.Max.Y-1))
}

// niceStep is a tick spacing of 1, 2 or 5 times a power of ten giving about n ticks over span.
func niceStep(span float64, n int) float64 {
	raw := span / float64(n)
	pow := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*pow >= raw {
			return m * pow
		}
	}
	return 10 * pow
}

// tickLabel prints a tick value with as few digits as its step needs.
func tickLabel(v, step float64) string {
	if math.Abs(v) < step/1e6 {
		v = 0
	}
	prec := 0
	if step < 1 {
		prec = int(math.Ceil(-math.Log10(step)))
	}
	return strconv.FormatFloat(v, 'f', prec, 64)
}

// render draws the chart.
func (c *chart) render() *image.Paletted {
	pal := color.Palette{plotWhite, plotBlack, plotGrid, plotAxis}
	for _, s := range c.series {
		pal = append(pal, s.color)
	}
	img := image.NewPaletted(image.Rect(0, 0, c.width, c.height), pal)
	draw.Draw(img, img.Bounds(), image.NewUniform(plotWhite), image.Point{}, draw.Src)
	a := c.area()
	x0, x1, y0, y1 := c.ranges()
	face := basicfont.Face7x13

	// Grid and ticks first, so that the data is drawn over them.
	xs := niceStep(x1-x0, 8)
	for v := math.Ceil(x0/xs) * xs; v <= x1+xs/1e6; v += xs {
		p := c.toPixel(v, y0)
		vline(img, p.X, a.Min.Y, a.Max.Y-1, plotGrid)
		vline(img, p.X, a.Max.Y, a.Max.Y+4, plotAxis)
		l := tickLabel(v, xs)
		drawText(img, face, p.X-textWidth(face, l)/2, a.Max.Y+17, l, plotBlack)
	}
	ys := niceStep(y1-y0, 6)
	for v := math.Ceil(y0/ys) * ys; v <= y1+ys/1e6; v += ys {
		p := c.toPixel(x0, v)
		hline(img, a.Min.X, a.Max.X-1, p.Y, plotGrid)
		hline(img, a.Min.X-5, a.Min.X-1, p.Y, plotAxis)
		l := tickLabel(v, ys)
		drawText(img, face, a.Min.X-8-textWidth(face, l), p.Y+4, l, plotBlack)
	}
	// Axes.
	hline(img, a.Min.X, a.Max.X-1, a.Max.Y-1, plotAxis)
	vline(img, a.Min.X, a.Min.Y, a.Max.Y-1, plotAxis)
	// Labels: the title centred above, the y label over its axis, the x label centred below.
	drawText(img, face, (c.width-textWidth(face, c.title))/2, 16, c.title, plotBlack)
	drawText(img, face, 8, plotTop-8, c.yLabel, plotBlack)
	drawText(img, face, a.Min.X+(a.Dx()-textWidth(face, c.xLabel))/2, c.height-8, c.xLabel, plotBlack)

	for _, m := range c.marks {
		p := c.toPixel(m.x, y0)
		dashedVline(img, p.X, a.Min.Y, a.Max.Y-1, plotBlack)
		drawText(img, face, p.X+4, a.Min.Y+12, m.label, plotBlack)
	}
	for _, s := range c.series {
		var prev image.Point
		for i := range s.xs {
			p := c.toPixel(s.xs[i], s.ys[i])
			if i > 0 {
				drawLine(img, prev, p, s.color)
			} else {
				dot(img, p, s.color)
			}
			prev = p
		}
	}
	c.legend(img, face)
	return img
}

// legend lists the series, each with a swatch of its colour, in a box at legendAt or at the
// plot area's top left (below the marks' labels).
func (c *chart) legend(img *image.Paletted, face font.Face) {
	if len(c.series) == 0 {
		return
	}
	a := c.area()
	wide := 0
	for _, s := range c.series {
		wide = max(wide, textWidth(face, s.name))
	}
	const row, pad, swatch = 16, 6, 18
	at := image.Pt(a.Min.X+10, a.Min.Y+22)
	if c.legendAt != nil {
		at = c.toPixel(c.legendAt[0], c.legendAt[1])
	}
	box := image.Rect(at.X, at.Y, at.X+pad*3+swatch+wide, at.Y+pad*2+row*len(c.series)-4)
	draw.Draw(img, box, image.NewUniform(plotWhite), image.Point{}, draw.Src)
	hline(img, box.Min.X, box.Max.X-1, box.Min.Y, plotAxis)
	hline(img, box.Min.X, box.Max.X-1, box.Max.Y-1, plotAxis)
	vline(img, box.Min.X, box.Min.Y, box.Max.Y-1, plotAxis)
	vline(img, box.Max.X-1, box.Min.Y, box.Max.Y-1, plotAxis)
	for i, s := range c.series {
		y := box.Min.Y + pad + i*row + 6
		for d := range plotLine + 1 {
			hline(img, box.Min.X+pad, box.Min.X+pad+swatch, y-1+d, s.color)
		}
		drawText(img, face, box.Min.X+pad*2+swatch, y+5, s.name, plotBlack)
	}
}

// writePNG renders the chart to path, creating its directory.
func (c *chart) writePNG(path string) error {
	var buf bytes.Buffer
	if err := (&png.Encoder{CompressionLevel: png.BestCompression}).Encode(&buf, c.render()); err != nil {
		return fmt.Errorf("encoding %s: %w", path, err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, buf.Bytes(), 0o644)
}

func hline(img *image.Paletted, x0, x1, y int, col color.Color) {
	for x := x0; x <= x1; x++ {
		img.Set(x, y, col)
	}
}

func vline(img *image.Paletted, x, y0, y1 int, col color.Color) {
	for y := y0; y <= y1; y++ {
		img.Set(x, y, col)
	}
}

func dashedVline(img *image.Paletted, x, y0, y1 int, col color.Color) {
	for y := y0; y <= y1; y++ {
		if (y-y0)%8 < 5 {
			img.Set(x, y, col)
		}
	}
}

// dot is a square of the line's width.
func dot(img *image.Paletted, p image.Point, col color.Color) {
	for dy := range plotLine {
		for dx := range plotLine {
			img.Set(p.X+dx, p.Y+dy, col)
		}
	}
}

// drawLine joins a and b with dots along Bresenham's line.
func drawLine(img *image.Paletted, a, b image.Point, col color.Color) {
	dx, dy := abs(b.X-a.X), -abs(b.Y-a.Y)
	sx, sy := sign(b.X-a.X), sign(b.Y-a.Y)
	e := dx + dy
	for p := a; ; {
		dot(img, p, col)
		if p == b {
			return
		}
		e2 := 2 * e
		if e2 >= dy {
			e += dy
			p.X += sx
		}
		if e2 <= dx {
			e += dx
			p.Y += sy
		}
	}
}

func abs(v int) int { return max(v, -v) }

func sign(v int) int {
	switch {
	case v > 0:
		return 1
	case v < 0:
		return -1
	}
	return 0
}

// drawText draws s with its baseline at y.
func drawText(img draw.Image, face font.Face, x, y int, s string, col color.Color) {
	d := &font.Drawer{Dst: img, Src: image.NewUniform(col), Face: face, Dot: fixed.P(x, y)}
	d.DrawString(s)
}

func textWidth(face font.Face, s string) int {
	return font.MeasureString(face, s).Round()
}
