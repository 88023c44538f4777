package setupbin

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func addTestdataSeeds(f *testing.F) {
	names, _ := filepath.Glob("testdata/*")
	for _, n := range names {
		if fi, err := os.Stat(n); err != nil || fi.IsDir() {
			continue
		}
		b, err := os.ReadFile(n)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
}

// FuzzReader parses arbitrary input; when it parses into a file the
// Writer could have made (no finding above info), it writes the file back
// from what it read, re-reads it and requires equal structs.
func FuzzReader(f *testing.F) {
	addTestdataSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := NewReader(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			return
		}
		for _, fd := range r.Findings {
			if fd.Severity > SevInfo {
				return
			}
		}
		h := r.Header
		opts := WriterOptions{
			Version: h.Version, Records: h.RecordCount, Modules: h.Modules, NoConsume: h.NoConsume(),
			ChunksPerRecord: h.ChunksPerRecord, Consumed: h.Consumed, Scramble: ScrambleOff,
		}
		if len(r.Records) > 0 && r.Records[0].Scrambled() {
			opts.Scramble, opts.UnconfirmedScrambleOld = ScrambleOn, true
		}
		if h.NoConsumeHonoured() {
			opts.Consumed = 0
		}
		var out bytes.Buffer
		w, err := NewWriter(&out, opts)
		if err != nil {
			t.Fatalf("NewWriter for a clean file: %v", err)
		}
		for _, rec := range r.Records {
			if err := w.AddRecord(Record{Entries: rec.Entries}); err != nil {
				t.Fatalf("AddRecord %d of a clean file: %v", rec.Index, err)
			}
		}
		if err := w.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		r2, err := NewReader(bytes.NewReader(out.Bytes()), int64(out.Len()))
		if err != nil {
			t.Fatalf("re-reading what we wrote: %v", err)
		}
		if !reflect.DeepEqual(r.Header, r2.Header) {
			t.Fatalf("header: got %+v, want %+v", r2.Header, r.Header)
		}
		if len(r.Records) != len(r2.Records) {
			t.Fatalf("%d records, want %d", len(r2.Records), len(r.Records))
		}
		for i := range r.Records {
			if !reflect.DeepEqual(r.Records[i], r2.Records[i]) {
				t.Fatalf("record %d: got %+v, want %+v", i, r2.Records[i], r.Records[i])
			}
		}
		if !reflect.DeepEqual(r.Findings, r2.Findings) {
			t.Fatalf("findings: got %v, want %v", r2.Findings, r.Findings)
		}
		if !bytes.Equal(out.Bytes(), b) {
			t.Fatalf("a clean file did not write back byte for byte")
		}
	})
}

// FuzzEntry runs the entry and value decoders and the value checks on
// arbitrary values for every catalogue variable and an unknown one.
func FuzzEntry(f *testing.F) {
	f.Add(uint32(VarPID), []byte("0000037M"))
	f.Add(uint32(VarPPS), []byte("NKLDG5DCRRNQE9YZZIJL7LFLVJED69XJ"))
	f.Add(uint32(VarServerAddr), []byte{1, 10, 168, 192})
	f.Add(uint32(VarAddUserHash), append(append([]byte{2}, make([]byte, 32)...), 3, 'a', 'b', 'c'))
	f.Add(uint32(VarPowerPackage), make([]byte, 16))
	f.Add(uint32(VarNewPassword), []byte("P@ssw0rd"))
	f.Add(uint32(MakeVar(3, 1)), []byte{})
	f.Fuzz(func(t *testing.T, v uint32, val []byte) {
		e := Entry{Var: Var(v), Value: val}
		dec, err := e.Decode()
		_ = e.String()
		_ = e.Format(true)
		if info := LookupVar(e.Var); info != nil {
			pr := checkValue(&e, info, V4_0)
			if pr == nil && err != nil {
				t.Fatalf("%s: value passes the checks but does not decode: %v", e.Var, err)
			}
			if pr == nil {
				// A checked value re-encodes to the same bytes.
				var back Entry
				switch x := dec.(type) {
				case PID:
					back = PIDEntry(x)
				case PPS:
					back = PPSEntry(x)
				case uint8:
					back = U8Entry(e.Var, x)
				case uint16:
					back = U16Entry(e.Var, x)
				case uint32:
					back = U32Entry(e.Var, x)
				case UserHash:
					back = HashEntry(x)
				case GUID:
					back = GUIDEntry(e.Var, x)
				default:
					return
				}
				if !bytes.Equal(back.Value, val) {
					t.Fatalf("%s: %x re-encodes to %x", e.Var, val, back.Value)
				}
			}
		}
		// The entry also survives a record of its own.
		var rb [ChunkSize]byte
		rh := recordHeader{Type: 1, Flags: RecordValid, ChunkCount: 1, HeaderBytes: 24, Number: 1}
		b := rh.appendBytes(rb[:0])
		eh := entryHeader{Module: e.Var.Module(), Var: e.Var.ID(), Len: uint16(len(val))}
		b = eh.appendBytes(b)
		copy(rb[len(b):], val)
		h := Header{Version: V4_0, HeaderChunkCount: 1, ChunksPerRecord: 1, RecordCount: 1, Modules: []Module{1, 2}}
		p := newParser(&h, 2*ChunkSize)
		var rec Record
		p.parseRecord(0, rb[:], ChunkSize, &rec)
	})
}
