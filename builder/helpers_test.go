package builder

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// Tests need an unpacked Debian kernel package (scripts/install-deps.sh
// puts one in ${XDG_CACHE_HOME:-$HOME/.cache}/provstick/vm-kernel;
// VMTEST_KERNEL_DIR overrides it), the Go toolchain to build the agent,
// and mtools, dosfstools, fdisk, syslinux, syslinux-common and
// systemd-boot-efi. They fail, never skip, when one is missing.

func kernelDir(t testing.TB) string {
	t.Helper()
	dir := os.Getenv("VMTEST_KERNEL_DIR")
	if dir == "" {
		cache, err := os.UserCacheDir()
		if err != nil {
			t.Fatal(err)
		}
		dir = filepath.Join(cache, "provstick", "vm-kernel")
	}
	if _, err := FindKernel(dir); err != nil {
		t.Fatalf("%v (scripts/install-deps.sh unpacks one)", err)
	}
	return dir
}

var (
	agentOnce sync.Once
	agentPath string
	agentErr  error
	agentDir  string
)

// testAgent builds the stub agent once per test binary, static, into a
// temporary directory removed by TestMain.
func testAgent(t testing.TB) string {
	t.Helper()
	agentOnce.Do(func() {
		agentDir, agentErr = os.MkdirTemp("", "provstick-agent-")
		if agentErr != nil {
			return
		}
		agentPath = filepath.Join(agentDir, "provstick-agent")
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w -buildid=", "-o", agentPath, "../initramfs/agent/cmd/provstick-agent")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			agentErr = &buildError{err, out.String()}
		}
	})
	if agentErr != nil {
		t.Fatalf("building the agent: %v", agentErr)
	}
	return agentPath
}

type buildError struct {
	err error
	out string
}

func (e *buildError) Error() string { return e.err.Error() + "\n" + e.out }

func TestMain(m *testing.M) {
	code := m.Run()
	if agentDir != "" {
		os.RemoveAll(agentDir)
	}
	os.Exit(code)
}

func mustRun(t testing.TB, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	return string(out)
}
