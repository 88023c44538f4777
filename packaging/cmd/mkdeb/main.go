// Command mkdeb builds the provstick Debian package with nfpm, used as a
// library (github.com/goreleaser/nfpm/v2): the version is pinned in go.mod
// and checked by go.sum like every other dependency, it is fetched by the
// same go mod download as the rest of the module (so make deb works on an
// offline builder with a warm module cache), and no second tool has to be
// installed. The provstick binary itself does not link it.
//
// Usage (make deb runs it once per architecture):
//
//	go run ./packaging/cmd/mkdeb --arch amd64 --version v1.2.3 \
//	    --binary dist/provstick_linux_amd64 --agent dist/provstick-agent_linux_amd64 \
//	    [--host-binary bin/provstick] [--root .] [-o dist]
//
// The package holds:
//
//	/usr/bin/provstick                      the CLI (--binary)
//	/usr/bin/provstick-agent                the stick's agent, always amd64 (the
//	                                        PCs are Intel); provstick build finds it
//	                                        next to itself
//	/usr/lib/systemd/system/provstick-kiosk.service
//	/usr/lib/sysusers.d/provstick.conf      the provstick user
//	/usr/lib/tmpfiles.d/provstick.conf      its state directory /var/lib/provstick
//	/etc/provstick/provstick.yaml           sample configuration (a conffile)
//	/usr/share/bash-completion/completions/provstick
//	/usr/share/zsh/vendor-completions/_provstick
//	/usr/share/fish/vendor_completions.d/provstick.fish
//	/usr/share/man/man1/provstick*.1.gz
//	/usr/share/provstick/images/*.yaml      the image recipes (--recipe FILE)
//	/usr/share/doc/provstick/               README.md, docs/ and examples/ (a
//	                                        drop-in that turns on the kiosk's DHCP)
//
// Completions and man pages are generated at package time by running a
// provstick this machine can execute (--host-binary; --binary when the
// architectures match): cobra's "completion" command and the hidden
// "gen-docs --man". The package is reproducible: file times come from
// SOURCE_DATE_EPOCH (else the Unix epoch), man pages are gzipped without a
// time stamp.
package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	iofs "io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/goreleaser/nfpm/v2"
	"github.com/goreleaser/nfpm/v2/deb"
	"github.com/goreleaser/nfpm/v2/files"
	"github.com/provstick/provstick/internal/atomicfile"
)

// options is everything one package build needs.
type options struct {
	arch       string // Debian/Go architecture: amd64 or arm64
	version    string // git describe or a tag; turned into a Debian version
	binary     string // provstick for arch
	agent      string // provstick-agent (linux/amd64)
	hostBinary string // provstick runnable here ("" = binary, if arch matches)
	root       string // repository root (packaging/, docs/, README.md)
	output     string // directory (or .deb file name) to write
	maintainer string
	mtime      time.Time
}

func main() {
	if err := run(context.Background(), os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "mkdeb: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("mkdeb", flag.ContinueOnError)
	var o options
	fs.StringVar(&o.arch, "arch", runtime.GOARCH, "package architecture (amd64, arm64)")
	fs.StringVar(&o.version, "version", "", "version (v1.2.3, or git describe output)")
	fs.StringVar(&o.binary, "binary", "", "provstick binary for --arch")
	fs.StringVar(&o.agent, "agent", "", "provstick-agent binary (linux/amd64)")
	fs.StringVar(&o.hostBinary, "host-binary", "", "provstick binary this machine runs, for completions and man pages (default --binary when --arch is this machine's)")
	fs.StringVar(&o.root, "root", ".", "repository root")
	fs.StringVar(&o.output, "o", "dist", "output directory, or a file name ending in .deb")
	fs.StringVar(&o.maintainer, "maintainer", "provstick developers <provstick@localhost>", "Maintainer field")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	t, err := sourceDate()
	if err != nil {
		return err
	}
	o.mtime = t
	out, err := build(ctx, o)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(stdout, out)
	return err
}

// sourceDate is SOURCE_DATE_EPOCH, or the Unix epoch when unset.
func sourceDate() (time.Time, error) {
	s := os.Getenv("SOURCE_DATE_EPOCH")
	if s == "" {
		return time.Unix(0, 0).UTC(), nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("environment SOURCE_DATE_EPOCH: invalid value %q", s)
	}
	return time.Unix(n, 0).UTC(), nil
}

var (
	// git describe --tags: v1.2.3-5-gabc1234 (5 commits after v1.2.3).
	describeRE = regexp.MustCompile(`^(.+)-([0-9]+)-g([0-9a-f]+)$`)
	// git describe --always with no tag: a bare abbreviated commit.
	commitRE = regexp.MustCompile(`^[0-9a-f]{7,40}$`)
	// Debian upstream version without a revision (deb-version(7)).
	debVersionRE = regexp.MustCompile(`^[0-9][A-Za-z0-9.+~]*$`)
)

// debianVersion turns a tag or git describe output into a Debian version
// that sorts the way releases do:
//
//	v1.2.3            → 1.2.3
//	v1.2.3-rc1        → 1.2.3~rc1          (before 1.2.3)
//	v1.2.3-5-gabc1234 → 1.2.3+git5.abc1234 (after 1.2.3)
//	abc1234-dirty     → 0.0.0+git.abc1234.dirty
func debianVersion(v string) (string, error) {
	in := v
	v = strings.TrimPrefix(v, "v")
	dirty := strings.HasSuffix(v, "-dirty")
	v = strings.TrimSuffix(v, "-dirty")
	var out string
	switch m := describeRE.FindStringSubmatch(v); {
	case commitRE.MatchString(v):
		out = "0.0.0+git." + v
	case m != nil:
		out = prerelease(m[1]) + "+git" + m[2] + "." + m[3]
	default:
		out = prerelease(v)
	}
	if dirty {
		if strings.Contains(out, "+") {
			out += ".dirty"
		} else {
			out += "+dirty"
		}
	}
	if !debVersionRE.MatchString(out) {
		return "", fmt.Errorf("version %q: cannot make a Debian version of it (got %q)", in, out)
	}
	return out, nil
}

// prerelease writes a semver pre-release (1.2.3-rc.1) the Debian way
// (1.2.3~rc.1) so that it sorts before the release.
func prerelease(v string) string {
	base, pre, ok := strings.Cut(v, "-")
	if !ok {
		return v
	}
	return base + "~" + strings.ReplaceAll(pre, "-", ".")
}

// build writes the package and returns its path.
func build(ctx context.Context, o options) (string, error) {
	if o.arch != "amd64" && o.arch != "arm64" {
		return "", fmt.Errorf("flag --arch: unsupported value %q (amd64 or arm64)", o.arch)
	}
	if o.version == "" {
		return "", errors.New("flag --version is required")
	}
	ver, err := debianVersion(o.version)
	if err != nil {
		return "", err
	}
	for name, p := range map[string]string{"--binary": o.binary, "--agent": o.agent} {
		if p == "" {
			return "", fmt.Errorf("flag %s is required", name)
		}
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("flag %s: %w", name, err)
		}
	}
	host := o.hostBinary
	if host == "" {
		if o.arch != runtime.GOARCH {
			return "", fmt.Errorf("--arch %s is not this machine's (%s): give --host-binary, a provstick this machine runs, for completions and man pages", o.arch, runtime.GOARCH)
		}
		host = o.binary
	}
	// The host binary runs in a temporary directory: make its path absolute.
	if host, err = filepath.Abs(host); err != nil {
		return "", fmt.Errorf("flag --host-binary: %w", err)
	}

	gen, err := os.MkdirTemp("", "mkdeb-")
	if err != nil {
		return "", fmt.Errorf("creating work directory: %w", err)
	}
	defer os.RemoveAll(gen)
	if err := generate(ctx, host, gen, o.mtime); err != nil {
		return "", err
	}

	pk := filepath.Join(o.root, "packaging")
	contents := files.Contents{
		{Source: o.binary, Destination: "/usr/bin/provstick", FileInfo: &files.ContentFileInfo{Mode: 0o755}},
		{Source: o.agent, Destination: "/usr/bin/provstick-agent", FileInfo: &files.ContentFileInfo{Mode: 0o755}},
		{Source: filepath.Join(pk, "provstick-kiosk.service"), Destination: "/usr/lib/systemd/system/provstick-kiosk.service", FileInfo: &files.ContentFileInfo{Mode: 0o644}},
		{Source: filepath.Join(pk, "sysusers.conf"), Destination: "/usr/lib/sysusers.d/provstick.conf", FileInfo: &files.ContentFileInfo{Mode: 0o644}},
		{Source: filepath.Join(pk, "tmpfiles.conf"), Destination: "/usr/lib/tmpfiles.d/provstick.conf", FileInfo: &files.ContentFileInfo{Mode: 0o644}},
		{Source: filepath.Join(pk, "provstick.yaml"), Destination: "/etc/provstick/provstick.yaml", Type: files.TypeConfig, FileInfo: &files.ContentFileInfo{Mode: 0o644}},
		{Destination: "/etc/provstick", Type: files.TypeDir, FileInfo: &files.ContentFileInfo{Mode: 0o755}},
		{Source: filepath.Join(gen, "completion.bash"), Destination: "/usr/share/bash-completion/completions/provstick", FileInfo: &files.ContentFileInfo{Mode: 0o644}},
		{Source: filepath.Join(gen, "completion.zsh"), Destination: "/usr/share/zsh/vendor-completions/_provstick", FileInfo: &files.ContentFileInfo{Mode: 0o644}},
		{Source: filepath.Join(gen, "completion.fish"), Destination: "/usr/share/fish/vendor_completions.d/provstick.fish", FileInfo: &files.ContentFileInfo{Mode: 0o644}},
		{Source: filepath.Join(o.root, "README.md"), Destination: "/usr/share/doc/provstick/README.md", FileInfo: &files.ContentFileInfo{Mode: 0o644}},
		{Source: filepath.Join(pk, "provstick-kiosk-dhcp.conf"), Destination: "/usr/share/doc/provstick/examples/provstick-kiosk-dhcp.conf", FileInfo: &files.ContentFileInfo{Mode: 0o644}},
	}
	man, err := tree(filepath.Join(gen, "man"), "/usr/share/man/man1")
	if err != nil {
		return "", err
	}
	contents = append(contents, man...)
	// The image recipes: provstick build looks for a bare --recipe name
	// in ./images, so an installed system names the file.
	recipes, err := tree(filepath.Join(o.root, "images"), "/usr/share/provstick/images")
	if err != nil {
		return "", err
	}
	contents = append(contents, recipes...)
	if fi, err := os.Stat(filepath.Join(o.root, "docs")); err == nil && fi.IsDir() {
		docs, err := tree(filepath.Join(o.root, "docs"), "/usr/share/doc/provstick/docs")
		if err != nil {
			return "", err
		}
		contents = append(contents, docs...)
	}
	for _, c := range contents {
		if c.FileInfo != nil {
			c.FileInfo.MTime = o.mtime
		}
	}

	info := &nfpm.Info{
		Name:          "provstick",
		Arch:          o.arch,
		Platform:      "linux",
		Version:       ver,
		VersionSchema: "none",
		Section:       "admin",
		Priority:      "optional",
		Maintainer:    o.maintainer,
		Homepage:      "https://github.com/provstick/provstick",
		Description: `Provision Intel AMT (vPro) PCs from a USB stick, offline
 provstick writes the setup.bin file the BIOS reads at power-on, keeps the
 pool of PID/PPS pre-shared keys (encrypted at rest, SQLite or PostgreSQL),
 builds bootable provisioning sticks whose agent records which record went
 to which machine, and runs the offline kiosk (provstick-kiosk.service) that
 finishes provisioning over TLS-PSK and WS-Management.`,
		MTime: o.mtime,
		Overridables: nfpm.Overridables{
			Contents: contents,
			Umask:    0o022,
			// The builder runs syslinux (legacy BIOS boot) and takes
			// systemd-boot's EFI files; only bootable recipes need them.
			Recommends: []string{"syslinux", "syslinux-common", "mtools", "systemd-boot-efi"},
			Suggests:   []string{"postgresql"},
			Scripts: nfpm.Scripts{
				PostInstall: filepath.Join(pk, "postinst.sh"),
				PreRemove:   filepath.Join(pk, "prerm.sh"),
				PostRemove:  filepath.Join(pk, "postrm.sh"),
			},
		},
	}
	info = nfpm.WithDefaults(info)
	if err := info.Validate(); err != nil {
		return "", fmt.Errorf("checking package description: %w", err)
	}
	pkgr := deb.Default
	target := o.output
	if !strings.HasSuffix(target, ".deb") {
		if err := os.MkdirAll(target, 0o755); err != nil {
			return "", fmt.Errorf("creating output directory: %w", err)
		}
		target = filepath.Join(target, pkgr.ConventionalFileName(info))
	}
	var buf bytes.Buffer
	if err := pkgr.Package(info, &buf); err != nil {
		return "", fmt.Errorf("building %s: %w", target, err)
	}
	// Temp file, fsync, rename: an interrupted build never leaves a
	// truncated .deb behind.
	if err := atomicfile.WriteFile(target, buf.Bytes(), 0o644, false); err != nil {
		return "", fmt.Errorf("writing %s: %w", target, err)
	}
	return target, nil
}

// tree lists the regular files under src as package contents under dst,
// mode 0644. (nfpm's "tree" type takes each file's own time and mode,
// which would make the package depend on the checkout.)
func tree(src, dst string) (files.Contents, error) {
	var c files.Contents
	err := filepath.WalkDir(src, func(p string, d iofs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		c = append(c, &files.Content{Source: p, Destination: path.Join(dst, filepath.ToSlash(rel)), FileInfo: &files.ContentFileInfo{Mode: 0o644}})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", src, err)
	}
	return c, nil
}

// generate runs the host provstick to write completion.{bash,zsh,fish}
// and man/*.1.gz under dir.
func generate(ctx context.Context, host, dir string, mtime time.Time) error {
	for _, sh := range []string{"bash", "zsh", "fish"} {
		out, err := provstick(ctx, host, mtime, "completion", sh)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, "completion."+sh), out, 0o644); err != nil {
			return fmt.Errorf("writing %s completion: %w", sh, err)
		}
	}
	raw := filepath.Join(dir, "man.raw")
	if _, err := provstick(ctx, host, mtime, "gen-docs", "--man", raw); err != nil {
		return err
	}
	pages, err := filepath.Glob(filepath.Join(raw, "*.1"))
	if err != nil || len(pages) == 0 {
		return fmt.Errorf("provstick gen-docs --man wrote no pages (%v)", err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "man"), 0o755); err != nil {
		return fmt.Errorf("creating man directory: %w", err)
	}
	for _, p := range pages {
		b, err := os.ReadFile(p)
		if err != nil {
			return fmt.Errorf("reading man page: %w", err)
		}
		var z bytes.Buffer
		zw, err := gzip.NewWriterLevel(&z, gzip.BestCompression)
		if err != nil {
			return err
		}
		// No name and no time in the header: the same page gives the
		// same bytes.
		if _, err := zw.Write(b); err != nil {
			return fmt.Errorf("compressing %s: %w", filepath.Base(p), err)
		}
		if err := zw.Close(); err != nil {
			return fmt.Errorf("compressing %s: %w", filepath.Base(p), err)
		}
		if err := os.WriteFile(filepath.Join(dir, "man", filepath.Base(p)+".gz"), z.Bytes(), 0o644); err != nil {
			return fmt.Errorf("writing man page: %w", err)
		}
	}
	return nil
}

// provstick runs the host binary with an empty configuration (so that no
// user file changes what is generated) and returns its standard output.
func provstick(ctx context.Context, bin string, mtime time.Time, args ...string) ([]byte, error) {
	cfgHome, err := os.MkdirTemp("", "mkdeb-cfg-")
	if err != nil {
		return nil, fmt.Errorf("creating empty configuration directory: %w", err)
	}
	defer os.RemoveAll(cfgHome)
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = cfgHome
	cmd.Env = append(os.Environ(), "XDG_CONFIG_HOME="+cfgHome, "SOURCE_DATE_EPOCH="+strconv.FormatInt(mtime.Unix(), 10))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("running %s %s: %w: %s", bin, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}
