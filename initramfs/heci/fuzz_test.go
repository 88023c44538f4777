package heci

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
)

func addSeeds(f *testing.F, dir string) {
	files, err := filepath.Glob(filepath.Join("testdata", dir, "*"))
	if err != nil {
		f.Fatal(err)
	}
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
}

// FuzzFrame parses stream frames (specs/heci.md §5): a parsed frame must
// encode back to the same bytes, and ReadFrame must agree with ParseFrame.
func FuzzFrame(f *testing.F) {
	addSeeds(f, "stream")
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, err := ParseFrame(b)
		if err == nil {
			if got := AppendFrame(nil, fr); !bytes.Equal(got, b) {
				t.Fatalf("re-encoded %x, want %x", got, b)
			}
			if _, err := ParseConnectedPayload(fr.Payload); err == nil && len(fr.Payload) != 5 {
				t.Fatal("connected payload of wrong size accepted")
			}
			_, _ = ParseErrorPayload(fr.Payload)
			_, _ = ParseConnectPayload(fr.Payload)
		}
		fr2, err2 := ReadFrame(bytes.NewReader(b))
		if err == nil {
			if err2 != nil || fr2.Type != fr.Type || fr2.Channel != fr.Channel || !bytes.Equal(fr2.Payload, fr.Payload) {
				t.Fatalf("ReadFrame = %+v, %v; ParseFrame = %+v", fr2, err2, fr)
			}
		}
	})
}

// FuzzCmdline parses kernel command lines; it must never panic, and a
// found value must come from the input.
func FuzzCmdline(f *testing.F) {
	f.Add("console=ttyS0 provstick.mei=virtio:org.provstick.mei")
	f.Add(`provstick.mei="unix:///a b"`)
	f.Fuzz(func(t *testing.T, s string) {
		v, ok := AddressFromCmdline(s)
		if ok && len(v) > len(s) {
			t.Fatalf("value %q longer than the input", v)
		}
		_, _ = ParseAddress(v)
	})
}

// chunkReader returns its bytes in reads of at most size bytes.
type chunkReader struct {
	b    []byte
	size int
}

func (r *chunkReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), r.size)], r.b)
	r.b = r.b[n:]
	return n, nil
}
func (r *chunkReader) Write(p []byte) (int, error) { return len(p), nil }
func (r *chunkReader) Close() error                { return nil }

// FuzzStreamRead reads a byte stream through the Stream's own buffered
// frame reader (specs/heci.md §5), in reads of varying size into a small
// buffer that must grow and compact, and requires the same frames and the
// same end as ReadFrame.
func FuzzStreamRead(f *testing.F) {
	addSeeds(f, "stream")
	f.Add([]byte("\x00\x03\x00\x00\x00\x04\x01x\x02\x00\x00\x00\x06\x00\x08\x00\x00\x00\x04\x02abcdef"))
	f.Fuzz(func(t *testing.T, b []byte) {
		size := 1
		if len(b) > 0 {
			size += int(b[0] % 32)
		}
		s := &Stream{rw: &chunkReader{b: b, size: size}, rbuf: make([]byte, 8)}
		want := bytes.NewReader(b)
		for range len(b) + 1 {
			wf, werr := ReadFrame(want)
			got, ok, err := s.readFrame(true)
			if (werr == nil) != (err == nil) || (werr == nil) != ok {
				t.Fatalf("readFrame = %+v, %v, %v; ReadFrame = %+v, %v", got, ok, err, wf, werr)
			}
			if werr != nil {
				if errors.Is(werr, io.EOF) != errors.Is(err, io.EOF) || errors.Is(werr, io.ErrUnexpectedEOF) != errors.Is(err, io.ErrUnexpectedEOF) ||
					errors.Is(werr, ErrFormat) != errors.Is(err, ErrFormat) {
					t.Fatalf("readFrame error %v, ReadFrame error %v", err, werr)
				}
				return
			}
			if got.Type != wf.Type || got.Channel != wf.Channel || !bytes.Equal(got.Payload, wf.Payload) {
				t.Fatalf("readFrame = %+v, ReadFrame = %+v", got, wf)
			}
			if len(s.rbuf) > 6+MaxFramePayload+8 {
				t.Fatalf("read buffer grew to %d bytes", len(s.rbuf))
			}
		}
		t.Fatal("no end of stream")
	})
}
