package main

import (
	"bytes"
	"flag"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite testdata/report.golden.md")

func TestParseOutput(t *testing.T) {
	f, err := os.Open("testdata/raw/bench-example.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	figs, raw, err := parseOutput("bench-example", f)
	if err != nil {
		t.Fatal(err)
	}
	if len(figs) != 3 || len(raw) != 2 {
		t.Fatalf("%d figures, %d raw lines", len(figs), len(raw))
	}
	if a := figs[0].Advantage(); math.Abs(a-9.83/0.043) > 1e-9 {
		t.Errorf("lower-is-better advantage %v", a)
	}
	if a := figs[1].Advantage(); math.Abs(a-1345.0/49) > 1e-9 {
		t.Errorf("higher-is-better advantage %v", a)
	}
	if a := figs[2].Advantage(); !math.IsNaN(a) {
		t.Errorf("advantage with a zero peer: %v", a)
	}
	if figs[0].Area != "bench-example" {
		t.Errorf("area %q", figs[0].Area)
	}
}

func TestParseOutputErrors(t *testing.T) {
	for _, in := range []string{
		`@figure {"name":"x","ours":1,"peer":"p","peer_value":1,"unit":"s","better":"sideways"}`,
		`@figure {"ours":1,"peer":"p","peer_value":1,"unit":"s","better":"lower"}`,
		`@figure {"name":"x","ours":"fast"}`,
		`@figure {"name":"x","bogus":1,"better":"lower"}`,
		`@figure not json`,
	} {
		if _, _, err := parseOutput("a", strings.NewReader("ok\n"+in+"\n")); err == nil || !strings.Contains(err.Error(), "line 2") {
			t.Errorf("%s: error %v, want one naming line 2", in, err)
		}
	}
}

func TestReport(t *testing.T) {
	out := t.TempDir()
	if err := run("testdata/raw", out, time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)); err != nil {
		t.Fatal(err)
	}
	md, err := os.ReadFile(filepath.Join(out, "report.md"))
	if err != nil {
		t.Fatal(err)
	}
	// The machine section differs between machines: compare the rest.
	body := string(md[bytes.Index(md, []byte("\"×\" is how many")):])
	if *update {
		os.WriteFile("testdata/report.golden.md", []byte(body), 0o644)
	}
	want, err := os.ReadFile("testdata/report.golden.md")
	if err != nil {
		t.Fatal(err)
	}
	if body != string(want) {
		t.Errorf("report differs from testdata/report.golden.md (-update to refresh):\n%s", body)
	}
	for _, s := range []string{"2026-11-23 12:00 UTC", "| cores |", "**Scripts that failed:** `bench-broken` (2)"} {
		if !strings.Contains(string(md), s) {
			t.Errorf("report lacks %q", s)
		}
	}
	f, err := os.Open(filepath.Join(out, "chart-bench-example.png"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("chart is not a PNG: %v", err)
	}
	if b := img.Bounds(); b.Dx() < 200 || b.Dy() < 200 {
		t.Errorf("chart is %v", b)
	}
	if _, err := os.Stat(filepath.Join(out, "chart-bench-broken.png")); err == nil {
		t.Errorf("a chart for a script without figures")
	}
}

func TestNoOutputs(t *testing.T) {
	if err := run(t.TempDir(), t.TempDir(), time.Now()); err == nil || !strings.Contains(err.Error(), "make bench") {
		t.Errorf("run with no outputs: %v", err)
	}
}
