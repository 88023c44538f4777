package store

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// FuzzParseImport feeds import files to ParseImport: it must never panic,
// and every entry it accepts must have valid PID and PPS check characters.
func FuzzParseImport(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "import-*"))
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		es, err := ParseImport(bytes.NewReader(data))
		if err != nil {
			return
		}
		if len(es) == 0 {
			t.Fatal("no error and no entries")
		}
		for _, e := range es {
			if !e.PID.Valid() || !e.PPS.Valid() || e.Line < 1 {
				t.Fatalf("accepted an invalid entry at line %d", e.Line)
			}
		}
	})
}
