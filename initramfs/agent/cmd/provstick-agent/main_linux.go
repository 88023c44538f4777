package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/provstick/provstick/initramfs/agent"
	"github.com/provstick/provstick/initramfs/heci"
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
	cmdline := readCmdline()
	boot := agent.ParseCmdline(cmdline)
	var con *agent.Console
	if boot.Console != "none" {
		var err error
		if con, err = agent.OpenConsole(boot.Console); err != nil {
			say("no technician screen: %v", err)
		} else {
			con.Draw(agent.Screen{Kind: agent.ScreenWorking, Title: "PROVSTICK - WORKING, DO NOT REMOVE THE STICK",
				Lead: "Reading the stick and asking this machine who it is.", Lines: []string{"This takes a few seconds."}})
		}
	}
	loaded, failed := loadModules(say)
	say("ready: %d modules loaded, %d failed, %v after init started, %s since boot",
		loaded, failed, time.Since(start).Round(time.Millisecond), uptime())
	// A clock still wrong after this is named in the ledger line by Run.
	if now, err := agent.SetClockFromRTC(""); err != nil {
		say("clock: %v", err)
	} else {
		say("clock: %s", now.UTC().Format(time.RFC3339))
	}

	level := slog.LevelWarn
	if strings.Contains(cmdline, "provstick.debug=1") {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{Level: level}))

	scr, countdown := work(start, boot, log, say)
	unix.Sync()
	if con != nil {
		con.Draw(scr)
		say("screen drawn")
	}
	if os.Getpid() != 1 {
		return
	}
	finish(boot, countdown, con, say)
}

// work finds the stick, runs the agent and prints the result; it returns
// the technician's screen and the countdown to use.
func work(initStart time.Time, boot agent.Boot, log *slog.Logger, say func(string, ...any)) (agent.Screen, int) {
	countdown := boot.Countdown
	findStart := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), findTimeout)
	root, man, err := agent.FindStick(ctx, mountDir, log)
	cancel()
	if err != nil {
		s := agent.Screen{Kind: agent.ScreenProblem, Title: "PROBLEM - THE STICK WAS NOT FOUND",
			Lead:  "The provisioning stick was not found; nothing was written.",
			Lines: []string{"Leave the stick plugged in and boot from it again; if this repeats, take it to the kiosk operator.", "Details: " + err.Error()}}
		banner(say, "PROBLEM", append([]string{s.Lead}, s.Lines...))
		return s, max(countdown, 30)
	}
	defer func() {
		if err := agent.Unmount(root); err != nil {
			say("%v", err)
		}
	}()
	conf := readAgentConf(root)
	if countdown < 0 {
		countdown = conf.countdown()
	}
	say("stick %s found in %v", man.Stick, time.Since(findStart).Round(time.Millisecond))
	res, err := agent.Run(context.Background(), agent.Config{
		Root:        root,
		MEAddress:   boot.MEAddress,
		METimeout:   conf.meWait(),
		DMI:         agent.SysDMI{},
		NICs:        agent.SysNICs{},
		TPM:         agent.DeviceTPM{},
		Logger:      log,
		BeforeWrite: func(ctx context.Context) error { return beforeWrite(ctx, boot, say) },
	})
	if err != nil {
		s := agent.Screen{Kind: agent.ScreenProblem, Title: "PROBLEM - NOTHING WAS WRITTEN",
			Lead:  "Nothing was written to the stick.",
			Lines: []string{"Take the stick to the kiosk operator.", "Details: " + err.Error()}}
		banner(say, "PROBLEM", append([]string{s.Lead}, s.Lines...))
		return s, max(countdown, 30)
	}
	// The marker tests and scripts/bench-agent.sh time "boot to ledger
	// fsync" by: Append has returned, so the line and the directory are
	// fsynced.
	say("ledger: line %d (%s) written in %v, of which ME %v; init start to fsync %v, stick search %v; %s since boot", res.Record.Seq, res.Record.Case,
		res.Elapsed.Round(time.Millisecond), res.MEElapsed.Round(time.Millisecond), time.Since(initStart).Round(time.Millisecond),
		res.Started.Sub(findStart).Round(time.Millisecond), uptime())
	say("agent phases: %s", agent.PhasesString(res.Phases))
	scr := agent.ResultScreen(res)
	title := "DONE"
	if !res.OK {
		title = "ATTENTION"
	}
	banner(say, title, strings.Split(strings.TrimSpace(res.Message), "\n"))
	return scr, countdown
}

// beforeWrite prints the marker power-cut tests aim at and, with
// provstick.test.hold, waits for the test's go-ahead.
func beforeWrite(ctx context.Context, boot agent.Boot, say func(string, ...any)) error {
	if boot.Hold == "" {
		say("ledger: writing")
		return nil
	}
	port, err := heci.FindVirtioPort("/sys", "/dev", boot.Hold)
	if err != nil {
		return fmt.Errorf("finding the hold port: %w", err)
	}
	f, err := os.Open(port)
	if err != nil {
		return fmt.Errorf("opening the hold port: %w", err)
	}
	defer f.Close()
	say("ledger: holding before the write on %s", port)
	var b [1]byte
	for {
		n, err := f.Read(b[:])
		if n == 1 {
			break
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("waiting on the hold port: %w", err)
		}
		time.Sleep(10 * time.Millisecond) // EOF: nobody connected yet
	}
	say("ledger: writing")
	return ctx.Err()
}

// banner prints a block on the serial console (the technician's screen is
// the Console).
func banner(say func(string, ...any), title string, lines []string) {
	bar := strings.Repeat("=", 72)
	fmt.Fprintf(os.Stdout, "\n%s\n  %s\n%s\n", bar, title, bar)
	for _, l := range lines {
		fmt.Fprintf(os.Stdout, "  %s\n", l)
	}
	fmt.Fprintf(os.Stdout, "%s\n\n", bar)
	say("result: %s", title)
}

// agentConf is provstick/agent.json (the recipe's agent section).
type agentConf struct {
	// Countdown is the seconds before powering off; nil: 10.
	Countdown *int `json:"countdown"`
	// MEWait bounds the wait for the ME to answer (it may still be
	// resetting after the BIOS applied the record); nil: 30 s.
	MEWait *int `json:"me_wait"`
}

func readAgentConf(root string) agentConf {
	var c agentConf
	b, err := os.ReadFile(filepath.Join(root, "provstick", "agent.json"))
	if err == nil && len(b) < 64<<10 {
		json.Unmarshal(b, &c) //nolint:errcheck // a bad file means defaults
	}
	return c
}

func (c agentConf) countdown() int {
	if c.Countdown != nil && *c.Countdown >= 0 && *c.Countdown <= 3600 {
		return *c.Countdown
	}
	return 10
}

func (c agentConf) meWait() time.Duration {
	if c.MEWait != nil && *c.MEWait > 0 && *c.MEWait <= 600 {
		return time.Duration(*c.MEWait) * time.Second
	}
	return 30 * time.Second
}

func finish(boot agent.Boot, countdown int, con *agent.Console, say func(string, ...any)) {
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
		if con != nil {
			con.Footer(fmt.Sprintf("%s in %d s", verb, i))
		}
		time.Sleep(time.Second)
	}
	fmt.Fprintln(os.Stdout)
	if con != nil {
		con.Footer(verb + " now")
	}
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
		if err := finitModule(filepath.Join(moduleDir, name), moduleParams[moduleName(name)]); err != nil && !errors.Is(err, unix.EEXIST) {
			say("loading module %s: %v", name, err)
			failed++
			continue
		}
		loaded++
	}
	return loaded, failed
}

// moduleParams are the parameters the agent loads modules with.
// usb-storage waits delay_use seconds (default 1) after a device appears
// before scanning it, for old sticks that need settling; the stick has
// just been read by the firmware and boot loader, so it is settled, and
// the wait would be a second of every boot.
var moduleParams = map[string]string{"usb_storage": "delay_use=0"}

// moduleName turns the order file's "07-usb_storage.ko" into "usb_storage".
func moduleName(file string) string {
	n := strings.TrimSuffix(file, ".ko")
	if i := strings.IndexByte(n, '-'); i >= 0 && i < 4 {
		n = n[i+1:]
	}
	return strings.ReplaceAll(n, "-", "_")
}

func finitModule(path, params string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return unix.FinitModule(int(f.Fd()), params, 0)
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
