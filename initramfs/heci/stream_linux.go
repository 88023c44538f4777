//go:build linux

package heci

import (
	"io"
	"os"
	"sync"
	"syscall"
)

// nonblockingRead returns raw reads of rw that never wait for readiness
// unless asked to, or nil when rw has no file descriptor. The caller checks
// that the descriptor is pollable (read deadlines work only on those, and
// only those are in non-blocking mode): on a blocking one a read would wait.
func nonblockingRead(rw io.Reader) rawReader {
	sc, ok := rw.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	r := &pollRead{rc: rc}
	// One method value each for every call, not one per call.
	r.readFn, r.xferFn = r.read, r.xfer
	return r
}

// pollRead implements rawReader; only the holder of the stream's read
// token uses it.
type pollRead struct {
	rc             syscall.RawConn
	readFn, xferFn func(fd uintptr) bool

	p, w  []byte
	mu    *sync.Mutex
	n     int
	err   error
	wrote int
	held  bool
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
	if err != nil {
		return 0, err
	}
	return readResult(n, rerr, len(p))
}

func readResult(n int, err error, want int) (int, error) {
	switch {
	case err == syscall.EAGAIN || err == syscall.EINTR:
		return 0, nil
	case err != nil:
		return 0, os.NewSyscallError("read", err)
	case n == 0 && want > 0:
		return 0, io.EOF
	}
	return n, nil
}

// xfer is the body of Exchange: read; when nothing is waiting, write the
// request if it is not out yet and then wait for readiness.
func (r *pollRead) xfer(fd uintptr) bool {
	r.n, r.err = syscall.Read(int(fd), r.p)
	if r.err != syscall.EAGAIN {
		return true // data, the end of the stream, or an error
	}
	// Nothing read: r.err stays EAGAIN, which Exchange reports as (0, nil).
	r.n = 0
	if len(r.w) == 0 {
		return false // the request is out: wait for the reply
	}
	if !r.mu.TryLock() {
		return true // someone else is writing: the caller writes
	}
	m, _ := syscall.Write(int(fd), r.w)
	m = max(m, 0)
	r.wrote += m
	r.w = r.w[m:]
	switch {
	case len(r.w) == 0:
		r.mu.Unlock()
		return false
	case m > 0:
		r.held = true // part of a frame is out: the caller writes the rest
	default:
		r.mu.Unlock() // the caller writes, and sees any error
	}
	return true
}

func (r *pollRead) Exchange(p, w []byte, mu *sync.Mutex) (n, wrote int, held bool, err error) {
	r.p, r.w, r.mu, r.wrote, r.held = p, w, mu, 0, false
	err = r.rc.Read(r.xferFn)
	n, rerr := r.n, r.err
	wrote, held = r.wrote, r.held
	r.p, r.w, r.mu, r.err = nil, nil, nil, nil
	if err != nil {
		return 0, wrote, held, err
	}
	n, err = readResult(n, rerr, len(p))
	return n, wrote, held, err
}
