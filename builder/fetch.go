package builder

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
)

// ErrFetch: a Debian package could not be fetched with the system's
// package tools (apt-get, apt-cache, dpkg-deb) and is not in the cache.
var ErrFetch = errors.New("builder: fetching a package")

// PackageCache fetches Debian packages with the system's package tools
// and keeps them unpacked under Dir, one directory per package version:
//
//	Dir/kernels/linux-image-6.1.0-56-amd64_6.1.192-2/{boot,lib,usr}
//	Dir/packages/shim-signed_1.51~1+deb12u1+16.1-2~deb12u1/usr/...
//
// The version to fetch comes from apt's local package lists (apt-cache
// show), so a version already unpacked is used without any download. A
// meta package such as linux-image-amd64 is followed to the versioned
// package it depends on. Without apt lists (apt-cache fails) the version
// last resolved for the same name is used if it is still in the cache.
type PackageCache struct {
	// Dir is the cache root; empty means DefaultCacheDir().
	Dir string
	// Logger gets one line per download; nil discards.
	Logger *slog.Logger
}

// DefaultCacheDir is ${XDG_CACHE_HOME:-~/.cache}/provstick.
func DefaultCacheDir() (string, error) {
	d, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("finding the cache directory: %w", err)
	}
	return filepath.Join(d, "provstick"), nil
}

const (
	cacheKernels  = "kernels"
	cachePackages = "packages"
	cacheComplete = ".provstick-unpacked" // written last into a finished directory
)

// FetchKernel returns the unpacked directory of the kernel package pkg
// (e.g. "linux-image-amd64"), fetching it if needed. FindKernel reads
// the result.
func (c *PackageCache) FetchKernel(ctx context.Context, pkg string) (string, error) {
	return c.fetch(ctx, cacheKernels, pkg, true)
}

// Fetch returns the unpacked directory of package pkg, fetching it if
// needed.
func (c *PackageCache) Fetch(ctx context.Context, pkg string) (string, error) {
	return c.fetch(ctx, cachePackages, pkg, false)
}

// Debian package names and versions, at most 100 characters. The length is
// checked apart: a counted repetition such as {0,99} compiles to a program of
// thousands of instructions when the package is initialized, which every
// provstick command pays at start-up.
var (
	debNameRE    = regexp.MustCompile(`^[a-z0-9][a-z0-9+.-]*$`)
	debVersionRE = regexp.MustCompile(`^[A-Za-z0-9.+~:-]+$`)
)

func debName(s string) bool    { return len(s) <= 100 && debNameRE.MatchString(s) }
func debVersion(s string) bool { return len(s) <= 100 && debVersionRE.MatchString(s) }

func (c *PackageCache) fetch(ctx context.Context, kind, pkg string, kernel bool) (string, error) {
	if !debName(pkg) {
		return "", fmt.Errorf("fetching package %q: not a Debian package name: %w", pkg, ErrFetch)
	}
	log := c.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	root := c.Dir
	if root == "" {
		var err error
		if root, err = DefaultCacheDir(); err != nil {
			return "", err
		}
	}
	base := filepath.Join(root, kind)
	latest := filepath.Join(base, pkg+".latest")

	name, version, err := resolvePackage(ctx, pkg, kernel)
	if err != nil {
		// Offline, or apt lists missing: the version resolved last time.
		if b, rerr := os.ReadFile(latest); rerr == nil {
			dir := filepath.Join(base, strings.TrimSpace(string(b)))
			if complete(dir) {
				log.Warn("apt cannot resolve the package; using the cached version", "package", pkg, "dir", dir, "err", err)
				return dir, nil
			}
		}
		return "", fmt.Errorf("fetching %s: %w (give an unpacked package directory instead, or fix apt: apt-get update)", pkg, err)
	}
	entry := name + "_" + version
	dir := filepath.Join(base, entry)
	if !complete(dir) {
		log.Info("fetching package", "package", name, "version", version)
		if err := download(ctx, base, name, version, dir); err != nil {
			return "", fmt.Errorf("fetching %s (%s %s): %w", pkg, name, version, err)
		}
	}
	if err := os.WriteFile(latest, []byte(entry+"\n"), 0o644); err != nil {
		return "", fmt.Errorf("recording the cached version of %s: %w", pkg, err)
	}
	return dir, nil
}

func complete(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, cacheComplete))
	return err == nil
}

// resolvePackage asks apt's local lists for the candidate version of pkg;
// for a kernel meta package it follows the first linux-image-*
// dependency.
func resolvePackage(ctx context.Context, pkg string, kernel bool) (name, version string, err error) {
	f, err := aptShow(ctx, pkg)
	if err != nil {
		return "", "", err
	}
	name, version = pkg, f["Version"]
	if kernel {
		for _, dep := range strings.Split(f["Depends"], ",") {
			d := strings.TrimSpace(strings.Split(dep, "|")[0])
			d, _, _ = strings.Cut(d, " ")
			if strings.HasPrefix(d, "linux-image-") && d != pkg {
				if f, err = aptShow(ctx, d); err != nil {
					return "", "", err
				}
				name, version = d, f["Version"]
				break
			}
		}
	}
	if !debName(name) || !debVersion(version) {
		return "", "", fmt.Errorf("apt-cache show %s: package %q version %q: %w", pkg, name, version, ErrFetch)
	}
	return name, version, nil
}

// aptShow returns the fields of apt-cache's candidate stanza for pkg.
func aptShow(ctx context.Context, pkg string) (map[string]string, error) {
	cmd := exec.CommandContext(ctx, "apt-cache", "show", "--no-all-versions", pkg)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("apt-cache show %s: %w: %s: %w", pkg, err, firstLine(stderr.Bytes()), ErrFetch)
	}
	fields := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			break // first stanza only
		}
		if k, v, ok := strings.Cut(line, ":"); ok && !strings.HasPrefix(line, " ") {
			fields[k] = strings.TrimSpace(v)
		}
	}
	if fields["Package"] != pkg {
		return nil, fmt.Errorf("apt-cache show %s: no such package: %w", pkg, ErrFetch)
	}
	return fields, nil
}

// download fetches name=version with apt-get download into a temporary
// directory under base and unpacks it with dpkg-deb -x into dir.
func download(ctx context.Context, base, name, version, dir string) error {
	if err := os.MkdirAll(base, 0o755); err != nil {
		return fmt.Errorf("making the cache directory: %w", err)
	}
	tmp, err := os.MkdirTemp(base, ".fetch-")
	if err != nil {
		return fmt.Errorf("making a download directory: %w", err)
	}
	defer os.RemoveAll(tmp)
	get := exec.CommandContext(ctx, "apt-get", "download", "-q", name+"="+version)
	get.Dir = tmp
	if out, err := get.CombinedOutput(); err != nil {
		return fmt.Errorf("apt-get download %s=%s: %w: %s: %w", name, version, err, lastLine(out), ErrFetch)
	}
	debs, _ := filepath.Glob(filepath.Join(tmp, "*.deb"))
	if len(debs) != 1 {
		return fmt.Errorf("apt-get download %s=%s left %d .deb files, want 1: %w", name, version, len(debs), ErrFetch)
	}
	unpacked := filepath.Join(tmp, "root")
	x := exec.CommandContext(ctx, "dpkg-deb", "-x", debs[0], unpacked)
	if out, err := x.CombinedOutput(); err != nil {
		return fmt.Errorf("dpkg-deb -x %s: %w: %s: %w", filepath.Base(debs[0]), err, lastLine(out), ErrFetch)
	}
	if err := os.WriteFile(filepath.Join(unpacked, cacheComplete), []byte(name+" "+version+"\n"), 0o644); err != nil {
		return fmt.Errorf("marking the unpacked package: %w", err)
	}
	os.RemoveAll(dir) // an unfinished earlier attempt
	if err := os.Rename(unpacked, dir); err != nil {
		return fmt.Errorf("moving the unpacked package into the cache: %w", err)
	}
	return nil
}

func firstLine(b []byte) string {
	s, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
	return s
}

func lastLine(b []byte) string {
	s := strings.TrimSpace(string(b))
	return s[strings.LastIndexByte(s, '\n')+1:]
}
