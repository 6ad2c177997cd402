package main

import (
	"fmt"
	"image/color"
	"math"
	"os"
	"path/filepath"
	"slices"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// Colors and dashes of the contenders, the same in every plot.
var (
	contenderColor = map[string]color.Color{
		"stateward": color.RGBA{R: 0x1f, G: 0x5f, B: 0xbf, A: 0xff},
		"lockfile":  color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff},
		"flock":     color.RGBA{R: 0xff, G: 0x8c, B: 0x00, A: 0xff},
		"sqlite":    color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff},
	}
	contenderDash = map[string][]vg.Length{
		"stateward": nil,
		"lockfile":  {vg.Points(6), vg.Points(3)},
		"flock":     {vg.Points(2), vg.Points(2)},
		"sqlite":    {vg.Points(8), vg.Points(2), vg.Points(2), vg.Points(2)},
	}
	contenderGlyph = map[string]draw.GlyphDrawer{
		"stateward": draw.CircleGlyph{},
		"lockfile":  draw.SquareGlyph{},
		"flock":     draw.TriangleGlyph{},
		"sqlite":    draw.PyramidGlyph{},
	}
)

func colorOf(c string) color.Color {
	if col, ok := contenderColor[c]; ok {
		return col
	}
	return color.Gray{Y: 0x60}
}

// writePlots draws the PNGs into dir.
func writePlots(res *results, dir string) error {
	for _, p := range []struct {
		name string
		draw func(*results) (*vgimg.Canvas, bool, error)
	}{
		{plotThroughput, func(r *results) (*vgimg.Canvas, bool, error) { return throughputPlot(r, "closed") }},
		{plotThroughputFixed, func(r *results) (*vgimg.Canvas, bool, error) { return throughputPlot(r, "fixed") }},
		{plotLatency, latencyBars},
		{plotLatencyCDF, latencyCDF},
	} {
		c, ok, err := p.draw(res)
		if err != nil {
			return fmt.Errorf("%s: %w", p.name, err)
		}
		if !ok {
			os.Remove(filepath.Join(dir, p.name)) // nothing to show: no stale picture either
			continue
		}
		f, err := os.Create(filepath.Join(dir, p.name))
		if err != nil {
			return err
		}
		if _, err := (vgimg.PngCanvas{Canvas: c}).WriteTo(f); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
	}
	return nil
}

// logTicks labels 1, 2, 5 times each power of ten between min and max.
func logTicks(min, max float64) []plot.Tick {
	var ts []plot.Tick
	for e := math.Floor(math.Log10(min)); e <= math.Ceil(math.Log10(max)); e++ {
		p := math.Pow(10, e)
		for _, m := range []float64{1, 2, 3, 4, 5, 6, 7, 8, 9} {
			v := m * p
			if v < min*0.999 || v > max*1.001 {
				continue
			}
			t := plot.Tick{Value: v}
			if m == 1 || m == 2 || m == 5 {
				t.Label = tickLabel(v)
			}
			ts = append(ts, t)
		}
	}
	return ts
}

func tickLabel(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%gM", v/1e6)
	case v >= 1e3:
		return fmt.Sprintf("%gk", v/1e3)
	default:
		return fmt.Sprintf("%g", v)
	}
}

func newPlot(title, x, y string) *plot.Plot {
	p := plot.New()
	p.Title.Text = title
	p.Title.TextStyle.Font.Size = vg.Points(13)
	p.X.Label.Text = x
	p.Y.Label.Text = y
	p.X.Label.TextStyle.Font.Size = vg.Points(11)
	p.Y.Label.TextStyle.Font.Size = vg.Points(11)
	p.Legend.TextStyle.Font.Size = vg.Points(10)
	p.Add(plotter.NewGrid())
	return p
}

// mean of the positive values, NaN if none.
func meanPos(vs []float64) float64 {
	var s float64
	n := 0
	for _, v := range vs {
		if v > 0 {
			s += v
			n++
		}
	}
	if n == 0 {
		return math.NaN()
	}
	return s / float64(n)
}

// throughputPlot draws ops/s against N, one panel per document size, one
// line per contender (the mean of the runs; each run's value as a point).
func throughputPlot(res *results, mode string) (*vgimg.Canvas, bool, error) {
	var sizes []string // those with something to draw
	for _, size := range res.sizesIn(mode) {
		for _, c := range res.Cells {
			if c.Mode == mode && c.Size == size && c.OpsPerSec > 0 && c.Error == "" && c.Skipped == "" {
				sizes = append(sizes, size)
				break
			}
		}
	}
	if len(sizes) == 0 {
		return nil, false, nil
	}
	cols := min(2, len(sizes))
	rows := (len(sizes) + cols - 1) / cols
	title := map[string]string{"closed": "closed loop", "fixed": "fixed work (every agent finishes K ops)"}[mode]
	var plots [][]*plot.Plot
	for i, size := range sizes {
		if i%cols == 0 {
			plots = append(plots, make([]*plot.Plot, cols))
		}
		p := newPlot(fmt.Sprintf("%s: %s", size, title), "agent processes (N)", "durable ops/s (log scale)")
		p.X.Scale = plot.LogScale{}
		p.Y.Scale = plot.LogScale{}
		var ns []int
		lo, hi := math.Inf(1), 0.0
		for _, c := range res.contendersIn() {
			var line plotter.XYs
			var pts plotter.XYs
			for _, n := range res.agentsIn(mode, size) {
				var vs []float64
				for _, run := range res.runs() {
					if cell, ok := res.cell(run, mode, c, size, n); ok && cell.OpsPerSec > 0 {
						vs = append(vs, cell.OpsPerSec)
						pts = append(pts, plotter.XY{X: float64(n), Y: cell.OpsPerSec})
						lo, hi = min(lo, cell.OpsPerSec), max(hi, cell.OpsPerSec)
					}
				}
				if m := meanPos(vs); !math.IsNaN(m) {
					line = append(line, plotter.XY{X: float64(n), Y: m})
					if !slices.Contains(ns, n) {
						ns = append(ns, n)
					}
				}
			}
			if len(line) == 0 {
				continue
			}
			l, err := plotter.NewLine(line)
			if err != nil {
				return nil, false, err
			}
			l.Color = colorOf(c)
			l.Width = vg.Points(2)
			if c == "stateward" {
				l.Width = vg.Points(3)
			}
			l.Dashes = contenderDash[c]
			s, err := plotter.NewScatter(pts)
			if err != nil {
				return nil, false, err
			}
			s.GlyphStyle = draw.GlyphStyle{Color: colorOf(c), Radius: vg.Points(3.5), Shape: contenderGlyph[c]}
			p.Add(l, s)
			p.Legend.Add(label(c), l, s)
		}
		if hi == 0 {
			lo, hi = 1, 10
		}
		p.Y.Min = math.Pow(10, math.Floor(math.Log10(lo)))
		p.Y.Max = math.Pow(10, math.Ceil(math.Log10(hi*1.05))+1) // a decade of room for the legend
		p.Y.Tick.Marker = plot.TickerFunc(logTicks)
		slices.Sort(ns)
		var ticks plot.ConstantTicks
		for _, n := range ns {
			ticks = append(ticks, plot.Tick{Value: float64(n), Label: fmt.Sprint(n)})
		}
		p.X.Tick.Marker = ticks
		if len(ns) > 0 {
			p.X.Min, p.X.Max = float64(ns[0])/1.3, float64(ns[len(ns)-1])*1.3
		}
		p.Legend.Top = true
		p.Legend.Left = true
		p.Legend.XOffs = vg.Points(6)
		plots[i/cols][i%cols] = p
	}
	w, h := vg.Points(float64(430*cols)), vg.Points(float64(330*rows))
	img := vgimg.New(w, h)
	dc := draw.New(img)
	t := draw.Tiles{Rows: rows, Cols: cols, PadX: vg.Points(16), PadY: vg.Points(16),
		PadTop: vg.Points(8), PadBottom: vg.Points(8), PadLeft: vg.Points(8), PadRight: vg.Points(12)}
	canvases := plot.Align(plots, t, dc)
	for j := range plots {
		for i := range plots[j] {
			if plots[j][i] != nil {
				plots[j][i].Draw(canvases[j][i])
			}
		}
	}
	return img, true, nil
}

// latencySize and latencyAgents pick the cell the latency plots show.
const (
	latencySize   = "150KB"
	latencyAgents = 16
)

// latencyBars draws p50, p99 and max per contender (mean of the runs) at
// N=16, 150KB, on a log scale, with the p99 target: closed loop on the
// left, fixed work on the right.
func latencyBars(res *results) (*vgimg.Canvas, bool, error) {
	return sideBySide(res, latencyBarsPanel)
}

// latencyCDF draws the latency distribution of each contender at N=16,
// 150KB, one curve per run: closed loop on the left, fixed work on the
// right.
func latencyCDF(res *results) (*vgimg.Canvas, bool, error) {
	return sideBySide(res, latencyCDFPanel)
}

// sideBySide draws panel for the closed loop and for fixed work.
func sideBySide(res *results, panel func(*results, string) (*plot.Plot, bool, error)) (*vgimg.Canvas, bool, error) {
	var row []*plot.Plot
	for _, mode := range []string{"closed", "fixed"} {
		p, ok, err := panel(res, mode)
		if err != nil {
			return nil, false, err
		}
		if ok {
			row = append(row, p)
		}
	}
	if len(row) == 0 {
		return nil, false, nil
	}
	img := vgimg.New(vg.Points(float64(560*len(row))), vg.Points(440))
	t := draw.Tiles{Rows: 1, Cols: len(row), PadX: vg.Points(20),
		PadTop: vg.Points(8), PadBottom: vg.Points(8), PadLeft: vg.Points(8), PadRight: vg.Points(12)}
	canvases := plot.Align([][]*plot.Plot{row}, t, draw.New(img))
	for i, p := range row {
		p.Draw(canvases[0][i])
	}
	return img, true, nil
}

var modeName = map[string]string{"closed": "closed loop (timed)", "fixed": "fixed work (every agent finishes K)"}

// servedLabel is a contender's legend entry with how well its agents were
// served in run 1: latencies only cover the ops that completed, so a
// starved agent shows here and not in them.
func servedLabel(res *results, mode, c string) string {
	cell, ok := res.cell(1, mode, c, latencySize, latencyAgents)
	if !ok {
		return label(c)
	}
	if mode == "fixed" {
		return fmt.Sprintf("%s (agents done %.1f–%.1f s)", label(c), cell.FinishMin, cell.FinishMax)
	}
	return fmt.Sprintf("%s (ops per agent %d–%d)", label(c), cell.AgentMin, cell.AgentMax)
}

func latencyBarsPanel(res *results, mode string) (*plot.Plot, bool, error) {
	p := newPlot(fmt.Sprintf("Latency, N=%d, %s: %s", latencyAgents, latencySize, modeName[mode]),
		"", "milliseconds (log scale)")
	p.Y.Scale = plot.LogScale{}
	metrics := []string{"p50", "p99", "max"}
	cs := res.contendersIn()
	if len(cs) == 0 {
		return nil, false, nil
	}
	const groupW = 1.0
	barW := 0.8 / float64(len(cs))
	lo, hi := math.Inf(1), 0.0
	type bar struct {
		x, v float64
		c    string
	}
	var bars []bar
	for ci, c := range cs {
		var p50, p99, mx []float64
		for _, run := range res.runs() {
			if cell, ok := res.cell(run, mode, c, latencySize, latencyAgents); ok && cell.Ops > 0 {
				p50, p99, mx = append(p50, cell.P50), append(p99, cell.P99), append(mx, cell.Max)
			}
		}
		for mi, vs := range [][]float64{p50, p99, mx} {
			v := meanPos(vs)
			if math.IsNaN(v) {
				continue
			}
			x := float64(mi)*groupW - 0.4 + barW*(float64(ci)+0.5)
			bars = append(bars, bar{x, v, c})
			lo, hi = min(lo, v), max(hi, v)
		}
	}
	if len(bars) == 0 {
		return nil, false, nil
	}
	lo = min(lo, 10)
	base := math.Pow(10, math.Floor(math.Log10(lo)))
	p.Y.Min, p.Y.Max = base, math.Pow(10, math.Ceil(math.Log10(hi*1.5))+1) // room for the legend
	seen := map[string]bool{}
	var labels plotter.XYLabels
	for _, b := range bars {
		poly, err := plotter.NewPolygon(plotter.XYs{
			{X: b.x - barW/2, Y: base}, {X: b.x + barW/2, Y: base},
			{X: b.x + barW/2, Y: b.v}, {X: b.x - barW/2, Y: b.v},
		})
		if err != nil {
			return nil, false, err
		}
		poly.Color = colorOf(b.c)
		poly.LineStyle.Width = vg.Points(0.5)
		poly.LineStyle.Color = color.Black
		p.Add(poly)
		if !seen[b.c] {
			p.Legend.Add(servedLabel(res, mode, b.c), poly)
			seen[b.c] = true
		}
		labels.XYs = append(labels.XYs, plotter.XY{X: b.x, Y: b.v * 1.08})
		labels.Labels = append(labels.Labels, num(b.v))
	}
	lb, err := plotter.NewLabels(labels)
	if err != nil {
		return nil, false, err
	}
	for i := range lb.TextStyle {
		lb.TextStyle[i].Font.Size = vg.Points(8)
		lb.TextStyle[i].XAlign = draw.XCenter
	}
	p.Add(lb)
	target, err := plotter.NewLine(plotter.XYs{{X: -0.5, Y: 10}, {X: float64(len(metrics)) - 0.5, Y: 10}})
	if err != nil {
		return nil, false, err
	}
	target.Color = color.Black
	target.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
	p.Add(target)
	p.Legend.Add("p99 target for stateward (10 ms)", target)
	var ticks plot.ConstantTicks
	for i, m := range metrics {
		ticks = append(ticks, plot.Tick{Value: float64(i), Label: m + " (mean of runs)"})
	}
	p.X.Tick.Marker = ticks
	p.X.Min, p.X.Max = -0.5, float64(len(metrics))-0.5
	p.Y.Tick.Marker = plot.TickerFunc(logTicks)
	p.Legend.Top = true
	p.Legend.Left = true
	p.Legend.XOffs = vg.Points(4)
	return p, true, nil
}

func latencyCDFPanel(res *results, mode string) (*plot.Plot, bool, error) {
	xl := "latency of a durable op, ms (log scale)"
	if len(res.runs()) > 1 {
		xl += "; thick: run 1, thin: later runs"
	}
	p := newPlot(fmt.Sprintf("Latency distribution, N=%d, %s: %s", latencyAgents, latencySize, modeName[mode]),
		xl, "fraction of ops at or below")
	p.X.Scale = plot.LogScale{}
	lo, hi := math.Inf(1), 0.0
	drawn := false
	for _, c := range res.contendersIn() {
		for ri, run := range res.runs() {
			cell, ok := res.cell(run, mode, c, latencySize, latencyAgents)
			if !ok || len(cell.Quantiles) != len(cdfQs) {
				continue
			}
			var xy plotter.XYs
			for i, q := range cdfQs[:101] {
				v := cell.Quantiles[i]
				if v <= 0 {
					continue
				}
				xy = append(xy, plotter.XY{X: v, Y: q})
				lo, hi = min(lo, v), max(hi, v)
			}
			if len(xy) == 0 {
				continue
			}
			l, err := plotter.NewLine(xy)
			if err != nil {
				return nil, false, err
			}
			l.Color = colorOf(c)
			l.Width = vg.Points(2)
			if ri > 0 {
				l.Width = vg.Points(1)
			}
			l.Dashes = contenderDash[c]
			p.Add(l)
			if ri == 0 {
				p.Legend.Add(servedLabel(res, mode, c), l)
			}
			drawn = true
		}
	}
	if !drawn {
		return nil, false, nil
	}
	p.X.Min = math.Pow(10, math.Floor(math.Log10(lo)))
	p.X.Max = math.Pow(10, math.Ceil(math.Log10(hi)))
	p.X.Tick.Marker = plot.TickerFunc(logTicks)
	p.Y.Min, p.Y.Max = 0, 1
	p.Legend.Top = false
	p.Legend.Left = false
	p.Legend.XOffs = -vg.Points(6)
	p.Legend.YOffs = vg.Points(6)
	return p, true, nil
}
