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
	"strings"
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

// BenchmarkWrite compares Write (no verify: O_DIRECT, 4 writes
// outstanding, fsync) with dd bs=4M oflag=direct conv=fsync, in this
// process, on the same 256 MiB random image: to a new file on disk and,
// as root, to a loop device. The provstick side has no process start-up
// to pay; dd is one fork+exec (about a millisecond).
func BenchmarkWrite(b *testing.B) {
	img := benchImage(b)
	targets := []struct{ name, path string }{{"file", filepath.Join(b.TempDir(), "t.img")}}
	if os.Geteuid() == 0 {
		back := filepath.Join(b.TempDir(), "backing.img")
		mustRun(b, "truncate", "-s", "300M", back)
		loop := strings.TrimSpace(mustRun(b, "losetup", "--find", "--show", back))
		b.Cleanup(func() { exec.Command("losetup", "--detach", loop).Run() })
		targets = append(targets, struct{ name, path string }{"loop", loop})
	}
	for _, tg := range targets {
		fresh := func() {
			if tg.name == "file" {
				os.Remove(tg.path)
			}
		}
		b.Run(tg.name+"/provstick", func(b *testing.B) {
			b.SetBytes(256 << 20)
			for b.Loop() {
				fresh()
				res, err := Write(b.Context(), img, []string{tg.path}, &WriteOptions{NoVerify: true, Force: true})
				if err != nil || res[0].Err != nil {
					b.Fatal(err, res[0].Err)
				}
			}
		})
		b.Run(tg.name+"/dd", func(b *testing.B) {
			b.SetBytes(256 << 20)
			for b.Loop() {
				fresh()
				if o, err := exec.Command("dd", "if="+img, "of="+tg.path, "bs=4M", "oflag=direct", "conv=fsync", "status=none").CombinedOutput(); err != nil {
					b.Fatalf("dd: %v %s", err, o)
				}
			}
		})
	}
}
