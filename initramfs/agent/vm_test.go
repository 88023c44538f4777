package agent

// TestVMAgent builds a stick image with the builder (default recipe, the
// real agent), consumes its first setup.bin record in place the way the
// BIOS does, boots it under QEMU (TCG, SeaBIOS legacy boot) with the ME
// simulator on a virtio-serial port, and reads the ledger line back from
// the image with mtools and with our reader.
//
// Guest view: the image is a USB stick (qemu-xhci + usb-storage, /dev/sda,
// FAT on /dev/sda1 labelled PROVSTICK); the simulator listens on a Unix
// socket in t.TempDir() that QEMU connects to as the chardev of a
// virtserialport named org.provstick.mei (/dev/vport*p1 in the guest); the
// kernel command line, extended here through the image's
// syslinux/syslinux.cfg, adds provstick.mei=virtio:org.provstick.mei and
// provstick.countdown=0. No TPM is attached: the ledger names it missing.
//
// Needs qemu-system-x86, mtools, syslinux, syslinux-common,
// systemd-boot-efi and the unpacked Debian kernel package that
// scripts/install-deps.sh puts in ${XDG_CACHE_HOME:-$HOME/.cache}/provstick/vm-kernel
// (VMTEST_KERNEL_DIR overrides it; VMTEST_QEMU the QEMU binary). Skipped
// with -short.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/provstick/provstick/builder"
	"github.com/provstick/provstick/internal/ledger"
	"github.com/provstick/provstick/setupbin"
	"github.com/provstick/provstick/setupbin/setupbintest"
)

func vmKernelDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("VMTEST_KERNEL_DIR")
	if dir == "" {
		cache, err := os.UserCacheDir()
		if err != nil {
			t.Fatal(err)
		}
		dir = filepath.Join(cache, "provstick", "vm-kernel")
	}
	if _, err := builder.FindKernel(dir); err != nil {
		t.Fatalf("%v (scripts/install-deps.sh unpacks one)", err)
	}
	return dir
}

func run(t *testing.T, name string, args ...string) []byte {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

// offsetFile addresses a file inside the image.
type offsetFile struct {
	f   *os.File
	off int64
}

func (o offsetFile) ReadAt(b []byte, off int64) (int, error)  { return o.f.ReadAt(b, o.off+off) }
func (o offsetFile) WriteAt(b []byte, off int64) (int, error) { return o.f.WriteAt(b, o.off+off) }
func (o offsetFile) Sync() error                              { return o.f.Sync() }

func TestVMAgent(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a VM under TCG; skipped with -short")
	}
	qemu := os.Getenv("VMTEST_QEMU")
	if qemu == "" {
		qemu = "qemu-system-x86_64"
	}
	if _, err := exec.LookPath(qemu); err != nil {
		t.Fatalf("%s not found (apt-get install qemu-system-x86): %v", qemu, err)
	}
	kdir := vmKernelDir(t)
	dir := t.TempDir()

	agentBin := filepath.Join(dir, "provstick-agent")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", agentBin, "./cmd/provstick-agent")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the agent: %v\n%s", err, out)
	}

	sb, psks := setupbintest.File(t, setupbintest.Options{Records: 3, Seed: 42})
	recipe, err := builder.LoadRecipe("../../images/default.yaml")
	if err != nil {
		t.Fatal(err)
	}
	b, err := builder.New(recipe, &builder.Options{KernelDir: kdir, Agent: agentBin, NoHash: true})
	if err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(dir, "stick.img")
	if _, err := b.Build(t.Context(), img, builder.Stick{ID: "vm-0001", SetupBin: sb, FirstRecord: 101}); err != nil {
		t.Fatal(err)
	}

	// The builder does not yet write provstick/pids.json; put it there
	// with mtools, and point the boot entry at the simulator.
	var pl pidList
	pl.Format = pidsFormat
	for _, p := range psks {
		pl.PIDs = append(pl.PIDs, p.PID.String())
	}
	pj, _ := json.Marshal(pl)
	os.WriteFile(filepath.Join(dir, "pids.json"), pj, 0o644)
	run(t, "mcopy", "-i", img+"@@1M", filepath.Join(dir, "pids.json"), "::provstick/pids.json")
	cfg := run(t, "mtype", "-i", img+"@@1M", "::syslinux/syslinux.cfg")
	cfg = bytes.Replace(cfg, []byte("  APPEND "), []byte("  APPEND provstick.mei=virtio:org.provstick.mei provstick.countdown=0 "), 1)
	os.WriteFile(filepath.Join(dir, "syslinux.cfg"), cfg, 0o644)
	run(t, "mcopy", "-o", "-i", img+"@@1M", filepath.Join(dir, "syslinux.cfg"), "::syslinux/syslinux.cfg")

	// Consume record 0 in place, the way the BIOS does: setup.bin is the
	// first file, contiguous, so its header is findable in the image.
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	whole, _ := io.ReadAll(f)
	at := bytes.Index(whole, sb[:setupbin.ChunkSize])
	if at < 0 {
		t.Fatal("setup.bin not found in the image")
	}
	if _, err := setupbin.Consume(offsetFile{f, int64(at)}, int64(len(sb))); err != nil {
		t.Fatal(err)
	}
	f.Close()

	// The machine.
	addr, dev := simulator(t, inSetup(t, psks[0].PID.String()))
	sock := strings.TrimPrefix(addr, "unix://")

	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	q := exec.CommandContext(ctx, qemu,
		"-nodefaults", "-display", "none", "-no-reboot", "-accel", "tcg", "-machine", "q35",
		"-m", "512", "-smp", "1", "-serial", "stdio", "-monitor", "none",
		"-device", "qemu-xhci,id=xhci",
		"-drive", "if=none,id=stick,format=raw,file="+img,
		"-device", "usb-storage,bus=xhci.0,drive=stick,bootindex=1",
		"-chardev", "socket,id=mei,path="+sock,
		"-device", "virtio-serial-pci",
		"-device", "virtserialport,chardev=mei,name=org.provstick.mei")
	var console bytes.Buffer
	var mu sync.Mutex
	pr, pw := io.Pipe()
	q.Stdout = pw
	q.Stderr = pw
	start := time.Now()
	if err := q.Start(); err != nil {
		t.Fatal(err)
	}
	var ledgerAt, readyAt time.Duration
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			mu.Lock()
			console.WriteString(sc.Text() + "\n")
			mu.Unlock()
			if strings.Contains(sc.Text(), "provstick: ready") && readyAt == 0 {
				readyAt = time.Since(start)
			}
			if strings.Contains(sc.Text(), "provstick: ledger:") && ledgerAt == 0 {
				ledgerAt = time.Since(start)
			}
		}
	}()
	err = q.Wait()
	pw.Close()
	<-done
	total := time.Since(start)
	mu.Lock()
	out := console.String()
	mu.Unlock()
	if err != nil || ledgerAt == 0 {
		t.Fatalf("QEMU: %v after %v; console:\n%s", err, total, out)
	}
	t.Logf("under TCG (SeaBIOS, USB stick): QEMU start to ready %.1f s, to ledger written %.1f s, to power-off %.1f s", readyAt.Seconds(), ledgerAt.Seconds(), total.Seconds())
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "provstick:") || strings.HasPrefix(l, "  ") {
			t.Log(l)
		}
	}

	// Read the line back with mtools and with our reader.
	raw := run(t, "mcopy", "-i", img+"@@1M", "::provstick/ledger.jsonl", "-")
	l, err := ledger.Read(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Records) != 1 || len(l.Findings) != 0 {
		t.Fatalf("ledger: %d records, findings %v\n%s", len(l.Records), l.Findings, raw)
	}
	r := l.Records[0]
	uuid := dev.State().UUID.String()
	if r.Case != ledger.CaseNormal || r.Record != 101 || r.PID != psks[0].PID.Display() || r.Stick != "vm-0001" {
		t.Errorf("record: case %s record %d PID %q stick %q; want normal 101 %q vm-0001", r.Case, r.Record, r.PID, r.Stick, psks[0].PID.Display())
	}
	if r.AMT == nil || r.AMT.UUID != uuid || r.AMT.AMTVersion != "11.8.50" {
		t.Errorf("AMT: %+v, want UUID %s", r.AMT, uuid)
	}
	if !hasMissing(r, "tpm") {
		t.Errorf("no TPM attached but not recorded missing: %v", r.Missing)
	}
	if !strings.Contains(out, "Remove the stick; the machine will say hello to the kiosk.") {
		t.Errorf("technician message not on the console")
	}
}
