package reconcile

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// FuzzImport imports arbitrary bytes as a ledger into one pool: it must
// never fail (only the store could make it fail), never count more records
// than lines, and a second import of the same bytes must change nothing.
func FuzzImport(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "*.jsonl"))
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("{}\n"))
	f.Add([]byte("\x00\x00\x00"))
	p := newPool(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		rep, err := Import(t.Context(), p.s, "fuzz", bytes.NewReader(data), Options{})
		if err != nil {
			t.Fatalf("Import: %v", err)
		}
		if rep.Records > rep.Lines || rep.Damaged > rep.Lines {
			t.Fatalf("records %d, damaged %d of %d lines", rep.Records, rep.Damaged, rep.Lines)
		}
		again, err := Import(t.Context(), p.s, "fuzz", bytes.NewReader(data), Options{})
		if err != nil {
			t.Fatalf("second Import: %v", err)
		}
		if again.Consumed != 0 || again.NewRecords != 0 || !again.Repeat {
			t.Fatalf("second import changed the store: %+v", again)
		}
		if _, err := Discrepancies(t.Context(), p.s, time.Now()); err != nil {
			t.Fatalf("Discrepancies: %v", err)
		}
	})
}
