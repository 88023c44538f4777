package builder

// TestVMBoot boots the default image under QEMU (TCG; KVM does not work
// on the CI machines) as a USB mass-storage stick on an xHCI controller,
// once with OVMF (UEFI: systemd-boot → kernel) and once with SeaBIOS
// (legacy: syslinux's mbr.bin → VBR → ldlinux → kernel), and waits for
// the agent's "provstick: ready" line on the serial console. It logs the
// time from QEMU's start to that line.
//
// Guest view: the stick is the only disk (bootindex=1); the kernel sees
// it as /dev/sda once xhci_pci, usb_storage and sd_mod are loaded from the
// initramfs. The serial port (ttyS0) is QEMU's stdout.
//
// Needs qemu-system-x86 (VMTEST_QEMU overrides the binary), ovmf, seabios
// (QEMU's default BIOS), the unpacked kernel (see helpers_test.go), and
// syslinux, syslinux-common, systemd-boot-efi, mtools for the build.

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	ovmfCode    = "/usr/share/OVMF/OVMF_CODE_4M.fd"
	ovmfVars    = "/usr/share/OVMF/OVMF_VARS_4M.fd"
	readyMarker = "provstick: ready"
	// Secure Boot firmware (needs SMM) and variables with Microsoft's
	// KEK and db enrolled and Secure Boot on (package ovmf).
	ovmfCodeSB = "/usr/share/OVMF/OVMF_CODE_4M.ms.fd"
	ovmfVarsSB = "/usr/share/OVMF/OVMF_VARS_4M.ms.fd"
)

// firmware is what the VM boots with.
type firmware int

const (
	seaBIOS firmware = iota
	ovmf
	ovmfSecureBoot
)

func qemuBinary(t testing.TB) string {
	t.Helper()
	q := os.Getenv("VMTEST_QEMU")
	if q == "" {
		q = "qemu-system-x86_64"
	}
	if _, err := exec.LookPath(q); err != nil {
		t.Fatalf("%s not found (apt-get install qemu-system-x86): %v", q, err)
	}
	return q
}

func copyFile(t testing.TB, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// bootToMarker boots img (copied first: QEMU locks files) and returns the
// time to the ready marker and the console output.
func bootToMarker(t *testing.T, img string, uefi bool, timeout time.Duration) (time.Duration, string) {
	t.Helper()
	fw := seaBIOS
	if uefi {
		fw = ovmf
	}
	took, console, ok := bootVM(t, img, fw, timeout, readyMarker)
	if !ok {
		t.Fatalf("no %q within %v\nconsole:\n%s", readyMarker, timeout, console)
	}
	return took, console
}

// bootVM boots img with fw until a console line contains marker, QEMU
// exits, or timeout passes. ok says whether the marker came; a VM still
// running then is stopped.
func bootVM(t *testing.T, img string, fw firmware, timeout time.Duration, marker string) (took time.Duration, console string, ok bool) {
	t.Helper()
	qemu := qemuBinary(t)
	dir := t.TempDir()
	stick := filepath.Join(dir, "stick.img")
	copyFile(t, img, stick)
	args := []string{
		"-nodefaults", "-display", "none", "-no-reboot", "-accel", "tcg",
		"-m", "512", "-smp", "1", "-serial", "stdio", "-monitor", "none",
		"-device", "qemu-xhci,id=xhci",
		"-drive", "if=none,id=stick,format=raw,file=" + stick,
		"-device", "usb-storage,bus=xhci.0,drive=stick,bootindex=1",
	}
	switch fw {
	case seaBIOS:
		args = append(args, "-machine", "q35")
	case ovmf, ovmfSecureBoot:
		code, varsTemplate := ovmfCode, ovmfVars
		args = append(args, "-machine", "q35")
		if fw == ovmfSecureBoot {
			code, varsTemplate = ovmfCodeSB, ovmfVarsSB
			args[len(args)-1] = "q35,smm=on"
			args = append(args, "-global", "driver=cfi.pflash01,property=secure,value=on")
		}
		vars := filepath.Join(dir, "OVMF_VARS.fd")
		copyFile(t, varsTemplate, vars)
		args = append(args,
			"-drive", "if=pflash,format=raw,unit=0,readonly=on,file="+code,
			"-drive", "if=pflash,format=raw,unit=1,file="+vars)
	}
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, qemu, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	pr, pw := io.Pipe()
	cmd.Stdout = pw
	var out strings.Builder
	var mu sync.Mutex
	found := make(chan time.Duration, 1)
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", qemu, err)
	}
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			mu.Lock()
			fmt.Fprintf(&out, "[%5.1fs] %s\n", time.Since(start).Seconds(), ansiRE.ReplaceAllString(line, ""))
			mu.Unlock()
			if strings.Contains(line, marker) {
				select {
				case found <- time.Since(start):
				default:
				}
			}
		}
		io.Copy(io.Discard, pr)
	}()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait(); pw.Close() }()

	select {
	case took = <-found:
	case err := <-exited:
		mu.Lock()
		defer mu.Unlock()
		t.Logf("QEMU exited before %q (%v)\nstderr: %s", marker, err, stderr.Bytes())
		return 0, out.String(), false
	case <-ctx.Done():
		<-exited
		mu.Lock()
		defer mu.Unlock()
		return 0, out.String(), false
	}
	if marker != readyMarker {
		cancel()
		<-exited
		mu.Lock()
		defer mu.Unlock()
		return took, out.String(), true
	}
	// The agent powers the machine off after the marker.
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		cancel()
		<-exited
		t.Errorf("QEMU still running 30 s after the ready marker (the agent did not power off)")
	}
	mu.Lock()
	defer mu.Unlock()
	return took, out.String(), true
}

// ansiRE matches the terminal escapes OVMF sends to the serial console.
var ansiRE = regexp.MustCompile(`\x1b\[[0-9;=?]*[A-Za-z]`)

func TestVMBoot(t *testing.T) {
	if testing.Short() {
		t.Skip("boots two VMs under TCG (about half a minute); skipped with -short")
	}
	img, _ := buildTestImage(t, defaultRecipe(t), "vm-0001", 5)
	for _, tc := range []struct {
		name string
		uefi bool
	}{{"uefi-ovmf", true}, {"legacy-seabios", false}} {
		t.Run(tc.name, func(t *testing.T) {
			took, console := bootToMarker(t, img, tc.uefi, 180*time.Second)
			t.Logf("boot to %q under TCG: %.1f s; console with time since QEMU started:\n%s", readyMarker, took.Seconds(), console)
			if !strings.Contains(console, "modules loaded, 0 failed") {
				t.Errorf("the agent did not load every module:\n%s", console)
			}
		})
	}
}

func secureBootRecipe(t testing.TB) *Recipe {
	t.Helper()
	r, err := LoadRecipe("../images/secureboot.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestVMSecureBoot boots the secureboot recipe's image under OVMF with
// Secure Boot on and Microsoft's keys enrolled (shim → grub → Debian's
// signed kernel, lockdown on, signed modules loaded), and checks that
// the same firmware refuses the default image's unsigned systemd-boot.
func TestVMSecureBoot(t *testing.T) {
	if testing.Short() {
		t.Skip("boots two VMs under TCG; skipped with -short")
	}
	t.Run("signed-chain-boots", func(t *testing.T) {
		img, _ := buildTestImage(t, secureBootRecipe(t), "vm-sb-0001", 5)
		took, console, ok := bootVM(t, img, ovmfSecureBoot, 240*time.Second, readyMarker)
		if !ok {
			t.Fatalf("no %q under Secure Boot\nconsole:\n%s", readyMarker, console)
		}
		t.Logf("boot to %q under TCG with Secure Boot: %.1f s; console:\n%s", readyMarker, took.Seconds(), console)
		// The EFI stub's own report; Debian's kernel is built with
		// CONFIG_LOCK_DOWN_IN_EFI_SECURE_BOOT=y, so lockdown is on and
		// every module loaded below passed signature checks.
		if !strings.Contains(console, "EFI stub: UEFI Secure Boot is enabled") {
			t.Errorf("the kernel did not see Secure Boot enabled:\n%s", console)
		}
		if !strings.Contains(console, "modules loaded, 0 failed") {
			t.Errorf("the agent did not load every module under lockdown:\n%s", console)
		}
	})
	t.Run("unsigned-refused", func(t *testing.T) {
		img, _ := buildTestImage(t, defaultRecipe(t), "vm-sb-0002", 5)
		// OVMF reports "failed to load Boot0001 ... Access Denied" on
		// the serial console and moves on; stop there.
		_, console, ok := bootVM(t, img, ovmfSecureBoot, 120*time.Second, "Access Denied")
		if !ok || strings.Contains(console, readyMarker) || !strings.Contains(console, "USB HARDDRIVE") {
			t.Fatalf("want the firmware to refuse the stick's unsigned loader\nconsole:\n%s", console)
		}
	})
}
