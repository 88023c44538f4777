package setupbin

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
)

// memFile is an in-memory ReadWriterAt of fixed size.
type memFile struct{ b []byte }

func (m *memFile) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off > int64(len(m.b)) {
		return 0, errors.New("memFile: read out of range")
	}
	n := copy(p, m.b[off:])
	if n < len(p) {
		return n, errors.New("memFile: short read")
	}
	return n, nil
}

func (m *memFile) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > int64(len(m.b)) {
		return 0, errors.New("memFile: write out of range")
	}
	return copy(m.b[off:], p), nil
}

var errCrash = errors.New("simulated power cut")

// crashFile lets `allow` writes through, then tears the next one after
// `tear` bytes and fails every write from then on: a power cut.
type crashFile struct {
	*memFile
	allow, tear, writes int
}

func (c *crashFile) WriteAt(p []byte, off int64) (int, error) {
	c.writes++
	if c.writes <= c.allow {
		return c.memFile.WriteAt(p, off)
	}
	if c.writes == c.allow+1 && c.tear > 0 {
		c.memFile.WriteAt(p[:min(c.tear, len(p))], off)
	}
	return 0, errCrash
}

func codes(fs []Finding) []string {
	var out []string
	for _, f := range fs {
		if f.Severity > SevInfo {
			out = append(out, f.Code)
		}
	}
	return out
}

// checkExplained parses b and requires that the record the BIOS hands out
// next is whole (the original PSK of its index), and that every finding is
// one of want (by code). It returns the parsed file.
func checkExplained(t *testing.T, b []byte, psks []PSK, want ...string) *Reader {
	t.Helper()
	r, err := NewReader(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatalf("NewReader: %v", err)
	}
	for _, f := range r.Findings {
		if f.Severity > SevInfo && !slices.Contains(want, f.Code) {
			t.Errorf("unexpected finding %v", f)
		}
	}
	for _, c := range want {
		if !slices.Contains(codes(r.Findings), c) {
			t.Errorf("finding %s missing; have %v", c, r.Findings)
		}
	}
	next, err := r.Next()
	if err != nil {
		return r
	}
	p, err := next.PSK()
	if err != nil || p != psks[next.Index] {
		t.Errorf("the BIOS would hand out record %d, which is not whole (err %v)", next.Index, err)
	}
	return r
}

func TestConsumeUnconsumeRoundTrip(t *testing.T) {
	for _, v := range []Version{V1_0, V2_1, V4_0} {
		t.Run(v.String(), func(t *testing.T) {
			orig, psks := writePSKFile(t, WriterOptions{Version: v, Records: 3}, 7)
			m := &memFile{b: bytes.Clone(orig)}
			for k := 0; k < 3; k++ {
				rec, err := Consume(m, int64(len(m.b)))
				if err != nil {
					t.Fatal(err)
				}
				if p, _ := rec.PSK(); p != psks[k] || rec.Index != k {
					t.Fatalf("Consume %d returned record %d with another PSK", k, rec.Index)
				}
				checkExplained(t, m.b, psks)
			}
			if _, err := Consume(m, int64(len(m.b))); !errors.Is(err, ErrNoUnusedRecord) {
				t.Fatalf("Consume on an exhausted file: %v", err)
			}
			for k := 2; k >= 0; k-- {
				rec, _ := psks[k].Record(nil)
				if err := Unconsume(m, int64(len(m.b)), rec); err != nil {
					t.Fatal(err)
				}
			}
			if !bytes.Equal(m.b, orig) {
				t.Errorf("consume ×3 + unconsume ×3 is not the original file")
			}
			if err := Unconsume(m, int64(len(m.b)), Record{}); !errors.Is(err, ErrNoUnusedRecord) {
				t.Errorf("Unconsume at counter 0: %v", err)
			}
		})
	}
}

func TestConsumeNoConsume(t *testing.T) {
	orig, psks := writePSKFile(t, WriterOptions{Version: V4_0, Records: 1, NoConsume: true}, 3)
	m := &memFile{b: bytes.Clone(orig)}
	rec, err := Consume(m, int64(len(m.b)))
	if err != nil {
		t.Fatal(err)
	}
	if p, _ := rec.PSK(); p != psks[0] || !bytes.Equal(m.b, orig) {
		t.Error("don't-consume file: Consume must return record 0 and not write")
	}
}

func TestUnconsumeMismatch(t *testing.T) {
	orig, psks := writePSKFile(t, WriterOptions{Version: V4_0, Records: 2}, 9)
	m := &memFile{b: bytes.Clone(orig)}
	if _, err := Consume(m, int64(len(m.b))); err != nil {
		t.Fatal(err)
	}
	rec, _ := psks[1].Record(nil)
	rec.Number = 2
	if err := Unconsume(m, int64(len(m.b)), rec); !errors.Is(err, ErrRecordMismatch) {
		t.Errorf("Unconsume with record number 2 for record 1: %v, want ErrRecordMismatch", err)
	}
}

// TestConsumeCrash cuts the power after every write of Consume and
// Unconsume, and in the middle of each, and requires that the reader
// explains the file, that the BIOS would never hand out a broken record,
// that Repair finishes an interrupted consume, and that Unconsume resumes.
func TestConsumeCrash(t *testing.T) {
	for _, v := range []Version{V2_0, V4_0} {
		orig, psks := writePSKFile(t, WriterOptions{Version: v, Records: 3}, 11)
		// Start with record 0 consumed: the crash hits record 1.
		base := &memFile{b: bytes.Clone(orig)}
		if _, err := Consume(base, int64(len(base.b))); err != nil {
			t.Fatal(err)
		}
		consumed := &memFile{b: bytes.Clone(base.b)}
		if _, err := Consume(consumed, int64(len(consumed.b))); err != nil {
			t.Fatal(err)
		}
		// What the reader must say after each write of Consume.
		wantConsume := [][]string{
			{},                      // nothing written
			{CodeConsumedButValid},  // counter written
			{CodeConsumedNotZeroed}, // valid bit cleared
			{},                      // body zeroed: done
		}
		for allow := 0; allow <= 3; allow++ {
			for _, tear := range []int{0, 2, 200} {
				t.Run(fmt.Sprintf("%s/consume/after%d/tear%d", v, allow, tear), func(t *testing.T) {
					m := &memFile{b: bytes.Clone(base.b)}
					c := &crashFile{memFile: m, allow: allow, tear: tear}
					_, err := Consume(c, int64(len(m.b)))
					if allow < 3 && !errors.Is(err, errCrash) || allow == 3 && err != nil {
						t.Fatalf("Consume: %v", err)
					}
					want := wantConsume[allow]
					if tear > 0 && allow < 3 {
						// A torn write lands between two states: either is fine.
						want = append(slices.Clone(want), wantConsume[allow+1]...)
						r, _ := NewReader(bytes.NewReader(m.b), int64(len(m.b)))
						want = slices.DeleteFunc(want, func(c string) bool { return !slices.Contains(codes(r.Findings), c) })
					}
					checkExplained(t, m.b, psks, want...)
					if _, err := Repair(m, int64(len(m.b))); err != nil {
						t.Fatal(err)
					}
					if !bytes.Equal(m.b, consumed.b) && !bytes.Equal(m.b, base.b) {
						t.Errorf("after Repair the file is neither before nor after the consume")
					}
				})
			}
		}
		wantUnconsume := [][]string{
			{},
			{CodeConsumedNotZeroed}, // body written
			{CodeConsumedButValid},  // valid bit set
			{},                      // counter decremented: done
		}
		rec, _ := psks[1].Record(nil)
		rec.Number = 2 // record index 1
		for allow := 0; allow <= 3; allow++ {
			for _, tear := range []int{0, 3, 100} {
				t.Run(fmt.Sprintf("%s/unconsume/after%d/tear%d", v, allow, tear), func(t *testing.T) {
					m := &memFile{b: bytes.Clone(consumed.b)}
					c := &crashFile{memFile: m, allow: allow, tear: tear}
					err := Unconsume(c, int64(len(m.b)), rec)
					if allow < 3 && !errors.Is(err, errCrash) || allow == 3 && err != nil {
						t.Fatalf("Unconsume: %v", err)
					}
					want := wantUnconsume[allow]
					if tear > 0 && allow < 3 {
						want = append(slices.Clone(want), wantUnconsume[allow+1]...)
						r, _ := NewReader(bytes.NewReader(m.b), int64(len(m.b)))
						want = slices.DeleteFunc(want, func(c string) bool { return !slices.Contains(codes(r.Findings), c) })
					}
					checkExplained(t, m.b, psks, want...)
					// Running Unconsume again finishes the job.
					done := bytes.Equal(m.b, base.b)
					if err := Unconsume(m, int64(len(m.b)), rec); done && !errors.Is(err, ErrRecordMismatch) || !done && err != nil {
						t.Fatalf("resuming Unconsume (done: %v): %v", done, err)
					}
					if !bytes.Equal(m.b, base.b) {
						t.Errorf("resumed Unconsume did not restore the file")
					}
				})
			}
		}
	}
}

func TestConsumeRefusesBrokenLayout(t *testing.T) {
	b, err := os.ReadFile("testdata/meshcommander-bug.bin")
	if err != nil {
		t.Fatal(err)
	}
	m := &memFile{b: b}
	_, err = Consume(m, int64(len(b)))
	var fe *FormatError
	if !errors.As(err, &fe) || fe.Field != "HeaderChunkCount" || !strings.Contains(err.Error(), "repair the file first") {
		t.Errorf("Consume on the MeshCommander bug: %v", err)
	}
	// Wrong size: not repairable, not consumable.
	m = &memFile{b: append(bytes.Clone(b), 0)}
	if _, err := Repair(m, int64(len(m.b))); !errors.Is(err, ErrFormat) {
		t.Errorf("Repair of a wrong-size file: %v", err)
	}
}

func TestRepairModuleList(t *testing.T) {
	good, _ := writePSKFile(t, WriterOptions{Version: V4_0, Records: 3}, 21)
	tests := []struct {
		name   string
		patch  func(b []byte)
		fields []string
	}{
		{"module missing", func(b []byte) { b[0x12], b[0x2a] = 44, 0 }, []string{"module list", "header bytes used"}},
		{"unknown module and reserved", func(b []byte) { b[0x2c], b[0x12], b[0x26] = 5, 48, 1 }, []string{"header reserved", "module list", "header bytes used"}},
		{"garbage after list", func(b []byte) { b[0x100] = 0xaa }, []string{"header bytes after the module list"}},
		{"record chunk count", func(b []byte) { b[512+16] = 0 }, []string{"record chunk count"}},
		{"interrupted consume", func(b []byte) { b[0x20] = 1 }, []string{"record 0"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := &memFile{b: bytes.Clone(good)}
			tt.patch(m.b)
			changes, err := Repair(m, int64(len(m.b)))
			if err != nil {
				t.Fatal(err)
			}
			var fields []string
			for _, c := range changes {
				fields = append(fields, c.Field)
			}
			if !slices.Equal(fields, tt.fields) {
				t.Errorf("changes %v, want fields %v", changes, tt.fields)
			}
			r, err := NewReader(bytes.NewReader(m.b), int64(len(m.b)))
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range r.Findings {
				if f.Severity > SevInfo {
					t.Errorf("after repair: %v", f)
				}
			}
			if tt.name != "interrupted consume" && !bytes.Equal(m.b, good) {
				t.Errorf("repair did not restore the file")
			}
		})
	}
}
