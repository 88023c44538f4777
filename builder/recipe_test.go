package builder

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Every recipe shipped in images/ loads, so none can rot.
func TestShippedRecipes(t *testing.T) {
	files, _ := filepath.Glob("../images/*.yaml")
	if len(files) < 2 {
		t.Fatalf("found %d recipes in images/", len(files))
	}
	for _, f := range files {
		r, err := LoadRecipe(f)
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		if want := strings.TrimSuffix(filepath.Base(f), ".yaml"); r.Name != want {
			t.Errorf("%s: name %q, want the file's name %q", f, r.Name, want)
		}
	}
	r, err := LoadRecipe("../images/default.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if r.Size != 256<<20 || r.Boot.UEFI != LoaderSystemdBoot || r.Boot.BIOS != LoaderSyslinux || r.Filesystem.Label != "PROVSTICK" {
		t.Errorf("default recipe: %+v", r)
	}
}

func TestBadRecipes(t *testing.T) {
	for _, tc := range []struct {
		file, want string
	}{
		{"unknown-field.yaml", "cmdlin"},
		{"bad-version.yaml", "field version: 2"},
		{"too-small.yaml", "field size"},
	} {
		t.Run(tc.file, func(t *testing.T) {
			_, err := LoadRecipe(filepath.Join("testdata", "recipes", tc.file))
			if !errors.Is(err, ErrRecipe) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), tc.file) {
				t.Errorf("got %v, want ErrRecipe naming the file and %q", err, tc.want)
			}
		})
	}
	for _, tc := range []struct{ name, yaml, want string }{
		{"empty", "", "empty"},
		{"two docs", "version: 1\nname: a\nsize: 128MiB\n---\nversion: 1\n", "more than one"},
		{"bad size", "version: 1\nname: a\nsize: lots\n", "size"},
		{"odd size", "version: 1\nname: a\nsize: 100000001\n", "whole number of MiB"},
		{"table", "version: 1\nname: a\nsize: 128MiB\ntable: apm\n", "table"},
		{"gpt legacy", "version: 1\nname: a\nsize: 128MiB\ntable: gpt\nboot: {bios: syslinux}\nkernel: {modules: [vfat]}\n", "UEFI only"},
		{"label", "version: 1\nname: a\nsize: 128MiB\nfilesystem: {label: provstick}\n", "filesystem.label"},
		{"loader", "version: 1\nname: a\nsize: 128MiB\nboot: {uefi: grub}\n", "boot.uefi"},
		{"no modules", "version: 1\nname: a\nsize: 128MiB\nboot: {bios: syslinux}\n", "kernel.modules"},
		{"module name", "version: 1\nname: a\nsize: 128MiB\nboot: {bios: syslinux}\nkernel: {modules: [\"../x\"]}\n", "kernel.modules[0]"},
		{"cmdline", "version: 1\nname: a\nsize: 128MiB\nboot: {cmdline: \"a\\nb\"}\n", "boot.cmdline"},
		{"bios video", "version: 1\nname: a\nsize: 128MiB\nboot: {bios: syslinux, bios_video: 800x600}\nkernel: {modules: [vfat]}\n", "boot.bios_video"},
		{"bios video uefi", "version: 1\nname: a\nsize: 128MiB\nboot: {uefi: systemd-boot, bios_video: 1024x768}\nkernel: {modules: [vfat]}\n", "only with boot.bios: syslinux"},
		{"two vga", "version: 1\nname: a\nsize: 128MiB\nboot: {bios: syslinux, bios_video: 1024x768, cmdline: \"quiet vga=791\"}\nkernel: {modules: [vfat]}\n", "has vga="},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseRecipe(strings.NewReader(tc.yaml), "x.yaml")
			if !errors.Is(err, ErrRecipe) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want ErrRecipe mentioning %q", err, tc.want)
			}
		})
	}
}

func TestByteSize(t *testing.T) {
	for in, want := range map[string]ByteSize{"1024": 1024, "4K": 4096, "256MiB": 256 << 20, "2G": 2 << 30, "1GiB": 1 << 30, "3MB": 3 << 20} {
		var s ByteSize
		if err := s.UnmarshalText([]byte(in)); err != nil || s != want {
			t.Errorf("%q: got %d, %v; want %d", in, s, err, want)
		}
	}
	for _, in := range []string{"", "-1", "1T", "1.5G", "99999999999999999999"} {
		var s ByteSize
		if err := s.UnmarshalText([]byte(in)); err == nil {
			t.Errorf("%q: no error", in)
		}
	}
	if b, _ := ByteSize(256 << 20).MarshalText(); string(b) != "256MiB" {
		t.Errorf("MarshalText: %s", b)
	}
}

func TestModuleOrder(t *testing.T) {
	k, err := FindKernel(kernelDir(t))
	if err != nil {
		t.Fatal(err)
	}
	mods, err := ModuleOrder(k.Modules, []string{"uas", "usb-storage", "vfat"})
	if err != nil {
		t.Fatal(err)
	}
	pos := map[string]int{}
	for i, m := range mods {
		if _, dup := pos[m.Name]; dup {
			t.Errorf("%s twice", m.Name)
		}
		pos[m.Name] = i
	}
	for _, m := range mods {
		for _, d := range m.Depends {
			if pos[d] >= pos[m.Name] {
				t.Errorf("%s loads before its dependency %s", m.Name, d)
			}
		}
	}
	for _, want := range []string{"usbcore", "scsi_mod", "usb_storage", "fat"} {
		if _, ok := pos[want]; !ok {
			t.Errorf("no %s in %v", want, mods)
		}
	}
	if _, err := ModuleOrder(k.Modules, []string{"no_such_module"}); !errors.Is(err, ErrKernel) {
		t.Errorf("missing module: got %v, want ErrKernel", err)
	}
}

func TestParseDepends(t *testing.T) {
	got := parseDepends([]byte("license=GPL\x00depends=usbcore,scsi_mod,usb-common\x00intree=Y\x00"))
	if strings.Join(got, " ") != "usbcore scsi_mod usb_common" {
		t.Errorf("got %q", got)
	}
	if got := parseDepends([]byte("depends=\x00")); got != nil {
		t.Errorf("empty depends: %q", got)
	}
}

func TestNaturalCompare(t *testing.T) {
	if naturalCompare("6.1.0-56-amd64", "6.1.0-9-amd64") <= 0 || naturalCompare("a", "a") != 0 || naturalCompare("6.1.0-09", "6.1.0-9") != 0 {
		t.Error("naturalCompare")
	}
}

func TestFindKernelMissing(t *testing.T) {
	if _, err := FindKernel(t.TempDir()); !errors.Is(err, ErrKernel) {
		t.Errorf("got %v", err)
	}
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "boot"), 0o755)
	os.WriteFile(filepath.Join(dir, "boot", "vmlinuz-1"), nil, 0o644)
	if _, err := FindKernel(dir); !errors.Is(err, ErrKernel) {
		t.Errorf("no modules: got %v", err)
	}
}

// TestSyslinuxConfig: the legacy BIOS entry gets a VESA mode (vga=0x317,
// 1024×768) when the QR code is on or the recipe asks, text mode
// otherwise; the UEFI entry's command line never has vga=.
func TestSyslinuxConfig(t *testing.T) {
	for _, tc := range []struct {
		name, boot, agent, wantVideo string
		wantVGA                      bool
	}{
		{"default", "", "", "text", false},
		{"qr", "", "qr: true", "1024x768", true},
		{"qr text", "bios_video: text", "qr: true", "text", false},
		{"asked", "bios_video: 1024x768", "", "1024x768", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			y := "version: 1\nname: a\nsize: 128MiB\nboot:\n  uefi: systemd-boot\n  bios: syslinux\n  cmdline: console=tty0\n  " + tc.boot +
				"\nkernel: {modules: [vfat]}\nagent:\n  " + tc.agent + "\n"
			r, err := ParseRecipe(strings.NewReader(y), "x.yaml")
			if err != nil {
				t.Fatal(err)
			}
			if r.Boot.BIOSVideo != tc.wantVideo {
				t.Errorf("boot.bios_video %q, want %q", r.Boot.BIOSVideo, tc.wantVideo)
			}
			cfg := string(SyslinuxConfig(r))
			want := "  APPEND console=tty0 provstick.after=poweroff\n"
			if tc.wantVGA {
				want = "  APPEND vga=0x317 console=tty0 provstick.after=poweroff\n"
			}
			if !strings.HasSuffix(cfg, want) || !strings.HasPrefix(cfg, "DEFAULT provstick\n") {
				t.Errorf("syslinux.cfg:\n%s\nwant its last line %q", cfg, want)
			}
		})
	}
	// A recipe built in code, without ParseRecipe's defaults.
	r := &Recipe{Boot: Boot{BIOS: LoaderSyslinux}, Agent: Agent{After: "poweroff", QR: true}}
	if cfg := string(SyslinuxConfig(r)); !strings.Contains(cfg, "APPEND vga=0x317 provstick.after=poweroff\n") {
		t.Errorf("code-built recipe with QR on:\n%s", cfg)
	}
}
