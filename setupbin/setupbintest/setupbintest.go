// Package setupbintest builds setup.bin files with N deterministic PSK
// records for tests of setupbin's users (CLI, kiosk store, builder), the
// way httptest serves net/http's. Every value comes from a seeded
// ChaCha8 stream, so the same Options give the same bytes.
package setupbintest

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/provstick/provstick/setupbin"
)

// Options describe the file to build. The zero value is one 4.0 record.
type Options struct {
	Records   int              // N; 0 means 1
	Version   setupbin.Version // 0 means 4.0
	Profile   *setupbin.Profile
	Scramble  setupbin.ScrambleMode // default: 4.0 only
	NoConsume bool
	// Consumed runs setupbin.Consume this many times on the result.
	Consumed int
	// Seed selects the PID/PPS/password stream.
	Seed uint64
	// CurrentPassword of every record; "" means "admin".
	CurrentPassword setupbin.Password
	// Server, when valid, adds 2/17 and 2/18 (port 9971) and a domain
	// name (needs format 2.1+).
	Server netip.Addr
}

// PSKs returns n deterministic PSK records for seed: fresh PID, PPS and a
// 16-character new MEBx password each.
func PSKs(seed uint64, n int) ([]setupbin.PSK, error) {
	var key [32]byte
	for i := 0; i < 8; i++ {
		key[i] = byte(seed >> (8 * i))
	}
	rnd := rand.NewChaCha8(key)
	out := make([]setupbin.PSK, n)
	for i := range out {
		pid, err := setupbin.GeneratePID(rnd)
		if err != nil {
			return nil, err
		}
		pps, err := setupbin.GeneratePPS(rnd)
		if err != nil {
			return nil, err
		}
		pw, err := setupbin.GenerateMEBxPassword(rnd, 16)
		if err != nil {
			return nil, err
		}
		out[i] = setupbin.PSK{CurrentPassword: "admin", NewPassword: pw, PID: pid, PPS: pps}
	}
	return out, nil
}

// Build returns the file's bytes and the PSK of every record.
func Build(o Options) ([]byte, []setupbin.PSK, error) {
	n := o.Records
	if n == 0 {
		n = 1
	}
	psks, err := PSKs(o.Seed, n)
	if err != nil {
		return nil, nil, err
	}
	var buf bytes.Buffer
	w, err := setupbin.NewWriter(&buf, setupbin.WriterOptions{
		Version: o.Version, Profile: o.Profile, Records: uint32(n), NoConsume: o.NoConsume,
		Scramble: o.Scramble, UnconfirmedScrambleOld: o.Scramble == setupbin.ScrambleOn,
	})
	if err != nil {
		return nil, nil, err
	}
	for i := range psks {
		if o.CurrentPassword != "" {
			psks[i].CurrentPassword = o.CurrentPassword
		}
		if o.Server.IsValid() {
			psks[i].ServerAddr, psks[i].ServerPort, psks[i].DomainName = o.Server, 9971, "provstick.test"
		}
		rec, err := psks[i].Record(o.Profile)
		if err != nil {
			return nil, nil, err
		}
		if err := w.AddRecord(rec); err != nil {
			return nil, nil, err
		}
	}
	if err := w.Close(); err != nil {
		return nil, nil, err
	}
	b := buf.Bytes()
	f := &memFile{b: b}
	for i := 0; i < o.Consumed; i++ {
		if _, err := setupbin.Consume(f, int64(len(b))); err != nil {
			return nil, nil, fmt.Errorf("consuming record %d: %w", i, err)
		}
	}
	return b, psks, nil
}

// File is Build for tests: it fails t on error.
func File(t testing.TB, o Options) ([]byte, []setupbin.PSK) {
	t.Helper()
	b, psks, err := Build(o)
	if err != nil {
		t.Fatalf("setupbintest: building a setup.bin: %v", err)
	}
	return b, psks
}

// WriteFile builds the file and writes it as setup.bin in a new temporary
// directory of t; it returns the path.
func WriteFile(t testing.TB, o Options) (string, []setupbin.PSK) {
	t.Helper()
	b, psks := File(t, o)
	p := filepath.Join(t.TempDir(), "setup.bin")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p, psks
}

// memFile is a fixed-size in-memory setupbin.ReadWriterAt.
type memFile struct{ b []byte }

func (m *memFile) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > int64(len(m.b)) {
		return 0, fmt.Errorf("setupbintest: read of %d bytes at %d out of range", len(p), off)
	}
	return copy(p, m.b[off:]), nil
}

func (m *memFile) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > int64(len(m.b)) {
		return 0, fmt.Errorf("setupbintest: write of %d bytes at %d out of range", len(p), off)
	}
	return copy(m.b[off:], p), nil
}
