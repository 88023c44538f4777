package vm

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

// TPM is a running swtpm (TPM 2.0) whose state lives in a directory, so
// that the same "chip" can be used across boots of one machine.
type TPM struct {
	// Socket is the control socket to give QEMU (Options.TPMSocket).
	Socket string
	cmd    *exec.Cmd
	done   chan error
}

// StartTPM starts swtpm with its state in dir (created if needed). It
// serves one QEMU connection and exits when QEMU goes away; call Stop in
// any case.
func StartTPM(ctx context.Context, dir string) (*TPM, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("vm: making the TPM state directory: %w", err)
	}
	sock := filepath.Join(dir, "swtpm.sock")
	_ = os.Remove(sock)
	cmd := exec.CommandContext(ctx, "swtpm", "socket", "--tpm2",
		"--tpmstate", "dir="+dir, "--ctrl", "type=unixio,path="+sock,
		"--flags", "startup-clear", "--terminate")
	out, err := os.Create(filepath.Join(dir, "swtpm.log"))
	if err != nil {
		return nil, fmt.Errorf("vm: %w", err)
	}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		out.Close()
		return nil, fmt.Errorf("vm: starting swtpm (install swtpm): %w", err)
	}
	t := &TPM{Socket: sock, cmd: cmd, done: make(chan error, 1)}
	go func() { t.done <- cmd.Wait(); out.Close() }()
	for deadline := time.Now().Add(5 * time.Second); ; {
		if _, err := os.Stat(sock); err == nil {
			return t, nil
		}
		select {
		case err := <-t.done:
			return nil, fmt.Errorf("vm: swtpm exited at start: %w (see %s)", errors.Join(err, errors.New("no socket")), filepath.Join(dir, "swtpm.log"))
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Stop()
			return nil, errors.New("vm: swtpm made no control socket within 5 s")
		}
	}
}

// Stop ends swtpm if it still runs.
func (t *TPM) Stop() {
	_ = t.cmd.Process.Kill()
	<-t.done
	t.done <- nil // later Stops return at once
}
