package builder

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func randomImage(t testing.TB, size int) string {
	t.Helper()
	b := make([]byte, size)
	r := rand.NewChaCha8([32]byte{1})
	r.Read(b)
	p := filepath.Join(t.TempDir(), "image.img")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestWriteFiles writes one image to several files at once and checks
// each result, the bytes, and the progress reports.
func TestWriteFiles(t *testing.T) {
	img := randomImage(t, 9<<20+512*3)
	want, _ := os.ReadFile(img)
	dir := t.TempDir()
	targets := []string{filepath.Join(dir, "a.img"), filepath.Join(dir, "b.img"), filepath.Join(dir, "c.img")}
	// An existing, longer file is truncated to the image.
	if err := os.WriteFile(targets[1], make([]byte, 20<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	phases := map[string][]Phase{}
	res, err := Write(t.Context(), img, targets, &WriteOptions{BlockSize: 1 << 20, Progress: func(p Progress) {
		mu.Lock()
		defer mu.Unlock()
		ps := phases[p.Target]
		if len(ps) == 0 || ps[len(ps)-1] != p.Phase {
			phases[p.Target] = append(ps, p.Phase)
		}
		if p.Done > p.Total {
			t.Errorf("progress %d > %d", p.Done, p.Total)
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		if r.Err != nil || r.Target != targets[i] || r.Bytes != int64(len(want)) || r.SHA256 != sha256Hex(want) {
			t.Errorf("result %+v", r)
		}
		got, _ := os.ReadFile(targets[i])
		if !bytes.Equal(got, want) {
			t.Errorf("%s: bytes differ (len %d, want %d)", targets[i], len(got), len(want))
		}
		if p := phases[targets[i]]; strings.Join(phaseStrings(p), ",") != "write,sync,verify,done" {
			t.Errorf("%s: phases %v", targets[i], p)
		}
	}
}

func phaseStrings(ps []Phase) []string {
	var s []string
	for _, p := range ps {
		s = append(s, string(p))
	}
	return s
}

// A failing target does not stop the others.
func TestWriteOneFails(t *testing.T) {
	img := randomImage(t, 1<<20)
	dir := t.TempDir()
	good := filepath.Join(dir, "good.img")
	bad := filepath.Join(dir, "no", "such", "dir.img")
	res, err := Write(t.Context(), img, []string{bad, good}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res[0].Err == nil || !errors.Is(res[0].Err, os.ErrNotExist) {
		t.Errorf("bad target: %v", res[0].Err)
	}
	if res[1].Err != nil {
		t.Errorf("good target: %v", res[1].Err)
	}
	if _, err := Write(t.Context(), img, []string{good, good}, nil); err == nil {
		t.Error("the same target twice: no error")
	}
	odd := filepath.Join(dir, "odd.img")
	os.WriteFile(odd, make([]byte, 1000), 0o644)
	if _, err := Write(t.Context(), odd, []string{good}, nil); err == nil {
		t.Error("image of 1000 bytes: no error")
	}
}

func TestTargetCheck(t *testing.T) {
	for _, tc := range []struct {
		name string
		t    Target
		want error
	}{
		{"file", Target{Path: "x.img"}, nil},
		{"stick", Target{Path: "/dev/sdb", Device: true, Removable: true, Size: 8 << 30}, nil},
		{"mounted", Target{Path: "/dev/sdb", Device: true, Removable: true, Size: 8 << 30, Mounted: []string{"/media/x"}}, ErrMounted},
		{"fixed disk", Target{Path: "/dev/sda", Device: true, Size: 500 << 30}, ErrNotRemovable},
		{"too small", Target{Path: "/dev/sdb", Device: true, Removable: true, Size: 128 << 20}, ErrTooSmall},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.t.Check(256 << 20)
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("got %v, want %v", err, tc.want)
			}
		})
	}
}

// TestWriteLoop writes to a loop device, the nearest thing to a stick a
// test may touch. It needs root (CI runs as root) and never touches a
// real disk: the loop device is backed by a file in t.TempDir().
func TestWriteLoop(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to attach a loop device")
	}
	img := randomImage(t, 8<<20)
	back := filepath.Join(t.TempDir(), "backing.img")
	if err := os.WriteFile(back, make([]byte, 16<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	loop := strings.TrimSpace(mustRun(t, "losetup", "--find", "--show", back))
	t.Cleanup(func() { exec.Command("losetup", "--detach", loop).Run() })

	tg, err := Inspect(loop)
	if err != nil {
		t.Fatal(err)
	}
	if !tg.Device || !tg.Removable || tg.Size != 16<<20 || len(tg.Mounted) != 0 {
		t.Errorf("Inspect(%s) = %+v", loop, tg)
	}
	res, err := Write(t.Context(), img, []string{loop}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res[0].Err != nil {
		t.Fatal(res[0].Err)
	}
	want, _ := os.ReadFile(img)
	got, _ := os.ReadFile(back)
	if !bytes.Equal(got[:len(want)], want) {
		t.Error("the loop device's backing file does not hold the image")
	}

	// Too small, then refused unless forced.
	big := randomImage(t, 17<<20)
	res, _ = Write(t.Context(), big, []string{loop}, nil)
	if !errors.Is(res[0].Err, ErrTooSmall) {
		t.Errorf("image larger than the device: %v", res[0].Err)
	}
}
