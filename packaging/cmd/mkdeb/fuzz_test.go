package main

import (
	"os"
	"strings"
	"testing"
)

// FuzzDebianVersion: debianVersion either refuses a string or returns a
// valid Debian upstream version, and never panics.
func FuzzDebianVersion(f *testing.F) {
	b, err := os.ReadFile("testdata/versions.txt")
	if err != nil {
		f.Fatal(err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f.Add(line)
	}
	f.Fuzz(func(t *testing.T, v string) {
		got, err := debianVersion(v)
		if err != nil {
			return
		}
		if !debVersionRE.MatchString(got) {
			t.Fatalf("debianVersion(%q) = %q, not a Debian upstream version", v, got)
		}
	})
}
