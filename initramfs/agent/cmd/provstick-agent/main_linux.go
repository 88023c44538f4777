package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/provstick/provstick/initramfs/agent"
)

const (
	moduleDir   = "/modules"
	moduleOrder = "/modules/order"
	mountDir    = "/mnt"
	// findTimeout bounds the wait for the USB stick to appear.
	findTimeout = 30 * time.Second
)

func run() {
	start := time.Now()
	say := func(format string, args ...any) { fmt.Fprintf(os.Stdout, "provstick: "+format+"\n", args...) }
	for _, m := range []struct{ src, dir, typ string }{
		{"devtmpfs", "/dev", "devtmpfs"},
		{"proc", "/proc", "proc"},
		{"sysfs", "/sys", "sysfs"},
		{"tmpfs", "/tmp", "tmpfs"},
	} {
		if err := os.MkdirAll(m.dir, 0o755); err != nil {
			say("mkdir %s: %v", m.dir, err)
		}
		if err := unix.Mount(m.src, m.dir, m.typ, unix.MS_NOSUID, ""); err != nil && !errors.Is(err, unix.EBUSY) {
			say("mount %s on %s: %v", m.typ, m.dir, err)
		}
	}
	loaded, failed := loadModules(say)
	say("ready: %d modules loaded, %d failed, %v after init started, %s since boot",
		loaded, failed, time.Since(start).Round(time.Millisecond), uptime())

	cmdline := readCmdline()
	boot := agent.ParseCmdline(cmdline)
	level := slog.LevelWarn
	if strings.Contains(cmdline, "provstick.debug=1") {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{Level: level}))

	countdown := work(boot, log, say)
	unix.Sync()
	if os.Getpid() != 1 {
		return
	}
	finish(boot, countdown, say)
}

// work finds the stick, runs the agent and prints the result; it returns
// the countdown to use.
func work(boot agent.Boot, log *slog.Logger, say func(string, ...any)) int {
	countdown := boot.Countdown
	ctx, cancel := context.WithTimeout(context.Background(), findTimeout)
	root, man, err := agent.FindStick(ctx, mountDir, log)
	cancel()
	if err != nil {
		banner(say, "PROBLEM", []string{"The provisioning stick was not found: " + err.Error(), "Leave the stick plugged in and boot from it again; if this repeats, take it to the kiosk operator."})
		return max(countdown, 30)
	}
	defer func() {
		if err := agent.Unmount(root); err != nil {
			say("%v", err)
		}
	}()
	if countdown < 0 {
		countdown = stickCountdown(root)
	}
	say("stick %s found", man.Stick)
	res, err := agent.Run(context.Background(), agent.Config{
		Root:      root,
		MEAddress: boot.MEAddress,
		DMI:       agent.SysDMI{},
		NICs:      agent.SysNICs{},
		TPM:       agent.DeviceTPM{},
		Logger:    log,
	})
	if err != nil {
		banner(say, "PROBLEM", []string{"Nothing was written to the stick: " + err.Error(), "Take the stick to the kiosk operator."})
		return max(countdown, 30)
	}
	title := "DONE"
	if !res.OK {
		title = "ATTENTION"
	}
	say("ledger: line %d (%s) written in %v, of which ME %v; %s since boot", res.Record.Seq, res.Record.Case,
		res.Elapsed.Round(time.Millisecond), res.MEElapsed.Round(time.Millisecond), uptime())
	banner(say, title, strings.Split(strings.TrimSpace(res.Message), "\n"))
	return countdown
}

// banner prints a block the technician cannot miss on the console.
func banner(say func(string, ...any), title string, lines []string) {
	bar := strings.Repeat("=", 72)
	fmt.Fprintf(os.Stdout, "\n%s\n  %s\n%s\n", bar, title, bar)
	for _, l := range lines {
		fmt.Fprintf(os.Stdout, "  %s\n", l)
	}
	fmt.Fprintf(os.Stdout, "%s\n\n", bar)
	say("result: %s", title)
}

// stickCountdown reads "countdown" from provstick/agent.json (the recipe's
// agent.countdown); 10 if absent.
func stickCountdown(root string) int {
	var conf struct {
		Countdown *int `json:"countdown"`
	}
	b, err := os.ReadFile(filepath.Join(root, "provstick", "agent.json"))
	if err == nil && json.Unmarshal(b, &conf) == nil && conf.Countdown != nil && *conf.Countdown >= 0 && *conf.Countdown <= 3600 {
		return *conf.Countdown
	}
	return 10
}

func finish(boot agent.Boot, countdown int, say func(string, ...any)) {
	if boot.After == "wait" {
		say("waiting (provstick.after=wait)")
		select {}
	}
	verb, cmd := "Powering off", unix.LINUX_REBOOT_CMD_POWER_OFF
	if boot.After == "reboot" {
		verb, cmd = "Rebooting", unix.LINUX_REBOOT_CMD_RESTART
	}
	for i := max(countdown, 0); i > 0; i-- {
		fmt.Fprintf(os.Stdout, "\r%s in %2d s ", verb, i)
		time.Sleep(time.Second)
	}
	fmt.Fprintln(os.Stdout)
	say("%s", strings.ToLower(verb))
	if err := unix.Reboot(cmd); err != nil {
		say("%s: %v", strings.ToLower(verb), err)
	}
	select {}
}

// loadModules loads each module named in moduleOrder; a module the kernel
// already has (EEXIST) counts as loaded.
func loadModules(say func(string, ...any)) (loaded, failed int) {
	f, err := os.Open(moduleOrder)
	if err != nil {
		say("no module list: %v", err)
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
			say("loading module %s: %v", name, err)
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

func readCmdline() string {
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
