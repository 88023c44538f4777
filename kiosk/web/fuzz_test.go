package web

import (
	"bufio"
	"os"
	"path/filepath"
	"testing"
)

// FuzzParsePHC: the admin password hash comes from a configuration file.
// Whatever it holds, parsing never panics, never accepts parameters out of
// bounds, and what it accepts prints back to the same string.
func FuzzParsePHC(f *testing.F) {
	files, _ := filepath.Glob("testdata/phc/*.txt")
	for _, name := range files {
		fh, err := os.Open(name)
		if err != nil {
			f.Fatal(err)
		}
		sc := bufio.NewScanner(fh)
		for sc.Scan() {
			f.Add(sc.Text())
		}
		fh.Close()
	}
	f.Fuzz(func(t *testing.T, s string) {
		h, err := parsePHC(s)
		if err != nil {
			return
		}
		if h.p.Memory > maxHashMemory || h.p.Time > maxHashTime || h.p.Time < 1 || h.p.Threads < 1 || len(h.salt) > maxSaltLen || len(h.key) > maxKeyLen {
			t.Fatalf("accepted out-of-bounds parameters %+v", h.p)
		}
		h2, err := parsePHC(h.String())
		if err != nil {
			t.Fatalf("re-parsing %q: %v", h.String(), err)
		}
		if h2.String() != h.String() {
			t.Fatalf("round trip: %q → %q", h.String(), h2.String())
		}
	})
}
