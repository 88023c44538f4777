package setupbin

import (
	"bytes"
	"errors"
	"math/rand/v2"
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
