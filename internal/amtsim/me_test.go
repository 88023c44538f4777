package amtsim

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/provstick/provstick/initramfs/heci"
	"github.com/provstick/provstick/initramfs/heci/amthi"
	"github.com/provstick/provstick/initramfs/heci/amtinfo"
	"github.com/provstick/provstick/initramfs/heci/mkhi"
)

var fastRetry = &heci.Options{RetryMin: time.Millisecond, RetryMax: 10 * time.Millisecond}

// logBuffer collects log output so tests can check no secret leaks.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

type kit struct {
	srv  *MEServer
	dev  *Device
	open func(t *testing.T) heci.Device
	logs *logBuffer
}

// transports runs f once over a Unix socket and once over an in-memory
// pipe, each with a fresh simulator.
func transports(t *testing.T, st State, f func(t *testing.T, k *kit)) {
	t.Run("unix", func(t *testing.T) {
		k := newKit(t, st)
		sock := filepath.Join(t.TempDir(), "me.sock")
		ln, err := Listen("unix://" + sock)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- k.srv.Serve(ctx, ln) }()
		t.Cleanup(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Serve: %v", err)
			}
		})
		k.open = func(t *testing.T) heci.Device {
			d, err := heci.OpenDevice(t.Context(), "unix://"+sock, fastRetry)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { d.Close() })
			return d
		}
		f(t, k)
	})
	t.Run("pipe", func(t *testing.T) {
		k := newKit(t, st)
		k.open = func(t *testing.T) heci.Device {
			d := k.srv.Pipe(t.Context(), fastRetry)
			t.Cleanup(func() { d.Close() })
			return d
		}
		f(t, k)
	})
}

func newKit(t *testing.T, st State) *kit {
	logs := &logBuffer{}
	dev := NewDevice(st)
	srv := NewMEServer(dev, &MEOptions{Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	t.Cleanup(func() {
		srv.Close()
		for _, secret := range []string{"admin", "sim-local-account", "PPS-SECRET", "new-mebx-pw", "otp-secret"} {
			if strings.Contains(logs.String(), secret) {
				t.Errorf("a secret (%q) reached the log", secret)
			}
		}
	})
	return &kit{srv: srv, dev: dev, logs: logs}
}

func connect(t *testing.T, d heci.Device, client heci.GUID) heci.Transport {
	t.Helper()
	tr, err := d.Connect(t.Context(), client)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	return tr
}

func TestEveryCommand(t *testing.T) {
	st := DefaultState()
	st.Wireless = &LAN{MAC: amthi.MAC{2, 0, 0, 0, 0, 9}}
	transports(t, st, func(t *testing.T, k *kit) {
		ctx := t.Context()
		tr := connect(t, k.open(t), heci.AMTHIClient)
		if tr.MaxMessageLen() != AMTHIMaxMessageLen {
			t.Errorf("MaxMessageLen = %d", tr.MaxMessageLen())
		}
		must := func(err error) {
			t.Helper()
			if err != nil {
				t.Fatal(err)
			}
		}
		cv, err := amthi.GetCodeVersions{}.Execute(ctx, tr)
		must(err)
		if v, _ := cv.Lookup("AMT"); v != "11.8.50" || cv.BIOS != st.BIOSVersion {
			t.Errorf("GetCodeVersions = %+v", cv)
		}
		pm, err := amthi.GetProvisioningMode{}.Execute(ctx, tr)
		must(err)
		if pm.Mode != amthi.ModeNone {
			t.Errorf("GetProvisioningMode = %v", pm.Mode)
		}
		ps, err := amthi.GetProvisioningState{}.Execute(ctx, tr)
		must(err)
		if ps.State != amthi.StatePre {
			t.Errorf("GetProvisioningState = %v", ps.State)
		}
		sp, err := amthi.GetSecurityParameters{}.Execute(ctx, tr)
		must(err)
		if !sp.LinkIsUp || sp.ProvisioningState != amthi.StatePre {
			t.Errorf("GetSecurityParameters = %+v", sp)
		}
		macs, err := amthi.GetMACAddresses{}.Execute(ctx, tr)
		must(err)
		if macs.Dedicated != st.Wired.MAC || macs.Host != st.HostMAC {
			t.Errorf("GetMACAddresses = %+v", macs)
		}
		tm, err := amthi.GetProvisioningTLSMode{}.Execute(ctx, tr)
		must(err)
		if tm.Mode != amthi.TLSModeNotReady {
			t.Errorf("GetProvisioningTLSMode = %v", tm.Mode)
		}
		hh, err := amthi.EnumerateHashHandles{}.Execute(ctx, tr)
		must(err)
		if !reflect.DeepEqual(hh.Handles, []uint32{1, 2, 3}) {
			t.Errorf("EnumerateHashHandles = %v", hh.Handles)
		}
		he, err := amthi.GetCertHashEntry{Handle: 2}.Execute(ctx, tr)
		must(err)
		if he.Name != "Simulated default root B" || !he.IsDefault || !bytes.Equal(he.Digest(), st.Hashes[1].Hash) {
			t.Errorf("GetCertHashEntry = %+v", he)
		}
		if _, err := (amthi.GetCertHashEntry{Handle: 99}).Execute(ctx, tr); !errors.Is(err, amthi.StatusInvalidHandle) {
			t.Errorf("GetCertHashEntry(99) = %v, want INVALID_HANDLE", err)
		}
		must(amthi.SetDNSSuffix{Suffix: "lab.example"}.Execute(ctx, tr))
		if got := k.dev.State().DNSSuffix; got != "lab.example" {
			t.Errorf("DNS suffix = %q", got)
		}
		zt, err := amthi.GetZeroTouchEnabled{}.Execute(ctx, tr)
		must(err)
		if !zt.Enabled {
			t.Error("GetZeroTouchEnabled = false")
		}
		pki, err := amthi.GetPKIFQDNSuffix{}.Execute(ctx, tr)
		must(err)
		if pki.Suffix != "" {
			t.Errorf("GetPKIFQDNSuffix = %q", pki.Suffix)
		}
		ra, err := amthi.GetRemoteAccessConnectionStatus{}.Execute(ctx, tr)
		must(err)
		if ra.MPSHost != "" {
			t.Errorf("GetRemoteAccessConnectionStatus = %+v", ra)
		}
		lan, err := amthi.GetLANInterfaceSettings{Index: amthi.InterfaceWired}.Execute(ctx, tr)
		must(err)
		if lan.Addr().String() != "192.168.10.5" || lan.MAC != st.Wired.MAC || !lan.LinkUp {
			t.Errorf("GetLANInterfaceSettings(wired) = %+v", lan)
		}
		wl, err := amthi.GetLANInterfaceSettings{Index: amthi.InterfaceWireless}.Execute(ctx, tr)
		must(err)
		if wl.MAC != st.Wireless.MAC {
			t.Errorf("GetLANInterfaceSettings(wireless) = %+v", wl)
		}
		if _, err := (amthi.GetLANInterfaceSettings{Index: 7}).Execute(ctx, tr); !errors.Is(err, amthi.StatusInvalidParameter) {
			t.Errorf("GetLANInterfaceSettings(7) = %v", err)
		}
		u, err := amthi.GetUUID{}.Execute(ctx, tr)
		must(err)
		if u.UUID.String() != "939b524b-13d4-1d18-e487-1c697a6b7a2b" {
			t.Errorf("GetUUID = %s", u.UUID)
		}
		lsa, err := amthi.GetLocalSystemAccount{}.Execute(ctx, tr)
		must(err)
		if lsa.User != "$$OsAdmin" || lsa.Password.Reveal() != "sim-local-account" {
			t.Errorf("GetLocalSystemAccount = %v", lsa)
		}
		cm, err := amthi.GetControlMode{}.Execute(ctx, tr)
		must(err)
		if cm.Mode != amthi.ControlPre {
			t.Errorf("GetControlMode = %v", cm.Mode)
		}
		must(amthi.SetProvisioningServerOTP{OTP: amthi.NewSecret("otp-secret")}.Execute(ctx, tr))
		if !k.dev.State().OTP.Equal("otp-secret") {
			t.Error("OTP not stored")
		}
		must(amthi.StartConfiguration{}.Execute(ctx, tr))
		if got := k.dev.State().ProvisioningState; got != amthi.StateIn {
			t.Errorf("after StartConfiguration state = %v", got)
		}
		must(amthi.StopConfiguration{}.Execute(ctx, tr))
		if err := (amthi.StopConfiguration{}).Execute(ctx, tr); !errors.Is(err, amthi.StatusInvalidProvisioningState) {
			t.Errorf("StopConfiguration twice = %v", err)
		}
		if _, err := (amthi.Unprovision{}).Execute(ctx, tr); !errors.Is(err, amthi.StatusInvalidProvisioningState) {
			t.Errorf("Unprovision in pre = %v", err)
		}
		must(k.dev.Provisioned(amthi.ControlAdmin))
		if _, err := (amthi.Unprovision{Mode: amthi.ModeEnterprise}).Execute(ctx, tr); err != nil {
			t.Fatal(err)
		}
		if s := k.dev.State(); s.ProvisioningState != amthi.StatePre || s.ControlMode != amthi.ControlPre {
			t.Errorf("after Unprovision: %v %v", s.ProvisioningState, s.ControlMode)
		}

		// An unknown command and a malformed request.
		out, err := tr.Send(ctx, amthi.MarshalRequest(fakeReq{0x04000099}))
		must(err)
		if err := amthi.UnmarshalResponse(out, 0x04000099, nil); !errors.Is(err, amthi.StatusUnsupported) {
			t.Errorf("unknown command: %v", err)
		}
		bad := amthi.MarshalRequest(amthi.GetUUID{})
		bad = append(bad[:8], 4, 0, 0, 0, 1, 2, 3, 4)
		out, err = tr.Send(ctx, bad)
		must(err)
		if err := amthi.UnmarshalResponse(out, amthi.CmdGetUUID, &amthi.GetUUIDResponse{}); !errors.Is(err, amthi.StatusInvalidMessageLength) {
			t.Errorf("GetUUID with a body: %v", err)
		}

		// MKHI on the same stream.
		m := connect(t, k.open(t), heci.MKHIClient)
		fw, err := mkhi.GetFWVersion{}.Execute(ctx, m)
		must(err)
		if fw.Code() != st.FW {
			t.Errorf("MKHI version = %v", fw.Code())
		}
		if _, err := k.open(t).Connect(ctx, heci.LMEClient); !errors.Is(err, heci.ErrNoClient) {
			t.Errorf("LME connect = %v, want ErrNoClient", err)
		}
	})
}

type fakeReq struct{ c amthi.Command }

func (f fakeReq) Command() amthi.Command     { return f.c }
func (f fakeReq) AppendBody(b []byte) []byte { return b }

func TestEvents(t *testing.T) {
	transports(t, DefaultState(), func(t *testing.T, k *kit) {
		ctx := t.Context()
		d := k.open(t)
		info, err := amtinfo.Collect(ctx, d, nil)
		if err != nil {
			t.Fatal(err)
		}
		if info.ProvisioningState != "pre" || info.UUID != "939b524b-13d4-1d18-e487-1c697a6b7a2b" || info.FirmwareVersion != "11.8.50.3425" || len(info.Hashes) != 3 {
			t.Errorf("pre: %+v", info)
		}
		hash := bytes.Repeat([]byte{0xAB}, 32)
		err = k.dev.ApplySetupRecord(SetupRecord{PID: "ABCD0123", PPS: NewSecret("PPS-SECRET"), MEBxPassword: NewSecret("new-mebx-pw"),
			DNSSuffix: "lab.example", Hashes: []CertHash{{Name: "Kiosk Root", Algorithm: amthi.HashSHA256, Hash: hash, Active: true}}})
		if err != nil {
			t.Fatal(err)
		}
		st := k.dev.State()
		if st.PID != "ABCD0123" || !st.PPS.Equal("PPS-SECRET") || !st.MEBxPassword.Equal("new-mebx-pw") {
			t.Error("setup record not stored")
		}
		info, err = amtinfo.Collect(ctx, d, nil)
		if err != nil {
			t.Fatal(err)
		}
		last := info.Hashes[len(info.Hashes)-1]
		if info.ProvisioningState != "in" || info.TLSMode != "PSK" || info.DNSSuffix != "lab.example" || last.Name != "Kiosk Root" || !last.UserAdded || last.Handle != 4 {
			t.Errorf("after setup.bin: %+v", info)
		}
		if err := k.dev.Provisioned(amthi.ControlAdmin); err != nil {
			t.Fatal(err)
		}
		if err := k.dev.ApplySetupRecord(SetupRecord{}); !errors.Is(err, ErrInvalidState) {
			t.Errorf("setup record after provisioning: %v", err)
		}
		info, err = amtinfo.Collect(ctx, d, nil)
		if err != nil {
			t.Fatal(err)
		}
		if info.ProvisioningState != "post" || info.ControlMode != "admin" {
			t.Errorf("after provisioning: %+v", info)
		}

		// ME reset: the idle connection learns of it, then reconnects.
		tr := connect(t, d, heci.AMTHIClient)
		if _, err := (amthi.GetUUID{}).Execute(ctx, tr); err != nil {
			t.Fatal(err)
		}
		k.dev.Reset()
		waitFor(t, func() bool {
			_, err := amthi.GetUUID{}.Execute(ctx, tr)
			return errors.Is(err, heci.ErrReset)
		})
		if _, err := (amthi.GetUUID{}).Execute(ctx, tr); err != nil {
			t.Fatalf("after reset: %v", err)
		}
		if k.dev.State().Resets != 1 {
			t.Errorf("Resets = %d", k.dev.State().Resets)
		}
	})
}

// waitFor polls try until it reports true or a few seconds pass.
func waitFor(t *testing.T, try func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !try() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestFaults(t *testing.T) {
	transports(t, DefaultState(), func(t *testing.T, k *kit) {
		ctx := t.Context()
		d := k.open(t)

		// Not ready: connect waits it out.
		k.srv.NotReadyFor(80 * time.Millisecond)
		start := time.Now()
		tr := connect(t, d, heci.AMTHIClient)
		if time.Since(start) < 70*time.Millisecond {
			t.Errorf("connected after %v, during not-ready", time.Since(start))
		}

		// Not ready on a connected channel: NOT_READY status.
		k.srv.NotReadyFor(time.Hour)
		if _, err := (amthi.GetUUID{}).Execute(ctx, tr); !errors.Is(err, amthi.StatusNotReady) {
			t.Errorf("got %v, want NOT_READY", err)
		}
		// A connect that never succeeds gives up with the context.
		cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		_, err := d.Connect(cctx, heci.MKHIClient)
		cancel()
		if !errors.Is(err, heci.ErrNotReady) {
			t.Errorf("got %v, want ErrNotReady", err)
		}
		k.srv.NotReadyFor(0)

		// Link reset mid-request.
		k.srv.ResetMidRequest(1)
		if _, err := (amthi.GetUUID{}).Execute(ctx, tr); !errors.Is(err, heci.ErrReset) {
			t.Errorf("got %v, want ErrReset", err)
		}
		if _, err := (amthi.GetUUID{}).Execute(ctx, tr); err != nil {
			t.Errorf("after reset: %v", err)
		}

		// Garbage and truncated replies are protocol errors.
		k.srv.GarbageReplies(1)
		if _, err := (amthi.GetUUID{}).Execute(ctx, tr); !errors.Is(err, amthi.ErrProtocol) {
			t.Errorf("garbage: got %v, want ErrProtocol", err)
		}
		k.srv.TruncatedReplies(1)
		_, err = amthi.GetCodeVersions{}.Execute(ctx, tr)
		if !errors.Is(err, amthi.ErrProtocol) || !strings.Contains(err.Error(), "GetCodeVersions") {
			t.Errorf("truncated: got %v, want ErrProtocol naming the command", err)
		}

		// Slow replies meet the caller's deadline; the next request works.
		k.srv.SlowReplies(200 * time.Millisecond)
		sctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
		_, err = amthi.GetUUID{}.Execute(sctx, tr)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("slow: got %v, want deadline exceeded", err)
		}
		k.srv.SlowReplies(0)
		if _, err := (amthi.GetUUID{}).Execute(ctx, tr); err != nil {
			t.Errorf("after slow: %v", err)
		}

		// A reset during amtinfo is retried.
		k.srv.ResetMidRequest(1)
		if _, err := amtinfo.Collect(ctx, d, nil); err != nil {
			t.Errorf("Collect with one reset: %v", err)
		}
	})
}

func TestAMTAbsentAndUnsupported(t *testing.T) {
	st := DefaultState()
	st.AMTPresent = false
	transports(t, st, func(t *testing.T, k *kit) {
		_, err := k.open(t).Connect(t.Context(), heci.AMTHIClient)
		if !errors.Is(err, heci.ErrNoClient) {
			t.Errorf("got %v, want ErrNoClient", err)
		}
	})
	st = DefaultState()
	st.Unsupported = []amthi.Command{amthi.CmdGetControlMode, amthi.CmdGetPKIFQDNSuffix}
	transports(t, st, func(t *testing.T, k *kit) {
		info, err := amtinfo.Collect(t.Context(), k.open(t), nil)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(info.Unsupported, []string{"GetControlMode", "GetPKIFQDNSuffix"}) || info.ControlMode != "" {
			t.Errorf("Unsupported = %v, ControlMode %q", info.Unsupported, info.ControlMode)
		}
	})
}

func TestListen(t *testing.T) {
	if _, err := Listen("mei:///dev/mei0"); err == nil || !strings.Contains(err.Error(), "unix://") {
		t.Errorf("Listen(mei) = %v", err)
	}
	sock := filepath.Join(t.TempDir(), "me.sock")
	ln, err := Listen("unix://" + sock)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Listen("unix://" + sock); err == nil || !strings.Contains(err.Error(), "another simulator") {
		t.Errorf("second Listen = %v", err)
	}
	ln.Close()
}

func TestSecretNeverPrints(t *testing.T) {
	st := DefaultState()
	st.PPS = NewSecret("PPS-SECRET")
	for _, s := range []string{sprint("%v", st), sprint("%+v", st), sprint("%#v", st)} {
		if strings.Contains(s, "PPS-SECRET") || strings.Contains(s, "sim-local-account") {
			t.Errorf("secret printed: %s", s)
		}
	}
}
