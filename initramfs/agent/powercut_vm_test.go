package agent

// TestVMPowerCut cuts the power (SIGKILL of the QEMU process the test
// started) at random points around the agent's ledger write, then checks
// that the ledger on the stick still has every line written before, and
// at most one torn last line, which the reader flags.
//
// Booting for every cut would cost ~30 s under TCG, so the machine boots
// once (SeaBIOS, ME simulator, a stick whose ledger already holds two
// lines) with provstick.test.hold=org.provstick.hold: the agent stops just
// before ledger.Append and waits for a byte on that virtio-serial port.
// There the test stops the VM, saves its state with the monitor's migrate
// to a file, and copies the disk image (consistent: QEMU drains I/O on
// stop). Each run then starts a real QEMU from that state (-incoming) on
// its own copy of the image, sends the go-ahead byte, waits a random time
// in [0, 1.5·T] (T is the write's duration measured by an uncut run, and
// narrowed by the runs whose line was complete before their cut) and
// SIGKILLs QEMU. The image's partition is copied, repaired with
// fsck.fat -a (as a technician's PC might), and the ledger read back with
// mtools and our reader.
//
// PROVSTICK_POWERCUT_RUNS sets the number of cuts (default 20, the issue's
// count: one boot plus 20 resumed QEMUs took 76 s under TCG at load 8-11
// on 2 cores, each cut 2-8 s). Needs what TestVMAgent needs, and
// dosfstools. Skipped with -short.

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/provstick/provstick/internal/ledger"
	"github.com/provstick/provstick/internal/soak"
)

// partOff is where the builder's one partition starts (1 MiB).
const partOff = 1 << 20

func TestVMPowerCut(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a VM under TCG; skipped with -short")
	}
	runs := 20
	if v := os.Getenv("PROVSTICK_POWERCUT_RUNS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 500 {
			t.Fatalf("PROVSTICK_POWERCUT_RUNS=%q: want 1 to 500", v)
		}
		runs = n
	}
	dir := t.TempDir()
	s := buildStick(t, dir, 5, 1, "provstick.mei=virtio:org.provstick.mei provstick.test.hold=org.provstick.hold provstick.countdown=0")

	// Two lines written before, by our library, as earlier boots would.
	seedFile := filepath.Join(dir, "seed.jsonl")
	for i := 1; i <= 2; i++ {
		c := uint32(i)
		if err := ledger.Append(seedFile, &ledger.Record{Seq: uint64(i), Time: time.Now().UTC(), Stick: s.id, Case: ledger.CaseNormal,
			Consumed: c, Record: i, Index: i - 1, PID: s.psks[i-1].PID.Display(), Agent: Version}); err != nil {
			t.Fatal(err)
		}
	}
	seed, _ := os.ReadFile(seedFile)
	s.put(t, ledger.FileName, seed)
	s.consume(t, 3)

	// Boot once, up to the hold, and save the machine there.
	m := newMachine(t, "powercut", 0xC0, s.psks[2].PID.String(), false)
	holding := make(chan struct{}, 1)
	v := startVM(t, vmOpts{m: m, img: s.img, extra: holdArgs(filepath.Join(dir, "hold0.sock")), onLine: func(v *vm, line string) {
		if strings.Contains(line, "provstick: ledger: holding") {
			select {
			case holding <- struct{}{}:
			default:
			}
		}
	}})
	exited := make(chan error, 1)
	go func() { exited <- v.wait() }()
	select {
	case <-holding:
	case err := <-exited:
		t.Fatalf("QEMU exited before the hold: %v\n%s", err, v.output())
	}
	booted := time.Since(v.start)
	state := filepath.Join(dir, "vm.state")
	base := filepath.Join(dir, "base.img")
	if out, err := v.monitor("stop"); err != nil {
		t.Fatalf("stop: %v %s", err, out)
	}
	if out, err := v.monitor(fmt.Sprintf(`migrate "exec:cat > %s"`, state)); err != nil {
		t.Fatalf("migrate: %v %s", err, out)
	}
	for i := 0; ; i++ {
		out, err := v.monitor("info migrate")
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(out, "Migration status: completed") {
			break
		}
		if strings.Contains(out, "failed") || i > 600 {
			t.Fatalf("saving the VM state: %s", out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	copyFile(t, s.img, base)
	v.cmd.Process.Signal(syscall.SIGKILL)
	<-exited
	st, _ := os.Stat(state)
	t.Logf("booted to the hold in %.1f s; state saved (%d MiB)", booted.Seconds(), st.Size()>>20)

	// An uncut run: the write's duration, and the line it writes.
	res := resume(t, dir, "calibrate", base, state, -1)
	if res.writeTime <= 0 {
		t.Fatalf("the uncut run did not write its line:\n%s", res.console)
	}
	_, l := checkCut(t, res.img, seed)
	if len(l.Records) != 3 || l.Last().Case != ledger.CaseNormal || l.Last().Record != 3 || l.Last().AMT == nil {
		t.Fatalf("uncut run: %d records, last %+v", len(l.Records), l.Last())
	}
	window := res.writeTime * 3 / 2
	t.Logf("uncut run: go-ahead to ledger fsync %v (resume took %v); cutting in [0, %v]", res.writeTime.Round(time.Millisecond), res.resumeTime.Round(time.Millisecond), window.Round(time.Millisecond))

	outcomes := map[string]int{}
	start := time.Now()
	for i := range runs {
		jitter := time.Duration(rand.Int64N(int64(window) + 1))
		r := resume(t, dir, fmt.Sprintf("cut%02d", i), base, state, jitter)
		fsckOut, l := checkCut(t, r.img, seed)
		o := "no new line"
		switch {
		case l.TornTail:
			o = "torn last line, flagged"
		case len(l.Records) == 3:
			o = "new line complete"
		}
		if r.writeTime > 0 && len(l.Records) != 3 {
			t.Errorf("cut %d: the agent reported the line fsynced %v after the go-ahead, before the cut at %v, but it is not on the stick", i, r.writeTime, jitter)
		}
		// Aim better: a run that finished before its cut shows how long
		// the write took this time (the host's load changes it).
		if r.writeTime > 0 && r.writeTime < window*2/3 {
			window = (window + r.writeTime*3/2) / 2
		}
		outcomes[o]++
		t.Logf("cut %2d at %4dms after the go-ahead: %s; fsck.fat: %s", i, jitter.Milliseconds(), o, fsckOut)
		os.Remove(r.img)
	}
	t.Logf("%d cuts in %.1f s: %v; load average %s", runs, time.Since(start).Seconds(), outcomes, loadAvg())
	// For make soak: every cut above checked that the earlier lines are
	// intact (the test stops at the first that is not), so none was lost.
	if err := soak.Report(soak.Result{Loop: "agent power cut", Runs: runs, Faults: runs, Note: fmt.Sprint(outcomes)}); err != nil {
		t.Error(err)
	}
}

func holdArgs(sock string) []string {
	return []string{"-chardev", "socket,id=hold,path=" + sock + ",server=on,wait=off",
		"-device", "virtserialport,chardev=hold,name=org.provstick.hold"}
}

type resumeResult struct {
	img                   string
	writeTime, resumeTime time.Duration // go-ahead → "ledger: line" (0: not seen); QEMU start → running
	console               string
}

// resume starts QEMU from the saved state on a copy of base, gives the
// agent its go-ahead and, if cut ≥ 0, SIGKILLs QEMU cut after it; else
// waits for the agent to power off.
func resume(t *testing.T, dir, name, base, state string, cut time.Duration) resumeResult {
	t.Helper()
	img := filepath.Join(dir, name+".img")
	copyFile(t, base, img)
	hold := filepath.Join(dir, name+".sock")
	v := startVM(t, vmOpts{img: img, timeout: 3 * time.Minute,
		extra: append(holdArgs(hold), "-incoming", "exec:cat "+state)})
	exited := make(chan error, 1)
	go func() { exited <- v.wait() }()
	for i := 0; ; i++ {
		out, err := v.monitor("info status")
		if err == nil && strings.Contains(out, "running") {
			break
		}
		// The state was saved stopped, so it loads stopped: continue it.
		if err == nil && strings.Contains(out, "paused") && !strings.Contains(out, "inmigrate") {
			v.monitor("cont")
		}
		select {
		case err := <-exited:
			t.Fatalf("%s: QEMU exited while loading the state: %v\n%s", name, err, v.output())
		case <-time.After(50 * time.Millisecond):
		}
		if i > 2400 {
			t.Fatalf("%s: the VM is not running after 2 minutes: %s", name, out)
		}
	}
	resumed := time.Since(v.start)
	c, err := net.Dial("unix", hold)
	if err != nil {
		t.Fatalf("%s: connecting to the hold port: %v", name, err)
	}
	defer c.Close()
	goAt := time.Since(v.start)
	if _, err := c.Write([]byte("g")); err != nil {
		t.Fatal(err)
	}
	if cut >= 0 {
		time.Sleep(cut)
		v.cmd.Process.Signal(syscall.SIGKILL) // the power cut: QEMU, started by this test
		<-exited
	} else {
		select {
		case err := <-exited:
			if err != nil {
				t.Fatalf("%s: QEMU: %v\n%s", name, err, v.output())
			}
		case <-time.After(3 * time.Minute):
			t.Fatalf("%s: the agent did not power off:\n%s", name, v.output())
		}
	}
	r := resumeResult{img: img, resumeTime: resumed, console: v.output()}
	if at := v.mark("provstick: ledger: line"); at > 0 {
		r.writeTime = at - goAt
	}
	return r
}

// checkCut repairs a copy of the image's partition with fsck.fat -a and
// checks the ledger: the seed lines byte for byte, then at most one more
// valid line, at most one finding, a torn last line.
func checkCut(t *testing.T, img string, seed []byte) (string, *ledger.Log) {
	t.Helper()
	part := img + ".part"
	src, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	dst, err := os.Create(part)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, io.NewSectionReader(src, partOff, 1<<40)); err != nil {
		t.Fatal(err)
	}
	src.Close()
	dst.Close()
	defer os.Remove(part)
	out, err := exec.Command("fsck.fat", "-a", "-w", part).CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("fsck.fat (apt-get install dosfstools): %v", err)
	}
	if code > 1 {
		t.Fatalf("fsck.fat -a: exit %d\n%s", code, out)
	}
	fsck := "clean"
	if code == 1 {
		fsck = "repaired: " + lastLines(string(out), 3)
	}
	raw, l := readLedgerImage(t, part, true)
	if !bytes.HasPrefix(raw, seed) {
		t.Fatalf("the lines written before the cut changed:\nbefore:\n%s\nafter:\n%q", seed, raw)
	}
	if len(l.Records) < 2 || len(l.Records) > 3 {
		t.Fatalf("%d valid records after the cut, want 2 or 3:\n%q", len(l.Records), raw)
	}
	for _, f := range l.Findings {
		if f.Code != ledger.CodeTornTail || f.Line != l.Lines || len(l.Findings) > 1 {
			t.Fatalf("findings %v: only a torn last line is allowed\n%q", l.Findings, raw)
		}
	}
	return fsck, l
}

func lastLines(s string, n int) string {
	ls := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(ls[max(0, len(ls)-n):], " / ")
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	// cp --sparse keeps the 256 MiB image's holes.
	if out, err := exec.Command("cp", "--sparse=always", from, to).CombinedOutput(); err != nil {
		t.Fatalf("cp %s %s: %v\n%s", from, to, err, out)
	}
}
