package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// repoRoot is the repository root, seen from this package's directory.
var repoRoot = filepath.Join("..", "..", "..")

func TestDebianVersion(t *testing.T) {
	tests := []struct {
		in, want string
	}{
		{"v1.2.3", "1.2.3"},
		{"1.2.3", "1.2.3"},
		{"v1.2.3-rc1", "1.2.3~rc1"},
		{"v1.2.3-rc.1-2", "1.2.3~rc.1.2"},
		{"v1.2.3-5-gabc1234", "1.2.3+git5.abc1234"},
		{"v1.2.3-5-gabc1234-dirty", "1.2.3+git5.abc1234.dirty"},
		{"v1.2.3-dirty", "1.2.3+dirty"},
		{"130be1b", "0.0.0+git.130be1b"},
		{"130be1b-dirty", "0.0.0+git.130be1b.dirty"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := debianVersion(tt.in)
			if err != nil || got != tt.want {
				t.Errorf("debianVersion(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			}
		})
	}
	for _, bad := range []string{"devel", "", "v1.2.3 beta", "latest"} {
		if got, err := debianVersion(bad); err == nil {
			t.Errorf("debianVersion(%q) = %q, want an error", bad, got)
		}
	}
}

func TestBuildRefusals(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "provstick")
	if err := os.WriteFile(bin, []byte("x"), 0o755); err != nil {
		t.Fatal(err)
	}
	other := "arm64"
	if runtime.GOARCH == "arm64" {
		other = "amd64"
	}
	tests := []struct {
		name string
		o    options
		want string
	}{
		{"bad arch", options{arch: "mips", version: "v1", binary: bin, agent: bin}, `"mips"`},
		{"no version", options{arch: "amd64", binary: bin, agent: bin}, "--version"},
		{"no agent", options{arch: "amd64", version: "v1", binary: bin}, "--agent"},
		{"missing binary", options{arch: "amd64", version: "v1", binary: filepath.Join(dir, "nope"), agent: bin}, "--binary"},
		{"foreign arch without host binary", options{arch: other, version: "v1", binary: bin, agent: bin}, "--host-binary"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := build(t.Context(), tt.o)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("build: %v, want an error mentioning %s", err, tt.want)
			}
		})
	}
}

// buildProvstick compiles the CLI as make release does (static, version
// stamped) but without -trimpath, so that it reuses the build cache of
// ordinary builds and tests.
func buildProvstick(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "provstick")
	const pkg = "github.com/provstick/provstick/cmd/provstick/cli"
	cmd := exec.CommandContext(t.Context(), "go", "build", "-buildvcs=false",
		"-ldflags", "-s -w -X "+pkg+".Version=v1.2.3-4-gabcdef0 -X "+pkg+".Commit=abcdef0123 -X "+pkg+".Date=2026-11-23T16:00:00Z",
		"-o", bin, "./cmd/provstick")
	cmd.Dir = repoRoot
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/provstick: %v\n%s", err, out)
	}
	return bin
}

func runTool(t *testing.T, env []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), name, args...)
	cmd.Env = append(os.Environ(), env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\nstdout:\n%s\nstderr:\n%s", name, strings.Join(args, " "), err, out, stderr.String())
	}
	return string(out) + stderr.String()
}

// TestPackage builds the .deb for this machine's architecture and checks
// it with dpkg-deb (control fields, conffile, file list and modes), runs
// the packaged binary (version, completion, the sample configuration) and
// checks the unit with systemd-analyze verify and security.
func TestPackage(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	dir := t.TempDir()
	bin := buildProvstick(t, dir)
	// The agent only has to be carried; a stand-in keeps the test fast.
	agent := filepath.Join(dir, "provstick-agent")
	if err := os.WriteFile(agent, []byte("\x7fELF stand-in agent\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SOURCE_DATE_EPOCH", "1795000000")
	mtime, err := sourceDate()
	if err != nil {
		t.Fatal(err)
	}
	// A relative --binary, as make deb passes it.
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	rel, err := filepath.Rel(wd, bin)
	if err != nil {
		t.Fatal(err)
	}
	o := options{
		arch: runtime.GOARCH, version: "v1.2.3-4-gabcdef0", binary: rel, agent: agent,
		root: repoRoot, output: filepath.Join(dir, "out"), maintainer: "test <test@localhost>", mtime: mtime,
	}
	debFile, err := build(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	if want := "provstick_1.2.3+git4.abcdef0_" + runtime.GOARCH + ".deb"; filepath.Base(debFile) != want {
		t.Errorf("package file %s, want %s", filepath.Base(debFile), want)
	}

	t.Run("reproducible", func(t *testing.T) {
		// The stand-in agent as the packaged binary keeps the two builds
		// small (compressing 20 MB twice is slow under -race); completions
		// and man pages still come from running the real provstick.
		o2 := o
		o2.binary, o2.hostBinary = agent, bin
		var debs [2][]byte
		for i := range debs {
			o2.output = filepath.Join(dir, "again"+strconv.Itoa(i)+".deb")
			p, err := build(ctx, o2)
			if err != nil {
				t.Fatal(err)
			}
			if debs[i], err = os.ReadFile(p); err != nil {
				t.Fatal(err)
			}
		}
		if !bytes.Equal(debs[0], debs[1]) {
			t.Errorf("two builds of the same inputs differ (%d and %d bytes)", len(debs[0]), len(debs[1]))
		}
	})

	info := runTool(t, nil, "dpkg-deb", "--info", debFile)
	for _, want := range []string{
		"Package: provstick",
		"Version: 1.2.3+git4.abcdef0",
		"Architecture: " + runtime.GOARCH,
		"Section: admin",
		"Recommends: syslinux, syslinux-common, mtools, systemd-boot-efi",
		" conffiles",
		" postinst",
		" prerm",
		" postrm",
	} {
		if !strings.Contains(info, want) {
			t.Errorf("dpkg-deb --info lacks %q:\n%s", want, info)
		}
	}
	ctrl := filepath.Join(dir, "control")
	runTool(t, nil, "dpkg-deb", "--control", debFile, ctrl)
	if b, err := os.ReadFile(filepath.Join(ctrl, "conffiles")); err != nil || strings.TrimSpace(string(b)) != "/etc/provstick/provstick.yaml" {
		t.Errorf("conffiles = %q, %v; want /etc/provstick/provstick.yaml", b, err)
	}

	contents := runTool(t, []string{"TZ=UTC"}, "dpkg-deb", "--contents", debFile)
	for path, mode := range map[string]string{
		"./usr/bin/provstick":                                  "-rwxr-xr-x",
		"./usr/bin/provstick-agent":                            "-rwxr-xr-x",
		"./usr/lib/systemd/system/provstick-kiosk.service":     "-rw-r--r--",
		"./usr/lib/sysusers.d/provstick.conf":                  "-rw-r--r--",
		"./usr/lib/tmpfiles.d/provstick.conf":                  "-rw-r--r--",
		"./etc/provstick/provstick.yaml":                       "-rw-r--r--",
		"./usr/share/bash-completion/completions/provstick":    "-rw-r--r--",
		"./usr/share/zsh/vendor-completions/_provstick":        "-rw-r--r--",
		"./usr/share/fish/vendor_completions.d/provstick.fish": "-rw-r--r--",
		"./usr/share/man/man1/provstick.1.gz":                  "-rw-r--r--",
		"./usr/share/man/man1/provstick-kiosk-serve.1.gz":      "-rw-r--r--",
		"./usr/share/provstick/images/default.yaml":            "-rw-r--r--",
		"./usr/share/doc/provstick/README.md":                  "-rw-r--r--",
		"./usr/share/doc/provstick/docs/reference/config.md":   "-rw-r--r--",
	} {
		re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(mode) + ` root/root +\d+ \S+ \S+ ` + regexp.QuoteMeta(path) + `$`)
		if !re.MatchString(contents) {
			t.Errorf("dpkg-deb --contents: no %s %s root/root", mode, path)
		}
	}
	if !strings.Contains(contents, "2026-11-18 ") { // SOURCE_DATE_EPOCH 1795000000
		t.Errorf("file times are not SOURCE_DATE_EPOCH:\n%.600s", contents)
	}

	root := filepath.Join(dir, "root")
	runTool(t, nil, "dpkg-deb", "-x", debFile, root)
	pbin := filepath.Join(root, "usr", "bin", "provstick")

	t.Run("binary", func(t *testing.T) {
		out := runTool(t, nil, pbin, "version")
		for _, want := range []string{"provstick v1.2.3-4-gabcdef0 ", "commit: abcdef0123", "date:   2026-11-23T16:00:00Z"} {
			if !strings.Contains(out, want) {
				t.Errorf("provstick version lacks %q:\n%s", want, out)
			}
		}
		if out := runTool(t, nil, pbin, "completion", "bash"); !strings.Contains(out, "__start_provstick") {
			t.Errorf("provstick completion bash:\n%.300s", out)
		}
		// The sample configuration loads strictly (unknown keys fail).
		runTool(t, nil, pbin, "--config", filepath.Join(root, "etc", "provstick", "provstick.yaml"), "version")
		comp, err := os.ReadFile(filepath.Join(root, "usr", "share", "bash-completion", "completions", "provstick"))
		if err != nil || !bytes.Contains(comp, []byte("__start_provstick")) {
			t.Errorf("packaged bash completion: %v\n%.200s", err, comp)
		}
	})

	t.Run("sysusers and tmpfiles", func(t *testing.T) {
		// What postinst does, applied to the extracted tree instead of
		// the host: the user exists, its state directory is 0700 and
		// owned by it. chown needs root, which CI has.
		if os.Geteuid() != 0 {
			t.Log("not root: systemd-tmpfiles cannot chown; checked by root runs (CI)")
			return
		}
		runTool(t, nil, "systemd-sysusers", "--root="+root, filepath.Join(root, "usr", "lib", "sysusers.d", "provstick.conf"))
		passwd, err := os.ReadFile(filepath.Join(root, "etc", "passwd"))
		if err != nil {
			t.Fatal(err)
		}
		m := regexp.MustCompile(`(?m)^provstick:x:(\d+):(\d+):[^:]*:/var/lib/provstick:`).FindSubmatch(passwd)
		if m == nil {
			t.Fatalf("no provstick user in the tree's /etc/passwd:\n%s", passwd)
		}
		runTool(t, nil, "systemd-tmpfiles", "--root="+root, "--create", filepath.Join(root, "usr", "lib", "tmpfiles.d", "provstick.conf"))
		fi, err := os.Stat(filepath.Join(root, "var", "lib", "provstick"))
		if err != nil {
			t.Fatal(err)
		}
		uid, _ := fileUID(fi)
		if fi.Mode().Perm() != 0o700 || strconv.FormatUint(uint64(uid), 10) != string(m[1]) {
			t.Errorf("/var/lib/provstick: mode %v uid %d, want 0700 and uid %s", fi.Mode().Perm(), uid, m[1])
		}
	})

	t.Run("unit", func(t *testing.T) {
		unit, err := os.ReadFile(filepath.Join(root, "usr", "lib", "systemd", "system", "provstick-kiosk.service"))
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{
			"ExecStart=/usr/bin/provstick --config /etc/provstick/provstick.yaml kiosk serve",
			"StateDirectory=provstick", "ProtectSystem=strict",
			"AmbientCapabilities=CAP_NET_BIND_SERVICE", "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
		} {
			if !bytes.Contains(unit, []byte(want+"\n")) {
				t.Errorf("unit lacks %q", want)
			}
		}
		// systemd-analyze checks that ExecStart exists: point it at the
		// extracted binary, and at the extracted man pages for
		// Documentation=man:..., on a copy of the unit.
		local := bytes.Replace(unit, []byte("ExecStart=/usr/bin/provstick"), []byte("ExecStart="+pbin), 1)
		unitCopy := filepath.Join(dir, "provstick-kiosk.service")
		if err := os.WriteFile(unitCopy, local, 0o644); err != nil {
			t.Fatal(err)
		}
		manpath := []string{"MANPATH=" + filepath.Join(root, "usr", "share", "man")}
		if out := runTool(t, manpath, "systemd-analyze", "verify", unitCopy); strings.TrimSpace(out) != "" {
			t.Errorf("systemd-analyze verify printed:\n%s", out)
		}
		sec := runTool(t, nil, "systemd-analyze", "security", "--offline=true", "--no-pager", unitCopy)
		m := regexp.MustCompile(`Overall exposure level for \S+: ([0-9.]+)`).FindStringSubmatch(sec)
		if m == nil {
			t.Fatalf("systemd-analyze security: no exposure level:\n%s", sec)
		}
		if score, _ := strconv.ParseFloat(m[1], 64); score > 2.5 {
			t.Errorf("unit exposure level %s, want ≤ 2.5 (hardening was loosened?)", m[1])
		}
		t.Logf("systemd-analyze security: exposure %s", m[1])
	})
}
