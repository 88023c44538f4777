package main

import (
	"os"
	"strings"
	"testing"
)

// FuzzParseOutput: any script output parses or fails with an error; the
// figures it returns are finite and have a direction.
func FuzzParseOutput(f *testing.F) {
	b, err := os.ReadFile("testdata/raw/bench-example.txt")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(string(b))
	f.Add("@figure {}\n")
	f.Fuzz(func(t *testing.T, s string) {
		figs, _, err := parseOutput("f", strings.NewReader(s))
		if err != nil {
			return
		}
		for _, fg := range figs {
			if fg.Better != "higher" && fg.Better != "lower" || fg.Name == "" {
				t.Fatalf("accepted %+v", fg)
			}
			_ = fg.Advantage()
		}
	})
}
