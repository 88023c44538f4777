// Command soaktable prints the table `make soak` ends with, from the JSON
// lines the crash loops append to PROVSTICK_SOAK_REPORT (internal/soak),
// and exits 1 when an entry was lost or duplicated, or a loop is missing.
//
//	go run ./tools/soaktable -want 'store kill -9,agent power cut' report.jsonl
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/provstick/provstick/internal/soak"
)

func main() {
	want := flag.String("want", "", "comma-separated loop name prefixes that must have reported")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: soaktable [-want prefixes] report.jsonl")
		os.Exit(2)
	}
	f, err := os.Open(flag.Arg(0))
	if err != nil {
		fmt.Fprintln(os.Stderr, "soaktable:", err)
		os.Exit(1)
	}
	defer f.Close()
	ok, err := table(os.Stdout, f, *want)
	if err != nil {
		fmt.Fprintln(os.Stderr, "soaktable:", err)
		os.Exit(1)
	}
	if !ok {
		os.Exit(1)
	}
}

// table prints the results and reports whether the soak passed.
func table(w io.Writer, r io.Reader, want string) (bool, error) {
	var rs []soak.Result
	sc := bufio.NewScanner(r)
	n := 0
	for sc.Scan() {
		n++
		if strings.TrimSpace(sc.Text()) == "" {
			continue
		}
		var x soak.Result
		if err := json.Unmarshal(sc.Bytes(), &x); err != nil {
			return false, fmt.Errorf("line %d: %w", n, err)
		}
		rs = append(rs, x)
	}
	if err := sc.Err(); err != nil {
		return false, err
	}
	ok := true
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "LOOP\tRUNS\tFAULTS\tLOST\tDUPLICATES\tPROVISIONED\tNOTE")
	var tot soak.Result
	for _, x := range rs {
		prov := "-"
		if x.Provisioned > 0 {
			prov = fmt.Sprint(x.Provisioned)
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%s\t%s\n", x.Loop, x.Runs, x.Faults, x.Lost, x.Duplicates, prov, x.Note)
		tot.Runs += x.Runs
		tot.Faults += x.Faults
		tot.Lost += x.Lost
		tot.Duplicates += x.Duplicates
		tot.Provisioned += x.Provisioned
		if x.Lost != 0 || x.Duplicates != 0 {
			ok = false
		}
	}
	fmt.Fprintf(tw, "total\t%d\t%d\t%d\t%d\t%d\t%s\n", tot.Runs, tot.Faults, tot.Lost, tot.Duplicates, tot.Provisioned, "lost and duplicates must be 0")
	tw.Flush()
	for _, p := range strings.Split(want, ",") {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		found := false
		for _, x := range rs {
			found = found || strings.HasPrefix(x.Loop, p)
		}
		if !found {
			fmt.Fprintf(w, "missing: no result from %q (the loop failed or did not run)\n", p)
			ok = false
		}
	}
	return ok, nil
}
