package hello

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	wire "github.com/provstick/provstick/internal/hello"
)

// FuzzListener writes arbitrary bytes to the listener over a pipe: every
// message must be handled exactly once, as a hello or as an error (an
// empty one is a probe, counted and not handed on), and a
// hello must encode back to the same bytes. Seeds: testdata (copies of
// internal/hello's vectors, testdata/README.md).
func FuzzListener(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/*.*")
	for _, s := range seeds {
		b, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{})
	var got Received
	l, err := New(Options{Handler: func(_ context.Context, r Received) { got = r }, ReadTimeout: time.Second})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		a, c := net.Pipe()
		go func() { a.Write(b); a.Close() }()
		got = Received{}
		probes := l.Stats().Probes
		l.serveConn(context.Background(), c, netip.AddrPort{}, time.Now(), make([]byte, wire.MaxSize+1), 0)
		switch {
		case len(b) == 0:
			if got != (Received{}) || l.Stats().Probes != probes+1 {
				t.Fatalf("an empty connection: handled %+v, stats %+v; want a probe", got, l.Stats())
			}
		case got.Err != nil:
			if got.Hello != nil {
				t.Fatal("both a hello and an error")
			}
			if len(b) <= wire.MaxSize && !errors.Is(got.Err, wire.ErrFormat) {
				t.Fatalf("error %v does not wrap ErrFormat", got.Err)
			}
		case got.Hello == nil:
			t.Fatal("neither a hello nor an error")
		default:
			out, err := got.Hello.MarshalBinary()
			if err != nil || string(out) != string(b) {
				t.Fatalf("re-encoding: %x, %v; want %x", out, err, b)
			}
		}
	})
}
