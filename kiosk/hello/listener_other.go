//go:build !linux

package hello

import (
	"errors"
	"net"
	"net/netip"
	"time"
)

// rawAcceptor is Linux only (listener_linux.go); elsewhere every listener
// takes the net.Listener path.
type (
	rawListener struct{}
	rawAcceptor struct{}
)

func newRawListener(net.Listener) *rawListener { return nil }

func (*rawListener) close() {}

func (*rawListener) acceptor() *rawAcceptor { return nil }

func (*rawAcceptor) accept() (int, netip.AddrPort, error) {
	return -1, netip.AddrPort{}, errors.New("hello listener: raw accept is Linux only")
}

func readRaw(int, netip.AddrPort, []byte) (conn, int, error) {
	return nil, 0, errors.New("hello listener: raw read is Linux only")
}

func closeFD(int) {}

func deferAccept(net.Listener, time.Duration) error { return nil }
