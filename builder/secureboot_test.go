package builder

import (
	"errors"
	"os"
	"strings"
	"testing"
)

// TestSignedKernel: Debian's kernel carries an Authenticode signature;
// systemd-boot from systemd-boot-efi does not, and a non-PE file is not
// a kernel at all.
func TestSignedKernel(t *testing.T) {
	k, err := FindKernel(kernelDir(t))
	if err != nil {
		t.Fatal(err)
	}
	vm, err := os.ReadFile(k.Vmlinuz)
	if err != nil {
		t.Fatal(err)
	}
	if err := signedKernel(vm); err != nil {
		t.Errorf("Debian's kernel: %v", err)
	}
	sd, err := os.ReadFile(DefaultSystemdBoot)
	if err != nil {
		t.Fatal(err)
	}
	if err := signedKernel(sd); !errors.Is(err, ErrKernel) || !strings.Contains(err.Error(), "not signed") {
		t.Errorf("unsigned systemd-boot: %v", err)
	}
	if err := signedKernel([]byte("not a PE file")); err == nil {
		t.Error("a text file passed as a signed kernel")
	}
}

// TestSecureBootLayout: shim as the removable-media loader, grub next to
// it, grub's configuration where Debian's signed grub looks for it.
func TestSecureBootLayout(t *testing.T) {
	img, res := buildTestImage(t, secureBootRecipe(t), "sb-0001", 3)
	for _, p := range []string{"EFI/BOOT/BOOTX64.EFI", "EFI/BOOT/grubx64.efi", GrubConfigPath, KernelPath, InitrdPath, "syslinux/syslinux.cfg"} {
		if _, ok := res.Manifest.Files[p]; !ok {
			t.Errorf("manifest has no %s", p)
		}
	}
	shim, err := os.ReadFile(DefaultShim)
	if err != nil {
		t.Fatal(err)
	}
	if got := res.Manifest.Files["EFI/BOOT/BOOTX64.EFI"]; got != sha256Hex(shim) {
		t.Errorf("BOOTX64.EFI is not %s", DefaultShim)
	}
	cfg := mustRun(t, "mtype", "-i", img+"@@1M", "::"+GrubConfigPath)
	for _, want := range []string{"set timeout=0", "linux /" + KernelPath + " console=", "initrd /" + InitrdPath} {
		if !strings.Contains(cfg, want) {
			t.Errorf("grub.cfg has no %q:\n%s", want, cfg)
		}
	}
	mustRun(t, "fsck.fat", "-n", extractPartition(t, img))
}
