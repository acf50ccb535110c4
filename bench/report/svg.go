package report

import (
	"fmt"
	"html"
	"math"
	"strings"
)

// strategyColors colours each strategy's bars; the baseline is the dashed
// line at 1×.
var strategyColors = map[string]string{
	"rls":      "#2b6cb0",
	"schema":   "#2f855a",
	"database": "#c05621",
}

// axisCap is the highest ratio drawn to scale; taller bars are cut and
// marked, their value written above them.
const axisCap = 3.0

// SVG is latest.svg: for each workload, each strategy's throughput, p50
// and p99 latency as a multiple of the baseline's, in three panels, with
// the baseline as a dashed line at 1×.
func SVG(r *Results) string {
	var strategies []string
	for _, s := range r.Strategies {
		if _, ok := strategyColors[s]; ok {
			strategies = append(strategies, s)
		}
	}
	panels := []struct{ measure, title string }{
		{"throughput_ratio", "Throughput at saturation, × baseline (higher is better)"},
		{"p50_ratio", "p50 latency at a fixed rate, × baseline (lower is better)"},
		{"p99_ratio", "p99 latency at a fixed rate, × baseline (lower is better)"},
	}
	const (
		width   = 980.0
		left    = 60.0
		right   = 20.0
		top     = 78.0
		panelH  = 210.0
		gap     = 70.0
		groupGp = 0.28 // share of a group's width left empty
	)
	height := top + float64(len(panels))*(panelH+gap) + 10
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	p(`<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f" font-family="Helvetica, Arial, sans-serif" font-size="12">`+"\n",
		width, height, width, height)
	p(`<rect width="100%%" height="100%%" fill="#ffffff"/>` + "\n")
	tenants, _ := r.Get("dataset.tenants")
	rows, _ := r.Get("dataset.cost_rows")
	p(`<text x="%.0f" y="24" font-size="17" font-weight="bold">What isolation costs: each strategy against the same queries without tenancy</text>`+"\n", left)
	p(`<text x="%.0f" y="44" fill="#4a5568">%.0f tenants, %.1f M cost items; %s; bars: medians of per-round ratios, whiskers: lowest and highest round; dashed line: baseline (1×)</text>`+"\n",
		left, tenants, rows/1e6, esc(r.Machine.CPU))
	// Legend.
	x := left
	for _, s := range strategies {
		p(`<rect x="%.0f" y="54" width="12" height="12" fill="%s"/><text x="%.0f" y="64">%s</text>`+"\n", x, strategyColors[s], x+16, s)
		x += 100
	}

	plotW := width - left - right
	groupW := plotW / float64(max(len(r.Workloads), 1))
	barW := groupW * (1 - groupGp) / float64(max(len(strategies), 1))
	for pi, pn := range panels {
		y0 := top + float64(pi)*(panelH+gap) + 22 // top of the plot area
		p(`<text x="%.0f" y="%.0f" font-size="14" font-weight="bold">%s</text>`+"\n", left, y0-8, esc(pn.title))
		hi := 1.25
		for _, w := range r.Workloads {
			for _, s := range strategies {
				for _, f := range []string{"", "_max"} {
					if v, ok := r.Get(s + "." + w + "." + pn.measure + f); ok {
						hi = max(hi, math.Min(v, axisCap)*1.12)
					}
				}
			}
		}
		step := 0.25
		if hi > 2 {
			step = 0.5
		}
		yOf := func(v float64) float64 { return y0 + panelH - v/hi*panelH }
		for t := 0.0; t <= hi+1e-9; t += step {
			y := yOf(t)
			p(`<line x1="%.0f" x2="%.0f" y1="%.1f" y2="%.1f" stroke="#e2e8f0"/>`+"\n", left, width-right, y, y)
			p(`<text x="%.0f" y="%.1f" text-anchor="end" fill="#4a5568">%.2g×</text>`+"\n", left-6, y+4, t)
		}
		for wi, w := range r.Workloads {
			gx := left + float64(wi)*groupW + groupW*groupGp/2
			p(`<text x="%.1f" y="%.0f" text-anchor="middle">%s</text>`+"\n", left+float64(wi)*groupW+groupW/2, y0+panelH+16, esc(w))
			for si, s := range strategies {
				v, ok := r.Get(s + "." + w + "." + pn.measure)
				if !ok {
					continue
				}
				bx := gx + float64(si)*barW
				top := yOf(math.Min(v, axisCap))
				p(`<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s %s: %.3f×</title></rect>`+"\n",
					bx+1, top, barW-2, y0+panelH-top, strategyColors[s], s, w, v)
				if v > axisCap { // cut: a white zigzag across the bar
					zy := top + 8
					p(`<polyline points="%.1f,%.1f %.1f,%.1f %.1f,%.1f %.1f,%.1f" stroke="#fff" stroke-width="3" fill="none"/>`+"\n",
						bx+1, zy, bx+barW/3, zy-4, bx+2*barW/3, zy+4, bx+barW-1, zy)
				}
				label := top - 3
				lo, okLo := r.Get(s + "." + w + "." + pn.measure + "_min")
				up, okUp := r.Get(s + "." + w + "." + pn.measure + "_max")
				if okLo && okUp { // the spread over rounds
					cx, yLo, yHi := bx+barW/2, yOf(math.Min(lo, axisCap)), yOf(math.Min(up, axisCap))
					p(`<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="#1a202c"/>`+"\n", cx, cx, yLo, yHi)
					p(`<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="#1a202c"/><line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="#1a202c"/>`+"\n",
						cx-3, cx+3, yLo, yLo, cx-3, cx+3, yHi, yHi)
					label = math.Min(label, yHi-3)
				}
				p(`<text x="%.1f" y="%.1f" text-anchor="middle" font-size="10">%s</text>`+"\n", bx+barW/2, label, ratioLabel(v))
			}
		}
		y1 := yOf(1)
		p(`<line x1="%.0f" x2="%.0f" y1="%.1f" y2="%.1f" stroke="#1a202c" stroke-dasharray="6 4"/>`+"\n", left, width-right, y1, y1)
		p(`<line x1="%.0f" x2="%.0f" y1="%.1f" y2="%.1f" stroke="#1a202c"/>`+"\n", left, width-right, y0+panelH, y0+panelH)
	}
	p("</svg>\n")
	return b.String()
}

func ratioLabel(v float64) string {
	if v >= 10 {
		return fmt.Sprintf("%.0f×", v)
	}
	return fmt.Sprintf("%.2f×", v)
}

func esc(s string) string { return html.EscapeString(s) }
