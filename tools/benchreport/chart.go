package main

import (
	"fmt"
	"image/color"
	"math"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

// chart draws one bar per figure: how many times better ours is than the
// peer, on a logarithmic axis (bars rise from 1×, where both are equal, and
// fall below it where the peer is better).
func chart(path, title string, figs []Figure) error {
	p := plot.New()
	p.Title.Text = title + ": ours vs the peer, same run"
	p.Y.Tick.Marker = timesTicks{}
	var vals plotter.Values
	var names []string
	for _, f := range figs {
		v := f.Advantage()
		if math.IsNaN(v) {
			continue
		}
		vals = append(vals, math.Log10(v))
		names = append(names, fmt.Sprintf("%s\n%s\nvs %s", shorten(f.Name, 24), shorten(tail(f.Name, 24), 24), shorten(f.Peer, 22)))
	}
	if len(vals) == 0 {
		return nil
	}
	bars, err := plotter.NewBarChart(vals, vg.Points(28))
	if err != nil {
		return err
	}
	bars.Color = color.RGBA{R: 0x2b, G: 0x6c, B: 0xb0, A: 0xff}
	bars.LineStyle.Width = 0
	p.Add(bars)
	p.NominalX(names...)
	p.Y.Label.Text = "× better than the peer (log scale)"
	lo, hi := 0.0, 0.0
	for _, v := range vals {
		lo, hi = math.Min(lo, v), math.Max(hi, v)
	}
	p.Y.Min, p.Y.Max = math.Floor(lo*2)/2-0.2, math.Ceil(hi*2)/2+0.2
	w := vg.Length(max(3, len(vals))) * vg.Centimeter * 4.6
	return p.Save(w, 10*vg.Centimeter, path)
}

// tail is what shorten(s, n) left out (for a second label line).
func tail(s string, n int) string {
	r := []rune(s)
	if len(r) <= n-1 {
		return ""
	}
	return string(r[n-1:])
}

func shorten(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

// timesTicks labels a log10 axis in "×" at each half decade.
type timesTicks struct{}

func (timesTicks) Ticks(lo, hi float64) []plot.Tick {
	var ts []plot.Tick
	for v := math.Ceil(lo*2) / 2; v <= hi; v += 0.5 {
		t := plot.Tick{Value: v}
		t.Label = strconv.FormatFloat(math.Pow(10, v), 'g', 1, 64) + "×"
		ts = append(ts, t)
	}
	return ts
}
