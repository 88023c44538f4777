//go:build linux

package heci_test

// The ioctl-level test of the real Linux transport (specs/heci.md §5): a
// FUSE file system with one regular file, mei0, plays /dev/mei0. go-fuse
// serves FUSE ioctls on regular files; the kernel sizes them from the
// ioctl number (0xC0104801: 16 bytes in and out), so the transport's real
// open + IOCTL_MEI_CONNECT_CLIENT + write + read path runs unchanged
// against the ME simulator. Needs root and /dev/fuse (both present in CI).
//
// What the fake does not model: poll readiness and O_NONBLOCK (a read
// blocks in the FUSE server until the reply is there, so context
// deadlines cannot interrupt it here), and EFBIG (the simulator's limit is
// checked by the transport before writing).

import (
	"context"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/provstick/provstick/initramfs/heci"
	"github.com/provstick/provstick/initramfs/heci/amthi"
	"github.com/provstick/provstick/initramfs/heci/amtinfo"
	"github.com/provstick/provstick/internal/amtsim"
)

const ioctlMEIConnectClient = 0xC0104801 // linux/mei.h, checked in heci_linux_test.go

type fakeRoot struct {
	fs.Inode
	srv *amtsim.MEServer
}

func (r *fakeRoot) OnAdd(ctx context.Context) {
	ch := r.NewPersistentInode(ctx, &fakeMEI{srv: r.srv}, fs.StableAttr{Mode: syscall.S_IFREG})
	r.AddChild("mei0", ch, false)
}

// fakeMEI is the device node; each open is a new connection to the
// simulator, like a new file descriptor on /dev/mei0.
type fakeMEI struct {
	fs.Inode
	srv *amtsim.MEServer
}

var _ = (fs.NodeOpener)((*fakeMEI)(nil))
var _ = (fs.NodeGetattrer)((*fakeMEI)(nil))

func (n *fakeMEI) Getattr(_ context.Context, _ fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Mode = syscall.S_IFREG | 0o600
	return 0
}

func (n *fakeMEI) Open(ctx context.Context, _ uint32) (fs.FileHandle, uint32, syscall.Errno) {
	// NoWait: the kernel's connect ioctl answers at once (ENODEV while the
	// ME is not ready); waiting is the transport's job.
	h := &fakeHandle{dev: n.srv.Pipe(context.Background(), &heci.Options{NoWait: true})}
	return h, fuse.FOPEN_DIRECT_IO | fuse.FOPEN_NONSEEKABLE, 0
}

type result struct {
	reply []byte
	err   error
}

// fakeHandle is one open file: the connect ioctl picks the client, a
// write sends one message, the next read returns its reply.
type fakeHandle struct {
	dev heci.Device

	mu      sync.Mutex
	tr      heci.Transport
	pending chan result
}

var _ = (fs.FileIoctler)((*fakeHandle)(nil))
var _ = (fs.FileWriter)((*fakeHandle)(nil))
var _ = (fs.FileReader)((*fakeHandle)(nil))
var _ = (fs.FileReleaser)((*fakeHandle)(nil))

func errnoFor(err error) syscall.Errno {
	switch {
	case errors.Is(err, heci.ErrNoClient):
		return syscall.ENOTTY
	case errors.Is(err, heci.ErrBusy):
		return syscall.EBUSY
	case errors.Is(err, heci.ErrNotReady), errors.Is(err, heci.ErrReset):
		return syscall.ENODEV
	}
	return syscall.EIO
}

func (h *fakeHandle) Ioctl(_ context.Context, cmd uint32, _ uint64, input, output []byte) (int32, syscall.Errno) {
	if cmd != ioctlMEIConnectClient || len(input) != 16 || len(output) != 16 {
		return 0, syscall.EINVAL
	}
	var g heci.GUID
	copy(g[:], input)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tr, err := h.dev.Connect(ctx, g)
	if err != nil {
		return 0, errnoFor(err)
	}
	h.mu.Lock()
	h.tr = tr
	h.mu.Unlock()
	clear(output)
	binary.LittleEndian.PutUint32(output[0:4], uint32(tr.MaxMessageLen())) // max_msg_length
	output[4] = 1                                                          // protocol_version
	return 0, 0
}

func (h *fakeHandle) Write(_ context.Context, data []byte, _ int64) (uint32, syscall.Errno) {
	h.mu.Lock()
	tr := h.tr
	h.mu.Unlock()
	if tr == nil {
		return 0, syscall.ENODEV
	}
	ch := make(chan result, 1)
	h.mu.Lock()
	h.pending = ch
	h.mu.Unlock()
	msg := append([]byte(nil), data...)
	go func() {
		reply, err := tr.Send(context.Background(), msg)
		ch <- result{reply, err}
	}()
	return uint32(len(data)), 0
}

func (h *fakeHandle) Read(ctx context.Context, dest []byte, _ int64) (fuse.ReadResult, syscall.Errno) {
	h.mu.Lock()
	ch := h.pending
	h.pending = nil
	h.mu.Unlock()
	if ch == nil {
		return nil, syscall.EAGAIN
	}
	select {
	case r := <-ch:
		if r.err != nil {
			return nil, errnoFor(r.err)
		}
		n := copy(dest, r.reply)
		return fuse.ReadResultData(dest[:n]), 0
	case <-ctx.Done():
		return nil, syscall.EINTR
	}
}

func (h *fakeHandle) Release(context.Context) syscall.Errno {
	h.mu.Lock()
	tr := h.tr
	h.mu.Unlock()
	if tr != nil {
		tr.Close()
	}
	h.dev.Close()
	return 0
}

// mountFakeMEI mounts the fake device for srv and returns its path.
func mountFakeMEI(t *testing.T, srv *amtsim.MEServer) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting FUSE needs root")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skipf("no /dev/fuse: %v", err)
	}
	dir := t.TempDir()
	server, err := fs.Mount(dir, &fakeRoot{srv: srv}, &fs.Options{
		MountOptions: fuse.MountOptions{DirectMountStrict: true, Name: "fakemei", FsName: "fakemei"},
	})
	if err != nil {
		t.Fatalf("mounting the fake /dev/mei0: %v", err)
	}
	t.Cleanup(func() {
		if err := server.Unmount(); err != nil {
			t.Errorf("unmounting: %v", err)
		}
	})
	return filepath.Join(dir, "mei0")
}

func TestMEIOverFUSE(t *testing.T) {
	dev := amtsim.NewDevice(amtsim.DefaultState())
	srv := amtsim.NewMEServer(dev, nil)
	defer srv.Close()
	path := mountFakeMEI(t, srv)
	ctx := t.Context()
	opts := &heci.Options{RetryMin: time.Millisecond, RetryMax: 10 * time.Millisecond}

	d, err := heci.OpenDevice(ctx, "mei://"+path, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()

	// The whole amtinfo set through the real ioctl, write and read path.
	info, err := amtinfo.Collect(ctx, d, nil)
	if err != nil {
		t.Fatal(err)
	}
	if info.UUID != "939b524b-13d4-1d18-e487-1c697a6b7a2b" || info.FirmwareVersion != "11.8.50.3425" || len(info.Hashes) != 3 {
		t.Errorf("amtinfo over FUSE: %+v", info)
	}

	tr, err := d.Connect(ctx, heci.AMTHIClient)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	if tr.MaxMessageLen() != amtsim.AMTHIMaxMessageLen {
		t.Errorf("MaxMessageLen = %d", tr.MaxMessageLen())
	}

	// A link reset mid-request: the read fails with ENODEV, the transport
	// reports a ResetError and the next request reconnects.
	srv.ResetMidRequest(1)
	_, err = amthi.GetUUID{}.Execute(ctx, tr)
	var re *heci.ResetError
	if !errors.As(err, &re) || !errors.Is(err, syscall.ENODEV) {
		t.Fatalf("got %v, want a ResetError caused by ENODEV", err)
	}
	if _, err := (amthi.GetUUID{}).Execute(ctx, tr); err != nil {
		t.Fatalf("after the reset: %v", err)
	}

	// The ME not ready for a while: the reconnect waits it out.
	srv.ResetMidRequest(1)
	if _, err := (amthi.GetUUID{}).Execute(ctx, tr); !errors.Is(err, heci.ErrReset) {
		t.Fatalf("got %v, want ErrReset", err)
	}
	srv.NotReadyFor(100 * time.Millisecond)
	start := time.Now()
	if _, err := (amthi.GetUUID{}).Execute(ctx, tr); err != nil {
		t.Fatalf("after not ready: %v", err)
	}
	if time.Since(start) < 90*time.Millisecond {
		t.Errorf("reconnected after %v, while the ME was not ready", time.Since(start))
	}

	// Too long a message is refused before writing.
	if _, err := tr.Send(ctx, make([]byte, amtsim.AMTHIMaxMessageLen+1)); !errors.Is(err, heci.ErrTooLong) {
		t.Errorf("got %v, want ErrTooLong", err)
	}
}

func TestMEIOverFUSENoAMT(t *testing.T) {
	st := amtsim.DefaultState()
	st.AMTPresent = false
	srv := amtsim.NewMEServer(amtsim.NewDevice(st), nil)
	defer srv.Close()
	path := mountFakeMEI(t, srv)
	d, err := heci.OpenDevice(t.Context(), "mei://"+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	_, err = d.Connect(t.Context(), heci.AMTHIClient)
	if !errors.Is(err, heci.ErrNoClient) || heci.DeviceHint(err) == "" {
		t.Errorf("got %v, want ErrNoClient (ENOTTY from the ioctl)", err)
	}
	// MKHI still answers.
	m, err := d.Connect(t.Context(), heci.MKHIClient)
	if err != nil {
		t.Fatal(err)
	}
	m.Close()
}
