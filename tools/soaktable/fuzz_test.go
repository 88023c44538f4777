package main

import (
	"io"
	"os"
	"strings"
	"testing"
)

// FuzzTable: any report file prints a table or an error, never a panic,
// and a passing table never hides a lost entry.
func FuzzTable(f *testing.F) {
	b, err := os.ReadFile("testdata/report.jsonl")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(string(b))
	f.Fuzz(func(t *testing.T, s string) {
		ok, err := table(io.Discard, strings.NewReader(s), "")
		if err == nil && ok && strings.Contains(s, `"lost":1`) && !strings.Contains(s, `"lost":10`) {
			// A lost entry reported as a number other than 0 must fail.
			var sb strings.Builder
			table(&sb, strings.NewReader(s), "")
			if !strings.Contains(sb.String(), "lost") {
				t.Fatalf("passed with a lost entry")
			}
		}
	})
}
