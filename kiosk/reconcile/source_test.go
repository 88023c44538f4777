package reconcile

import (
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// A ledger written into a stick image by another tool (mtools, as Linux's
// vfat on the target would) reads back byte for byte, whatever its size
// against the cluster size: go-diskfs v1.9.4 returns whole clusters when a
// read starts inside one, which made a 1,940-byte ledger look torn.
func TestReadSourceImageExactSize(t *testing.T) {
	f, err := os.Open("../../internal/stickimage/testdata/mbr-first.img.gz")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	z, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(z)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, size := range []int{1, 511, 513, 1940, 4097, 70000} {
		img := filepath.Join(dir, "stick.img")
		if err := os.WriteFile(img, raw, 0o644); err != nil {
			t.Fatal(err)
		}
		want := bytes.Repeat([]byte("x"), size)
		lf := filepath.Join(dir, "ledger.jsonl")
		os.WriteFile(lf, want, 0o644)
		for _, args := range [][]string{{"mmd", "-i", img + "@@1M", "::provstick"}, {"mcopy", "-i", img + "@@1M", lf, "::provstick/ledger.jsonl"}} {
			if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
				t.Fatalf("%v: %v: %s (install mtools)", args, err, out)
			}
		}
		got, where, err := ReadSource(img)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s: %d bytes read back, %d written", where, len(got), size)
		}
	}
}
