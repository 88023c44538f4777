package builder

import (
	"os"
	"sync"
)

// coalescingFile is the image file as go-diskfs sees it: go-diskfs
// v1.9.4 writes a file's data one cluster per WriteAt (thousands of
// 4 KiB pwrites for a kernel), so consecutive writes are gathered into
// one buffer and written together. Any read, and flush, writes the
// buffer out first, so reads always see what was written.
type coalescingFile struct {
	*os.File
	buf   []byte
	start int64 // image offset of buf[0]
	err   error // first write error, returned by every later call
}

const coalesceMax = 8 << 20

// coalesceBufs keeps the buffers between builds: a factory line builds
// many images, and zeroing a fresh 8 MiB each time shows in profiles.
var coalesceBufs = sync.Pool{New: func() any { b := make([]byte, 0, coalesceMax); return &b }}

func newCoalescingFile(f *os.File) *coalescingFile {
	return &coalescingFile{File: f, buf: (*coalesceBufs.Get().(*[]byte))[:0]}
}

// release flushes and returns the buffer to the pool.
func (c *coalescingFile) release() error {
	err := c.flush()
	b := c.buf[:0]
	c.buf = nil
	coalesceBufs.Put(&b)
	if c.err == nil {
		c.err = os.ErrClosed
	}
	return err
}

func (c *coalescingFile) WriteAt(p []byte, off int64) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	if len(c.buf) > 0 && (off != c.start+int64(len(c.buf)) || len(c.buf)+len(p) > cap(c.buf)) {
		if err := c.flush(); err != nil {
			return 0, err
		}
	}
	if len(p) > cap(c.buf) {
		return c.File.WriteAt(p, off)
	}
	if len(c.buf) == 0 {
		c.start = off
	}
	c.buf = append(c.buf, p...)
	return len(p), nil
}

func (c *coalescingFile) ReadAt(p []byte, off int64) (int, error) {
	if err := c.flush(); err != nil {
		return 0, err
	}
	return c.File.ReadAt(p, off)
}

func (c *coalescingFile) flush() error {
	if c.err != nil {
		return c.err
	}
	if len(c.buf) == 0 {
		return nil
	}
	_, err := c.File.WriteAt(c.buf, c.start)
	c.buf = c.buf[:0]
	c.err = err
	return err
}
