//go:build linux

package heci

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unsafe"
)

// The ioctl number from linux/mei.h, computed here from the kernel's
// asm-generic/ioctl.h encoding rather than copied: dir<<30 | size<<16 |
// type<<8 | nr, with _IOC_READ|_IOC_WRITE = 3.
func TestIoctlNumber(t *testing.T) {
	const (
		iocNRBits    = 8
		iocTypeBits  = 8
		iocSizeBits  = 14
		iocNRShift   = 0
		iocTypeShift = iocNRShift + iocNRBits
		iocSizeShift = iocTypeShift + iocTypeBits
		iocDirShift  = iocSizeShift + iocSizeBits
		iocWrite     = 1
		iocRead      = 2
	)
	ioc := func(dir, typ, nr, size uintptr) uintptr {
		return dir<<iocDirShift | typ<<iocTypeShift | nr<<iocNRShift | size<<iocSizeShift
	}
	// union mei_connect_client_data { uuid_le in_client_uuid; struct mei_client out_client_properties; }
	type uuidLE [16]uint8 // uuid_le
	type meiClient struct {
		MaxMsgLength    uint32
		ProtocolVersion uint8
		Reserved        [3]uint8
	}
	size := max(unsafe.Sizeof(uuidLE{}), unsafe.Sizeof(meiClient{}))
	if size != 16 {
		t.Fatalf("union size %d, want 16", size)
	}
	if got := ioc(iocRead|iocWrite, 'H', 0x01, size); got != ioctlConnectClient {
		t.Errorf("_IOWR('H', 1, 16) = %#x, constant %#x", got, ioctlConnectClient)
	}
	if ioctlConnectClient != 0xC0104801 {
		t.Errorf("constant %#x, spec says 0xC0104801", ioctlConnectClient)
	}
	if unsafe.Sizeof(connectData{}) != size {
		t.Errorf("connectData is %d bytes", unsafe.Sizeof(connectData{}))
	}
	// The out half: u32 max_msg_length at 0, u8 protocol_version at 4.
	if off := unsafe.Offsetof(meiClient{}.ProtocolVersion); off != 4 {
		t.Errorf("protocol_version offset %d", off)
	}
	d := newConnectData(AMTHIClient)
	if [16]byte(d) != [16]byte(AMTHIClient) {
		t.Errorf("in: %x", d)
	}
	d = connectData{0x00, 0x10, 0, 0, 7}
	if d.maxMsgLen() != 4096 || d.protocolVersion() != 7 {
		t.Errorf("out: max %d proto %d", d.maxMsgLen(), d.protocolVersion())
	}
}

// The real transport against files that are not an MEI device: the
// connect ioctl really runs and fails with ENOTTY, which must read as "no
// such client".
func TestMEIOnOrdinaryFiles(t *testing.T) {
	ctx := t.Context()
	_, err := OpenDevice(ctx, "mei://"+filepath.Join(t.TempDir(), "mei0"), nil)
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(DeviceHint(err), "mei_me") {
		t.Errorf("missing device: %v (hint %q)", err, DeviceHint(err))
	}
	for _, p := range []string{os.DevNull, filepath.Join(t.TempDir(), "file")} {
		if err := os.WriteFile(p, nil, 0o600); err != nil && p != os.DevNull {
			t.Fatal(err)
		}
		d, err := OpenDevice(ctx, "mei://"+p, nil)
		if err != nil {
			t.Fatal(err)
		}
		_, err = d.Connect(ctx, AMTHIClient)
		if !errors.Is(err, ErrNoClient) || !strings.Contains(DeviceHint(err), "not present") {
			t.Errorf("%s: got %v, want ErrNoClient", p, err)
		}
		d.Close()
	}
}

// TestRealMEI talks to a real /dev/mei0 where there is one; it skips on
// machines without one or without permission (like go-tpm's real-device
// tests).
func TestRealMEI(t *testing.T) {
	d, err := OpenDevice(t.Context(), DefaultAddress, nil)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, fs.ErrPermission) {
		t.Skipf("no usable /dev/mei0: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	tr, err := d.Connect(t.Context(), MKHIClient)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	out, err := tr.Send(t.Context(), []byte{0xFF, 0x02, 0x00, 0x00})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("MKHI firmware version reply: % x", out)
}
