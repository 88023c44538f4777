package builder

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"testing"
)

// benchSetup makes the inputs both sides of the build comparison share:
// the default recipe with UEFI boot only (the shell pipeline installs no
// syslinux), a 1,000-record setup.bin, the prepared boot files, and the
// list of files the image holds (from layout).
func benchSetup(b *testing.B, bios, noHash bool) (*Builder, Stick, []imageFile) {
	return benchSetupSync(b, bios, noHash, false)
}

func benchSetupSync(b *testing.B, bios, noHash, noSync bool) (*Builder, Stick, []imageFile) {
	b.Helper()
	r := defaultRecipe(b)
	if !bios {
		r.Boot.BIOS = LoaderNone
	}
	bl, err := New(r, &Options{KernelDir: kernelDir(b), Agent: testAgent(b), NoHash: noHash, NoSync: noSync})
	if err != nil {
		b.Fatal(err)
	}
	bf, err := bl.bootFiles(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	s := Stick{ID: "bench-0001", SetupBin: testSetupBin(b, 1000)}
	files, _, err := bl.layoutFor(s, bf)
	if err != nil {
		b.Fatal(err)
	}
	return bl, s, files
}

// BenchmarkBuild is one stick's image (256 MiB, 1,000 records) with the
// kernel and initramfs already prepared, as on a factory line.
func BenchmarkBuild(b *testing.B) {
	for _, tc := range []struct{ bios, noHash, noSync bool }{
		{false, false, false}, {false, true, false}, {false, true, true}, {true, false, false},
	} {
		b.Run(fmt.Sprintf("syslinux=%v/hash=%v/fsync=%v", tc.bios, !tc.noHash, !tc.noSync), func(b *testing.B) {
			bl, s, _ := benchSetupSync(b, tc.bios, tc.noHash, tc.noSync)
			out := filepath.Join(b.TempDir(), "stick.img")
			b.ResetTimer()
			for b.Loop() {
				if _, err := bl.Build(b.Context(), out, s); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkShellPipeline is the classic way on the same files: truncate,
// sfdisk, mkfs.fat on the partition, mcopy the files in (setup.bin first).
func BenchmarkShellPipeline(b *testing.B) {
	bl, _, files := benchSetup(b, false, true)
	src := b.TempDir()
	var dirs []string
	for _, f := range files {
		p := filepath.Join(src, filepath.FromSlash(f.path))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(p, f.data, 0o644); err != nil {
			b.Fatal(err)
		}
		for d := path.Dir(f.path); d != "."; d = path.Dir(d) {
			if !slices.Contains(dirs, d) {
				dirs = append(dirs, d)
			}
		}
	}
	slices.Sort(dirs) // parents first
	img := filepath.Join(b.TempDir(), "stick.img")
	size := fmt.Sprint(int64(bl.recipe.Size))
	run := func(name string, args ...string) {
		if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
			b.Fatalf("%s %v: %v\n%s", name, args, err, out)
		}
	}
	b.ResetTimer()
	for b.Loop() {
		os.Remove(img)
		run("truncate", "-s", size, img)
		run("sh", "-c", "echo 'start=2048, type=c, bootable' | sfdisk -q "+img)
		run("mkfs.fat", "-F", "32", "-n", "PROVSTICK", "--offset", "2048", img)
		for _, d := range dirs {
			run("mmd", "-i", img+"@@1M", "::"+d)
		}
		for _, f := range files {
			run("mcopy", "-i", img+"@@1M", filepath.Join(src, filepath.FromSlash(f.path)), "::"+f.path)
		}
	}
}

// benchImage is a 256 MiB file of random bytes on disk (not tmpfs), so
// that neither writer can skip anything.
func benchImage(b *testing.B) string {
	b.Helper()
	img := filepath.Join(b.TempDir(), "stick.img")
	f, err := os.Create(img)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	for range 256 {
		rand.Read(buf)
		if _, err := f.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	return img
}

// BenchmarkWriteFile is Write (no verify) of a 256 MiB image to a new
// file on disk; BenchmarkWriteDD is dd bs=4M oflag=direct conv=fsync on
// the same image and target directory.
func BenchmarkWriteFile(b *testing.B) {
	img := benchImage(b)
	out := filepath.Join(b.TempDir(), "t.img")
	b.SetBytes(256 << 20)
	for b.Loop() {
		os.Remove(out)
		res, err := Write(b.Context(), img, []string{out}, &WriteOptions{NoVerify: true})
		if err != nil || res[0].Err != nil {
			b.Fatal(err, res[0].Err)
		}
	}
}

func BenchmarkWriteDD(b *testing.B) {
	img := benchImage(b)
	out := filepath.Join(b.TempDir(), "t.img")
	b.SetBytes(256 << 20)
	for b.Loop() {
		os.Remove(out)
		if o, err := exec.Command("dd", "if="+img, "of="+out, "bs=4M", "oflag=direct", "conv=fsync", "status=none").CombinedOutput(); err != nil {
			b.Fatalf("dd: %v %s", err, o)
		}
	}
}
