package ledger

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
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

// FuzzQR: any bytes that are one line survive EncodeQR and DecodeQR
// unchanged; any text DecodeQR accepts re-encodes to a text that decodes
// to the same line. Seeded with the ledger fixtures' lines and the QR
// golden texts.
func FuzzQR(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "*.jsonl"))
	qrs, _ := filepath.Glob(filepath.Join("testdata", "qr-*.txt"))
	for _, name := range append(files, qrs...) {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		for l := range bytes.Lines(b) {
			f.Add(string(bytes.TrimSuffix(l, []byte("\n"))))
		}
	}
	f.Fuzz(func(t *testing.T, s string) {
		if line, err := DecodeQR(s); err == nil {
			text, err := EncodeQR(line)
			if err != nil {
				t.Fatalf("EncodeQR of a decoded line: %v", err)
			}
			again, err := DecodeQR(text)
			if err != nil || !bytes.Equal(again, line) {
				t.Fatalf("re-encoded text decodes to %q, %v; want %q", again, err, line)
			}
		}
		if strings.Contains(s, "\n") {
			return
		}
		text, err := EncodeQR([]byte(s))
		if err != nil {
			if len(s) > MaxLineLen {
				return
			}
			t.Fatalf("EncodeQR(%q): %v", s, err)
		}
		back, err := DecodeQR(text)
		if err != nil || string(back) != s {
			t.Fatalf("DecodeQR(EncodeQR(%q)) = %q, %v", s, back, err)
		}
	})
}
