//go:build linux

package heci

import (
	"io"
	"os"
	"syscall"
)

// nonblockingRead returns a read of rw that never waits: (0, nil) when
// nothing is waiting. It is nil when rw has no file descriptor. The caller
// checks that rw's descriptor is pollable (read deadlines work only on
// those, and only those are in non-blocking mode): on a blocking one the
// read would wait.
func nonblockingRead(rw io.Reader) func([]byte) (int, error) {
	sc, ok := rw.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	r := &pollRead{rc: rc}
	r.readFn = r.read // one method value for every call, not one per call
	return r.Read
}

// pollRead is the state of nonblockingRead; only the holder of the
// stream's read token uses it.
type pollRead struct {
	rc     syscall.RawConn
	readFn func(fd uintptr) bool
	p      []byte
	n      int
	err    error
}

func (r *pollRead) read(fd uintptr) bool {
	r.n, r.err = syscall.Read(int(fd), r.p)
	return true // never wait for readiness
}

func (r *pollRead) Read(p []byte) (int, error) {
	r.p = p
	err := r.rc.Read(r.readFn)
	n, rerr := r.n, r.err
	r.p, r.err = nil, nil
	switch {
	case err != nil:
		return 0, err
	case rerr == syscall.EAGAIN || rerr == syscall.EINTR:
		return 0, nil
	case rerr != nil:
		return 0, os.NewSyscallError("read", rerr)
	case n == 0 && len(p) > 0:
		return 0, io.EOF
	}
	return n, nil
}
