//go:build linux

// Command vminit is /init of the tiny initramfs of internal/amtsim's VM
// test (vm_test.go): it mounts /proc, /sys and /dev, loads the kernel
// modules listed in /modules/order (the virtio-serial stack of a
// distribution kernel), runs "/provstick amtinfo --json --wait 60s" (the
// address comes from provstick.mei= on the kernel command line), prints
// "VMTEST-EXIT <status>" and powers the machine off.
package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"unsafe"
)

func main() {
	status := run()
	fmt.Printf("VMTEST-EXIT %d\n", status)
	syscall.Sync()
	syscall.Reboot(syscall.LINUX_REBOOT_CMD_POWER_OFF)
	select {}
}

func run() int {
	for _, m := range []struct{ src, dst, typ string }{
		{"proc", "/proc", "proc"}, {"sysfs", "/sys", "sysfs"}, {"devtmpfs", "/dev", "devtmpfs"},
	} {
		if err := os.MkdirAll(m.dst, 0o755); err != nil {
			fmt.Println("vminit:", err)
			return 100
		}
		if err := syscall.Mount(m.src, m.dst, m.typ, 0, ""); err != nil {
			fmt.Printf("vminit: mounting %s: %v\n", m.dst, err)
			return 100
		}
	}
	if err := loadModules("/modules"); err != nil {
		fmt.Println("vminit:", err)
		return 101
	}
	cmd := exec.Command("/provstick", "amtinfo", "--json", "--wait", "60s")
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stdout
	if err := cmd.Run(); err != nil {
		fmt.Println("vminit: amtinfo:", err)
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode()
		}
		return 102
	}
	return 0
}

// loadModules inserts the modules named in dir/order, in that order.
func loadModules(dir string) error {
	f, err := os.Open(filepath.Join(dir, "order"))
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name := sc.Text()
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return err
		}
		params := []byte{0}
		_, _, errno := syscall.Syscall(syscall.SYS_INIT_MODULE, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), uintptr(unsafe.Pointer(&params[0])))
		if errno != 0 && errno != syscall.EEXIST {
			return fmt.Errorf("loading %s: %w", name, errno)
		}
	}
	return sc.Err()
}
