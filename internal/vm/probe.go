package vm

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"
)

var (
	probeOnce sync.Once
	probed    string
)

// Probe answers "kvm" when KVM really runs a guest here and "tcg"
// otherwise. /dev/kvm can exist and open and still fail with "KVM internal
// error" once the guest runs (seen on the CI machines), so the probe boots
// SeaBIOS for a moment and waits for its first words on the debug port.
// The answer is computed once per process.
func Probe(ctx context.Context, qemu string) string {
	probeOnce.Do(func() { probed = probe(ctx, qemu) })
	return probed
}

func probe(ctx context.Context, qemu string) string {
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		return "tcg"
	}
	f.Close()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, qemu, "-accel", "kvm", "-nodefaults", "-display", "none", "-no-reboot",
		"-machine", "q35", "-m", "64", "-monitor", "none", "-serial", "none",
		"-chardev", "stdio,id=dbg", "-device", "isa-debugcon,iobase=0x402,chardev=dbg")
	out, err := cmd.StdoutPipe()
	if err != nil {
		return "tcg"
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		return "tcg"
	}
	ok := false
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		l := sc.Text()
		if strings.Contains(l, "internal error") {
			break
		}
		// SeaBIOS has run real code under KVM once it has found memory.
		if strings.Contains(l, "SeaBIOS") || strings.Contains(l, "RamSize") {
			ok = true
			break
		}
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	if ok {
		return "kvm"
	}
	return "tcg"
}
