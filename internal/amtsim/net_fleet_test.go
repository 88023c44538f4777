package amtsim

import (
	"context"
	"fmt"
	"net"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/provstick/provstick/initramfs/heci/amthi"
	"github.com/provstick/provstick/internal/tlspsk"
	"github.com/provstick/provstick/internal/wsman"
)

func fleetRecords(n int) []SetupRecord {
	recs := make([]SetupRecord, n)
	for i := range recs {
		recs[i] = SetupRecord{PID: fmt.Sprintf("P%07d", i), PPS: NewSecret(testPPS), MEBxPassword: NewSecret(testMEBx), DNSSuffix: "lab.example"}
	}
	return recs
}

// TestFleet: machines with their own UUIDs, PIDs and ports; each says
// hello once and answers over TLS-PSK with its own PID.
func TestFleet(t *testing.T) {
	s := newSCS(t)
	const n = 5
	f, err := StartFleet(t.Context(), FleetOptions{Devices: n, Base: DefaultState(), Records: fleetRecords(n),
		Net: NetOptions{GenerateKey: fastKey, Hello: HelloOptions{SCS: s.ln.Addr().String()}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	seen := map[string]string{}
	for range n {
		h := s.nextHello(t)
		seen[h.UUID.String()] = h.PID
	}
	for i, m := range f.Machines {
		st := m.Net.Device().State()
		if seen[st.UUID.String()] != st.PID || st.PID != fmt.Sprintf("P%07d", i) {
			t.Errorf("machine %d: hello PID %q, device PID %q", i, seen[st.UUID.String()], st.PID)
		}
		d := &tlspsk.Dialer{Config: &tlspsk.Config{Identity: func(hint string) (string, []byte, error) {
			return hint, tlspsk.KeyPPSASCII.Key(hint, testPPS), nil
		}}}
		c, err := d.DialContext(t.Context(), "tcp", m.TLSAddr)
		if err != nil {
			t.Fatalf("machine %d: %v", i, err)
		}
		if got := c.(*tlspsk.Conn).ConnectionState().Hint; got != st.PID {
			t.Errorf("machine %d: hint %q", i, got)
		}
		c.Close()
	}
	if _, err := StartFleet(t.Context(), FleetOptions{Devices: 3, Records: fleetRecords(2)}); err == nil {
		t.Errorf("3 devices from 2 records accepted")
	}
}

// idleFleet starts n machines that have sent their first hello and wait
// a minute for the next, and returns the heap and stack bytes they hold.
func idleFleet(tb testing.TB, n int) (perDevice float64, goroutines float64, stop func()) {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	got := make(chan struct{}, n)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
			got <- struct{}{}
		}
	}()
	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	g0 := runtime.NumGoroutine()
	f, err := StartFleet(context.Background(), FleetOptions{Devices: n, Base: DefaultState(), Records: fleetRecords(n),
		Net: NetOptions{Hello: HelloOptions{SCS: ln.Addr().String()}}})
	if err != nil {
		ln.Close()
		tb.Fatal(err)
	}
	for range n {
		select {
		case <-got:
		case <-time.After(60 * time.Second):
			tb.Fatal("hellos missing")
		}
	}
	time.Sleep(100 * time.Millisecond) // senders back to their timers
	runtime.GC()
	runtime.ReadMemStats(&m1)
	used := float64(m1.HeapInuse+m1.StackInuse) - float64(m0.HeapInuse+m0.StackInuse)
	gs := float64(runtime.NumGoroutine()-g0) / float64(n)
	return used / float64(n), gs, func() { f.Close(); ln.Close() }
}

// TestIdleDeviceMemory: 2,000 idle machines (listening on 16992/16993
// equivalents, waiting for their next hello) hold at most 64 KiB each
// (issue 9).
func TestIdleDeviceMemory(t *testing.T) {
	n := 2000
	if testing.Short() {
		n = 200
	}
	// Two listeners per machine plus slack: fewer machines where the
	// open-file limit is low (the figure is per machine either way).
	if lim := openFileLimit(); lim > 0 && uint64(2*n+256) > lim {
		n = int(lim-256) / 2
		t.Logf("open-file limit %d: measuring %d machines", lim, n)
	}
	per, gs, stop := idleFleet(t, n)
	defer stop()
	t.Logf("%d idle machines: %.0f bytes (%.1f KiB) and %.1f goroutines each", n, per, per/1024, gs)
	if per > 64<<10 {
		t.Errorf("%.1f KiB per idle machine, want at most 64 KiB", per/1024)
	}
}

// BenchmarkIdleDevice reports the memory of one idle machine among 2,000.
func BenchmarkIdleDevice(b *testing.B) {
	for b.Loop() {
		per, _, stop := idleFleet(b, 2000)
		stop()
		b.ReportMetric(per, "B/device")
	}
}

// BenchmarkSimGet is one Get AMT_GeneralSettings by our client over the
// 16992 Digest path against the simulator.
func BenchmarkSimGet(b *testing.B) {
	n := startNet(b, inSetup(b), nil)
	c := n.httpClient(b, "admin", testMEBx)
	ctx := b.Context()
	if _, err := c.GetGeneralSettings(ctx); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.GetGeneralSettings(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSimGetPeer is the same Get by MeshCentral's WS-Man stack
// (internal/wsman's bench.js driver, timed inside node after a warm-up).
func BenchmarkSimGetPeer(b *testing.B) {
	node, amtDir, _ := meshCentral(b)
	n := startNet(b, inSetup(b), nil)
	host, port, _ := net.SplitHostPort(n.httpAddr)
	out, err := runNode(b, node, "../wsman/testdata/meshcentral/bench.js", amtDir, host, port, "admin", testMEBx, strconv.Itoa(b.N))
	if err != nil {
		b.Fatal(err)
	}
	if out.OK != int64(b.N) {
		b.Fatalf("MeshCentral: %d of %d Gets answered", out.OK, b.N)
	}
	b.ReportMetric(float64(out.NS)/float64(b.N), "ns/op")
}

// BenchmarkProvision is the whole spec §6 exchange over TLS-PSK against a
// fresh machine (key generation excluded: one pre-made key).
func BenchmarkProvision(b *testing.B) {
	for b.Loop() {
		b.StopTimer()
		n := startNet(b, inSetup(b), nil)
		c := n.pskClient(b, testPPS, testMEBx, tlspsk.KeyPPSASCII, wsman.PSKText)
		b.StartTimer()
		provision(b.Context(), b, c, "Admin-Pass-2!", "Mebx-Pass-3!", false)
		b.StopTimer()
		if n.srv.Device().State().ProvisioningState != amthi.StatePost {
			b.Fatal("not provisioned")
		}
		n.cancelCtx()
		n.srv.Close()
		b.StartTimer()
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "provisions/s")
}
