package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

const (
	moduleDir   = "/modules"
	moduleOrder = "/modules/order"
)

func run() {
	start := time.Now()
	log := func(format string, args ...any) { fmt.Fprintf(os.Stdout, "provstick: "+format+"\n", args...) }
	for _, m := range []struct{ src, dir, typ string }{
		{"devtmpfs", "/dev", "devtmpfs"},
		{"proc", "/proc", "proc"},
		{"sysfs", "/sys", "sysfs"},
		{"tmpfs", "/tmp", "tmpfs"},
	} {
		if err := os.MkdirAll(m.dir, 0o755); err != nil {
			log("mkdir %s: %v", m.dir, err)
		}
		if err := unix.Mount(m.src, m.dir, m.typ, unix.MS_NOSUID, ""); err != nil && !errors.Is(err, unix.EBUSY) {
			log("mount %s on %s: %v", m.typ, m.dir, err)
		}
	}
	loaded, failed := loadModules(log)
	log("ready: %d modules loaded, %d failed, %v after init started, %s since boot",
		loaded, failed, time.Since(start).Round(time.Millisecond), uptime())
	unix.Sync()
	if os.Getpid() != 1 {
		return
	}
	if strings.Contains(cmdline(), "provstick.after=wait") {
		select {}
	}
	cmd := unix.LINUX_REBOOT_CMD_POWER_OFF
	if strings.Contains(cmdline(), "provstick.after=reboot") {
		cmd = unix.LINUX_REBOOT_CMD_RESTART
	}
	if err := unix.Reboot(cmd); err != nil {
		log("power off: %v", err)
	}
	select {}
}

// loadModules loads each module named in moduleOrder; a module the kernel
// already has (EEXIST) counts as loaded.
func loadModules(log func(string, ...any)) (loaded, failed int) {
	f, err := os.Open(moduleOrder)
	if err != nil {
		log("no module list: %v", err)
		return 0, 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name := strings.TrimSpace(sc.Text())
		if name == "" || strings.Contains(name, "/") {
			continue
		}
		if err := finitModule(filepath.Join(moduleDir, name)); err != nil && !errors.Is(err, unix.EEXIST) {
			log("loading module %s: %v", name, err)
			failed++
			continue
		}
		loaded++
	}
	return loaded, failed
}

func finitModule(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return unix.FinitModule(int(f.Fd()), "", 0)
}

func cmdline() string {
	b, _ := os.ReadFile("/proc/cmdline")
	return string(b)
}

func uptime() string {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return "?"
	}
	return time.Duration(ts.Nano()).Round(time.Millisecond).String()
}
