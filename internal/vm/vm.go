// Package vm boots a stick image in QEMU the way a technician plugs it into
// a PC: the image is a USB mass-storage device on an xHCI controller and
// the only disk, the firmware is OVMF (UEFI) or SeaBIOS (legacy BIOS), the
// TPM is swtpm, and the Management Engine is a simulator reached through a
// virtio-serial port (specs/heci.md §5). The serial console is read line by
// line so that callers can wait for the agent's markers.
//
// It is what `provstick demo` and the benchmark scripts use; the package
// tests of the builder and the agent keep their own QEMU lines so that
// each can be read on its own.
package vm

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// Firmware is what the machine boots with.
type Firmware int

const (
	// UEFI is OVMF without Secure Boot.
	UEFI Firmware = iota
	// BIOS is SeaBIOS, QEMU's default legacy BIOS.
	BIOS
	// UEFISecureBoot is OVMF with Microsoft's keys enrolled and Secure
	// Boot on (needs SMM).
	UEFISecureBoot
)

func (f Firmware) String() string {
	switch f {
	case UEFI:
		return "UEFI (OVMF)"
	case BIOS:
		return "legacy BIOS (SeaBIOS)"
	case UEFISecureBoot:
		return "UEFI Secure Boot (OVMF, Microsoft keys)"
	}
	return fmt.Sprintf("firmware(%d)", int(f))
}

// Firmware files from Debian's ovmf package.
const (
	OVMFCode   = "/usr/share/OVMF/OVMF_CODE_4M.fd"
	OVMFVars   = "/usr/share/OVMF/OVMF_VARS_4M.fd"
	OVMFCodeSB = "/usr/share/OVMF/OVMF_CODE_4M.ms.fd"
	OVMFVarsSB = "/usr/share/OVMF/OVMF_VARS_4M.ms.fd"
)

// Options describe one boot.
type Options struct {
	// Image is the stick image file; the guest writes to it.
	Image    string
	Firmware Firmware
	// QEMU is the binary (default qemu-system-x86_64).
	QEMU string
	// Accel is "kvm" or "tcg" (default: Probe's answer).
	Accel string
	// MESocket is the Unix socket of an ME simulator, attached as the
	// virtio-serial port org.provstick.mei; empty: no ME.
	MESocket string
	// TPMSocket is the control socket of a running swtpm; empty: no TPM.
	TPMSocket string
	// Display adds a standard VGA card (not shown) so that the technician
	// screen can be captured with Screendump; needs MonitorSocket.
	Display bool
	// MonitorSocket, if set, is where QEMU's human monitor listens.
	MonitorSocket string
	// MemoryMiB defaults to 512.
	MemoryMiB int
	// WorkDir holds the firmware variables copy (default: a temp dir).
	WorkDir string
	// Console, if set, receives every serial console line.
	Console func(line string)
	Logger  *slog.Logger
}

// Machine is a running QEMU.
type Machine struct {
	cmd     *exec.Cmd
	start   time.Time
	mu      sync.Mutex
	console bytes.Buffer
	waiters []waiter
	done    chan struct{}
	err     error
	stderr  bytes.Buffer
	tmp     string
}

type waiter struct {
	marker string
	ch     chan time.Duration
}

// Args returns QEMU's command line for o (without the binary), for
// printing and for Start.
func Args(o Options, varsFile string) []string {
	mem := o.MemoryMiB
	if mem == 0 {
		mem = 512
	}
	machine := "q35"
	if o.Firmware == UEFISecureBoot {
		machine = "q35,smm=on"
	}
	a := []string{
		"-nodefaults", "-display", "none", "-no-reboot", "-accel", o.Accel, "-machine", machine,
		"-m", fmt.Sprint(mem), "-smp", "1", "-serial", "stdio",
		"-device", "qemu-xhci,id=xhci",
		"-drive", "if=none,id=stick,format=raw,file=" + o.Image,
		"-device", "usb-storage,bus=xhci.0,drive=stick,bootindex=1",
	}
	if o.MonitorSocket != "" {
		a = append(a, "-monitor", "unix:"+o.MonitorSocket+",server=on,wait=off")
	} else {
		a = append(a, "-monitor", "none")
	}
	if o.Display {
		a = append(a, "-vga", "std")
	}
	switch o.Firmware {
	case UEFI:
		a = append(a, "-drive", "if=pflash,format=raw,unit=0,readonly=on,file="+OVMFCode,
			"-drive", "if=pflash,format=raw,unit=1,file="+varsFile)
	case UEFISecureBoot:
		a = append(a, "-global", "driver=cfi.pflash01,property=secure,value=on",
			"-drive", "if=pflash,format=raw,unit=0,readonly=on,file="+OVMFCodeSB,
			"-drive", "if=pflash,format=raw,unit=1,file="+varsFile)
	}
	if o.MESocket != "" {
		a = append(a, "-device", "virtio-serial-pci",
			"-chardev", "socket,id=mei,path="+o.MESocket,
			"-device", "virtserialport,chardev=mei,name=org.provstick.mei")
	}
	if o.TPMSocket != "" {
		a = append(a, "-chardev", "socket,id=chrtpm,path="+o.TPMSocket,
			"-tpmdev", "emulator,id=tpm0,chardev=chrtpm", "-device", "tpm-tis,tpmdev=tpm0")
	}
	return a
}

// Start boots the machine. The context bounds its whole life: cancelling
// it kills QEMU.
func Start(ctx context.Context, o Options) (*Machine, error) {
	if o.QEMU == "" {
		o.QEMU = "qemu-system-x86_64"
	}
	if o.Accel == "" {
		o.Accel = Probe(ctx, o.QEMU)
	}
	m := &Machine{done: make(chan struct{})}
	vars := ""
	if o.Firmware != BIOS {
		dir := o.WorkDir
		if dir == "" {
			d, err := os.MkdirTemp("", "provstick-vm-")
			if err != nil {
				return nil, fmt.Errorf("vm: making a work directory: %w", err)
			}
			dir, m.tmp = d, d
		}
		src := OVMFVars
		if o.Firmware == UEFISecureBoot {
			src = OVMFVarsSB
		}
		vars = filepath.Join(dir, "OVMF_VARS.fd")
		b, err := os.ReadFile(src)
		if err != nil {
			m.cleanup()
			return nil, fmt.Errorf("vm: reading the UEFI variables template (install ovmf): %w", err)
		}
		if err := os.WriteFile(vars, b, 0o600); err != nil {
			m.cleanup()
			return nil, fmt.Errorf("vm: %w", err)
		}
	}
	m.cmd = exec.CommandContext(ctx, o.QEMU, Args(o, vars)...)
	m.cmd.Stderr = &m.stderr
	pr, pw := io.Pipe()
	m.cmd.Stdout = pw
	m.start = time.Now()
	if err := m.cmd.Start(); err != nil {
		m.cleanup()
		return nil, fmt.Errorf("vm: starting %s (install qemu-system-x86): %w", o.QEMU, err)
	}
	if o.Logger != nil {
		o.Logger.Debug("QEMU started", "pid", m.cmd.Process.Pid, "firmware", o.Firmware.String(), "accel", o.Accel)
	}
	read := make(chan struct{})
	go func() {
		defer close(read)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := strings.TrimRight(sc.Text(), "\r")
			m.line(line)
			if o.Console != nil {
				o.Console(line)
			}
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	go func() {
		err := m.cmd.Wait()
		pw.Close()
		<-read
		m.mu.Lock()
		m.err = err
		m.mu.Unlock()
		m.cleanup()
		close(m.done)
	}()
	return m, nil
}

func (m *Machine) cleanup() {
	if m.tmp != "" {
		os.RemoveAll(m.tmp)
	}
}

func (m *Machine) line(l string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.console.WriteString(l + "\n")
	at := time.Since(m.start)
	keep := m.waiters[:0]
	for _, w := range m.waiters {
		if strings.Contains(l, w.marker) {
			w.ch <- at
			continue
		}
		keep = append(keep, w)
	}
	m.waiters = keep
}

// ErrExited: the machine stopped before the marker appeared.
var ErrExited = errors.New("vm: QEMU exited")

// WaitFor waits until a console line contains marker and returns the time
// since QEMU started. Lines seen before the call count too.
func (m *Machine) WaitFor(ctx context.Context, marker string) (time.Duration, error) {
	ch := make(chan time.Duration, 1)
	m.mu.Lock()
	for _, l := range strings.Split(m.console.String(), "\n") {
		if strings.Contains(l, marker) {
			m.mu.Unlock()
			return 0, nil
		}
	}
	m.waiters = append(m.waiters, waiter{marker: marker, ch: ch})
	m.mu.Unlock()
	select {
	case d := <-ch:
		return d, nil
	case <-m.done:
		select {
		case d := <-ch:
			return d, nil
		default:
		}
		return 0, fmt.Errorf("%w before %q (%v); stderr: %s", ErrExited, marker, m.Err(), strings.TrimSpace(m.stderr.String()))
	case <-ctx.Done():
		return 0, fmt.Errorf("vm: waiting for %q: %w", marker, ctx.Err())
	}
}

// Wait waits for QEMU to exit and returns its run time.
func (m *Machine) Wait(ctx context.Context) (time.Duration, error) {
	select {
	case <-m.done:
		return time.Since(m.start), m.Err()
	case <-ctx.Done():
		return 0, fmt.Errorf("vm: waiting for power-off: %w", ctx.Err())
	}
}

// Kill stops QEMU at once, like pulling the power cord.
func (m *Machine) Kill() {
	_ = m.cmd.Process.Kill()
	<-m.done
}

// Err is QEMU's exit error, once it has exited.
func (m *Machine) Err() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.err
}

// Console returns everything the serial console printed so far.
func (m *Machine) Console() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.console.String()
}

// PID is QEMU's process id.
func (m *Machine) PID() int { return m.cmd.Process.Pid }
