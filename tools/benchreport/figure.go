package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strings"
)

// Figure is one measurement next to its peer from the same run. Benchmark
// scripts print one line per figure:
//
//	@figure {"name":"encode 100,000 records","ours":0.043,"peer":"MeshCentral","peer_value":9.83,"unit":"s","better":"lower","target":"≥ 25×"}
//
// (scripts/bench-lib.sh has a shell function for it). Every other line is
// kept as the script's raw output.
type Figure struct {
	Area      string  `json:"area,omitempty"`
	Name      string  `json:"name"`
	Ours      float64 `json:"ours"`
	Peer      string  `json:"peer"`
	PeerValue float64 `json:"peer_value"`
	Unit      string  `json:"unit"`
	// Better is "higher" (throughput) or "lower" (time).
	Better string `json:"better"`
	Target string `json:"target,omitempty"`
}

// Advantage is how many times better ours is than the peer (>1: ours is
// better), whichever way the unit runs; NaN when it cannot be computed.
func (f Figure) Advantage() float64 {
	if f.Ours <= 0 || f.PeerValue <= 0 {
		return math.NaN()
	}
	if f.Better == "lower" {
		return f.PeerValue / f.Ours
	}
	return f.Ours / f.PeerValue
}

const figurePrefix = "@figure "

// maxLine bounds one output line; longer lines are cut (raw output only).
const maxLine = 1 << 16

// parseOutput reads a script's output: its figures and the other lines.
// A malformed @figure line is an error naming the line.
func parseOutput(area string, r io.Reader) ([]Figure, []string, error) {
	var figs []Figure
	var raw []string
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), maxLine)
	n := 0
	for sc.Scan() {
		n++
		l := sc.Text()
		rest, ok := strings.CutPrefix(strings.TrimSpace(l), figurePrefix)
		if !ok {
			raw = append(raw, l)
			continue
		}
		var f Figure
		dec := json.NewDecoder(strings.NewReader(rest))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&f); err != nil {
			return nil, nil, fmt.Errorf("line %d: @figure: %w", n, err)
		}
		switch {
		case f.Name == "":
			return nil, nil, fmt.Errorf("line %d: @figure without a name", n)
		case f.Better != "higher" && f.Better != "lower":
			return nil, nil, fmt.Errorf("line %d: @figure %q: better is %q, want higher or lower", n, f.Name, f.Better)
		case math.IsNaN(f.Ours) || math.IsInf(f.Ours, 0) || math.IsNaN(f.PeerValue) || math.IsInf(f.PeerValue, 0):
			return nil, nil, fmt.Errorf("line %d: @figure %q: values must be finite", n, f.Name)
		}
		if f.Area == "" {
			f.Area = area
		}
		figs = append(figs, f)
	}
	if err := sc.Err(); err != nil {
		return nil, nil, fmt.Errorf("line %d: %w", n+1, err)
	}
	return figs, raw, nil
}
