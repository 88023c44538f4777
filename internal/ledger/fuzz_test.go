package ledger

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// FuzzReader reads arbitrary bytes as a ledger; whatever records it
// accepts must survive Marshal and a second Read unchanged, and findings
// and records together must account for every line.
func FuzzReader(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "*.jsonl"))
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		l, err := Read(bytes.NewReader(data))
		if err != nil {
			t.Fatalf("Read of in-memory bytes failed: %v", err)
		}
		if len(l.Records) > l.Lines {
			t.Fatalf("%d records from %d lines", len(l.Records), l.Lines)
		}
		var out []byte
		for _, r := range l.Records {
			b, err := Marshal(r)
			if err != nil {
				t.Fatalf("Marshal of a record Read accepted: %v", err)
			}
			out = append(out, b...)
		}
		l2, err := Read(bytes.NewReader(out))
		if err != nil {
			t.Fatal(err)
		}
		if len(l2.Records) != len(l.Records) {
			t.Fatalf("re-read %d records, want %d (findings %v)", len(l2.Records), len(l.Records), l2.Findings)
		}
		for i := range l.Records {
			a, b := *l.Records[i], *l2.Records[i]
			a.Sum, b.Sum = "", ""
			if !reflect.DeepEqual(a, b) {
				t.Fatalf("record %d changed on re-read:\n%+v\n%+v", i, a, b)
			}
		}
	})
}
