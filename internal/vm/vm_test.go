package vm

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestArgs(t *testing.T) {
	o := Options{Image: "s.img", Firmware: UEFISecureBoot, Accel: "tcg", MESocket: "me.sock", TPMSocket: "tpm.sock"}
	a := strings.Join(Args(o, "vars.fd"), " ")
	for _, want := range []string{
		"-machine q35,smm=on", "property=secure,value=on", "file=" + OVMFCodeSB, "unit=1,file=vars.fd",
		"usb-storage,bus=xhci.0,drive=stick,bootindex=1", "file=s.img",
		"socket,id=mei,path=me.sock", "name=org.provstick.mei",
		"socket,id=chrtpm,path=tpm.sock", "tpm-tis,tpmdev=tpm0", "-accel tcg",
	} {
		if !strings.Contains(a, want) {
			t.Errorf("args lack %q:\n%s", want, a)
		}
	}
	b := Args(Options{Image: "s.img", Firmware: BIOS, Accel: "kvm"}, "")
	if slices.Contains(b, "if=pflash") || strings.Contains(strings.Join(b, " "), "pflash") || strings.Contains(strings.Join(b, " "), "mei") {
		t.Errorf("BIOS boot without ME has firmware drives or an ME port: %v", b)
	}
}

// fakeQEMU writes a script that prints a console and exits.
func fakeQEMU(t *testing.T, body string) string {
	p := filepath.Join(t.TempDir(), "qemu")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestMachineMarkers(t *testing.T) {
	q := fakeQEMU(t, "echo booting; sleep 0.2; echo 'provstick: ready'; echo 'provstick: ledger: line 1'; sleep 0.2; exit 0\n")
	var lines []string
	m, err := Start(t.Context(), Options{QEMU: q, Image: "x", Firmware: BIOS, Accel: "tcg", Console: func(l string) { lines = append(lines, l) }})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.WaitFor(t.Context(), "provstick: ready"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.WaitFor(t.Context(), "ledger: line"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Wait(t.Context()); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(m.Console(), "booting\n") || len(lines) != 3 {
		t.Errorf("console %q, lines %q", m.Console(), lines)
	}
	// A marker that never comes: the machine's exit ends the wait.
	if _, err := m.WaitFor(t.Context(), "never"); !errors.Is(err, ErrExited) {
		t.Errorf("WaitFor after exit: %v, want ErrExited", err)
	}
}

func TestMachineKillAndTimeout(t *testing.T) {
	q := fakeQEMU(t, "echo up; exec sleep 60\n")
	m, err := Start(t.Context(), Options{QEMU: q, Image: "x", Firmware: BIOS, Accel: "tcg"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	if _, err := m.WaitFor(ctx, "never"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("WaitFor: %v, want a deadline", err)
	}
	start := time.Now()
	m.Kill()
	if time.Since(start) > 5*time.Second || m.Err() == nil {
		t.Errorf("Kill took %v, exit error %v", time.Since(start), m.Err())
	}
}

func TestUEFIVarsCopiedAndRemoved(t *testing.T) {
	q := fakeQEMU(t, "for a; do case $a in *OVMF_VARS*) test -s \"${a##*file=}\" && echo vars-ok;; esac; done\n")
	m, err := Start(t.Context(), Options{QEMU: q, Image: "x", Firmware: UEFI, Accel: "tcg"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.WaitFor(t.Context(), "vars-ok"); err != nil {
		t.Fatalf("the firmware variables were not a copy of OVMF's: %v (console %q)", err, m.Console())
	}
	m.Wait(t.Context())
	if m.tmp == "" {
		t.Fatal("no work directory")
	}
	if _, err := os.Stat(m.tmp); !os.IsNotExist(err) {
		t.Errorf("work directory %s left behind", m.tmp)
	}
}

func TestTPM(t *testing.T) {
	tpm, err := StartTPM(t.Context(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(tpm.Socket); err != nil {
		t.Errorf("no control socket: %v", err)
	}
	tpm.Stop()
	tpm.Stop() // twice is fine
}

func TestProbe(t *testing.T) {
	// Whatever the machine, the answer is one of the two, and a QEMU
	// that cannot run gives TCG.
	if a := probe(t.Context(), "/nonexistent/qemu"); a != "tcg" {
		t.Errorf("probe with no QEMU: %q", a)
	}
	if a := Probe(t.Context(), "qemu-system-x86_64"); a != "kvm" && a != "tcg" {
		t.Errorf("Probe: %q", a)
	}
}
