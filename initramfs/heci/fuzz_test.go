package heci

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

func addSeeds(f *testing.F, dir string) {
	files, err := filepath.Glob(filepath.Join("testdata", dir, "*"))
	if err != nil {
		f.Fatal(err)
	}
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
}

// FuzzFrame parses stream frames (specs/heci.md §5): a parsed frame must
// encode back to the same bytes, and ReadFrame must agree with ParseFrame.
func FuzzFrame(f *testing.F) {
	addSeeds(f, "stream")
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, err := ParseFrame(b)
		if err == nil {
			if got := AppendFrame(nil, fr); !bytes.Equal(got, b) {
				t.Fatalf("re-encoded %x, want %x", got, b)
			}
			if _, err := ParseConnectedPayload(fr.Payload); err == nil && len(fr.Payload) != 5 {
				t.Fatal("connected payload of wrong size accepted")
			}
			_, _ = ParseErrorPayload(fr.Payload)
			_, _ = ParseConnectPayload(fr.Payload)
		}
		fr2, err2 := ReadFrame(bytes.NewReader(b))
		if err == nil {
			if err2 != nil || fr2.Type != fr.Type || fr2.Channel != fr.Channel || !bytes.Equal(fr2.Payload, fr.Payload) {
				t.Fatalf("ReadFrame = %+v, %v; ParseFrame = %+v", fr2, err2, fr)
			}
		}
	})
}

// FuzzCmdline parses kernel command lines; it must never panic, and a
// found value must come from the input.
func FuzzCmdline(f *testing.F) {
	f.Add("console=ttyS0 provstick.mei=virtio:org.provstick.mei")
	f.Add(`provstick.mei="unix:///a b"`)
	f.Fuzz(func(t *testing.T, s string) {
		v, ok := AddressFromCmdline(s)
		if ok && len(v) > len(s) {
			t.Fatalf("value %q longer than the input", v)
		}
		_, _ = ParseAddress(v)
	})
}
