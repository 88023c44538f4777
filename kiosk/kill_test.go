package kiosk

// Kill -9 loop (issue 10, "Proof"): the kiosk runs as a separate process
// (this test binary re-executed, see TestMain and killKioskRole) against a
// fleet of simulated machines in the test's process, and is killed with
// SIGKILL at random moments, then restarted. After the last restart every
// machine must end provisioned exactly once: one key pair and one
// kiosk-signed certificate on each device, one "provisioned" event per
// entry, and the pool's counts adding up (no entry lost or duplicated).

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/provstick/provstick/internal/amtsim"
	wire "github.com/provstick/provstick/internal/hello"
	"github.com/provstick/provstick/internal/soak"
	"github.com/provstick/provstick/kiosk/provision"
	"github.com/provstick/provstick/kiosk/store"
)

var (
	killDevices = flag.Int("kiosk.kill-devices", 200, "TestKillLoop: simulated machines")
	killCount   = flag.Int("kiosk.kills", 10, "TestKillLoop: SIGKILLs before the last run")
)

const (
	envKillStore = "PROVSTICK_KILL_STORE"
	envKillHello = "PROVSTICK_KILL_HELLO"
	envKillAddrs = "PROVSTICK_KILL_ADDRS"
	killReady    = "kiosk serving"
)

func TestKillLoop(t *testing.T) {
	n := *killDevices
	kills := soak.Runs(*killCount) // make soak runs more
	ctx := t.Context()
	dir := t.TempDir()
	dsn := filepath.Join(dir, "kiosk.db")
	s, err := store.Open(ctx, dsn, &store.Options{Key: store.Passphrase([]byte("pw")), KDF: testKDF, Station: "kill-test", Actor: "test"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Generate(ctx, store.GenerateSpec{Count: n, Profile: "amt6-10"}); err != nil {
		t.Fatal(err)
	}
	_, es, err := s.AllocateStick(ctx, store.StickSpec{Label: "kill-1", Recipe: "default", Count: n, Profile: "amt6-10"})
	if err != nil {
		t.Fatal(err)
	}
	// The hello socket is held by the test for its whole life and handed to
	// each kiosk process as fd 3, the way systemd socket activation does. A
	// port closed here and re-listened on by each restart could be taken in
	// between by any other process on the machine (CI runs packages in
	// parallel), and every later run would then fail to bind.
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer hl.Close()
	helloAddr := hl.Addr().String()
	hf, err := hl.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	defer hf.Close()

	recs := make([]amtsim.SetupRecord, n)
	for i, e := range es {
		recs[i] = amtsim.SetupRecord{PID: e.PID.String(), PPS: amtsim.NewSecret(e.PPS.Reveal()), MEBxPassword: amtsim.NewSecret(e.NewPassword.Reveal())}
	}
	ks := newKeys(t, 4)
	base := amtsim.DefaultState()
	base.AMTVersion = "9.5.30"
	// Time scale 60: hellos a second apart, then ten seconds apart, so
	// that machines keep asking while the kiosk is down.
	f, err := amtsim.StartFleet(context.Background(), amtsim.FleetOptions{Devices: n, Base: base, Records: recs,
		Net: amtsim.NetOptions{GenerateKey: ks.gen, CommitDowntime: 100 * time.Millisecond,
			Hello: amtsim.HelloOptions{SCS: helloAddr, TimeScale: 60, Timeout: 2 * time.Second}}})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	addrs := map[string]string{}
	for _, m := range f.Machines {
		addrs[uuidOf(m)] = m.TLSAddr
	}
	addrFile := filepath.Join(dir, "addrs.json")
	b, _ := json.Marshal(addrs)
	if err := os.WriteFile(addrFile, b, 0o644); err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// start runs a kiosk and returns once it has said it is serving (a
	// process under the race detector takes a while to start), so that the
	// kills land while machines are being provisioned and the last run's
	// SIGTERM arrives after its handler is installed.
	start := func() *exec.Cmd {
		cmd := exec.Command(exe)
		cmd.Env = append(os.Environ(), envKillStore+"="+dsn, envKillHello+"=3", envKillAddrs+"="+addrFile)
		cmd.Stderr = os.Stderr
		cmd.ExtraFiles = []*os.File{hf}
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		ready := make(chan error, 1)
		go func() {
			line, err := bufio.NewReader(out).ReadString('\n')
			if err == nil && line != killReady+"\n" {
				err = fmt.Errorf("kiosk said %q", line)
			}
			ready <- err
			io.Copy(io.Discard, out)
		}()
		select {
		case err := <-ready:
			if err != nil {
				cmd.Process.Kill()
				cmd.Wait()
				t.Fatalf("kiosk process did not start: %v", err)
			}
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatal("kiosk process not serving after 30 s")
		}
		return cmd
	}
	provisioned := func() int {
		es, err := s.EntriesInStates(ctx, store.StateProvisioned)
		if err != nil {
			t.Fatal(err)
		}
		return len(es)
	}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	for i := range kills {
		cmd := start()
		time.Sleep(time.Duration(200+rng.IntN(2300)) * time.Millisecond)
		if err := cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		cmd.Wait()
		busy, _ := s.EntriesInStates(ctx, store.StateHelloSeen)
		t.Logf("kill %d: %d of %d provisioned, %d under way", i+1, provisioned(), n, len(busy))
	}
	cmd := start()
	defer func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	}()
	deadline := time.Now().Add(150 * time.Second)
	for provisioned() < n {
		if time.Now().After(deadline) {
			failed, _ := s.EntriesInStates(ctx, store.StateFailed, store.StateHelloSeen, store.StateConsumed, store.StateAllocated)
			for i, e := range failed {
				if i < 5 {
					t.Logf("not provisioned: %s %s %q", e.PID, e.State, e.Reason)
				}
			}
			t.Fatalf("after %d kills: %d of %d provisioned", kills, provisioned(), n)
		}
		time.Sleep(200 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Errorf("last kiosk run: %v", err)
	}

	// Exactly once, as the devices see it.
	for i, m := range f.Machines {
		st := m.Net.Device().State()
		if len(st.Net.Keys) != 1 || len(st.Net.Certs) != 1 {
			t.Errorf("machine %d holds %d key pairs and %d certificates, want 1 and 1", i, len(st.Net.Keys), len(st.Net.Certs))
		}
	}
	// And as the store sees it.
	for _, e := range es {
		h, err := s.History(ctx, e.PID)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, ev := range h {
			if ev.To == store.StateProvisioned && ev.From != store.StateProvisioned {
				n++
			}
		}
		if n != 1 {
			t.Errorf("entry %s provisioned %d times", e.PID, n)
		}
	}
	st, err := s.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	total := int64(0)
	for _, c := range st.Counts {
		total += c.N
		if c.State != store.StateProvisioned {
			t.Errorf("count %+v", c)
		}
	}
	if total != int64(n) {
		t.Errorf("the pool counts %d entries, want %d", total, n)
	}
	// For make soak: devices provisioned, entries provisioned twice or lost.
	dupes, good := 0, 0
	for _, e := range es {
		h, _ := s.History(ctx, e.PID)
		k := 0
		for _, ev := range h {
			if ev.To == store.StateProvisioned && ev.From != store.StateProvisioned {
				k++
			}
		}
		dupes += max(0, k-1)
	}
	for _, m := range f.Machines {
		if st := m.Net.Device().State(); len(st.Net.Certs) == 1 {
			good++
		}
	}
	if err := soak.Report(soak.Result{Loop: "kiosk kill -9", Runs: kills + 1, Faults: kills, Lost: n - int(total),
		Duplicates: dupes, Provisioned: good, Note: fmt.Sprintf("%d machines", n)}); err != nil {
		t.Error(err)
	}
}

func uuidOf(m amtsim.FleetMachine) string { return wire.UUID(m.Net.Device().State().UUID).String() }

// killKioskRole is the kiosk process of TestKillLoop.
func killKioskRole() int {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})).With("role", "kill-kiosk")
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := runKillKiosk(ctx, log); err != nil {
		log.Error("kiosk", "err", err)
		return 1
	}
	return 0
}

func runKillKiosk(ctx context.Context, log *slog.Logger) error {
	var addrs map[string]string
	b, err := os.ReadFile(os.Getenv(envKillAddrs))
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, &addrs); err != nil {
		return err
	}
	s, err := store.Open(ctx, os.Getenv(envKillStore), &store.Options{Key: store.Passphrase([]byte("pw")), KDF: testKDF, Station: "kill-kiosk", Actor: "kiosk"})
	if err != nil {
		return err
	}
	defer s.Close()
	fd, err := strconv.Atoi(os.Getenv(envKillHello))
	if err != nil {
		return fmt.Errorf("%s: %w", envKillHello, err)
	}
	f := os.NewFile(uintptr(fd), "hello-listener")
	ln, err := net.FileListener(f)
	f.Close()
	if err != nil {
		return fmt.Errorf("inherited hello socket: %w", err)
	}
	k, err := New(ctx, Options{Store: s, Logger: log, HelloListener: ln, HelloFlush: 20 * time.Millisecond,
		HelloFloodRate: -1, // every simulated machine says hello from 127.0.0.1
		Provision: provision.Options{Concurrency: 16, StepTimeout: 20 * time.Second, VerifyDelay: 20 * time.Millisecond, VerifyTimeout: 20 * time.Second,
			Resolve: func(_ context.Context, j provision.Job) (string, error) {
				a, ok := addrs[j.UUID]
				if !ok {
					return "", fmt.Errorf("no simulated machine %s", j.UUID)
				}
				return a, nil
			}}})
	if err != nil {
		return err
	}
	fmt.Println(killReady)
	return k.Serve(ctx)
}
