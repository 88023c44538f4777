package heci

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"strings"
	"time"
)

// Transport sends one message to one connected ME firmware client and
// returns the client's one reply (specs/heci.md §1: one write is one
// message, one read is one message; one request in flight).
//
// When the ME resets the link, Send returns an error matching [ErrReset]
// (a [*ResetError]); the request may or may not have been carried out, so
// the caller re-reads whatever state it depends on. The next Send
// reconnects to the client first, waiting while the ME is not ready for as
// long as its context allows.
//
// A Send whose context ends before the reply arrives also drops the
// connection, so that a late reply is never taken for the answer to the
// next request.
type Transport interface {
	// Send writes req as one message and returns the reply.
	Send(ctx context.Context, req []byte) ([]byte, error)
	// MaxMessageLen is the longest message the connected client accepts,
	// as reported when connecting.
	MaxMessageLen() int
	// Close disconnects from the client.
	Close() error
}

// Device opens connections to firmware clients at one address. A stream
// device carries every client over one socket or port; the Linux device
// opens one file descriptor per client.
type Device interface {
	// Connect connects to the firmware client with the given GUID,
	// retrying with a bounded backoff while the ME reports it is not ready
	// or the client is busy, until ctx ends.
	Connect(ctx context.Context, client GUID) (Transport, error)
	// Close releases the device; transports from it stop working.
	Close() error
}

// GUID is a firmware client GUID in the byte order the connect ioctl and
// the stream framing use: the first three fields little-endian, the last
// eight bytes as written (specs/heci.md §2).
type GUID [16]byte

// The firmware clients of specs/heci.md §2.
var (
	// AMTHIClient is the AMT host interface ("PTHI"),
	// 12F80028-B4B7-4B2D-ACA8-46E0FF65814C.
	AMTHIClient = GUID{0x28, 0x00, 0xf8, 0x12, 0xb7, 0xb4, 0x2d, 0x4b, 0xac, 0xa8, 0x46, 0xe0, 0xff, 0x65, 0x81, 0x4c}
	// MKHIClient is the ME kernel host interface,
	// 8E6A6715-9ABC-4043-88EF-9E39C6F63E0F.
	MKHIClient = GUID{0x15, 0x67, 0x6a, 0x8e, 0xbc, 0x9a, 0x43, 0x40, 0x88, 0xef, 0x9e, 0x39, 0xc6, 0xf6, 0x3e, 0x0f}
	// LMEClient is local manageability (APF port forwarding),
	// 6733A4DB-0476-4E7B-B3AF-BCFC29BEE7A7.
	LMEClient = GUID{0xdb, 0xa4, 0x33, 0x67, 0x76, 0x04, 0x7b, 0x4e, 0xb3, 0xaf, 0xbc, 0xfc, 0x29, 0xbe, 0xe7, 0xa7}
	// WatchdogClient is the watchdog / manageability state client,
	// 05B79A6F-4628-4D7F-899D-A91514CB32AB.
	WatchdogClient = GUID{0x6f, 0x9a, 0xb7, 0x05, 0x28, 0x46, 0x7f, 0x4d, 0x89, 0x9d, 0xa9, 0x15, 0x14, 0xcb, 0x32, 0xab}
)

// ParseGUID parses the canonical text form
// "12F80028-B4B7-4B2D-ACA8-46E0FF65814C" into wire order.
func ParseGUID(s string) (GUID, error) {
	var g GUID
	parts := strings.Split(s, "-")
	if len(parts) != 5 || len(parts[0]) != 8 || len(parts[1]) != 4 || len(parts[2]) != 4 || len(parts[3]) != 4 || len(parts[4]) != 12 {
		return g, fmt.Errorf("parsing GUID %q: want the form XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX", s)
	}
	raw, err := hex.DecodeString(strings.Join(parts, ""))
	if err != nil {
		return g, fmt.Errorf("parsing GUID %q: %w", s, err)
	}
	binary.LittleEndian.PutUint32(g[0:4], binary.BigEndian.Uint32(raw[0:4]))
	binary.LittleEndian.PutUint16(g[4:6], binary.BigEndian.Uint16(raw[4:6]))
	binary.LittleEndian.PutUint16(g[6:8], binary.BigEndian.Uint16(raw[6:8]))
	copy(g[8:], raw[8:])
	return g, nil
}

// String returns the canonical upper-case text form.
func (g GUID) String() string {
	return fmt.Sprintf("%08X-%04X-%04X-%X-%X",
		binary.LittleEndian.Uint32(g[0:4]), binary.LittleEndian.Uint16(g[4:6]),
		binary.LittleEndian.Uint16(g[6:8]), g[8:10], g[10:16])
}

// Name is the client's short name from specs/heci.md §2, or its GUID.
func (g GUID) Name() string {
	switch g {
	case AMTHIClient:
		return "AMTHI"
	case MKHIClient:
		return "MKHI"
	case LMEClient:
		return "LME"
	case WatchdogClient:
		return "watchdog"
	}
	return g.String()
}

// Errors callers branch on with errors.Is.
var (
	// ErrReset: the ME reset the link (specs/heci.md §1); reconnect and
	// re-read state. Errors of this kind are [*ResetError].
	ErrReset = errors.New("heci: the ME reset the link")
	// ErrNoClient: the firmware client does not exist (ENOTTY): AMT is
	// absent or disabled on this SKU, or the client vanished after a reset.
	ErrNoClient = errors.New("heci: no such firmware client")
	// ErrBusy: another program holds the client (EBUSY), often lms.
	ErrBusy = errors.New("heci: firmware client busy")
	// ErrNotReady: the ME is not ready or is resetting (ENODEV on connect).
	ErrNotReady = errors.New("heci: the ME is not ready")
	// ErrTooLong: the message is longer than the client's maximum (EFBIG).
	ErrTooLong = errors.New("heci: message longer than the client accepts")
	// ErrTruncated: a reply filled the whole read buffer and may be cut
	// (specs/heci.md §4, quirk 4).
	ErrTruncated = errors.New("heci: reply may be truncated")
	// ErrClosed: the transport or device was closed, or the stream ended.
	ErrClosed = errors.New("heci: closed")
	// ErrFormat: a malformed stream frame (specs/heci.md §5).
	ErrFormat = errors.New("heci: malformed frame")
	// ErrUnsupported: the address kind is not available on this system.
	ErrUnsupported = errors.New("heci: not supported on this system")
)

// Errno is an errno value as carried by the stream framing's error frame
// and as returned by the kernel's connect ioctl (specs/heci.md §1, §5).
type Errno uint32

// The errno values the spec names, with Linux numbering.
const (
	EBUSY  Errno = 16
	ENODEV Errno = 19
	ENOTTY Errno = 25
)

func (e Errno) Error() string {
	switch e {
	case EBUSY:
		return "EBUSY (client busy)"
	case ENODEV:
		return "ENODEV (ME not ready)"
	case ENOTTY:
		return "ENOTTY (no such client)"
	}
	return fmt.Sprintf("errno %d", uint32(e))
}

// Is maps the errno values to the package's sentinels.
func (e Errno) Is(target error) bool {
	switch target {
	case ErrBusy:
		return e == EBUSY
	case ErrNotReady:
		return e == ENODEV
	case ErrNoClient:
		return e == ENOTTY
	}
	return false
}

// ConnectError is a failed connection to a firmware client.
type ConnectError struct {
	Client GUID
	Err    error // an Errno, or the underlying error
}

func (e *ConnectError) Error() string {
	return fmt.Sprintf("heci: connecting to the %s client: %v", e.Client.Name(), e.Err)
}
func (e *ConnectError) Unwrap() error { return e.Err }

// ResetError reports that the ME reset the link while a request was being
// sent or awaited, or while the connection was idle. It matches [ErrReset].
type ResetError struct {
	Client GUID
	Op     string // "send", "receive" or "idle"
	Err    error  // the cause, e.g. ENODEV from the kernel; may be nil
}

func (e *ResetError) Error() string {
	s := fmt.Sprintf("heci: the ME reset the link to the %s client (%s)", e.Client.Name(), e.Op)
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}
func (e *ResetError) Unwrap() error        { return e.Err }
func (e *ResetError) Is(target error) bool { return target == ErrReset }

// Options tune a device. The zero value is usable.
type Options struct {
	// Logger receives debug and progress messages; nil discards them.
	// Message contents are never logged.
	Logger *slog.Logger
	// RetryMin and RetryMax bound the backoff between connection attempts
	// while the ME is not ready (defaults 50ms and 2s).
	RetryMin, RetryMax time.Duration
	// NoWait makes Connect try once: ErrNotReady and ErrBusy come back at
	// once instead of being waited out.
	NoWait bool
}

func (o *Options) logger() *slog.Logger {
	if o == nil || o.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return o.Logger
}

func (o *Options) backoff() (lo, hi time.Duration) {
	lo, hi = 50*time.Millisecond, 2*time.Second
	if o != nil && o.RetryMin > 0 {
		lo = o.RetryMin
	}
	if o != nil && o.RetryMax > 0 {
		hi = o.RetryMax
	}
	if hi < lo {
		hi = lo
	}
	return lo, hi
}

// retryConnect calls try until it succeeds, fails with an error that is
// not worth retrying, or ctx ends. retryable says which errors to wait out.
func retryConnect(ctx context.Context, o *Options, client GUID, retryable func(error) bool, try func() error) error {
	lo, hi := o.backoff()
	log := o.logger()
	delay := lo
	var last error
	for attempt := 1; ; attempt++ {
		err := try()
		if err != nil && last != nil && ctx.Err() != nil {
			return fmt.Errorf("%w (gave up waiting: %w)", last, context.Cause(ctx))
		}
		if err == nil || !retryable(err) || (o != nil && o.NoWait) {
			return err
		}
		last = err
		log.Info("waiting for the ME", "client", client.Name(), "attempt", attempt, "reason", err)
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (gave up waiting: %w)", err, context.Cause(ctx))
		case <-t.C:
		}
		delay = min(delay*2, hi)
	}
}

// OpenDevice opens the device at addr (see [ParseAddress]).
func OpenDevice(ctx context.Context, addr string, opts *Options) (Device, error) {
	a, err := ParseAddress(addr)
	if err != nil {
		return nil, err
	}
	return a.Open(ctx, opts)
}

// Open opens the device at addr and connects to one client; closing the
// transport closes the device too.
func Open(ctx context.Context, addr string, client GUID, opts *Options) (Transport, error) {
	d, err := OpenDevice(ctx, addr, opts)
	if err != nil {
		return nil, err
	}
	t, err := d.Connect(ctx, client)
	if err != nil {
		d.Close()
		return nil, err
	}
	return &owningTransport{Transport: t, dev: d}, nil
}

type owningTransport struct {
	Transport
	dev Device
}

func (o *owningTransport) Close() error {
	return errors.Join(o.Transport.Close(), o.dev.Close())
}

// DeviceHint explains a failure to open the MEI device in words a
// technician can act on, or returns "" for other errors.
func DeviceHint(err error) string {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "no MEI device: the mei_me driver is not loaded (modprobe mei_me), or the Management Engine is disabled in the BIOS, or this machine has none"
	case errors.Is(err, fs.ErrPermission):
		return "permission denied on the MEI device: run as root (or give your user access to /dev/mei0)"
	case errors.Is(err, ErrNoClient):
		return "the ME has no AMT host interface: AMT is not present on this SKU, or it is disabled in the MEBx/BIOS"
	case errors.Is(err, ErrBusy):
		return "another program holds the AMT interface (often lms, the Local Manageability Service): stop it and retry"
	case errors.Is(err, ErrNotReady):
		return "the Management Engine is not ready (it may be resetting): wait and retry"
	}
	return ""
}
