package hello

import (
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// waitDeferAccept waits until Serve has set TCP_DEFER_ACCEPT on ln and
// returns it.
func waitDeferAccept(t *testing.T, ln net.Listener) time.Duration {
	t.Helper()
	rc, err := ln.(*net.TCPListener).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		var v int
		var gerr error
		if err := rc.Control(func(fd uintptr) { v, gerr = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT) }); err != nil {
			t.Fatal(err)
		}
		if gerr != nil {
			t.Fatal(gerr)
		}
		if v > 0 {
			return time.Duration(v) * time.Second
		}
		if time.Now().After(deadline) {
			t.Fatal("TCP_DEFER_ACCEPT never set")
		}
		time.Sleep(time.Millisecond)
	}
}
