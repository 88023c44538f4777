package setupbin_test

import (
	"bytes"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/provstick/provstick/setupbin"
	"github.com/provstick/provstick/setupbin/setupbintest"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// intelHeader is the header Intel's configuration utility wrote (v4.0,
// don't-consume, one record, modules 1 and 2), quoted in
// specs/setupbin.md §2.2. Bytes 46–511 are zero.
const intelHeader = "aaa93452e129a9448d4d081c07b96353" + "01002e00" + "00000000" + "0400" + "0100" + "01000000" + "00000000" + "0100" + "0000" + "010002000000"

// goldenFile is one of our outputs under testdata/, rebuilt by -update.
type goldenFile struct {
	name string
	opts setupbintest.Options
	// patch edits the built bytes (fixtures of broken files).
	patch func(b []byte) []byte
}

func goldenFiles() []goldenFile {
	var gs []goldenFile
	for i, v := range setupbin.Versions {
		vs := v.String()
		other := setupbin.ScrambleOn // the non-default scrambling
		otherName := "scrambled"
		if v == setupbin.V4_0 {
			other, otherName = setupbin.ScrambleOff, "plain"
		}
		seed := uint64(100 + i)
		gs = append(gs,
			goldenFile{name: "v" + vs + ".bin", opts: setupbintest.Options{Version: v, Records: 3, Seed: seed}},
			goldenFile{name: "v" + vs + "-consumed.bin", opts: setupbintest.Options{Version: v, Records: 3, Seed: seed, Consumed: 1}},
			goldenFile{name: "v" + vs + "-" + otherName + ".bin", opts: setupbintest.Options{Version: v, Records: 3, Seed: seed, Scramble: other}},
			goldenFile{name: "v" + vs + "-" + otherName + "-consumed.bin", opts: setupbintest.Options{Version: v, Records: 3, Seed: seed, Scramble: other, Consumed: 1}},
		)
	}
	setLE16 := func(off int, v uint16) func([]byte) []byte {
		return func(b []byte) []byte { b[off], b[off+1] = byte(v), byte(v>>8); return b }
	}
	gs = append(gs,
		goldenFile{name: "v2.1-server.bin", opts: setupbintest.Options{Version: setupbin.V2_1, Records: 2, Seed: 200, Server: netip.MustParseAddr("192.168.10.1")}},
		goldenFile{name: "v4.0-noconsume.bin", opts: setupbintest.Options{Version: setupbin.V4_0, Records: 1, Seed: 201, NoConsume: true}},
		goldenFile{name: "v4.0-exhausted.bin", opts: setupbintest.Options{Version: setupbin.V4_0, Records: 2, Seed: 202, Consumed: 2}},
		// MeshCommander's "new setup.bin" left both chunk counts at 0.
		goldenFile{name: "meshcommander-bug.bin", opts: setupbintest.Options{Version: setupbin.V4_0, Records: 2, Seed: 203},
			patch: func(b []byte) []byte { return setLE16(0x24, 0)(setLE16(0x10, 0)(b)) }},
		// Hostile: the header claims 4,294,967,295 records.
		goldenFile{name: "bad-count.bin", opts: setupbintest.Options{Version: setupbin.V4_0, Records: 1, Seed: 204},
			patch: func(b []byte) []byte { copy(b[0x1c:], []byte{0xff, 0xff, 0xff, 0xff}); return b }},
		// Hostile: record 0's first entry claims 0xFFFF value bytes; an
		// unknown module 7 entry in record 1 (plain 3.0 file).
		goldenFile{name: "bad-entries.bin", opts: setupbintest.Options{Version: setupbin.V3_0, Records: 2, Seed: 205},
			patch: func(b []byte) []byte {
				b = setLE16(512+24+4, 0xffff)(b)
				return setLE16(1024+24, 7)(b)
			}},
		// Interrupted consume: counter 1 written, record 0 untouched.
		goldenFile{name: "interrupted-consume.bin", opts: setupbintest.Options{Version: setupbin.V4_0, Records: 2, Seed: 206},
			patch: func(b []byte) []byte { b[0x20] = 1; return b }},
		// Truncated: the last record cut in half.
		goldenFile{name: "truncated.bin", opts: setupbintest.Options{Version: setupbin.V2_0, Records: 2, Seed: 207},
			patch: func(b []byte) []byte { return b[:len(b)-256] }},
		// Negative: major version 3 under the 2.x GUID (→ ErrFormat).
		goldenFile{name: "bad-version.bin", opts: setupbintest.Options{Version: setupbin.V2_0, Records: 1, Seed: 208},
			patch: func(b []byte) []byte { b[0x18] = 3; return b }},
	)
	return gs
}

func TestGolden(t *testing.T) {
	for _, g := range goldenFiles() {
		t.Run(g.name, func(t *testing.T) {
			b, _ := setupbintest.File(t, g.opts)
			if g.patch != nil {
				b = g.patch(b)
			}
			path := filepath.Join("testdata", g.name)
			if *update {
				if err := os.WriteFile(path, b, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test ./setupbin -update)", err)
			}
			if !bytes.Equal(b, want) {
				t.Errorf("%s differs from what we write now (run go test ./setupbin -update if intended)", path)
			}
		})
	}
}

// TestFindingsGolden parses every file under testdata/ and compares the
// findings with testdata/findings.golden.
func TestFindingsGolden(t *testing.T) {
	names, _ := filepath.Glob("testdata/*.bin")
	names = append(names, "testdata/readme.notsetupbin")
	slices.Sort(names)
	var out strings.Builder
	for _, name := range names {
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&out, "== %s\n", filepath.Base(name))
		r, err := setupbin.NewReader(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			fmt.Fprintf(&out, "error: %v\n", err)
			continue
		}
		fmt.Fprintf(&out, "version %s, %d records, consumed %d, %d readable\n", r.Header.Version, r.Header.RecordCount, r.Header.Consumed, len(r.Records))
		for _, f := range r.Findings {
			fmt.Fprintf(&out, "%s\n", f)
		}
	}
	path := "testdata/findings.golden"
	if *update {
		if err := os.WriteFile(path, []byte(out.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := out.String(); got != string(want) {
		t.Errorf("findings differ from %s (run with -update if intended):\n%s", path, got)
	}
}

func TestNegativeFixtures(t *testing.T) {
	for _, name := range []string{"readme.notsetupbin", "bad-version.bin"} {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			t.Fatal(err)
		}
		_, err = setupbin.NewReader(bytes.NewReader(b), int64(len(b)))
		if !errors.Is(err, setupbin.ErrFormat) {
			t.Errorf("%s: err = %v, want ErrFormat", name, err)
		}
		if _, ok := errors.AsType[*setupbin.FormatError](err); !ok {
			t.Errorf("%s: err %T is not a *FormatError", name, err)
		}
	}
	_, err := setupbin.NewReader(bytes.NewReader(make([]byte, 100)), 100)
	if !errors.Is(err, setupbin.ErrFormat) {
		t.Errorf("100-byte input: %v", err)
	}
}

// TestIntelHeader checks the fixture built on the header Intel's
// configuration utility wrote, and that our Writer produces the same
// header bytes for the same inputs.
func TestIntelHeader(t *testing.T) {
	want, _ := hex.DecodeString(intelHeader)
	want = append(want, make([]byte, 512-len(want))...)
	path := filepath.Join("testdata", "intel-acu-header.bin")
	// Our writer, same inputs: 4.0, don't-consume, one record, modules 1, 2.
	pid, _ := setupbin.ParsePID("0000-037M")
	pps, _ := setupbin.ParsePPS("NKLD-G5DC-RRNQ-E9YZ-ZIJL-7LFL-VJED-69XJ")
	psk := setupbin.PSK{CurrentPassword: "admin", NewPassword: "P@ssw0rd", PID: pid, PPS: pps}
	rec, err := psk.Record(nil)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	w, err := setupbin.NewWriter(&buf, setupbin.WriterOptions{Version: setupbin.V4_0, Records: 1, NoConsume: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.AddRecord(rec); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if got := buf.Bytes()[:512]; !bytes.Equal(got, want) {
		t.Errorf("our header for the same inputs:\ngot  %x\nwant %x", got[:48], want[:48])
	}
	if *update {
		// Intel's header bytes, then our record (Intel's example PID/PPS).
		if err := os.WriteFile(path, append(bytes.Clone(want), buf.Bytes()[512:]...), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b[:512], want) {
		t.Fatalf("%s does not start with Intel's header bytes", path)
	}
	r, err := setupbin.NewReader(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	h := r.Header
	if h.Version != setupbin.V4_0 || !h.NoConsume() || h.RecordCount != 1 || h.HeaderChunkCount != 1 || h.ChunksPerRecord != 1 || h.HeaderBytes != 46 || !slices.Equal(h.Modules, []setupbin.Module{1, 2}) {
		t.Errorf("header %+v", h)
	}
	for _, f := range r.Findings {
		if f.Severity > setupbin.SevInfo {
			t.Errorf("finding %v", f)
		}
	}
	got, err := r.Records[0].PSK()
	if err != nil || got != psk {
		t.Errorf("record 0: %v", err)
	}
}

func TestRepairMeshCommanderBug(t *testing.T) {
	b, err := os.ReadFile("testdata/meshcommander-bug.bin")
	if err != nil {
		t.Fatal(err)
	}
	r, err := setupbin.NewReader(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	var msgs []string
	for _, f := range r.Findings {
		msgs = append(msgs, f.Code+": "+f.Message)
	}
	joined := strings.Join(msgs, "\n")
	for _, want := range []string{"header-chunk-count-zero: header chunk count is 0: MeshCommander bug, firmware will ignore this file", "record-chunk-count-zero"} {
		if !strings.Contains(joined, want) {
			t.Errorf("findings lack %q:\n%s", want, joined)
		}
	}
	path := filepath.Join(t.TempDir(), "setup.bin")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	changes, err := setupbin.RepairFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(changes) != 2 || changes[0].Field != "header chunk count" || changes[1].Field != "data record chunk count" {
		t.Errorf("changes %v", changes)
	}
	fixed, _ := os.ReadFile(path)
	clean, _ := setupbintest.File(t, setupbintest.Options{Version: setupbin.V4_0, Records: 2, Seed: 203})
	if !bytes.Equal(fixed, clean) {
		t.Errorf("repaired file differs from the file before the bug")
	}
	if changes, err := setupbin.RepairFile(path); err != nil || len(changes) != 0 {
		t.Errorf("second repair: %v %v", changes, err)
	}
}
