package mkhi

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// FuzzFWVersion parses firmware version replies; a parsed reply must
// encode back to the same bytes.
func FuzzFWVersion(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join(goldenDir, "*.bin"))
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseGetFWVersionResponse(b)
		if err != nil {
			return
		}
		if got := r.Marshal(); !bytes.Equal(got, b) {
			t.Fatalf("re-encoded %x, want %x", got, b)
		}
	})
}
