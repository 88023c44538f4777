package main

import (
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
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
	loaded, failed, skipped, nics := loadModules(say, false)
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

	// NIC drivers are packed only for check_kiosk: start the check's
	// link and DHCP now, while the stick is searched for and the ME
	// asked (autonegotiation alone takes seconds); work configures it
	// from agent.json, or stops it.
	var kiosk *agent.KioskCheck
	if nics > 0 {
		kiosk = &agent.KioskCheck{Net: agent.LinkNetwork{Logger: log}, Timeout: agent.MaxKioskTimeout, Logger: log}
		kiosk.Start(context.Background())
	}
	scr, countdown := work(start, boot, skipped, kiosk, log, say)
	unix.Sync()
	if con != nil {
		scr.Footer = footer(boot, countdown)
		con.Draw(scr)
		if c := con.QRCode(); c != nil {
			cols, rows := con.Size()
			say("qr: %s, on a %dx%d console", c, cols, rows)
		} else if scr.QR != nil {
			cols, rows := con.Size()
			say("qr: no form fits the %dx%d console; the screen says so", cols, rows)
		}
		say("screen drawn")
	}
	if os.Getpid() != 1 {
		return
	}
	finish(boot, countdown, con, say)
}

// work finds the stick, runs the agent and prints the result; it returns
// the technician's screen and the countdown to use.
func work(initStart time.Time, boot agent.Boot, skipped []string, kiosk *agent.KioskCheck, log *slog.Logger, say func(string, ...any)) (agent.Screen, int) {
	countdown := boot.Countdown
	// Ask the machine (ME, DMI, NICs, TPM) while the USB stick is still
	// being enumerated; the ME's wait is bounded below once agent.json
	// has said how long it may be.
	mcfg := agent.Config{MEAddress: boot.MEAddress, METimeout: 10 * time.Minute, DMI: agent.SysDMI{}, NICs: agent.SysNICs{}, TPM: agent.DeviceTPM{}, Logger: log}
	mctx, mcancel := context.WithCancel(context.Background())
	defer mcancel()
	machine := make(chan *agent.Machine, 1)
	go func() { machine <- agent.CollectMachine(mctx, mcfg) }()
	findStart := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), findTimeout)
	defer cancel()
	first := ctx
	if len(skipped) > 0 {
		var c2 context.CancelFunc
		first, c2 = context.WithTimeout(ctx, findTimeout/4)
		defer c2()
	}
	root, man, err := agent.FindStick(first, mountDir, log)
	if err != nil && len(skipped) > 0 && ctx.Err() == nil {
		say("stick not found yet; loading the %d modules left out: %s", len(skipped), strings.Join(skipped, " "))
		loadSkipped(skipped, say)
		root, man, err = agent.FindStick(ctx, mountDir, log)
	}
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
	conf, confErr := agent.ReadConf(root)
	if confErr != nil {
		say("%v; using the defaults, no activation", confErr)
		conf = &agent.Conf{}
	}
	if countdown < 0 {
		countdown = conf.CountdownSeconds()
	}
	say("stick %s found in %v", man.Stick, time.Since(findStart).Round(time.Millisecond))
	// Run finishes the kiosk check once the ME has said which DNS
	// suffix it has.
	switch {
	case conf.CheckKiosk != nil && kiosk != nil:
		kiosk.Configure(conf.CheckKiosk)
		say("kiosk check: started at init, at most %v", kiosk.Timeout)
	case conf.CheckKiosk != nil:
		kiosk = agent.NewKioskCheck(agent.LinkNetwork{Logger: log}, conf.CheckKiosk, log)
		kiosk.Start(context.Background())
		say("kiosk check: no NIC driver loaded at init; trying anyway, at most %v", kiosk.Timeout)
	case kiosk != nil:
		kiosk.Stop()
		kiosk = nil
	}
	var m *agent.Machine
	select {
	case m = <-machine:
	case <-time.After(time.Until(findStart.Add(conf.MEWaitDuration()))):
		say("the ME did not answer within %v (agent.json me_wait); going on without it", conf.MEWaitDuration())
		mcancel()
		m = <-machine
	}
	res, err := agent.Run(context.Background(), agent.Config{
		Root:        root,
		MEAddress:   boot.MEAddress,
		Machine:     m,
		Activate:    conf.Activation(),
		ConfErr:     confErr,
		KioskCheck:  kiosk,
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
	if k := res.Record.KioskCheck; k != nil {
		say("kiosk check: %s in %d ms: interface %s, lease %s, DNS %s, domain %s (%s), %s -> %s %s", k.Result, k.ElapsedMS, k.Interface, k.Address,
			k.DNS, k.Domain, k.DomainSource, k.Name, k.Kiosk, k.Error)
	}
	if a := res.Record.Activation; a != nil {
		say("activation: %s (control mode %s, state %s, %d ms) %s", a.Result, a.ControlMode, a.ProvisioningState, a.ElapsedMS, a.Error)
	}
	say("agent phases: %s; machine (during the stick search): %s", agent.PhasesString(res.Phases), agent.PhasesString(m.Phases))
	scr := agent.ResultScreen(res)
	if conf.QR {
		if q, err := agent.QRFor(res.Record, res.Sum); err != nil {
			say("qr: %v", err)
		} else {
			scr.QR = q
		}
	}
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

// footer is the countdown line drawn with the result.
func footer(boot agent.Boot, countdown int) string {
	switch {
	case boot.After == "wait":
		return "You may switch the machine off."
	case boot.After == "reboot":
		return fmt.Sprintf("Rebooting in %d s", countdown)
	}
	return fmt.Sprintf("Powering off in %d s", countdown)
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
// already has (EEXIST) counts as loaded. A host-controller or virtio
// driver for hardware the machine does not have (hardwareGated) is left
// out and returned in skipped, to be loaded after all if the stick does
// not show up: each module costs a signature check and relocation, which
// under emulation is tens of milliseconds.
func loadModules(say func(string, ...any), all bool) (loaded, failed int, skipped []string, nics int) {
	b, err := os.ReadFile(moduleOrder)
	if err != nil {
		say("no module list: %v", err)
		return 0, 0, nil, 0
	}
	present := pciPresent()
	var files []string
	for _, name := range strings.Split(string(b), "\n") {
		name = strings.TrimSpace(name)
		if name == "" || strings.Contains(name, "/") {
			continue
		}
		if gate, ok := hardwareGated[moduleName(name)]; ok && !all && !present(gate) {
			skipped = append(skipped, name)
			continue
		}
		files = append(files, name)
	}
	res := loadParallel(files)
	slowest := slices.Clone(res)
	slices.SortFunc(slowest, func(a, b modResult) int { return int(b.took - a.took) })
	var parts []string
	for _, m := range slowest[:min(4, len(slowest))] {
		parts = append(parts, fmt.Sprintf("%s %v", m.name, m.took.Round(time.Millisecond)))
	}
	for _, r := range res {
		if r.err != nil {
			say("loading module %s: %v", r.name, r.err)
			failed++
		} else {
			loaded++
			if hardwareGated[r.name] == "c:020000" || r.name == "virtio_net" {
				nics++
			}
		}
	}
	if len(parts) > 0 {
		say("modules: slowest %s; left out (no such hardware) %d", strings.Join(parts, ", "), len(skipped))
	}
	return loaded, failed, skipped, nics
}

type modResult struct {
	name string
	took time.Duration
	err  error
}

// loadParallel loads the modules in files (order-file names), each as
// soon as the modules it depends on (its .modinfo "depends=") are in, so
// that one driver's probe (xhci_pci resets its controller) overlaps
// another's loading. A module whose dependency failed is still tried
// (the dependency may be built in).
func loadParallel(files []string) []modResult {
	done := map[string]chan struct{}{}
	for _, f := range files {
		done[moduleName(f)] = make(chan struct{})
	}
	res := make([]modResult, len(files))
	var wg sync.WaitGroup
	for i, f := range files {
		name := moduleName(f)
		deps := moduleDeps(filepath.Join(moduleDir, f))
		wg.Go(func() {
			defer close(done[name])
			for _, d := range deps {
				if ch, ok := done[d]; ok && d != name {
					<-ch
				}
			}
			t0 := time.Now()
			err := finitModule(filepath.Join(moduleDir, f), moduleParams[name])
			if errors.Is(err, unix.EEXIST) {
				err = nil
			}
			res[i] = modResult{name, time.Since(t0), err}
		})
	}
	wg.Wait()
	return res
}

// moduleDeps reads "depends=a,b" from a module's .modinfo section; an
// unreadable module has none (finit_module will say what is wrong).
func moduleDeps(path string) []string {
	f, err := elf.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	sec := f.Section(".modinfo")
	if sec == nil || sec.Size > 1<<20 {
		return nil
	}
	b, err := sec.Data()
	if err != nil {
		return nil
	}
	for _, kv := range strings.Split(string(b), "\x00") {
		if v, ok := strings.CutPrefix(kv, "depends="); ok {
			var deps []string
			for _, d := range strings.Split(v, ",") {
				if d = strings.TrimSpace(d); d != "" {
					deps = append(deps, strings.ReplaceAll(d, "-", "_"))
				}
			}
			return deps
		}
	}
	return nil
}

// loadSkipped loads the modules loadModules left out.
func loadSkipped(names []string, say func(string, ...any)) {
	for _, name := range names {
		if err := finitModule(filepath.Join(moduleDir, name), moduleParams[moduleName(name)]); err != nil && !errors.Is(err, unix.EEXIST) {
			say("loading module %s: %v", name, err)
		}
	}
}

// hardwareGated maps leaf driver modules to the PCI devices they drive:
// "c:0c0330" a class code (xHCI), "v:1af4" a vendor (virtio).
var hardwareGated = map[string]string{
	"xhci_pci":       "c:0c0330",
	"ehci_pci":       "c:0c0320",
	"ehci_hcd":       "c:0c0320", // only ehci_pci needs it here
	"ohci_pci":       "c:0c0310",
	"ohci_hcd":       "c:0c0310", // only ohci_pci needs it here
	"uhci_hcd":       "c:0c0300",
	"virtio_pci":     "v:1af4",
	"virtio_console": "v:1af4",
	// NIC drivers, packed only when the recipe enables check_kiosk.
	"e1000e":     "c:020000",
	"igb":        "c:020000",
	"e1000":      "c:020000",
	"r8169":      "c:020000",
	"realtek":    "v:10ec", // r8169's PHY driver
	"virtio_net": "v:1af4",
}

// pciPresent reads /sys/bus/pci/devices once; the returned function
// reports whether a device matches a hardwareGated value. If sysfs cannot
// be read, everything is present.
func pciPresent() func(string) bool {
	ents, err := os.ReadDir("/sys/bus/pci/devices")
	if err != nil || len(ents) == 0 {
		return func(string) bool { return true }
	}
	have := map[string]bool{}
	for _, e := range ents {
		dir := filepath.Join("/sys/bus/pci/devices", e.Name())
		if b, err := os.ReadFile(filepath.Join(dir, "class")); err == nil {
			have["c:"+strings.TrimPrefix(strings.TrimSpace(string(b)), "0x")] = true
		}
		if b, err := os.ReadFile(filepath.Join(dir, "vendor")); err == nil {
			have["v:"+strings.TrimPrefix(strings.TrimSpace(string(b)), "0x")] = true
		}
	}
	return func(k string) bool { return have[k] }
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
