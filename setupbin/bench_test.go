package setupbin_test

import (
	"bytes"
	"io"
	"runtime"
	"sync"
	"testing"

	"github.com/provstick/provstick/setupbin"
	"github.com/provstick/provstick/setupbin/setupbintest"
)

const benchRecords = 100_000

var benchData = sync.OnceValues(func() ([]setupbin.PSK, error) { return setupbintest.PSKs(1, benchRecords) })

// writePSKs writes psks as a 4.0 file (scrambled, as Intel's tools do),
// building each record from its PSK as the CLI and the store do.
func writePSKs(w io.Writer, psks []setupbin.PSK) error {
	wr, err := setupbin.NewWriter(w, setupbin.WriterOptions{Version: setupbin.V4_0, Profile: setupbin.ProfileAMT6to10, Records: uint32(len(psks))})
	if err != nil {
		return err
	}
	for i := range psks {
		rec, err := psks[i].Record(setupbin.ProfileAMT6to10)
		if err != nil {
			return err
		}
		if err := wr.AddRecord(rec); err != nil {
			return err
		}
	}
	return wr.Close()
}

// BenchmarkWrite100k writes 100,000 PSK records (51.2 MB) to memory.
func BenchmarkWrite100k(b *testing.B) {
	psks, err := benchData()
	if err != nil {
		b.Fatal(err)
	}
	var buf bytes.Buffer
	buf.Grow((1 + benchRecords) * setupbin.ChunkSize)
	b.SetBytes((1 + benchRecords) * setupbin.ChunkSize)
	b.ReportAllocs()
	for b.Loop() {
		buf.Reset()
		if err := writePSKs(&buf, psks); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRead100k parses a 100,000-record file from memory: every entry
// decoded, every PID/PPS check character verified, findings collected.
func BenchmarkRead100k(b *testing.B) {
	psks, err := benchData()
	if err != nil {
		b.Fatal(err)
	}
	var buf bytes.Buffer
	if err := writePSKs(&buf, psks); err != nil {
		b.Fatal(err)
	}
	data := buf.Bytes()
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		r, err := setupbin.NewReader(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			b.Fatal(err)
		}
		if len(r.Records) != benchRecords || r.HasErrors() {
			b.Fatalf("%d records, findings %v", len(r.Records), r.Findings)
		}
	}
}

// TestWriterMemoryIndependentOfN writes 1,000 and 100,000 records and
// requires the Writer to allocate the same amount for both.
func TestWriterMemoryIndependentOfN(t *testing.T) {
	psks, err := setupbintest.PSKs(2, 1)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := psks[0].Record(nil)
	if err != nil {
		t.Fatal(err)
	}
	alloc := func(n int) uint64 {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		w, err := setupbin.NewWriter(io.Discard, setupbin.WriterOptions{Version: setupbin.V4_0, Records: uint32(n)})
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < n; i++ {
			if err := w.AddRecord(rec); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		runtime.ReadMemStats(&after)
		return after.TotalAlloc - before.TotalAlloc
	}
	small, large := alloc(1_000), alloc(100_000)
	t.Logf("writer allocated %d bytes for 1,000 records, %d for 100,000", small, large)
	if large > 2*small+16<<10 || large > 256<<10 {
		t.Errorf("writer memory grows with N: %d bytes for 1,000 records, %d for 100,000", small, large)
	}
}
