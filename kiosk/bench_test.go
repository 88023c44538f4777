package kiosk

import (
	"context"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	wire "github.com/provstick/provstick/internal/hello"
	"github.com/provstick/provstick/internal/soak"
	khello "github.com/provstick/provstick/kiosk/hello"
	"github.com/provstick/provstick/kiosk/provision"
	"github.com/provstick/provstick/kiosk/store/storetest"
)

var benchDevices = flag.Int("kiosk.devices", 200, "simulated machines per BenchmarkProvision* iteration")

// benchProvision provisions -kiosk.devices simulated machines per
// iteration (run with -benchtime=1x) and reports devices/s from the moment
// every machine is listening to the last entry provisioned, and p50/p99 of
// the kiosk's per-machine run time (hello to verified, less any wait for
// the fleet to finish starting).
func benchProvision(b *testing.B, dsn func(testing.TB) string) {
	n := *benchDevices
	var durs []time.Duration
	var total time.Duration
	seen := map[string]int{} // PID → provisioned results (make soak)
	for b.Loop() {
		b.StopTimer()
		// Time scale 60: a waiting machine repeats its hello every second
		// (real ones: every minute); at 600, 1,000 waiting machines send
		// 10,000 hellos/s, all folded, which measures the simulator more
		// than the kiosk.
		o := benchOptions{n: n, consume: true, logLevel: 12, concurrency: 32, keys: 16, timescal: 60}
		if dsn != nil {
			o.dsn = dsn(b)
		}
		b.StartTimer()
		bn := newBench(b, o)
		start := bn.ready // the fleet's start-up is not the kiosk's time
		got := 0
		deadline := time.After(10 * time.Minute)
		for got < n {
			select {
			case r := <-bn.results:
				switch r.Outcome {
				case provision.OutcomeProvisioned:
					got++
					seen[r.Job.PID]++
					bn.wmu.Lock()
					durs = append(durs, r.Duration-bn.waited[r.Job.PID])
					bn.wmu.Unlock()
				case provision.OutcomeFailed:
					b.Logf("failure (retried on the next hello): %v", r.Failure)
				}
			case <-deadline:
				b.Fatalf("%d of %d provisioned", got, n)
			}
		}
		b.StopTimer()
		total += time.Since(start)
		bn.stop()
		bn.fleet.Close()
		b.StartTimer()
	}
	dups := 0
	for _, c := range seen {
		dups += c - 1
	}
	name := "sqlite"
	if dsn != nil {
		name = "postgresql"
	}
	// Every machine provisioned (or the benchmark failed above); a PID
	// provisioned twice would be a duplicate.
	if err := soak.Report(soak.Result{Loop: fmt.Sprintf("%d-device load (%s)", n, name), Runs: b.N, Provisioned: len(seen),
		Duplicates: dups, Note: "one kiosk, no faults"}); err != nil {
		b.Error(err)
	}
	slices.Sort(durs)
	b.ReportMetric(float64(len(durs))/total.Seconds(), "devices/s")
	b.ReportMetric(float64(durs[len(durs)/2].Milliseconds()), "p50-ms")
	b.ReportMetric(float64(durs[len(durs)*99/100].Milliseconds()), "p99-ms")
	b.ReportMetric(0, "ns/op")
}

func BenchmarkProvisionSQLite(b *testing.B) { benchProvision(b, nil) }

func BenchmarkProvisionPostgres(b *testing.B) { benchProvision(b, storetest.PostgresDSN) }

var (
	helloThreads = flag.Int("kiosk.hello-senders", 2, "hello benchmarks: sender threads in the sender process, each sending one hello per TCP connection")
	helloPin     = flag.Bool("kiosk.hello-pin", false, "hello benchmarks: pin sender thread i to CPU i mod NumCPU")
	helloSources = flag.Int("kiosk.hello-sources", 1024, "hello benchmarks: source addresses the senders spread their connections over (127.1.x.y), as a fleet of machines; 1 sends all from 127.0.0.1")
)

// helloBench sends b.N hellos to addr from a separate process (this test
// binary as a hello sender, rawSend: a few OS threads making blocking
// socket/connect/write/close system calls, one connection per hello, as
// AMT devices do) and waits for the server to have handled them all. It
// reports hellos/s, the server process's CPU time per hello (this process:
// the listener under test, and little else), the sender's, and the
// server's voluntary context switches per hello (threads going to sleep
// and being woken: goroutines parked and readied). The kiosk
// and the plain accept loop get the same senders.
func helloBench(b *testing.B, addr string, msg []byte, wait func()) {
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "PROVSTICK_HELLO_SENDER="+addr, fmt.Sprintf("PROVSTICK_HELLO_N=%d", b.N),
		fmt.Sprintf("PROVSTICK_HELLO_THREADS=%d", *helloThreads), fmt.Sprintf("PROVSTICK_HELLO_SOURCES=%d", *helloSources),
		"PROVSTICK_HELLO_MSG="+hex.EncodeToString(msg))
	if *helloPin {
		cmd.Env = append(cmd.Env, "PROVSTICK_HELLO_PIN=1")
	}
	cmd.Stderr = os.Stderr
	b.ReportAllocs()
	runtime.GC()
	cpu0, sw0 := cpuTime(), ctxSwitches()
	b.ResetTimer()
	if err := cmd.Run(); err != nil {
		b.Fatalf("hello sender: %v", err)
	}
	wait()
	b.StopTimer()
	cpu, sw := cpuTime()-cpu0, ctxSwitches()-sw0
	sender := cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "hellos/s")
	b.ReportMetric(float64(cpu.Nanoseconds())/1e3/float64(b.N), "cpu-us/hello")
	b.ReportMetric(float64(sender.Nanoseconds())/1e3/float64(b.N), "sender-cpu-us/hello")
	b.ReportMetric(float64(sw)/float64(b.N), "ctxsw/hello")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkHellos: hellos parsed by the kiosk's listener, folded (their
// machine is being handled) and recorded in the store's hello log
// (SQLite), the senders in another process (helloBench). The timer stops
// when the last row is written. 1e6 / cpu-us/hello is how many hellos one
// core of the kiosk handles per second when the senders are other
// machines, as on a real network.
func BenchmarkHellos(b *testing.B) {
	// The flood limit is on but high: its cost is counted, all from one
	// address pass.
	bn := newBench(b, benchOptions{n: 1, consume: true, logLevel: 12, noFleet: true, floodRate: 1e9})
	// Hold the one PID in flight so that every hello folds.
	block := make(chan struct{})
	defer close(block)
	bn.resolveHook = func(ctx context.Context) {
		select {
		case <-block:
		case <-ctx.Done():
		}
	}
	if got := bn.k.Provisioner().Submit(provision.Job{PID: bn.entries[0].PID.String(), UUID: bn.uuids[0]}); got != "queued" {
		b.Fatal(got)
	}
	msg, err := (&wire.Hello{Version: wire.VersionPSK, UUID: wire.UUID{1}, PID: bn.entries[0].PID.String()}).MarshalBinary()
	if err != nil {
		b.Fatal(err)
	}
	before, _ := bn.k.HelloLogStats()
	helloBench(b, bn.k.o.HelloListener.Addr().String(), msg, func() { waitLog(b, bn, before) })
	s := bn.k.HelloStats()
	if s.Malformed != 0 {
		b.Errorf("malformed: %+v", s)
	}
	// The share of connections whose hello had not all arrived when
	// accepted (read on a goroutine of their own, with the deadline).
	b.ReportMetric(float64(s.Waited)/float64(s.Connections), "waited/hello")
}

// BenchmarkHellosPeer is the floor: the same senders against a plain Go
// accept-read-close loop (a goroutine per connection reading to EOF) that
// neither parses nor records.
func BenchmarkHellosPeer(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	var got atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				io.Copy(io.Discard, c)
				c.Close()
				got.Add(1)
			}()
		}
	}()
	helloBench(b, ln.Addr().String(), make([]byte, wire.SizePSK), func() {
		for got.Load() < int64(b.N) {
			time.Sleep(time.Millisecond)
		}
	})
}

// BenchmarkHelloPipeline is the kiosk's own cost per hello without TCP:
// parse, fold and record in the store's hello log (SQLite), as the
// listener's handler does, from 8 goroutines.
func BenchmarkHelloPipeline(b *testing.B) {
	bn := newBench(b, benchOptions{n: 1, consume: true, logLevel: 12, noFleet: true})
	block := make(chan struct{})
	defer close(block)
	bn.resolveHook = func(ctx context.Context) {
		select {
		case <-block:
		case <-ctx.Done():
		}
	}
	bn.k.Provisioner().Submit(provision.Job{PID: bn.entries[0].PID.String(), UUID: bn.uuids[0]})
	msg, _ := (&wire.Hello{Version: wire.VersionPSK, UUID: wire.UUID{1}, PID: bn.entries[0].PID.String()}).MarshalBinary()
	ctx := context.Background()
	before, _ := bn.k.HelloLogStats()
	peer := netip.MustParseAddrPort("127.0.0.1:16993")
	b.ResetTimer()
	var wg sync.WaitGroup
	var left atomic.Int64
	left.Store(int64(b.N))
	for range 8 {
		wg.Go(func() {
			for left.Add(-1) >= 0 {
				h, err := wire.Parse(msg)
				bn.k.onHello(ctx, khello.Received{At: time.Now(), Peer: peer, Hello: h, Err: err})
			}
		})
	}
	wg.Wait()
	waitLog(b, bn, before)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "hellos/s")
}

// waitLog waits until b.N more hello log rows are written or dropped, and
// fails on drops.
func waitLog(b *testing.B, bn *bench, before uint64) {
	for {
		w, d := bn.k.HelloLogStats()
		if d > 0 {
			b.Fatalf("%d hello log rows dropped", d)
		}
		if w-before >= uint64(b.N) {
			return
		}
		time.Sleep(time.Millisecond)
	}
}
