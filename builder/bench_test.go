package builder

import (
	"context"
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
	b.Helper()
	r := defaultRecipe(b)
	if !bios {
		r.Boot.BIOS = LoaderNone
	}
	bl, err := New(r, &Options{KernelDir: kernelDir(b), Agent: testAgent(b), NoHash: noHash})
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
	for _, tc := range []struct{ bios, noHash bool }{{false, false}, {false, true}, {true, false}} {
		b.Run(fmt.Sprintf("syslinux=%v/hash=%v", tc.bios, !tc.noHash), func(b *testing.B) {
			bl, s, _ := benchSetup(b, tc.bios, tc.noHash)
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
