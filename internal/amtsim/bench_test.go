package amtsim

import (
	"context"
	"io"
	"net"
	"path/filepath"
	"testing"

	"github.com/provstick/provstick/initramfs/heci"
	"github.com/provstick/provstick/initramfs/heci/amthi"
	"github.com/provstick/provstick/initramfs/heci/amtinfo"
)

// serveUnix starts a simulator on a Unix socket for a benchmark.
func serveUnix(b *testing.B) string {
	b.Helper()
	sock := filepath.Join(b.TempDir(), "me.sock")
	ln, err := Listen("unix://" + sock)
	if err != nil {
		b.Fatal(err)
	}
	srv := NewMEServer(NewDevice(DefaultState()), nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { srv.Serve(ctx, ln); close(done) }()
	b.Cleanup(func() { cancel(); <-done; srv.Close() })
	return "unix://" + sock
}

// BenchmarkRoundTripUnix is one AMTHI GetUUID request and reply through
// the stream transport over a Unix socket to the simulator (issue goal:
// at least 50,000 per second).
func BenchmarkRoundTripUnix(b *testing.B) {
	addr := serveUnix(b)
	tr, err := heci.Open(b.Context(), addr, heci.AMTHIClient, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer tr.Close()
	ctx := b.Context()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := (amthi.GetUUID{}).Execute(ctx, tr); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "roundtrips/s")
}

// BenchmarkRoundTripPipe is the same over an in-memory pipe.
func BenchmarkRoundTripPipe(b *testing.B) {
	srv := NewMEServer(NewDevice(DefaultState()), nil)
	defer srv.Close()
	d := srv.Pipe(b.Context(), nil)
	defer d.Close()
	tr, err := d.Connect(b.Context(), heci.AMTHIClient)
	if err != nil {
		b.Fatal(err)
	}
	ctx := b.Context()
	for b.Loop() {
		if _, err := (amthi.GetUUID{}).Execute(ctx, tr); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "roundtrips/s")
}

// BenchmarkRawUnixPingPong is the peer: the same byte counts (an 18-byte
// request frame, a 34-byte reply frame) echoed over a Unix socket by plain
// blocking reads and writes, with no framing, channels or codecs. It is
// the floor our transport is compared with.
func BenchmarkRawUnixPingPong(b *testing.B) {
	sock := filepath.Join(b.TempDir(), "raw.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		req, reply := make([]byte, 18), make([]byte, 34)
		for {
			if _, err := io.ReadFull(c, req); err != nil {
				return
			}
			if _, err := c.Write(reply); err != nil {
				return
			}
		}
	}()
	c, err := net.Dial("unix", sock)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	req, reply := make([]byte, 18), make([]byte, 34)
	for b.Loop() {
		if _, err := c.Write(req); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, reply); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "roundtrips/s")
}

// BenchmarkCollectUnix is the agent-side time to collect the whole
// amtinfo set from the simulator over a Unix socket, including opening
// the socket and connecting both clients (issue goal: at most 50 ms).
func BenchmarkCollectUnix(b *testing.B) {
	addr := serveUnix(b)
	ctx := b.Context()
	for b.Loop() {
		d, err := heci.OpenDevice(ctx, addr, nil)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := amtinfo.Collect(ctx, d, nil); err != nil {
			b.Fatal(err)
		}
		d.Close()
	}
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/collect")
}

// BenchmarkRoundTripUnixParallel keeps several requests in flight on one
// stream, each on its own channel (one request per channel, as the spec
// requires), the way the agent could ask AMTHI and MKHI at once.
func BenchmarkRoundTripUnixParallel(b *testing.B) {
	addr := serveUnix(b)
	d, err := heci.OpenDevice(b.Context(), addr, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	ctx := b.Context()
	b.SetParallelism(4)
	b.RunParallel(func(pb *testing.PB) {
		tr, err := d.Connect(ctx, heci.AMTHIClient)
		if err != nil {
			b.Error(err)
			return
		}
		defer tr.Close()
		for pb.Next() {
			if _, err := (amthi.GetUUID{}).Execute(ctx, tr); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "roundtrips/s")
}
