package heci

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
)

// Kind is the kind of device an address names.
type Kind int

// The address kinds.
const (
	KindMEI    Kind = iota + 1 // mei:///dev/mei0
	KindUnix                   // unix:///run/me.sock
	KindVirtio                 // virtio:org.provstick.mei
)

// DefaultAddress is the real device.
const DefaultAddress = "mei:///dev/mei0"

// DefaultVirtioPort is the name of the QEMU virtio-serial port carrying the
// simulator's stream (DESIGN decision 6).
const DefaultVirtioPort = "org.provstick.mei"

// CmdlineParam is the kernel command line parameter from which the agent
// takes its device address: provstick.mei=ADDRESS, for example
// provstick.mei=virtio:org.provstick.mei. Without it the agent uses
// [DefaultAddress].
const CmdlineParam = "provstick.mei"

// Address is a parsed device address.
type Address struct {
	Kind Kind
	// Path is the device file (mei), the socket (unix) or, for virtio,
	// an explicit port device such as /dev/vport1p1 (then Port is empty).
	Path string
	// Port is the virtio-serial port name to look up under
	// /sys/class/virtio-ports.
	Port string
}

// ParseAddress parses a device address:
//
//	mei:///dev/mei0            the Linux MEI device (also mei:/dev/mei0)
//	unix:///run/me.sock        a Unix socket (also unix:me.sock, relative)
//	virtio:org.provstick.mei   a virtio-serial port by name
//	virtio:/dev/vport1p1       a virtio-serial port by device file
func ParseAddress(s string) (Address, error) {
	bad := func(why string) (Address, error) {
		return Address{}, fmt.Errorf("parsing ME address %q: %s (want mei:///dev/mei0, unix:///path/to.sock or virtio:%s)", s, why, DefaultVirtioPort)
	}
	// Not net/url: socket paths may hold '#', '?' or '%' literally.
	scheme, rest, ok := strings.Cut(s, ":")
	if !ok || scheme == "" || strings.ContainsAny(scheme, "/ ") {
		return bad("missing scheme")
	}
	switch scheme {
	case "mei", "unix", "virtio":
	default:
		return bad("unknown scheme " + scheme)
	}
	p := rest
	if after, ok := strings.CutPrefix(rest, "//"); ok {
		if after != "" && !strings.HasPrefix(after, "/") {
			return bad("unexpected host")
		}
		p = after
	}
	switch scheme {
	case "mei":
		if !strings.HasPrefix(p, "/") {
			return bad("the device must be an absolute path")
		}
		return Address{Kind: KindMEI, Path: path.Clean(p)}, nil
	case "unix":
		if p == "" {
			return bad("missing socket path")
		}
		return Address{Kind: KindUnix, Path: p}, nil
	case "virtio":
		switch {
		case p == "":
			return bad("missing port name")
		case strings.HasPrefix(p, "/"):
			return Address{Kind: KindVirtio, Path: path.Clean(p)}, nil
		case strings.ContainsAny(p, "/ \t\n"):
			return bad("bad port name")
		}
	}
	return Address{Kind: KindVirtio, Port: p}, nil
}

func (a Address) String() string {
	switch a.Kind {
	case KindMEI:
		return "mei://" + a.Path
	case KindUnix:
		if strings.HasPrefix(a.Path, "/") {
			return "unix://" + a.Path
		}
		return "unix:" + a.Path
	case KindVirtio:
		if a.Port != "" {
			return "virtio:" + a.Port
		}
		return "virtio:" + a.Path
	}
	return "invalid"
}

// Open opens the device the address names.
func (a Address) Open(ctx context.Context, opts *Options) (Device, error) {
	switch a.Kind {
	case KindMEI:
		return openMEI(ctx, a.Path, opts)
	case KindUnix:
		var d net.Dialer
		c, err := d.DialContext(ctx, "unix", a.Path)
		if err != nil {
			return nil, fmt.Errorf("connecting to the ME simulator at %s: %w", a.Path, err)
		}
		return NewStream(c, opts), nil
	case KindVirtio:
		dev := a.Path
		if dev == "" {
			var err error
			if dev, err = FindVirtioPort("/sys", "/dev", a.Port); err != nil {
				return nil, err
			}
		}
		f, err := os.OpenFile(dev, os.O_RDWR, 0)
		if err != nil {
			return nil, fmt.Errorf("opening virtio-serial port %s: %w", dev, err)
		}
		return NewStream(f, opts), nil
	}
	return nil, fmt.Errorf("opening ME address %v: invalid address", a)
}

// ErrNoPort: no virtio-serial port has the requested name.
var ErrNoPort = errors.New("heci: no virtio-serial port with that name")

// FindVirtioPort returns the device file (devRoot/vportNpM) of the
// virtio-serial port whose sysRoot/class/virtio-ports/vportNpM/name holds
// name. It reads sysfs directly, without udev (specs/heci.md §5).
func FindVirtioPort(sysRoot, devRoot, name string) (string, error) {
	dir := filepath.Join(sysRoot, "class", "virtio-ports")
	ents, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("finding virtio-serial port %q: %w", name, err)
	}
	var seen []string
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name(), "name"))
		if err != nil {
			continue // a port without a name
		}
		n := strings.TrimSpace(string(b))
		if n == name {
			return filepath.Join(devRoot, e.Name()), nil
		}
		seen = append(seen, n)
	}
	sort.Strings(seen)
	return "", fmt.Errorf("finding virtio-serial port %q in %s (ports: %q): %w", name, dir, seen, ErrNoPort)
}

// AddressFromCmdline returns the value of the last provstick.mei=ADDRESS
// parameter on a kernel command line (the text of /proc/cmdline), and
// whether there was one. Double quotes around the value are removed, as
// the kernel does.
func AddressFromCmdline(cmdline string) (string, bool) {
	var val string
	found := false
	for _, f := range splitCmdline(cmdline) {
		k, v, ok := strings.Cut(f, "=")
		if ok && k == CmdlineParam {
			val, found = v, true
		}
	}
	return val, found
}

// splitCmdline splits at spaces outside double quotes and drops the quotes.
func splitCmdline(s string) []string {
	var out []string
	var cur strings.Builder
	inQuote, have := false, false
	for i := 0; i < len(s); i++ { // bytes, not runes: keep invalid UTF-8 as it is
		r := s[i]
		switch {
		case r == '"':
			inQuote = !inQuote
			have = true
		case !inQuote && (r == ' ' || r == '\t' || r == '\n'):
			if have {
				out = append(out, cur.String())
				cur.Reset()
				have = false
			}
		default:
			cur.WriteByte(r)
			have = true
		}
	}
	if have {
		out = append(out, cur.String())
	}
	return out
}
