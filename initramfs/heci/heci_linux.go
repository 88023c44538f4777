//go:build linux

package heci

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

// ioctlConnectClient is IOCTL_MEI_CONNECT_CLIENT from linux/mei.h:
// _IOWR('H', 0x01, struct mei_connect_client_data), a 16-byte union
// (specs/heci.md §1).
const ioctlConnectClient = 0xC0104801

// connectData is union mei_connect_client_data: in, the client GUID
// (uuid_le, 16 bytes); out, struct mei_client {u32 max_msg_length;
// u8 protocol_version; u8 reserved[3]}.
type connectData [16]byte

func newConnectData(client GUID) connectData { return connectData(client) }

func (d *connectData) maxMsgLen() uint32      { return binary.LittleEndian.Uint32(d[0:4]) } // out 0x00, 4 bytes
func (d *connectData) protocolVersion() uint8 { return d[4] }                               // out 0x04, 1 byte

// meiDevice opens one file descriptor per client connection on the MEI
// character device (requires the mei_me driver; root by default).
type meiDevice struct {
	path string
	opts *Options

	mu     sync.Mutex
	conns  map[*meiConn]struct{}
	closed bool
}

func openMEI(_ context.Context, path string, opts *Options) (Device, error) {
	// Fail early with the file system's error so callers can tell "no
	// device" (driver not loaded, ME disabled) from "permission denied".
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	f.Close()
	return &meiDevice{path: path, opts: opts, conns: map[*meiConn]struct{}{}}, nil
}

func (d *meiDevice) Connect(ctx context.Context, client GUID) (Transport, error) {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil, ErrClosed
	}
	d.mu.Unlock()
	c := &meiConn{dev: d, client: client}
	if err := c.connect(ctx, false); err != nil {
		return nil, err
	}
	d.mu.Lock()
	d.conns[c] = struct{}{}
	d.mu.Unlock()
	return c, nil
}

func (d *meiDevice) Close() error {
	d.mu.Lock()
	d.closed = true
	conns := make([]*meiConn, 0, len(d.conns))
	for c := range d.conns {
		conns = append(conns, c)
	}
	d.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
	return nil
}

// meiConn is one file descriptor connected to one client.
type meiConn struct {
	dev    *meiDevice
	client GUID

	mu     sync.Mutex // one request in flight
	f      *os.File   // nil while disconnected
	max    int
	buf    []byte
	closed bool
}

var _ Transport = (*meiConn)(nil)

// connect opens the device and connects the client, retrying while the ME
// is not ready or the client busy; after a reset (again) it also waits out
// a vanished client (ENOTTY), as specs/heci.md §1 describes.
func (c *meiConn) connect(ctx context.Context, again bool) error {
	retryable := func(err error) bool {
		return errors.Is(err, ErrNotReady) || errors.Is(err, ErrBusy) || (again && errors.Is(err, ErrNoClient))
	}
	return retryConnect(ctx, c.dev.opts, c.client, retryable, c.connectOnce)
}

func (c *meiConn) connectOnce() error {
	f, err := os.OpenFile(c.dev.path, os.O_RDWR, 0)
	if err != nil {
		return &ConnectError{Client: c.client, Err: fmt.Errorf("opening %s: %w", c.dev.path, err)}
	}
	data := newConnectData(c.client)
	if err := ioctl(f, ioctlConnectClient, unsafe.Pointer(&data)); err != nil {
		f.Close()
		return &ConnectError{Client: c.client, Err: errnoOf(err)}
	}
	max := int(data.maxMsgLen())
	if max <= 0 || max > 1<<20 {
		f.Close()
		return &ConnectError{Client: c.client, Err: fmt.Errorf("implausible max_msg_length %d", max)}
	}
	c.f, c.max = f, max
	if cap(c.buf) < max {
		c.buf = make([]byte, max)
	}
	c.buf = c.buf[:max]
	c.dev.opts.logger().Debug("heci: connected", "device", c.dev.path, "client", c.client.Name(), "max_msg_length", max, "protocol", data.protocolVersion())
	return nil
}

// ioctl runs one ioctl on f's descriptor.
func ioctl(f *os.File, req uintptr, arg unsafe.Pointer) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var errno syscall.Errno
	if err := rc.Control(func(fd uintptr) {
		_, _, errno = syscall.Syscall(syscall.SYS_IOCTL, fd, req, uintptr(arg))
	}); err != nil {
		return err
	}
	if errno != 0 {
		return errno
	}
	return nil
}

// errnoOf maps the connect errnos the spec names to Errno (so they match
// ErrNoClient, ErrBusy, ErrNotReady) and keeps others as they are.
func errnoOf(err error) error {
	var e syscall.Errno
	if errors.As(err, &e) {
		switch e {
		case syscall.ENOTTY:
			return ENOTTY
		case syscall.EBUSY:
			return EBUSY
		case syscall.ENODEV:
			return ENODEV
		}
	}
	return err
}

// isReset reports whether an I/O error means the link went down: ENODEV
// (link down or ME reset), ENOTTY (client gone) or EBADF (the driver
// dropped the connection) (specs/heci.md §1).
func isReset(err error) bool {
	return errors.Is(err, syscall.ENODEV) || errors.Is(err, syscall.ENOTTY) || errors.Is(err, syscall.EBADF)
}

// drop closes the descriptor; the next Send reconnects.
func (c *meiConn) drop() {
	if c.f != nil {
		c.f.Close()
		c.f = nil
	}
}

func (c *meiConn) MaxMessageLen() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.max
}

func (c *meiConn) Send(ctx context.Context, req []byte) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, ErrClosed
	}
	if c.f == nil {
		if err := c.connect(ctx, true); err != nil {
			return nil, fmt.Errorf("reconnecting: %w", err)
		}
	}
	if len(req) > c.max {
		return nil, fmt.Errorf("sending %d bytes to the %s client (max %d): %w", len(req), c.client.Name(), c.max, ErrTooLong)
	}
	f := c.f
	// The kernel has no read timeout: the context ends a blocked read or
	// write through the runtime poller's deadline (specs/heci.md §1).
	if dl, ok := ctx.Deadline(); ok {
		f.SetDeadline(dl)
	} else {
		f.SetDeadline(time.Time{})
	}
	stop := context.AfterFunc(ctx, func() { f.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	fail := func(op string, err error) ([]byte, error) {
		c.drop()
		switch {
		case ctx.Err() != nil:
			return nil, fmt.Errorf("waiting for the %s client (%s): %w", c.client.Name(), op, context.Cause(ctx))
		case errors.Is(err, syscall.EFBIG):
			return nil, fmt.Errorf("sending %d bytes to the %s client: %w", len(req), c.client.Name(), ErrTooLong)
		case isReset(err):
			return nil, &ResetError{Client: c.client, Op: op, Err: err}
		}
		return nil, fmt.Errorf("heci: %s on %s: %w", op, c.dev.path, err)
	}
	n, err := f.Write(req)
	if err != nil {
		return fail("send", err)
	}
	if n != len(req) {
		return fail("send", fmt.Errorf("short write of %d of %d bytes", n, len(req)))
	}
	n, err = f.Read(c.buf)
	if err != nil {
		return fail("receive", err)
	}
	if n == len(c.buf) {
		c.drop()
		return nil, fmt.Errorf("receiving from the %s client: %d bytes fill the buffer: %w", c.client.Name(), n, ErrTruncated)
	}
	return append([]byte(nil), c.buf[:n]...), nil
}

func (c *meiConn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	c.drop()
	c.dev.mu.Lock()
	delete(c.dev.conns, c)
	c.dev.mu.Unlock()
	return nil
}
