package stickimage

import (
	"bytes"
	"compress/gzip"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/provstick/provstick/setupbin"
)

var (
	imagesMu sync.Mutex
	images   = map[string][]byte{}
)

// image returns a golden image, decompressed once per test binary; callers
// that change it copy it first.
func image(t testing.TB, name string) []byte {
	t.Helper()
	imagesMu.Lock()
	defer imagesMu.Unlock()
	if b, ok := images[name]; ok {
		return b
	}
	f, err := os.Open(filepath.Join("testdata", name+".img.gz"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	z, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(z)
	if err != nil {
		t.Fatal(err)
	}
	images[name] = b
	return b
}

func TestLocateGolden(t *testing.T) {
	want, err := os.ReadFile("../../setupbin/testdata/v2.1.bin")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name      string
		first     bool
		errSubstr string
	}{
		{name: "mbr-first", first: true},
		{name: "gpt-first", first: true},
		{name: "mbr-second", first: false},
		{name: "mbr-fragmented", errSubstr: "not contiguous"},
		{name: "mbr-empty", errSubstr: "no SETUP.BIN"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img := image(t, tc.name)
			ext, err := Locate(bytes.NewReader(img), int64(len(img)))
			if tc.errSubstr != "" {
				if err == nil || !errors.Is(err, ErrLayout) || !bytes.Contains([]byte(err.Error()), []byte(tc.errSubstr)) {
					t.Fatalf("Locate: %v, want an ErrLayout saying %q", err, tc.errSubstr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if ext.PartitionOffset != 1<<20 || ext.Size != int64(len(want)) || ext.First != tc.first {
				t.Errorf("extent %+v, want partition at 1 MiB, size %d, first %v", ext, len(want), tc.first)
			}
			if got := img[ext.Offset : ext.Offset+ext.Size]; !bytes.Equal(got, want) {
				t.Errorf("bytes at the extent are not setup.bin")
			}
		})
	}
}

type memFile struct{ b []byte }

func (m *memFile) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(m.b)) {
		return 0, io.EOF
	}
	n := copy(p, m.b[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (m *memFile) WriteAt(p []byte, off int64) (int, error) { return copy(m.b[off:], p), nil }

// Consuming through a View changes setup.bin in the image exactly as
// consuming the file itself does, and nothing outside it.
func TestViewConsume(t *testing.T) {
	img := append([]byte(nil), image(t, "mbr-first")...)
	ext, err := Locate(bytes.NewReader(img), int64(len(img)))
	if err != nil {
		t.Fatal(err)
	}
	plain := append([]byte(nil), img[ext.Offset:ext.Offset+ext.Size]...)
	before := append([]byte(nil), img...)
	rec, err := setupbin.Consume(View{F: &memFile{img}, Ext: ext}, ext.Size)
	if err != nil {
		t.Fatal(err)
	}
	rec2, err := setupbin.Consume(&memFile{plain}, int64(len(plain)))
	if err != nil {
		t.Fatal(err)
	}
	if rec.Index != rec2.Index {
		t.Errorf("consumed record %d through the view, %d directly", rec.Index, rec2.Index)
	}
	if !bytes.Equal(img[ext.Offset:ext.Offset+ext.Size], plain) {
		t.Errorf("setup.bin in the image differs from the file consumed directly")
	}
	if !bytes.Equal(img[:ext.Offset], before[:ext.Offset]) || !bytes.Equal(img[ext.Offset+ext.Size:], before[ext.Offset+ext.Size:]) {
		t.Errorf("bytes outside setup.bin changed")
	}
	if _, err := (View{F: &memFile{img}, Ext: ext}).WriteAt([]byte{1}, ext.Size); err == nil {
		t.Errorf("write past setup.bin's end allowed")
	}
}

func TestLocateBadInput(t *testing.T) {
	// The compacted image (partition at LBA 1) keeps every field the
	// mutations below reach, in 10 KiB instead of 40 MiB.
	good, err := os.ReadFile("testdata/seed-mbr-first.bin")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Locate(bytes.NewReader(good), int64(len(good))); err != nil {
		t.Fatal(err)
	}
	const part = 512
	for _, tc := range []struct {
		name string
		mut  func(b []byte) []byte
	}{
		{"empty", func([]byte) []byte { return nil }},
		{"no MBR signature", func(b []byte) []byte { b[510] = 0; return b }},
		{"empty partition", func(b []byte) []byte { clear(b[446:462]); return b }},
		{"partition past end", func(b []byte) []byte { b[446+8+3] = 0x7f; return b }},
		{"truncated", func(b []byte) []byte { return b[:part+1024] }},
		{"zero sectors per cluster", func(b []byte) []byte { b[part+0x0D] = 0; return b }},
		{"root cluster out of range", func(b []byte) []byte { b[part+0x2C+3] = 0x7f; return b }},
		{"protective MBR without GPT", func(b []byte) []byte { b[446+4] = 0xEE; return b }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.mut(append([]byte(nil), good...))
			if _, err := Locate(bytes.NewReader(b), int64(len(b))); err == nil {
				t.Fatal("Locate accepted a broken image")
			}
		})
	}
}

var update = flag.Bool("update", false, "rewrite testdata/seed-*.bin from the golden images")

// The fuzz seeds are the golden images compacted; the MBR and GPT ones
// with SETUP.BIN must still locate it so that the fuzzer starts from valid
// inputs, and the files must be what compact makes of today's images.
func TestCompactSeeds(t *testing.T) {
	for _, n := range seedNames {
		b := compact(t, image(t, n))
		name := filepath.Join("testdata", "seed-"+n+".bin")
		if *update {
			if err := os.WriteFile(name, b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if got, err := os.ReadFile(name); err != nil || !bytes.Equal(got, b) {
			t.Errorf("%s is not the compacted %s image (run go test -run TestCompactSeeds -update): %v", name, n, err)
		}
		_, err := Locate(bytes.NewReader(b), int64(len(b)))
		if ok := n != "mbr-fragmented" && n != "mbr-empty"; ok != (err == nil) {
			t.Errorf("%s compacted to %d bytes: %v", n, len(b), err)
		}
	}
}
