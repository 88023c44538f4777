package setupbin

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// testPSK returns a deterministic valid PSK for record i.
func testPSK(t testing.TB, rnd *rand.ChaCha8, i int) PSK {
	t.Helper()
	pid, err := GeneratePID(rnd)
	if err != nil {
		t.Fatal(err)
	}
	pps, err := GeneratePPS(rnd)
	if err != nil {
		t.Fatal(err)
	}
	pw, err := GenerateMEBxPassword(rnd, 16)
	if err != nil {
		t.Fatal(err)
	}
	return PSK{CurrentPassword: "admin", NewPassword: pw, PID: pid, PPS: pps}
}

func writePSKFile(t testing.TB, opts WriterOptions, seed byte) ([]byte, []PSK) {
	t.Helper()
	rnd := rand.NewChaCha8([32]byte{seed})
	var buf bytes.Buffer
	w, err := NewWriter(&buf, opts)
	if err != nil {
		t.Fatal(err)
	}
	var psks []PSK
	for i := 0; i < int(opts.Records); i++ {
		p := testPSK(t, rnd, i)
		rec, err := p.Record(opts.Profile)
		if err != nil {
			t.Fatal(err)
		}
		if uint32(i) < opts.Consumed {
			rec = Record{}
		}
		if err := w.AddRecord(rec); err != nil {
			t.Fatal(err)
		}
		psks = append(psks, p)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), psks
}

func TestWriteRead(t *testing.T) {
	for _, v := range Versions {
		for _, scr := range []ScrambleMode{ScrambleOff, ScrambleOn} {
			t.Run(v.String()+"/"+map[ScrambleMode]string{ScrambleOff: "plain", ScrambleOn: "scrambled"}[scr], func(t *testing.T) {
				opts := WriterOptions{Version: v, Records: 5, Scramble: scr, UnconfirmedScrambleOld: true}
				b, psks := writePSKFile(t, opts, 1)
				if len(b) != 512*6 {
					t.Fatalf("size %d, want %d", len(b), 512*6)
				}
				r, err := NewReader(bytes.NewReader(b), int64(len(b)))
				if err != nil {
					t.Fatal(err)
				}
				for _, f := range r.Findings {
					if f.Severity > SevInfo {
						t.Errorf("finding: %v", f)
					}
				}
				if len(r.Records) != 5 {
					t.Fatalf("%d records", len(r.Records))
				}
				for i, rec := range r.Records {
					got, err := rec.PSK()
					if err != nil {
						t.Fatal(err)
					}
					if got != psks[i] {
						t.Errorf("record %d: PSK differs", i)
					}
					if rec.Scrambled() != (scr == ScrambleOn) || !rec.Valid() || rec.Number != uint32(i+1) {
						t.Errorf("record %d: flags %x number %d", i, rec.Flags, rec.Number)
					}
				}
			})
		}
	}
}

func TestWriterCounts(t *testing.T) {
	var buf bytes.Buffer
	w, err := NewWriter(&buf, WriterOptions{Version: V4_0, Records: 2})
	if err != nil {
		t.Fatal(err)
	}
	p := testPSK(t, rand.NewChaCha8([32]byte{}), 0)
	rec, _ := p.Record(nil)
	if err := w.AddRecord(rec); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); !errors.Is(err, ErrRecordCount) {
		t.Errorf("Close after 1 of 2: %v, want ErrRecordCount", err)
	}
	w, _ = NewWriter(&buf, WriterOptions{Version: V4_0, Records: 1})
	w.AddRecord(rec)
	if err := w.AddRecord(rec); !errors.Is(err, ErrRecordCount) {
		t.Errorf("AddRecord past N: %v, want ErrRecordCount", err)
	}
}

func TestWriterRefuses(t *testing.T) {
	p := testPSK(t, rand.NewChaCha8([32]byte{3}), 0)
	psk, _ := p.Record(nil)
	big := Record{Entries: append([]Entry{PasswordEntry(VarCurrentPassword, "admin")}, TextEntry(VarConfigServerFQDN, strings.Repeat("a", 255)), TextEntry(VarPKIDNSSuffix, strings.Repeat("b", 255)))}
	tests := []struct {
		name string
		opts WriterOptions
		rec  Record
		want error
		msg  string
	}{
		{"psk on amt11+", WriterOptions{Profile: ProfileAMT11Plus, Records: 1}, psk, ErrValue, "2/1 PID: not accepted by profile amt11+"},
		{"too large", WriterOptions{Version: V4_0, Records: 1}, big, ErrRecordTooLarge, "need 568 bytes, 1 chunk(s) hold 512"},
		{"var too new", WriterOptions{Version: V2_0, Records: 1}, Record{Entries: []Entry{PasswordEntry(VarCurrentPassword, "admin"), U8Entry(VarKVM, 1)}}, ErrValue, "needs format 3.0, writing 2.0"},
		{"no current password", WriterOptions{Version: V4_0, Records: 1}, Record{Entries: []Entry{U8Entry(VarManageability, 1)}}, ErrValue, "no current MEBx password"},
		{"bad pps", WriterOptions{Version: V4_0, Records: 1}, Record{Entries: []Entry{PasswordEntry(VarCurrentPassword, "admin"), BytesEntry(VarPPS, []byte("NKLDG5DCRRNQE9YZZIJK7LFLVJED69XJ"))}}, ErrCheckChar, "PPS group 5 check character wrong"},
		{"weak password", WriterOptions{Version: V4_0, Records: 1}, Record{Entries: []Entry{PasswordEntry(VarCurrentPassword, "admin"), PasswordEntry(VarNewPassword, "password")}}, ErrValue, "needs a digit"},
		{"unknown variable", WriterOptions{Version: V4_0, Records: 1}, Record{Entries: []Entry{PasswordEntry(VarCurrentPassword, "admin"), U8Entry(MakeVar(2, 40), 1)}}, ErrValue, "unknown variable"},
		{"legacy variable", WriterOptions{Version: V4_0, Records: 1}, Record{Entries: []Entry{PasswordEntry(VarCurrentPassword, "admin"), U8Entry(MakeVar(2, 14), 1)}}, ErrValue, "older tools"},
		{"manual setup on amt11+", WriterOptions{Profile: ProfileAMT11Plus, Records: 1}, Record{Entries: []Entry{PasswordEntry(VarCurrentPassword, "admin"), U8Entry(VarManualSetup, 1)}}, ErrValue, "aborts the record"},
		{"duplicate", WriterOptions{Version: V4_0, Records: 1}, Record{Entries: []Entry{PasswordEntry(VarCurrentPassword, "admin"), PasswordEntry(VarCurrentPassword, "admin")}}, ErrValue, "appears twice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w, err := NewWriter(io.Discard, tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			err = w.AddRecord(tt.rec)
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("err = %v, want %v containing %q", err, tt.want, tt.msg)
			}
			if strings.Contains(err.Error(), "NKLD") || strings.Contains(err.Error(), "password\"") {
				t.Errorf("error carries a secret: %v", err)
			}
		})
	}
	for _, tt := range []struct {
		name string
		opts WriterOptions
		msg  string
	}{
		{"version", WriterOptions{Version: MakeVersion(2, 2)}, "only 1.0, 2.0, 2.1, 3.0 and 4.0"},
		{"profile version", WriterOptions{Version: V2_1, Profile: ProfileAMT6to10}, "profile amt6-10 reads only 3.0, 4.0"},
		{"scramble old", WriterOptions{Version: V2_1, Scramble: ScrambleOn}, "UNCONFIRMED"},
		{"no-consume v1", WriterOptions{Version: V1_0, NoConsume: true}, "needs format 2.0"},
		{"chunks", WriterOptions{ChunksPerRecord: 11}, "want 1 to 10"},
		{"module", WriterOptions{Modules: []Module{3}}, "unknown module 3"},
	} {
		if _, err := NewWriter(io.Discard, tt.opts); !errors.Is(err, ErrValue) || !strings.Contains(err.Error(), tt.msg) {
			t.Errorf("%s: err = %v, want %q", tt.name, err, tt.msg)
		}
	}
}

func TestWriterChunks(t *testing.T) {
	// Two chunks hold what one cannot; the reader reads it back.
	big := Record{Entries: []Entry{PasswordEntry(VarCurrentPassword, "admin"), TextEntry(VarConfigServerFQDN, strings.Repeat("a", 255)), TextEntry(VarPKIDNSSuffix, strings.Repeat("b", 255))}}
	var buf bytes.Buffer
	w, err := NewWriter(&buf, WriterOptions{Version: V4_0, Records: 2, ChunksPerRecord: 2, Modules: []Module{ModuleME, ModuleAMT}})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if err := w.AddRecord(big); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	r, err := NewReader(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	if err != nil {
		t.Fatal(err)
	}
	if buf.Len() != 512*5 || len(r.Findings) != 0 || len(r.Records[1].Entries) != 3 || r.Records[1].Offset != 512*3 {
		t.Errorf("size %d, findings %v", buf.Len(), r.Findings)
	}
}

func TestFindingsHostile(t *testing.T) {
	good, _ := writePSKFile(t, WriterOptions{Version: V4_0, Records: 4, Scramble: ScrambleOff}, 5)
	tests := []struct {
		name  string
		patch func(b []byte) []byte
		code  string
		msg   string
	}{
		{"counter past valid", func(b []byte) []byte { b[0x20] = 3; b[512+2*512+4] = 1; return b }, CodeConsumedButValid, "consumed counter 3 but record 2 still valid"},
		{"zeroed ahead", func(b []byte) []byte {
			b[0x20] = 3
			clear(b[512+3*512+4 : 512+3*512+8])
			clear(b[512+3*512+24 : 512+4*512])
			return b
		}, CodeInvalidUnconsumed, "consumed counter 3 but record 3 already zeroed: a consume was interrupted"},
		{"pps group 5", func(b []byte) []byte {
			r, _ := NewReader(bytes.NewReader(b), int64(len(b)))
			e, _ := r.Records[1].Lookup(VarPPS)
			b[e.Offset+8+19]++
			return b
		}, CodePPSCheck, "PPS group 5 check character wrong"},
		{"unknown module", func(b []byte) []byte { b[512+24] = 9; return b }, CodeEntryModuleUnknown, "unknown module 9"},
		{"four billion records", func(b []byte) []byte { copy(b[0x1c:], []byte{0xff, 0xff, 0xff, 0xff}); return b }, CodeFileSize, "want 2199023255552"},
		{"wrong size", func(b []byte) []byte { return append(b, 0) }, CodeFileSize, "newer BIOS rejects it"},
		{"record type", func(b []byte) []byte { b[512] = 0; return b }, CodeRecordType, "type is 0"},
		{"module list", func(b []byte) []byte { b[0x2a] = 1; return b }, CodeModuleListOrder, "not ascending"},
		{"header bytes", func(b []byte) []byte { b[0x12] = 44; return b }, CodeHeaderBytesUsed, "want 46"},
		{"entry past record", func(b []byte) []byte { b[512+24+4] = 0xff; b[512+24+5] = 0x01; return b }, CodeEntryPastRecord, "runs past the record end"},
		{"trailing", func(b []byte) []byte { b[1023] = 1; return b }, CodeEntryTrailing, "non-zero bytes after the end"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := tt.patch(bytes.Clone(good))
			r, err := NewReader(bytes.NewReader(b), int64(len(b)))
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range r.Findings {
				if f.Code == tt.code && strings.Contains(f.Message, tt.msg) {
					return
				}
			}
			t.Errorf("no %s finding with %q in %v", tt.code, tt.msg, r.Findings)
		})
	}
}

func TestCheckProfile(t *testing.T) {
	b, _ := writePSKFile(t, WriterOptions{Version: V3_0, Records: 2}, 8)
	r, err := NewReader(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	if fs := r.CheckProfile(ProfileAMT6to10); len(fs) != 0 {
		t.Errorf("amt6-10 on a PSK 3.0 file: %v", fs)
	}
	var got []string
	for _, f := range r.CheckProfile(ProfileAMT11Plus) {
		got = append(got, f.Code)
	}
	want := []string{CodeProfileVersion, CodeProfileVariable, CodeProfileVariable, CodeProfileVariable, CodeProfileVariable}
	if !slices.Equal(got, want) {
		t.Errorf("amt11+ on a PSK 3.0 file: %v, want %v", got, want)
	}
}

func TestFindingsCapped(t *testing.T) {
	const n = 12_000
	b, _ := writePSKFile(t, WriterOptions{Version: V4_0, Records: n}, 9)
	for i := 0; i < n; i++ {
		b[512+i*512+20] ^= 0x80 // record number
	}
	r, err := NewReader(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Findings) != maxFindings || r.FindingsDropped != n-maxFindings+1 {
		t.Errorf("%d findings, %d dropped", len(r.Findings), r.FindingsDropped)
	}
}
