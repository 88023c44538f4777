package cli

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/provstick/provstick/initramfs/heci/amthi"
	"github.com/provstick/provstick/internal/amtsim"
	"github.com/provstick/provstick/internal/stickimage"
	"github.com/provstick/provstick/internal/vm"
	"github.com/provstick/provstick/kiosk/web"
	"github.com/provstick/provstick/setupbin"
	"github.com/spf13/cobra"
)

func init() { register(newDemoCmd) }

type demoFlags struct {
	dir       string
	recipe    string
	kernelDir string
	agent     string
	records   int
	machines  int
	firmware  string
	exit      bool
	timeout   time.Duration
}

// The demo's isolated network: the kiosk answers DNS for this suffix (.test
// is reserved for testing, RFC 6761) and the simulated machines live on
// 127.0.1.x, each with AMT's own ports.
const (
	demoSuffix  = "demo.provstick.test"
	demoAMTNet  = "127.0.1.1"
	demoAMTVer  = "9.5.30"
	demoStick   = "demo-stick-1"
	demoProfile = "amt6-10"
)

// newDemoCmd is "provstick demo": the whole story a newcomer can run on one
// machine. Each step that a user would type is printed before it runs.
func newDemoCmd(e *env) *cobra.Command {
	var f demoFlags
	c := &cobra.Command{
		Use:   "demo",
		Short: "Run the provisioning story end to end on this machine",
		Long: `demo runs, in a new directory, what a site goes through, with an embedded
SQLite pool and simulators where hardware would be, printing every command a
user would type before it runs:

  1. fill a pool with fresh PID/PPS entries (encrypted at rest);
  2. build a bootable stick image with N records drawn from the pool
     (default recipe: UEFI and legacy BIOS boot);
  3. plug it into M simulated machines in turn: the BIOS consumes a record,
     the machine boots the stick in QEMU (swtpm as its TPM, the ME simulator
     on a virtio-serial port) and the agent writes the stick's ledger;
  4. start the kiosk (hello listener, DNS for provisionserver.` + demoSuffix + `)
     and read the returned stick's ledger;
  5. the simulated AMT devices, holding the PID/PPS their records gave them,
     find the kiosk through its DNS and say hello;
  6. the kiosk provisions them over TLS-PSK and WS-Management;
  7. print the pool's state, then keep the kiosk running until Ctrl-C
     (--exit stops at once).

QEMU uses KVM when /dev/kvm really works and TCG otherwise, and says which.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runDemo(cmd, e, &f) },
	}
	fl := c.Flags()
	fl.StringVar(&f.dir, "dir", "demo", "directory under which each run gets a new folder")
	fl.StringVar(&f.recipe, "recipe", filepath.Join("images", "default.yaml"), "stick recipe the demo copies")
	fl.StringVar(&f.kernelDir, "kernel-dir", "", "unpacked Debian linux-image package (default: as provstick build)")
	fl.StringVar(&f.agent, "agent", "", "static agent binary (default: as provstick build)")
	fl.IntVar(&f.records, "records", 10, "records on the demo stick")
	fl.IntVar(&f.machines, "machines", 3, "machines that take a record")
	fl.StringVar(&f.firmware, "firmware", "alternate", "firmware of the machines: uefi, bios or alternate (UEFI, BIOS, UEFI, …)")
	fl.BoolVar(&f.exit, "exit", false, "stop when the story is told instead of serving the kiosk until Ctrl-C")
	fl.DurationVar(&f.timeout, "timeout", 4*time.Minute, "give up on a machine's boot, or on provisioning, after this long")
	return c
}

// demoMachine is one simulated PC: what its BIOS took from the stick.
type demoMachine struct {
	n      int // 1-based
	uuid   amthi.UUID
	record int    // record number (1-based, as the ledger shows it)
	pid    string // display form
	rec    amtsim.SetupRecord
	fw     vm.Firmware
}

func runDemo(cmd *cobra.Command, e *env, f *demoFlags) error {
	ctx := cmd.Context()
	if f.machines < 1 || f.machines > f.records {
		return fmt.Errorf("flag --machines: invalid value %d (want 1 to --records %d)", f.machines, f.records)
	}
	if f.machines > 200 {
		return fmt.Errorf("flag --machines: invalid value %d (at most 200: each is a QEMU boot)", f.machines)
	}
	fws, err := demoFirmwares(f.firmware, f.machines)
	if err != nil {
		return err
	}
	recipeText, err := os.ReadFile(f.recipe)
	if err != nil {
		return fmt.Errorf("flag --recipe: %w (run the demo from the source tree, or give --recipe)", err)
	}
	started := time.Now()
	dir, err := filepath.Abs(filepath.Join(f.dir, "run-"+time.Now().UTC().Format("20060102-150405.000")))
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("making the demo directory: %w", err)
	}
	img := filepath.Join(dir, "stick.img")
	helloAddr, err := freeAddr("tcp")
	if err != nil {
		return err
	}
	dnsAddr, err := freeAddr("tcp+udp")
	if err != nil {
		return err
	}
	webAddr, err := freeAddr("tcp")
	if err != nil {
		return err
	}
	// The console's admin password, hashed into the configuration; the
	// password itself in a 0600 file next to it, as the demo passphrase.
	webPWBytes := make([]byte, 15)
	if _, err := rand.Read(webPWBytes); err != nil {
		return err
	}
	webPW := base64.RawURLEncoding.EncodeToString(webPWBytes)
	webHash, err := web.HashPassword(webPW)
	if err != nil {
		return err
	}
	webPWFile := filepath.Join(dir, "demo-web-password")
	if err := os.WriteFile(webPWFile, []byte(webPW+"\n"), 0o600); err != nil {
		return fmt.Errorf("writing the demo's console password: %w", err)
	}
	// The demo's own configuration: a pool next to it, unlocked by a
	// passphrase file (a real site keeps its passphrase elsewhere), and a
	// kiosk on loopback answering DNS for the demo suffix.
	cfgFile := filepath.Join(dir, "provstick.yaml")
	cfg := fmt.Sprintf(`version: 1
store:
  dsn: pool.db
  passphrase_file: demo-passphrase
  station: demo
kiosk:
  hello_listen: %s
  dns_listen: %s
  dns_suffixes: [%s]
  address: 127.0.0.1
  verify_delay: 500ms
  web:
    listen: %s
    hosts: [127.0.0.1, localhost]
    admin_password_hash: '%s'
`, helloAddr, dnsAddr, demoSuffix, webAddr, webHash)
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
		return fmt.Errorf("writing the demo configuration: %w", err)
	}
	pass := make([]byte, 18)
	if _, err := rand.Read(pass); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "demo-passphrase"), []byte(base64.RawURLEncoding.EncodeToString(pass)+"\n"), 0o600); err != nil {
		return fmt.Errorf("writing the demo passphrase: %w", err)
	}
	// The recipe, with the kernel command line pointing the agent at the
	// simulated ME (a real machine has /dev/mei0) and a short countdown.
	recipe := filepath.Join(dir, "demo-recipe.yaml")
	if err := os.WriteFile(recipe, []byte(demoRecipe(string(recipeText))), 0o600); err != nil {
		return fmt.Errorf("writing the demo recipe: %w", err)
	}
	out := e.stdout
	fmt.Fprintf(out, "provstick demo in %s\n(configuration %s; every step below is a command you can repeat)\n", dir, cfgFile)

	step := func(title string, args ...string) error {
		fmt.Fprintf(out, "\n==> %s\n$ provstick --config %s %s\n", title, cfgFile, strings.Join(args, " "))
		full := append([]string{"--config", cfgFile, "--log-level", e.cfg.Log.Level, "--log-format", e.cfg.Log.Format}, args...)
		if code := run(ctx, full, e.stdin, out, out); code != 0 {
			return &exitError{code: code, err: fmt.Errorf("demo step %q failed", title)}
		}
		return nil
	}

	// 1-2. Pool and stick.
	if err := step(fmt.Sprintf("1. A pool of %d fresh PID/PPS entries for AMT 6-10 machines", 2*f.records),
		"pool", "generate", "--count", fmt.Sprint(2*f.records), "--profile", demoProfile); err != nil {
		return err
	}
	build := []string{"build", "--recipe", recipe, "--stick", demoStick, "--records", fmt.Sprint(f.records), "--profile", demoProfile, "-o", img}
	if f.kernelDir != "" {
		build = append(build, "--kernel-dir", f.kernelDir)
	}
	if f.agent != "" {
		build = append(build, "--agent", f.agent)
	}
	if err := step(fmt.Sprintf("2. A bootable stick %s with %d records drawn from the pool (UEFI and legacy BIOS)", demoStick, f.records), build...); err != nil {
		return err
	}

	// 3. Machines.
	qemu := "qemu-system-x86_64"
	accel := vm.Probe(ctx, qemu)
	how := "TCG (software emulation: /dev/kvm is missing or does not run guests here)"
	if accel == "kvm" {
		how = "KVM"
	}
	fmt.Fprintf(out, "\n==> 3. The stick goes into %d machines in turn; QEMU runs them with %s\n", f.machines, how)
	machines := make([]demoMachine, 0, f.machines)
	for i := 1; i <= f.machines; i++ {
		m, err := demoBoot(ctx, e, f, dir, img, cfgFile, i, fws[i-1], accel, step)
		if err != nil {
			return err
		}
		machines = append(machines, m)
	}
	if err := step("   The stick's ledger: which record went to which machine", "ledger", "show", img); err != nil {
		return err
	}

	// 4-6. Kiosk, hellos, provisioning.
	fmt.Fprintf(out, "\n==> 4. The kiosk: hellos on %s, DNS for provisionserver.%s on %s, web console on %s\n$ provstick --config %s kiosk serve --web-listen %s\n", helloAddr, demoSuffix, dnsAddr, webAddr, cfgFile, webAddr)
	kctx, kstop := context.WithCancel(ctx)
	defer kstop()
	kout := newLineWatch(out, "   kiosk | ")
	kdone := make(chan int, 1)
	go func() {
		kdone <- run(kctx, []string{"--config", cfgFile, "--log-level", "warn", "kiosk", "serve", "--web-listen", webAddr}, nil, kout, kout)
	}()
	if err := kout.waitFor(ctx, kdone, "kiosk: web console on", 30*time.Second); err != nil {
		return err
	}
	if err := step("   The returned stick's ledger goes into the kiosk: records ↔ machines", "ledger", "import", img); err != nil {
		return err
	}
	who := fmt.Sprintf("The %d machines are", f.machines)
	if f.machines == 1 {
		who = "The machine is"
	}
	fmt.Fprintf(out, "\n==> 5. %s powered on again without the stick: AMT looks up provisionserver.%s through the kiosk's DNS and says hello\n", who, demoSuffix)
	fleet, err := demoFleet(ctx, e, machines, helloAddr, dnsAddr)
	if err != nil {
		return err
	}
	defer fleet.Close()
	for i, m := range fleet.Machines {
		fmt.Fprintf(out, "   machine %d: AMT %s, UUID %s, on %s, PID %s (record %d of the stick)\n", i+1, demoAMTVer, machines[i].uuid, m.TLSAddr, machines[i].pid, machines[i].record)
	}
	fmt.Fprintf(out, "\n==> 6. The kiosk provisions them: TLS-PSK with each PID/PPS, WS-Management, a certificate from the kiosk CA, new admin passwords\n")
	pctx, pcancel := context.WithTimeout(ctx, f.timeout)
	err = kout.waitCount(pctx, kdone, "provisioned ", f.machines)
	pcancel()
	if err != nil {
		return fmt.Errorf("provisioning the demo machines: %w", err)
	}

	// 7. The books.
	if err := step("7. Reconciliation: what does not add up (machines that took a record but never said hello, copied sticks, …)", "ledger", "discrepancies"); err != nil {
		return err
	}
	if err := step("   The pool now: entries by state", "pool", "status"); err != nil {
		return err
	}
	fmt.Fprintf(out, "\nThe story took %v. Files are in %s: the pool (pool.db, secrets encrypted with demo-passphrase), the stick image with its ledger, and each machine's console log.\n",
		time.Since(started).Round(time.Second), dir)
	if f.exit {
		kstop()
		<-kdone
		return nil
	}
	fmt.Fprintf(out, "The kiosk keeps running (hellos on %s, DNS on %s). Its web console is at https://%s/ (certificate from the kiosk CA; user admin, password in %s). Ctrl-C stops it.\n", helloAddr, dnsAddr, webAddr, webPWFile)
	select {
	case <-ctx.Done():
	case <-kdone:
		return errors.New("the kiosk stopped")
	}
	kstop()
	<-kdone
	return nil
}

// demoFirmwares returns the firmware of each machine.
func demoFirmwares(s string, n int) ([]vm.Firmware, error) {
	fws := make([]vm.Firmware, n)
	for i := range fws {
		switch s {
		case "uefi":
			fws[i] = vm.UEFI
		case "bios":
			fws[i] = vm.BIOS
		case "alternate":
			fws[i] = []vm.Firmware{vm.UEFI, vm.BIOS}[i%2]
		default:
			return nil, fmt.Errorf("flag --firmware: invalid value %q (want uefi, bios or alternate)", s)
		}
	}
	return fws, nil
}

var cmdlineRE = regexp.MustCompile(`(?m)^(\s*cmdline:\s*)(.*)$`)
var countdownRE = regexp.MustCompile(`(?m)^(\s*countdown:\s*)\d+\s*$`)

// demoRecipe adapts a recipe for simulated machines: the agent talks to
// the ME simulator on the virtio-serial port and counts down 3 s.
func demoRecipe(r string) string {
	r = cmdlineRE.ReplaceAllString(r, "${1}${2} provstick.mei=virtio:org.provstick.mei")
	r = countdownRE.ReplaceAllString(r, "${1}3")
	return "# provstick demo: " + "a copy of the recipe with the agent pointed at the simulated ME.\n" + r
}

// demoBoot is machine n's turn with the stick: its BIOS consumes the next
// record (what the ME then holds is read first, as the ME would), and the
// machine boots the stick, whose agent writes the ledger.
func demoBoot(ctx context.Context, e *env, f *demoFlags, dir, img, cfgFile string, n int, fw vm.Firmware, accel string,
	step func(string, ...string) error) (demoMachine, error) {
	out := e.stdout
	m := demoMachine{n: n, fw: fw, uuid: amtsim.DefaultState().UUID}
	binary.BigEndian.PutUint32(m.uuid[12:16], uint32(n))
	rec, idx, pid, err := demoNextRecord(img)
	if err != nil {
		return m, err
	}
	m.rec, m.record, m.pid = rec, idx+1, pid
	if err := step(fmt.Sprintf("3.%d. Machine %d (%s) powers on with the stick: its BIOS takes the next record into the ME", n, n, fw), "setupbin", "consume", img); err != nil {
		return m, err
	}
	// The ME now holds the PID/PPS: AMT is in setup, PSK mode.
	st := amtsim.DefaultState()
	st.UUID, st.AMTVersion = m.uuid, demoAMTVer
	st.ProvisioningState, st.ProvisioningMode, st.TLSMode = amthi.StateIn, amthi.ModeEnterprise, amthi.TLSModePSK
	st.PID = rec.PID
	sock := filepath.Join(dir, fmt.Sprintf("me-%d.sock", n))
	ln, err := amtsim.Listen("unix://" + sock)
	if err != nil {
		return m, err
	}
	me := amtsim.NewMEServer(amtsim.NewDevice(st), &amtsim.MEOptions{Logger: e.log})
	mctx, mcancel := context.WithCancel(ctx)
	defer mcancel()
	go func() { _ = me.Serve(mctx, ln) }()
	defer me.Close()
	tpm, err := vm.StartTPM(ctx, filepath.Join(dir, fmt.Sprintf("tpm-%d", n)))
	if err != nil {
		return m, err
	}
	defer tpm.Stop()

	logf, err := os.Create(filepath.Join(dir, fmt.Sprintf("machine-%d-console.log", n)))
	if err != nil {
		return m, err
	}
	defer logf.Close()
	o := vm.Options{Image: img, Firmware: fw, Accel: accel, MESocket: sock, TPMSocket: tpm.Socket, WorkDir: dir, Logger: e.log}
	var mu sync.Mutex
	agent := false
	o.Console = func(l string) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintln(logf, l)
		if strings.Contains(l, "provstick: ready") {
			agent = true
		}
		if agent && strings.TrimSpace(l) != "" {
			fmt.Fprintf(out, "   machine %d | %s\n", n, l)
		}
	}
	fmt.Fprintf(out, "\n   Machine %d boots the stick (%s, swtpm, the ME simulator on virtio-serial):\n$ qemu-system-x86_64 %s\n",
		n, fw, strings.Join(vm.Args(o, filepath.Join(dir, "OVMF_VARS.fd")), " "))
	bctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	mach, err := vm.Start(bctx, o)
	if err != nil {
		return m, err
	}
	// Progress until the agent speaks: firmware, boot loader and kernel
	// print nothing here for several seconds under TCG.
	booted := make(chan struct{})
	go func() {
		start := time.Now()
		t := time.NewTicker(3 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-booted:
				return
			case <-t.C:
				mu.Lock()
				if !agent {
					fmt.Fprintf(out, "   machine %d: %s %2.0f s (firmware, boot loader, kernel)\n", n, demoBar(time.Since(start), 15*time.Second), time.Since(start).Seconds())
				}
				done := agent
				mu.Unlock()
				if done {
					return
				}
			}
		}
	}()
	ledgerAt, err := mach.WaitFor(bctx, "provstick: ledger: line")
	close(booted)
	if err != nil {
		mach.Kill()
		return m, fmt.Errorf("machine %d: the agent wrote no ledger line: %w (console in %s)", n, err, logf.Name())
	}
	total, err := mach.Wait(bctx)
	if err != nil {
		mach.Kill()
		return m, fmt.Errorf("machine %d: did not power off: %w", n, err)
	}
	fmt.Fprintf(out, "   machine %d: ledger written %.1f s after power-on, powered off after %.1f s\n", n, ledgerAt.Seconds(), total.Seconds())
	return m, nil
}

// demoBar draws a progress bar of done against an expected duration (full
// at or past it).
func demoBar(done, expected time.Duration) string {
	const width = 20
	k := min(width, int(float64(width)*done.Seconds()/expected.Seconds()))
	return "[" + strings.Repeat("#", k) + strings.Repeat(" ", width-k) + "]"
}

// demoNextRecord reads the record the BIOS will take next from the stick
// image: its PID, PPS and MEBx password are what the ME will hold.
func demoNextRecord(img string) (rec amtsim.SetupRecord, index int, pid string, err error) {
	fl, err := os.Open(img)
	if err != nil {
		return rec, 0, "", err
	}
	defer fl.Close()
	fi, err := fl.Stat()
	if err != nil {
		return rec, 0, "", err
	}
	ext, err := stickimage.Locate(fl, fi.Size())
	if err != nil {
		return rec, 0, "", fmt.Errorf("finding setup.bin in %s: %w", img, err)
	}
	r, err := setupbin.NewReader(io.NewSectionReader(fl, ext.Offset, ext.Size), ext.Size)
	if err != nil {
		return rec, 0, "", fmt.Errorf("reading setup.bin in %s: %w", img, err)
	}
	i := int(r.Header.Consumed)
	if i >= len(r.Records) {
		return rec, 0, "", fmt.Errorf("%s: no records left (%d consumed)", img, i)
	}
	p, err := r.Records[i].PSK()
	if err != nil {
		return rec, 0, "", fmt.Errorf("%s record %d: %w", img, i, err)
	}
	rec = amtsim.SetupRecord{PID: p.PID.String(), PPS: amtsim.NewSecret(p.PPS.Reveal()), DNSSuffix: p.DomainName}
	if p.NewPassword != "" {
		rec.MEBxPassword = amtsim.NewSecret(p.NewPassword.Reveal())
	}
	return rec, i, p.PID.Display(), nil
}

// demoFleet starts the network side of the machines, each on its own
// loopback address with AMT's ports, finding the kiosk through its DNS.
func demoFleet(ctx context.Context, e *env, ms []demoMachine, helloAddr, dnsAddr string) (*amtsim.Fleet, error) {
	_, hp, err := net.SplitHostPort(helloAddr)
	if err != nil {
		return nil, err
	}
	var port int
	if _, err := fmt.Sscan(hp, &port); err != nil {
		return nil, err
	}
	recs := make([]amtsim.SetupRecord, len(ms))
	for i, m := range ms {
		recs[i] = m.rec
	}
	base := amtsim.DefaultState()
	base.AMTVersion = demoAMTVer
	// The kiosk tells the story; the machines' own lines only at debug.
	var fleetLog *slog.Logger
	if e.log.Enabled(ctx, slog.LevelDebug) {
		fleetLog = e.log
	}
	return amtsim.StartFleet(ctx, amtsim.FleetOptions{
		Devices: len(ms), Base: base, Records: recs, Host: demoAMTNet, PerAddress: true,
		Net: amtsim.NetOptions{
			Logger:         fleetLog,
			CommitDowntime: 200 * time.Millisecond,
			Hello:          amtsim.HelloOptions{DNSServer: dnsAddr, Domain: demoSuffix, Port: port, TimeScale: 60},
		},
	})
}

// freeAddr returns a free loopback address for network "tcp", or
// "tcp+udp" for a port free for both (DNS serves both).
func freeAddr(network string) (string, error) {
	for range 50 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return "", fmt.Errorf("finding a free port: %w", err)
		}
		addr := l.Addr().String()
		if network == "tcp" {
			l.Close()
			return addr, nil
		}
		c, err := net.ListenPacket("udp", addr)
		l.Close()
		if err == nil {
			c.Close()
			return addr, nil
		}
	}
	return "", errors.New("finding a port free for both TCP and UDP: none in 50 tries")
}

// lineWatch copies a command's output line by line with a prefix and lets
// the demo wait for lines.
type lineWatch struct {
	out    io.Writer
	prefix string
	mu     sync.Mutex
	buf    []byte
	lines  []string
	notify chan struct{}
}

func newLineWatch(out io.Writer, prefix string) *lineWatch {
	return &lineWatch{out: out, prefix: prefix, notify: make(chan struct{}, 1)}
}

func (w *lineWatch) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	sc := bufio.NewScanner(strings.NewReader(string(w.buf)))
	consumed := 0
	for sc.Scan() {
		if consumed+len(sc.Bytes()) >= len(w.buf) || w.buf[consumed+len(sc.Bytes())] != '\n' {
			break // a partial last line waits for its newline
		}
		consumed += len(sc.Bytes()) + 1
		l := sc.Text()
		w.lines = append(w.lines, l)
		fmt.Fprintf(w.out, "%s%s\n", w.prefix, l)
	}
	w.buf = w.buf[consumed:]
	select {
	case w.notify <- struct{}{}:
	default:
	}
	return len(p), nil
}

func (w *lineWatch) count(substr string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, l := range w.lines {
		if strings.Contains(l, substr) {
			n++
		}
	}
	return n
}

// waitCount waits until n lines contain substr; done reports the
// command's end (its exit code).
func (w *lineWatch) waitCount(ctx context.Context, done chan int, substr string, n int) error {
	for w.count(substr) < n {
		select {
		case <-w.notify:
		case code := <-done:
			done <- code
			return fmt.Errorf("the command ended (exit %d) before %d lines with %q", code, n, substr)
		case <-ctx.Done():
			return fmt.Errorf("%d of %d lines with %q: %w", w.count(substr), n, substr, ctx.Err())
		}
	}
	return nil
}

func (w *lineWatch) waitFor(ctx context.Context, done chan int, substr string, d time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	return w.waitCount(ctx, done, substr, 1)
}
