package hello

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// FuzzParse seeds from every file in testdata/, and for every hello that
// parses, encodes it again and requires the same bytes and an equal
// struct on a second parse.
func FuzzParse(f *testing.F) {
	files, err := filepath.Glob(filepath.Join("testdata", "*"))
	if err != nil {
		f.Fatal(err)
	}
	for _, name := range files {
		if filepath.Ext(name) == ".md" {
			continue
		}
		b, err := os.ReadFile(name)
		if err != nil {
			continue // a directory (testdata/fuzz)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := Parse(b)
		if err != nil {
			return
		}
		out, err := h.MarshalBinary()
		if err != nil {
			t.Fatalf("parsed hello does not encode: %v", err)
		}
		if !bytes.Equal(out, b) {
			t.Fatalf("re-encoded %x, want %x", out, b)
		}
		h2, err := Parse(out)
		if err != nil || !equal(h, h2) {
			t.Fatalf("second parse: %+v, %v; want %+v", h2, err, h)
		}
		if u, err := ParseUUID(h.UUID.String()); err != nil || u != h.UUID {
			t.Fatalf("UUID text round trip: %x, %v", u, err)
		}
	})
}
