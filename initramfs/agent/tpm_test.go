package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// swtpm starts a TPM 2.0 simulator (package swtpm) on two loopback TCP
// ports and returns a transport to its command port. The test fails if
// swtpm is not installed: CI installs it.
func swtpm(t *testing.T) transport.TPMCloser {
	t.Helper()
	return swtpmAt(t, "")
}

// swtpmAt is swtpm on the state directory state (empty: a new one).
func swtpmAt(t *testing.T, state string) transport.TPMCloser {
	t.Helper()
	bin, err := exec.LookPath("swtpm")
	if err != nil {
		t.Fatalf("swtpm not installed (apt-get install swtpm swtpm-tools): %v", err)
	}
	for attempt := 0; attempt < 10; attempt++ {
		// Two ports the kernel handed out at once (port+1 may well be
		// taken on a shared machine); freed just before swtpm binds them.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ln2, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port, ctrlPort := ln.Addr().(*net.TCPAddr).Port, ln2.Addr().(*net.TCPAddr).Port
		ln.Close()
		ln2.Close()
		state := state
		if state == "" {
			state = t.TempDir()
		}
		os.Remove(filepath.Join(state, "swtpm.log"))
		cmd := exec.Command(bin, "socket", "--tpm2",
			"--server", fmt.Sprintf("type=tcp,port=%d,bindaddr=127.0.0.1", port),
			"--ctrl", fmt.Sprintf("type=tcp,port=%d,bindaddr=127.0.0.1", ctrlPort),
			"--flags", "not-need-init,startup-clear",
			"--tpmstate", "dir="+state,
			"--log", "file="+filepath.Join(state, "swtpm.log"))
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
			if err == nil {
				t.Cleanup(func() { cmd.Process.Kill(); <-exited })
				return transport.FromReadWriteCloser(c)
			}
			select {
			case err := <-exited:
				logb, _ := os.ReadFile(filepath.Join(state, "swtpm.log"))
				t.Logf("swtpm on port %d exited (%v; log: %s); trying another port", port, err, bytes.TrimSpace(logb))
				deadline = time.Time{}
			case <-time.After(20 * time.Millisecond):
			}
		}
		if !deadline.IsZero() {
			cmd.Process.Kill()
			<-exited
			t.Fatalf("swtpm did not listen on 127.0.0.1:%d", port)
		}
	}
	t.Fatal("swtpm did not start on any port")
	return nil
}

func TestReadEKSwtpm(t *testing.T) {
	tpm := swtpm(t)
	ctx := t.Context()
	a, err := ReadEK(ctx, tpm)
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(a.EKSHA256) || a.EKCert {
		t.Fatalf("first read: %+v", a)
	}
	// The EK is derived from the endorsement seed: the same key each time.
	b, err := ReadEK(ctx, tpm)
	if err != nil {
		t.Fatal(err)
	}
	if a.EKSHA256 != b.EKSHA256 {
		t.Fatalf("EK hash changed: %s then %s", a.EKSHA256, b.EKSHA256)
	}
	// Put a (fake) certificate at the EK certificate index.
	def := tpm2.NVDefineSpace{
		AuthHandle: tpm2.TPMRHOwner,
		PublicInfo: tpm2.New2B(tpm2.TPMSNVPublic{
			NVIndex: tpm2.TPMHandle(EKCertIndex), NameAlg: tpm2.TPMAlgSHA256,
			Attributes: tpm2.TPMANV{OwnerWrite: true, OwnerRead: true, AuthRead: true, NT: tpm2.TPMNTOrdinary},
			DataSize:   16,
		}),
	}
	if _, err := def.Execute(tpm); err != nil {
		t.Fatalf("defining the EK certificate index: %v", err)
	}
	c, err := ReadEK(ctx, tpm)
	if err != nil {
		t.Fatal(err)
	}
	if !c.EKCert || c.EKSHA256 != a.EKSHA256 || c.EKCertError == "" || c.EKCertDER != nil {
		t.Errorf("with an unwritten certificate index: %+v", c)
	}
	// Now a real certificate, padded in NV as some vendors do.
	if _, err := (tpm2.NVUndefineSpace{AuthHandle: tpm2.TPMRHOwner, NVIndex: tpm2.NamedHandle{Handle: tpm2.TPMHandle(EKCertIndex), Name: nvName(t, tpm)}}).Execute(tpm); err != nil {
		t.Fatalf("undefining: %v", err)
	}
	der := testCert(t)
	data := append(der, 0xff, 0xff, 0xff)
	def.PublicInfo = tpm2.New2B(tpm2.TPMSNVPublic{
		NVIndex: tpm2.TPMHandle(EKCertIndex), NameAlg: tpm2.TPMAlgSHA256,
		Attributes: tpm2.TPMANV{OwnerWrite: true, OwnerRead: true, AuthRead: true, AuthWrite: true, NoDA: true, NT: tpm2.TPMNTOrdinary},
		DataSize:   uint16(len(data)),
	})
	if _, err := def.Execute(tpm); err != nil {
		t.Fatalf("defining the EK certificate index: %v", err)
	}
	for off := 0; off < len(data); off += 512 {
		name := nvName(t, tpm)
		if _, err := (tpm2.NVWrite{
			AuthHandle: tpm2.AuthHandle{Handle: tpm2.TPMHandle(EKCertIndex), Name: name, Auth: tpm2.PasswordAuth(nil)},
			NVIndex:    tpm2.NamedHandle{Handle: tpm2.TPMHandle(EKCertIndex), Name: name},
			Data:       tpm2.TPM2BMaxNVBuffer{Buffer: data[off:min(off+512, len(data))]},
			Offset:     uint16(off),
		}).Execute(tpm); err != nil {
			t.Fatalf("writing the certificate at %d: %v", off, err)
		}
	}
	c, err = ReadEK(ctx, tpm)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(der)
	if !c.EKCert || c.EKCertError != "" || !bytes.Equal(c.EKCertDER, der) || c.EKCertSHA256 != hex.EncodeToString(sum[:]) || c.EKCertIssuer != "CN=Test EK CA" {
		t.Errorf("with a certificate: cert %v err %q sha %s issuer %q (%d bytes, want %d)", c.EKCert, c.EKCertError, c.EKCertSHA256, c.EKCertIssuer, len(c.EKCertDER), len(der))
	}
	// The transient EK objects were flushed: none left.
	caps, err := tpm2.GetCapability{Capability: tpm2.TPMCapHandles, Property: uint32(tpm2.TPMHTTransient) << 24, PropertyCount: 8}.Execute(tpm)
	if err != nil {
		t.Fatal(err)
	}
	if h, _ := caps.CapabilityData.Data.Handles(); len(h.Handle) != 0 {
		t.Errorf("%d transient objects left", len(h.Handle))
	}

	// DeviceTPM: the first path that opens wins; none → ErrNoTPM.
	dir := t.TempDir()
	d := DeviceTPM{Paths: []string{filepath.Join(dir, "tpmrm0"), "swtpm"}, Open: func(p string) (transport.TPMCloser, error) {
		if p == "swtpm" {
			return nopClose{tpm}, nil
		}
		return openTPMDevice(p)
	}}
	e, err := d.ReadEK(ctx)
	if err != nil || e.Device != "swtpm" || e.EKSHA256 != a.EKSHA256 {
		t.Errorf("DeviceTPM: %+v, %v", e, err)
	}
	if _, err := (DeviceTPM{Paths: []string{filepath.Join(dir, "tpm0")}}).ReadEK(ctx); !errors.Is(err, ErrNoTPM) {
		t.Errorf("no device: %v", err)
	}
	if _, err := ReadEK(canceled(), tpm); !errors.Is(err, context.Canceled) {
		t.Errorf("canceled context: %v", err)
	}
}

type nopClose struct{ transport.TPM }

func (nopClose) Close() error { return nil }

func canceled() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

// TestRunWithSwtpm runs the agent with swtpm as the machine's TPM and the
// ME simulator as its ME.
func TestRunWithSwtpm(t *testing.T) {
	tpm := swtpm(t)
	want, err := ReadEK(t.Context(), tpm)
	if err != nil {
		t.Fatal(err)
	}
	root, _ := stick(t, 2, true)
	consume(t, root, 1)
	addr, _ := simulator(t, inSetup(t, ""))
	cfg := config(t, root, addr)
	cfg.TPM = DeviceTPM{Paths: []string{"/nonexistent/tpmrm0", "swtpm"}, Open: func(p string) (transport.TPMCloser, error) {
		if p == "swtpm" {
			return nopClose{tpm}, nil
		}
		return openTPMDevice(p)
	}}
	res, err := Run(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	tp := res.Record.TPM
	if tp == nil || tp.EKSHA256 != want.EKSHA256 || tp.Device != "swtpm" || !hasMissing(res.Record, "tpm-ek-cert") || hasMissing(res.Record, "tpm") {
		t.Errorf("TPM %+v, missing %v", tp, res.Record.Missing)
	}
	t.Logf("start → ledger fsync with swtpm and the ME simulator: %v (ME %v)", res.Elapsed, res.MEElapsed)
}

func nvName(t *testing.T, tpm transport.TPM) tpm2.TPM2BName {
	t.Helper()
	r, err := tpm2.NVReadPublic{NVIndex: tpm2.TPMHandle(EKCertIndex)}.Execute(tpm)
	if err != nil {
		t.Fatal(err)
	}
	return r.NVName
}

// testCert is a self-signed certificate of about an EK certificate's size.
func testCert(t *testing.T) []byte {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "Test EK CA"},
		NotBefore: time.Unix(1700000000, 0), NotAfter: time.Unix(2000000000, 0)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}
