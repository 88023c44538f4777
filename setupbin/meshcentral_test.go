package setupbin_test

// Interop with MeshCentral 1.1.55's amt/amt-setupbin.js, a peer we did not
// write. Where MeshCentral departs from Intel's rules (specs/setupbin.md):
//
//   - Decoder: reads a record's chunk count, header bytes and number at
//     offsets 8, 10 and 12 (inside the 8 reserved bytes) instead of 16, 18
//     and 20, so it reports them as 0 for every file.
//   - Decoder: assumes one 512-byte chunk per record and ignores both
//     chunk counts, so it reads MeshCommander-bug files (chunk counts 0)
//     that firmware ignores; it returns nothing when the file holds a
//     different number of chunks than records.
//   - Decoder: descrambles every record whose scrambled bit is set, even a
//     consumed one (§2.5 says never): a consumed scrambled record's zero
//     body becomes 0xEF bytes, module 0xEFEF, and the decoder throws a
//     TypeError. It also throws on any module other than 1 and 2 and on an
//     entry list that runs to the record end without a terminator.
//   - Decoder: ends the list on module 0 *or* variable 0, ignores the
//     consumed counter and the valid bit, and silently drops unknown
//     variables of known modules (then loses its place: the length is
//     not read for them).
//   - Encoder: writes the module list in order of first appearance (ours
//     ascending; the same for records that start with module 1), takes
//     the header chunk counts from the object — an object without them,
//     as MeshCommander's "new setup.bin" made, gives the chunk-count-0
//     bug — and never checks that a record fits its 512 bytes (it writes
//     a longer record and shifts every record after it).

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/provstick/provstick/internal/peertest"
	"github.com/provstick/provstick/setupbin"
	"github.com/provstick/provstick/setupbin/setupbintest"
)

type mcVar struct {
	ModuleID uint16  `json:"moduleid"`
	VarID    uint16  `json:"varid"`
	Length   int     `json:"length"`
	Type     int     `json:"type"`
	Num      *uint64 `json:"num,omitempty"`
	Hex      *string `json:"hex,omitempty"`
	GUID     *string `json:"guid,omitempty"`
}

type mcRecord struct {
	TypeIdentifier  uint32  `json:"typeIdentifier"`
	Flags           uint32  `json:"flags"`
	ChunkCount      uint16  `json:"chunkCount"`
	HeaderByteCount uint16  `json:"headerByteCount"`
	Number          uint32  `json:"number"`
	Variables       []mcVar `json:"variables"`
}

type mcFile struct {
	OK                    bool       `json:"ok"`
	Error                 string     `json:"error"`
	RecordChunkCount      uint16     `json:"recordChunkCount"`
	RecordHeaderByteCount uint16     `json:"recordHeaderByteCount"`
	MajorVersion          uint8      `json:"majorVersion"`
	MinorVersion          uint8      `json:"minorVersion"`
	Flags                 uint16     `json:"flags"`
	DataRecordsConsumed   uint32     `json:"dataRecordsConsumed"`
	DataRecordChunkCount  uint16     `json:"dataRecordChunkCount"`
	Records               []mcRecord `json:"records"`
}

func runDriver(t *testing.T, node, amtDir string, args ...string) []byte {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), node, append([]string{filepath.Join("testdata", "meshcentral", "driver.js"), amtDir}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("node driver.js %v: %v\n%s", args, err, stderr.String())
	}
	return out
}

// TestMeshCentralDecodesOurFiles decodes every file under testdata/ with
// MeshCentral and compares header, records and entries with our reader.
func TestMeshCentralDecodesOurFiles(t *testing.T) {
	node, amtDir := peertest.MeshCentralAMT(t, "amt-setupbin.js")
	names, _ := filepath.Glob("testdata/*.bin")
	compared := 0
	for _, name := range names {
		t.Run(filepath.Base(name), func(t *testing.T) {
			b, err := os.ReadFile(name)
			if err != nil {
				t.Fatal(err)
			}
			r, err := setupbin.NewReader(bytes.NewReader(b), int64(len(b)))
			if err != nil {
				return // not a setup.bin for us either (negative fixture)
			}
			var mc mcFile
			if err := json.Unmarshal(runDriver(t, node, amtDir, "decode", name), &mc); err != nil {
				t.Fatal(err)
			}
			consumedScrambled := false
			for _, rec := range r.Records {
				consumedScrambled = consumedScrambled || (!rec.Valid() && rec.Scrambled())
			}
			switch {
			case consumedScrambled:
				// MeshCentral descrambles consumed records and throws.
				if mc.OK {
					t.Errorf("MeshCentral decoded a file with a consumed scrambled record; expected its TypeError")
				}
				return
			case r.HasErrors():
				t.Logf("we find errors; MeshCentral: ok=%v %s", mc.OK, mc.Error)
				return
			case !mc.OK:
				t.Fatalf("MeshCentral cannot decode a file we find clean: %s", mc.Error)
			}
			compared++
			h := r.Header
			if mc.MajorVersion != h.Version.Major() || mc.MinorVersion != h.Version.Minor() || mc.Flags != uint16(h.Flags) ||
				mc.DataRecordsConsumed != h.Consumed || mc.DataRecordChunkCount != h.ChunksPerRecord ||
				mc.RecordChunkCount != h.HeaderChunkCount || mc.RecordHeaderByteCount != h.HeaderBytes {
				t.Errorf("header: MeshCentral %+v, ours %+v", mc, h)
			}
			if len(mc.Records) != len(r.Records) {
				t.Fatalf("MeshCentral: %d records, ours %d", len(mc.Records), len(r.Records))
			}
			for i, rec := range r.Records {
				m := mc.Records[i]
				if m.TypeIdentifier != rec.Type || m.Flags != uint32(rec.Flags) {
					t.Errorf("record %d: MeshCentral type %d flags %#x, ours %d %#x", i, m.TypeIdentifier, m.Flags, rec.Type, rec.Flags)
				}
				// MeshCentral reads these three from the reserved bytes.
				if m.ChunkCount != 0 || m.HeaderByteCount != 0 || m.Number != 0 {
					t.Errorf("record %d: MeshCentral read %d/%d/%d from the reserved bytes; its offsets changed?", i, m.ChunkCount, m.HeaderByteCount, m.Number)
				}
				if len(m.Variables) != len(rec.Entries) {
					t.Fatalf("record %d: MeshCentral %d variables, ours %d", i, len(m.Variables), len(rec.Entries))
				}
				for k, e := range rec.Entries {
					compareVar(t, i, m.Variables[k], e)
				}
			}
		})
	}
	if compared < 15 {
		t.Errorf("only %d files compared entry by entry", compared)
	}
}

func compareVar(t *testing.T, i int, m mcVar, e setupbin.Entry) {
	t.Helper()
	if setupbin.MakeVar(setupbin.Module(m.ModuleID), m.VarID) != e.Var || m.Length != len(e.Value) {
		t.Errorf("record %d: MeshCentral %d/%d len %d, ours %s len %d", i, m.ModuleID, m.VarID, m.Length, e.Var, len(e.Value))
		return
	}
	switch {
	case m.Num != nil:
		var x uint64
		for j := len(e.Value) - 1; j >= 0; j-- {
			x = x<<8 | uint64(e.Value[j])
		}
		if x != *m.Num {
			t.Errorf("record %d %s: MeshCentral %d, ours %d", i, e.Var, *m.Num, x)
		}
	case m.GUID != nil:
		g, err := e.GUID()
		if err != nil || !strings.EqualFold(g.String(), *m.GUID) {
			t.Errorf("record %d %s: MeshCentral %s, ours %s (%v)", i, e.Var, *m.GUID, g, err)
		}
	case m.Hex != nil:
		if *m.Hex != hex.EncodeToString(e.Value) {
			t.Errorf("record %d %s: values differ", i, e.Var) // may be secret: no values printed
		}
	}
}

type specVar struct {
	ModuleID uint16  `json:"moduleid"`
	VarID    uint16  `json:"varid"`
	Num      *uint64 `json:"num,omitempty"`
	Hex      *string `json:"hex,omitempty"`
	GUID     *string `json:"guid,omitempty"`
}

type specRecord struct {
	Flags     uint32    `json:"flags"`
	Variables []specVar `json:"variables"`
}

type spec struct {
	Version     uint8        `json:"version"`
	Minor       uint8        `json:"minor"`
	Flags       uint16       `json:"flags"`
	ChunkCounts *bool        `json:"chunkCounts,omitempty"`
	Records     []specRecord `json:"records"`
}

// mcType is MeshCentral's type for a variable: 1, 2, 3 numbers, 4 GUID.
func mcType(v setupbin.Var) int {
	switch v {
	case setupbin.VarServerPort:
		return 2
	case setupbin.VarPowerPackage:
		return 4
	}
	if info := setupbin.LookupVar(v); info != nil && info.Kind == setupbin.KindU8 && v != setupbin.VarPasswordPolicy {
		return 1
	}
	return 0
}

func toSpec(es []setupbin.Entry) []specVar {
	var out []specVar
	for _, e := range es {
		sv := specVar{ModuleID: uint16(e.Var.Module()), VarID: e.Var.ID()}
		switch mcType(e.Var) {
		case 1:
			n := uint64(e.Value[0])
			sv.Num = &n
		case 2:
			n := uint64(e.Value[0]) | uint64(e.Value[1])<<8
			sv.Num = &n
		case 4:
			g, _ := e.GUID()
			s := g.String()
			sv.GUID = &s
		default:
			h := hex.EncodeToString(e.Value)
			sv.Hex = &h
		}
		out = append(out, sv)
	}
	return out
}

// TestOurReaderReadsMeshCentralFiles has MeshCentral's encoder write files
// and requires our reader to read back exactly the entries given.
func TestOurReaderReadsMeshCentralFiles(t *testing.T) {
	node, amtDir := peertest.MeshCentralAMT(t, "amt-setupbin.js")
	psks, err := setupbintest.PSKs(42, 4)
	if err != nil {
		t.Fatal(err)
	}
	var recs [][]setupbin.Entry
	for _, p := range psks {
		rec, err := p.Record(nil)
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, rec.Entries)
	}
	// A record with one variable of every kind MeshCentral encodes.
	pp, _ := setupbin.ParseGUID("5234A9AA-29E1-44A9-8D4D-081C07B96353")
	rich := psks[0]
	rich.ServerAddr, rich.ServerPort, rich.DomainName, rich.HostName, rich.DHCP = netip.MustParseAddr("10.1.2.3"), 9971, "provstick.test", "pc-0042", setupbin.DHCPEnabled
	rr, err := rich.Record(nil)
	if err != nil {
		t.Fatal(err)
	}
	extra := append(rr.Entries,
		setupbin.GUIDEntry(setupbin.VarPowerPackage, pp),
		setupbin.U8Entry(setupbin.VarFWLocalUpdate, 2),
		setupbin.TextEntry(setupbin.VarPKIDNSSuffix, "corp.example"),
		setupbin.U8Entry(setupbin.VarRemoteConfig, 1),
		setupbin.U32Entry(setupbin.VarIdleTimeout, 65),
		setupbin.HashEntry(setupbin.UserHash{Alg: setupbin.HashSHA256, Hash: bytes.Repeat([]byte{0xab}, 32), Name: "kiosk root"}),
		setupbin.U8Entry(setupbin.VarUserConsent, 0xff),
	)
	slices.SortStableFunc(extra, func(a, b setupbin.Entry) int { return int(int64(a.Var) - int64(b.Var)) })
	recs = append(recs, extra)

	no := false
	tests := []struct {
		name        string
		spec        spec
		wantCodes   []string // error findings expected
		scrambled   bool
		wantVersion setupbin.Version
	}{
		{name: "v1.0", spec: spec{Version: 1}, wantVersion: setupbin.V1_0},
		{name: "v2.1", spec: spec{Version: 2, Minor: 1}, wantVersion: setupbin.V2_1},
		{name: "v3.0", spec: spec{Version: 3}, wantVersion: setupbin.V3_0},
		{name: "v4.0-scrambled", spec: spec{Version: 4}, scrambled: true, wantVersion: setupbin.V4_0},
		{name: "v4.0-noconsume", spec: spec{Version: 4, Flags: 1}, wantVersion: setupbin.V4_0},
		{name: "meshcommander-bug", spec: spec{Version: 4, ChunkCounts: &no}, wantVersion: setupbin.V4_0,
			wantCodes: []string{setupbin.CodeHeaderChunkCountZero, setupbin.CodeRecordChunkCountZero}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := tt.spec
			n := len(recs)
			if s.Version < 3 {
				n-- // the rich record holds 3.0 variables
			}
			for _, es := range recs[:n] {
				flags := uint32(1)
				if tt.scrambled {
					flags |= 2
				}
				s.Records = append(s.Records, specRecord{Flags: flags, Variables: toSpec(es)})
			}
			dir := t.TempDir()
			js, _ := json.Marshal(s)
			specPath, out := filepath.Join(dir, "spec.json"), filepath.Join(dir, "setup.bin")
			if err := os.WriteFile(specPath, js, 0o600); err != nil {
				t.Fatal(err)
			}
			runDriver(t, node, amtDir, "encode", specPath, out)
			b, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			r, err := setupbin.NewReader(bytes.NewReader(b), int64(len(b)))
			if err != nil {
				t.Fatalf("our reader on MeshCentral's file: %v", err)
			}
			var got []string
			for _, f := range r.Findings {
				if f.Severity == setupbin.SevError {
					got = append(got, f.Code)
				}
				if f.Severity == setupbin.SevWarning && f.Code != setupbin.CodeEntryVarVersion {
					t.Errorf("warning on MeshCentral's file: %v", f)
				}
			}
			slices.Sort(got)
			got = slices.Compact(got)
			want := slices.Clone(tt.wantCodes)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Errorf("error findings %v, want %v:\n%v", got, want, r.Findings)
			}
			if r.Header.Version != tt.wantVersion || len(r.Records) != n {
				t.Fatalf("version %s, %d records", r.Header.Version, len(r.Records))
			}
			for i, rec := range r.Records {
				if rec.Scrambled() != tt.scrambled {
					t.Errorf("record %d scrambled = %v", i, rec.Scrambled())
				}
				if len(rec.Entries) != len(recs[i]) {
					t.Fatalf("record %d: %d entries, want %d", i, len(rec.Entries), len(recs[i]))
				}
				for k, e := range rec.Entries {
					if e.Var != recs[i][k].Var || !bytes.Equal(e.Value, recs[i][k].Value) {
						t.Errorf("record %d entry %d: got %s, want %s", i, k, e, recs[i][k])
					}
				}
			}
			if tt.spec.ChunkCounts != nil {
				ch, err := setupbin.RepairFile(out)
				if err != nil || len(ch) == 0 {
					t.Fatalf("repair: %v %v", ch, err)
				}
				b, _ = os.ReadFile(out)
				r, _ = setupbin.NewReader(bytes.NewReader(b), int64(len(b)))
				if r.HasErrors() {
					t.Errorf("after repair: %v", r.Findings)
				}
			}
		})
	}
}
