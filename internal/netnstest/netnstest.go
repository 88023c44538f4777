// Package netnstest sets up network namespaces for tests that run parts
// of the system on a network of their own (iproute2's ip, as root), and
// runs the test binary inside them in a role. The kiosk's DHCP/DNS
// discovery tests and the agent's kiosk check in QEMU use it.
package netnstest

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Need skips t unless it runs as root with iproute2's ip; what says what
// for ("network namespaces"). With CI=true it fails instead: CI must run
// these tests.
func Need(t testing.TB, what string) {
	t.Helper()
	why := ""
	if os.Geteuid() != 0 {
		why = "needs root for " + what
	} else if _, err := exec.LookPath("ip"); err != nil {
		why = "needs iproute2's ip"
	}
	if why == "" {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal(why + " (CI=true: this test must run)")
	}
	t.Skip(why)
}

// IP runs ip with args and fails t if it fails.
func IP(t testing.TB, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// ID returns six random hex digits, to make namespace and interface names
// that no other test run uses (interface names have 15 bytes at most).
func ID() string {
	var b [3]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Add creates the namespace name; it is deleted when t ends.
func Add(t testing.TB, name string) {
	t.Helper()
	IP(t, "netns", "add", name)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
}

// Start runs this test binary in namespace ns with env added to its
// environment (a role variable that its TestMain acts on), its output on
// stderr. When t ends, a process still running gets SIGTERM, and SIGKILL
// 10 s later.
func Start(t testing.TB, ns string, env ...string) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", ns, exe)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s in %s: %v", strings.Join(env, " "), ns, err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Signal(syscall.SIGTERM)
			done := make(chan struct{})
			go func() { cmd.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				cmd.Process.Kill()
				<-done
			}
		}
	})
	return cmd
}

// Stop ends a process Start started with SIGTERM and fails t unless it
// exits cleanly within 20 s; name is what t's errors call it.
func Stop(t testing.TB, cmd *exec.Cmd, name string) {
	t.Helper()
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("%s: %v", name, err)
		}
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		t.Errorf("%s did not stop", name)
		<-done
	}
}
