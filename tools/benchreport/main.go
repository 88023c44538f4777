// Command benchreport turns the outputs of the project's benchmark scripts
// (scripts/bench-*.sh, run by `make bench`) into bench/report.md and PNG
// charts: every figure next to its peer measured in the same run, the
// machine and the date. It never holds a number of its own.
//
//	go run ./tools/benchreport -raw bench/raw -o bench
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

func main() {
	raw := flag.String("raw", "bench/raw", "directory of <area>.txt outputs")
	out := flag.String("o", "bench", "directory for report.md and the charts")
	flag.Parse()
	if err := run(*raw, *out, time.Now()); err != nil {
		fmt.Fprintln(os.Stderr, "benchreport:", err)
		os.Exit(1)
	}
}

// area is one script's output.
type area struct {
	Name    string
	Figures []Figure
	Raw     []string
	Status  string // from <area>.status: "ok" or the exit code
}

func run(rawDir, outDir string, now time.Time) error {
	files, err := filepath.Glob(filepath.Join(rawDir, "*.txt"))
	if err != nil {
		return err
	}
	if len(files) == 0 {
		return fmt.Errorf("no outputs in %s (run make bench)", rawDir)
	}
	sort.Strings(files)
	var areas []area
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".txt")
		fh, err := os.Open(f)
		if err != nil {
			return err
		}
		figs, raw, err := parseOutput(name, fh)
		fh.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", f, err)
		}
		st := "ok"
		if b, err := os.ReadFile(strings.TrimSuffix(f, ".txt") + ".status"); err == nil {
			st = strings.TrimSpace(string(b))
		}
		areas = append(areas, area{Name: name, Figures: figs, Raw: raw, Status: st})
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return err
	}
	for _, a := range areas {
		if len(a.Figures) == 0 {
			continue
		}
		name := "chart-" + a.Name + ".png"
		if err := chart(filepath.Join(outDir, name), a.Name, a.Figures); err != nil {
			return fmt.Errorf("chart for %s: %w", a.Name, err)
		}
	}
	md := report(areas, machine(), now)
	return os.WriteFile(filepath.Join(outDir, "report.md"), []byte(md), 0o644)
}
