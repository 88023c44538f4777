package hello

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"syscall"
	"time"
	"unsafe"

	wire "github.com/provstick/provstick/internal/hello"
	"golang.org/x/sys/unix"
)

// rawListener is a duplicate of a TCP listener's descriptor as an
// *os.File: (*net.TCPListener).SyscallConn gives no Read to wait with, a
// file's does. Both descriptors name the same socket and accept queue.
type rawListener struct{ f *os.File }

// newRawListener returns a rawListener for ln, or nil when ln is not TCP
// or cannot be duplicated.
func newRawListener(ln net.Listener) *rawListener {
	tl, ok := ln.(*net.TCPListener)
	if !ok {
		return nil
	}
	f, err := tl.File()
	if err != nil {
		return nil
	}
	return &rawListener{f: f}
}

// close closes the duplicate; waiting acceptors return an error.
func (r *rawListener) close() {
	if r != nil {
		r.f.Close()
	}
}

// rawAcceptor accepts connections on the listener's descriptor with
// accept4 (non-blocking, close-on-exec), waiting in the netpoller only
// when none is queued. Unlike (*net.TCPListener).Accept it makes no
// net.Conn: no epoll registration, no getsockname, no TCP_NODELAY and
// keep-alive socket options (five setsockopt calls), no allocations. One
// per accepting goroutine.
type rawAcceptor struct {
	rc     syscall.RawConn
	try    func(uintptr) bool // a.accept4, made once
	fd     int
	err    error
	rsa    unix.RawSockaddrAny
	rsaLen uint32
}

// acceptor returns a new rawAcceptor, or nil if r is nil.
func (r *rawListener) acceptor() *rawAcceptor {
	if r == nil {
		return nil
	}
	rc, err := r.f.SyscallConn()
	if err != nil {
		return nil
	}
	a := &rawAcceptor{rc: rc}
	a.try = a.accept4
	return a
}

// accept4 is one attempt; false: nothing queued, wait.
func (a *rawAcceptor) accept4(lfd uintptr) bool {
	for {
		a.rsaLen = unix.SizeofSockaddrAny
		fd, _, e := unix.Syscall6(unix.SYS_ACCEPT4, lfd, uintptr(unsafe.Pointer(&a.rsa)), uintptr(unsafe.Pointer(&a.rsaLen)),
			unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0, 0)
		switch e {
		case 0:
			a.fd, a.err = int(fd), nil
			return true
		case unix.EAGAIN:
			return false
		case unix.EINTR, unix.ECONNABORTED:
			// Interrupted, or the peer gave up while queued: next one
			// (as the net package does).
			continue
		}
		a.fd, a.err = -1, os.NewSyscallError("accept4", e)
		return true
	}
}

// accept returns the next connection's descriptor and peer address.
func (a *rawAcceptor) accept() (int, netip.AddrPort, error) {
	if err := a.rc.Read(a.try); err != nil {
		return -1, netip.AddrPort{}, err
	}
	if a.err != nil {
		return -1, netip.AddrPort{}, a.err
	}
	return a.fd, a.peer(), nil
}

// peer decodes the address accept4 wrote.
func (a *rawAcceptor) peer() netip.AddrPort {
	switch a.rsa.Addr.Family {
	case unix.AF_INET:
		p := (*unix.RawSockaddrInet4)(unsafe.Pointer(&a.rsa))
		port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&p.Port))[:])
		return netip.AddrPortFrom(netip.AddrFrom4(p.Addr), port)
	case unix.AF_INET6:
		p := (*unix.RawSockaddrInet6)(unsafe.Pointer(&a.rsa))
		port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&p.Port))[:])
		addr := netip.AddrFrom16(p.Addr).Unmap()
		if p.Scope_id != 0 {
			// A link-local peer: name the zone as the net package does.
			if ifi, err := net.InterfaceByIndex(int(p.Scope_id)); err == nil {
				addr = addr.WithZone(ifi.Name)
			} else {
				addr = addr.WithZone(fmt.Sprint(p.Scope_id))
			}
		}
		return netip.AddrPortFrom(addr, port)
	}
	return netip.AddrPort{}
}

// readRaw reads a freshly accepted non-blocking descriptor into buf
// without waiting. When the peer's bytes and EOF are all there (nearly
// always under load), it closes fd and returns
// c == nil and the message (buf[:n]) or why it is malformed. Otherwise it
// returns fd as a pollable *os.File named after the peer (the netpoller
// and a deadline take over; errors read "read PEER: ...") and the n bytes
// read so far.
func readRaw(fd int, peer netip.AddrPort, buf []byte) (c conn, n int, err error) {
	for {
		if n == len(buf) {
			closeFD(fd)
			return nil, n, fmt.Errorf("reading a hello: more than %d bytes: %w", wire.MaxSize, ErrTooLarge)
		}
		m, err := unix.Read(fd, buf[n:])
		switch {
		case err == nil && m == 0:
			closeFD(fd)
			return nil, n, nil
		case err == nil:
			n += m
		case err == unix.EINTR:
		case err == unix.EAGAIN:
			return os.NewFile(uintptr(fd), peer.String()), n, nil
		case n == 0:
			closeFD(fd)
			return nil, n, fmt.Errorf("reading a hello: %w (%w)", os.NewSyscallError("read", err), errNothingRead)
		default:
			closeFD(fd)
			return nil, n, fmt.Errorf("reading a hello after %d bytes: %w", n, os.NewSyscallError("read", err))
		}
	}
}

func closeFD(fd int) { unix.Close(fd) }

// deferAccept sets TCP_DEFER_ACCEPT on a TCP listener (others: nothing).
func deferAccept(ln net.Listener, d time.Duration) error {
	tl, ok := ln.(*net.TCPListener)
	if !ok {
		return nil
	}
	rc, err := tl.SyscallConn()
	if err != nil {
		return fmt.Errorf("setting TCP_DEFER_ACCEPT on %s: %w", ln.Addr(), err)
	}
	secs := int((d + time.Second - 1) / time.Second)
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT, secs)
	}); err != nil {
		return fmt.Errorf("setting TCP_DEFER_ACCEPT on %s: %w", ln.Addr(), err)
	}
	if serr != nil {
		return fmt.Errorf("setting TCP_DEFER_ACCEPT on %s: %w", ln.Addr(), os.NewSyscallError("setsockopt", serr))
	}
	return nil
}
