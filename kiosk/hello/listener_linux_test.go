package hello

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	wire "github.com/provstick/provstick/internal/hello"
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

// TestReadRaw: the raw path's read of an accepted descriptor, on a socket
// pair: what is all there is read at once and fd closed; what is not
// becomes a pollable file.
func TestReadRaw(t *testing.T) {
	tests := []struct {
		name     string
		send     int  // bytes the peer writes
		eof      bool // and then shuts its side
		wantN    int
		wantConn bool
		wantErr  error
	}{
		{name: "whole", send: wire.SizePSK, eof: true, wantN: wire.SizePSK},
		{name: "empty", eof: true},
		{name: "no EOF yet", send: 10, wantN: 10, wantConn: true},
		{name: "nothing yet", wantConn: true},
		{name: "oversize", send: wire.MaxSize + 100, eof: true, wantN: wire.MaxSize + 1, wantErr: ErrTooLarge},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer unix.Close(fds[1])
			if tc.send > 0 {
				if _, err := unix.Write(fds[1], make([]byte, tc.send)); err != nil {
					t.Fatal(err)
				}
			}
			if tc.eof {
				unix.Shutdown(fds[1], unix.SHUT_WR)
			}
			buf := make([]byte, wire.MaxSize+1)
			c, n, err := readRaw(fds[0], netip.MustParseAddrPort("127.0.0.1:9"), buf)
			if !errors.Is(err, tc.wantErr) || n != tc.wantN || (c != nil) != tc.wantConn {
				t.Fatalf("got conn %v, %d bytes, err %v; want conn %v, %d bytes, err %v", c != nil, n, err, tc.wantConn, tc.wantN, tc.wantErr)
			}
			if c == nil {
				// fd was closed: the peer reads EOF (or a reset, when
				// bytes were left unread).
				if m, err := unix.Read(fds[1], buf); (m != 0 || err != nil) && err != unix.ECONNRESET {
					t.Errorf("peer read %d, %v; want EOF (fd closed)", m, err)
				}
				return
			}
			// The file waits with a deadline, and reads what comes.
			c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
			if _, err := c.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Errorf("read with nothing more sent: %v, want a deadline error", err)
			}
			unix.Write(fds[1], []byte{1, 2})
			unix.Shutdown(fds[1], unix.SHUT_WR)
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			if m, err := c.Read(buf); m != 2 || err != nil {
				t.Errorf("read after more was sent: %d, %v", m, err)
			}
			if err := c.Close(); err != nil {
				t.Error(err)
			}
		})
	}
}
