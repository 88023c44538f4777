package builder

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeApt puts fake apt-cache and apt-get programs first on PATH. The
// fake apt-cache knows the meta package linux-image-amd64 depending on
// linux-image-<abi> version <ver>; apt-get download copies deb (if
// any) into its working directory and appends a line to the returned log.
// FAKE_APT_OFFLINE=1 makes both fail the way apt does without lists or
// network.
func fakeApt(t *testing.T, abi, ver, deb string) (log string) {
	t.Helper()
	bin := t.TempDir()
	log = filepath.Join(bin, "downloads.log")
	aptCache := `#!/bin/sh
[ "$FAKE_APT_OFFLINE" = 1 ] && { echo "E: No packages found" >&2; exit 100; }
[ "$1 $2" = "show --no-all-versions" ] || { echo "fake apt-cache: unexpected $*" >&2; exit 2; }
case "$3" in
linux-image-amd64) printf 'Package: linux-image-amd64\nVersion: ` + ver + `\nDepends: linux-image-` + abi + ` (= ` + ver + `)\n\n' ;;
linux-image-` + abi + `) printf 'Package: linux-image-` + abi + `\nVersion: ` + ver + `\nDepends: kmod, linux-base (>= 4.3~)\n\n' ;;
*) echo "E: No packages found" >&2; exit 100 ;;
esac
`
	aptGet := `#!/bin/sh
[ "$FAKE_APT_OFFLINE" = 1 ] && { echo "E: Failed to fetch: Temporary failure resolving" >&2; exit 100; }
[ "$1" = download ] || { echo "fake apt-get: unexpected $*" >&2; exit 2; }
echo "$3" >> '` + log + `'
[ -n '` + deb + `' ] || { echo "E: Can't find a source to download version" >&2; exit 100; }
cp '` + deb + `' "./linux-image-` + abi + `_` + ver + `_amd64.deb"
`
	for name, body := range map[string]string{"apt-cache": aptCache, "apt-get": aptGet} {
		if err := os.WriteFile(filepath.Join(bin, name), []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	t.Setenv("FAKE_APT_OFFLINE", "")
	return log
}

// fakeKernelDeb makes a tiny linux-image-<abi> package with dpkg-deb -b.
func fakeKernelDeb(t *testing.T, abi, ver string) string {
	t.Helper()
	root := filepath.Join(t.TempDir(), "pkg")
	for name, body := range map[string]string{
		"DEBIAN/control":      "Package: linux-image-" + abi + "\nVersion: " + ver + "\nArchitecture: amd64\nMaintainer: test <test@example.org>\nDescription: fake kernel\n",
		"boot/vmlinuz-" + abi: "MZ fake kernel",
		"lib/modules/" + abi + "/kernel/fs/fat/vfat.ko": "\x7fELF fake",
	} {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	deb := filepath.Join(t.TempDir(), "k.deb")
	mustRun(t, "dpkg-deb", "--root-owner-group", "-b", root, deb)
	return deb
}

func downloads(t *testing.T, log string) []string {
	t.Helper()
	b, err := os.ReadFile(log)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Fields(string(b))
}

func TestFetchKernel(t *testing.T) {
	const abi, ver = "9.9.9-1-amd64", "9.9.9-1"
	log := fakeApt(t, abi, ver, fakeKernelDeb(t, abi, ver))
	c := &PackageCache{Dir: t.TempDir()}

	dir, err := c.FetchKernel(t.Context(), "linux-image-amd64")
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(c.Dir, "kernels", "linux-image-"+abi+"_"+ver); dir != want {
		t.Errorf("got %s, want %s", dir, want)
	}
	k, err := FindKernel(dir)
	if err != nil {
		t.Fatal(err)
	}
	if k.Version != abi {
		t.Errorf("kernel version %q, want %q", k.Version, abi)
	}
	if got := downloads(t, log); len(got) != 1 || got[0] != "linux-image-"+abi+"="+ver {
		t.Errorf("downloads %q, want the versioned package once", got)
	}

	// Cached: apt is asked for the version, nothing is downloaded.
	again, err := c.FetchKernel(t.Context(), "linux-image-amd64")
	if err != nil || again != dir {
		t.Fatalf("second fetch: %q, %v", again, err)
	}
	if got := downloads(t, log); len(got) != 1 {
		t.Errorf("downloads %q after a cached fetch, want 1", got)
	}

	// Offline: the version resolved last time.
	t.Setenv("FAKE_APT_OFFLINE", "1")
	if offline, err := c.FetchKernel(t.Context(), "linux-image-amd64"); err != nil || offline != dir {
		t.Fatalf("offline fetch with a cache: %q, %v", offline, err)
	}

	// Offline with an empty cache: a clear error.
	empty := &PackageCache{Dir: t.TempDir()}
	_, err = empty.FetchKernel(t.Context(), "linux-image-amd64")
	if !errors.Is(err, ErrFetch) || !strings.Contains(err.Error(), "apt-cache show linux-image-amd64") || !strings.Contains(err.Error(), "apt-get update") {
		t.Errorf("offline fetch without a cache: %v", err)
	}
}

func TestFetchErrors(t *testing.T) {
	const abi, ver = "9.9.9-2-amd64", "9.9.9-2"
	fakeApt(t, abi, ver, "") // apt-get download fails
	c := &PackageCache{Dir: t.TempDir()}
	_, err := c.FetchKernel(t.Context(), "linux-image-amd64")
	if !errors.Is(err, ErrFetch) || !strings.Contains(err.Error(), "apt-get download linux-image-"+abi+"="+ver) {
		t.Errorf("failed download: %v", err)
	}
	if m, _ := filepath.Glob(filepath.Join(c.Dir, "kernels", "linux-image-*")); len(m) != 0 {
		t.Errorf("a failed download left %q in the cache", m)
	}
	if _, err := c.Fetch(t.Context(), "no-such-package"); !errors.Is(err, ErrFetch) {
		t.Errorf("unknown package: %v", err)
	}
	if _, err := c.Fetch(t.Context(), "../../etc"); !errors.Is(err, ErrFetch) {
		t.Errorf("bad name: %v", err)
	}
}

// TestBuildFetchedKernel builds a bootable image with no KernelDir: the
// builder takes the kernel from a cache that already holds apt's
// candidate version (here the unpacked test kernel), and downloads
// nothing (apt-get would fail).
func TestBuildFetchedKernel(t *testing.T) {
	kdir := kernelDir(t)
	k, err := FindKernel(kdir)
	if err != nil {
		t.Fatal(err)
	}
	const ver = "1.0-test"
	log := fakeApt(t, k.Version, ver, "")
	cache := t.TempDir()
	entry := filepath.Join(cache, "kernels", "linux-image-"+k.Version+"_"+ver)
	if err := os.MkdirAll(entry, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"boot", "lib"} {
		if err := os.Symlink(filepath.Join(kdir, d), filepath.Join(entry, d)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(entry, cacheComplete), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	b, err := New(defaultRecipe(t), &Options{Agent: testAgent(t), Packages: &PackageCache{Dir: cache}, NoHash: true})
	if err != nil {
		t.Fatal(err)
	}
	res, err := b.Build(t.Context(), filepath.Join(t.TempDir(), "s.img"), Stick{ID: "fetched-1", SetupBin: testSetupBin(t, 2)})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(res.Manifest.Kernel, k.Version) {
		t.Errorf("manifest kernel %q, want %s", res.Manifest.Kernel, k.Version)
	}
	if got := downloads(t, log); len(got) != 0 {
		t.Errorf("downloaded %q with the kernel cached", got)
	}
}
