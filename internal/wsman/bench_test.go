package wsman

import (
	"bytes"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"

	"github.com/provstick/provstick/internal/peertest"
)

// BenchmarkGet is one Get AMT_GeneralSettings by our client against our
// dispatcher over loopback HTTP with Digest (nonce cached after the first).
func BenchmarkGet(b *testing.B) {
	f := newFakeAMT(b, nil, testPassword)
	ts := f.start(b)
	c := newTestClient(b, ts.URL, testPassword, nil)
	ctx := b.Context()
	if _, err := c.GetGeneralSettings(ctx); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := c.GetGeneralSettings(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkGetPeer is the same Get made by MeshCentral's WS-Man stack
// (node) against the same dispatcher; ns/op is measured inside node after
// a warm-up call, so node's start-up is not counted.
func BenchmarkGetPeer(b *testing.B) {
	node, amtDir := peertest.MeshCentralAMT(b, "amt-wsman.js")
	f := newFakeAMT(b, nil, testPassword)
	ts := httptest.NewServer(f.srv)
	defer ts.Close()
	host, port, _ := net.SplitHostPort(ts.Listener.Addr().String())
	n := b.N
	out, err := exec.CommandContext(b.Context(), node, filepath.Join("testdata", "meshcentral", "bench.js"),
		amtDir, host, port, "admin", string(testPassword), strconv.Itoa(n)).Output()
	if err != nil {
		b.Fatalf("node: %v", err)
	}
	var r struct{ N, NS, OK int64 }
	if err := json.Unmarshal(out, &r); err != nil {
		b.Fatalf("node output %q: %v", out, err)
	}
	if r.OK != int64(n) {
		b.Fatalf("MeshCentral: %d of %d Gets answered", r.OK, n)
	}
	b.ReportMetric(float64(r.NS)/float64(n), "ns/op")
}

// BenchmarkServeHTTP is the dispatcher's cost for one Get, without the
// network and without Digest.
func BenchmarkServeHTTP(b *testing.B) {
	f := newFakeAMT(b, nil, testPassword)
	f.srv.opts.Unauthenticated = true
	req, err := os.ReadFile(filepath.Join("testdata", "requests", "mc-get-generalsettings.xml"))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		w := httptest.NewRecorder()
		f.srv.ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/wsman", bytes.NewReader(req)))
		if w.Code != 200 {
			b.Fatal(w.Code)
		}
	}
}

// BenchmarkParseMessage parses an AMT-shaped GetResponse and decodes it.
func BenchmarkParseMessage(b *testing.B) {
	data, err := os.ReadFile(filepath.Join("testdata", "responses", "amt-get-generalsettings.xml"))
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		m, err := ParseMessage(data)
		if err != nil {
			b.Fatal(err)
		}
		var g GeneralSettings
		if err := m.Body.Decode(&g); err != nil {
			b.Fatal(err)
		}
	}
}

// TestServerIdleMemory measures the heap an idle Server holds with the fake
// AMT's ~25 routes registered, after one authenticated exchange (a nonce
// remembered). The simulator's budget is 64 KiB per idle device; the
// dispatcher must take a small part of it.
func TestServerIdleMemory(t *testing.T) {
	const n = 200
	const budget = 24 << 10
	keep := make([]*Server, n)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := range keep {
		keep[i] = newFakeAMT(t, nil, testPassword).srv
		keep[i].digest.newNonce()
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	per := (int64(after.HeapAlloc) - int64(before.HeapAlloc)) / n
	t.Logf("idle Server with fake AMT routes: %d bytes each", per)
	if per > budget {
		t.Errorf("idle Server holds %d bytes, budget %d", per, budget)
	}
	runtime.KeepAlive(keep)
}
