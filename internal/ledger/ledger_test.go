package ledger

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

func u32(v uint32) *uint32 { return &v }

// sample is the record behind testdata/record-v1.jsonl.
func sample(seq uint64) *Record {
	return &Record{
		Seq: seq, Time: time.Date(2026, 11, 23, 15, 4, 5, 0, time.UTC), Stick: "line3-0042", Case: CaseNormal,
		Consumed: 17, PrevConsumed: u32(16), Record: 17, Index: 16, PID: "0000-037M", NextPID: "0000-038K",
		AMT: &AMT{UUID: "8a4f2b1c-0000-4000-8000-00163e000001", AMTVersion: "8.1.40", FirmwareVersion: "8.1.40.1416",
			ProvisioningState: "in", ProvisioningMode: "enterprise", ControlMode: "none", DNSSuffix: "lab.example", WiredMAC: "00:16:3e:00:00:01"},
		DMI:     &DMI{Vendor: "LENOVO", Model: "ThinkCentre M92p", Serial: "MJ01234", SystemUUID: "8a4f2b1c-0000-4000-8000-00163e000001"},
		MACs:    []string{"00:16:3e:00:00:01"},
		TPM:     &TPM{EKSHA256: strings.Repeat("ab", 32), Device: "/dev/tpmrm0"},
		Missing: []Missing{{Source: "tpm-ek-cert", Reason: "no EK certificate in NV"}},
	}
}

func TestMarshalRoundTrip(t *testing.T) {
	b, err := Marshal(sample(3))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Count(b, []byte("\n")) != 1 || b[len(b)-1] != '\n' {
		t.Fatalf("Marshal: want exactly one final newline, got %q", b)
	}
	r, err := Unmarshal(bytes.TrimSuffix(b, []byte("\n")))
	if err != nil {
		t.Fatal(err)
	}
	want := sample(3)
	want.V = Version
	want.Sum = r.Sum
	if !reflect.DeepEqual(r, want) {
		t.Errorf("round trip:\ngot  %+v\nwant %+v", r, want)
	}
	if !strings.HasPrefix(r.Sum, "sha256:") || len(r.Sum) != 71 {
		t.Errorf("Sum = %q", r.Sum)
	}
}

func TestMarshalGolden(t *testing.T) {
	b, err := Marshal(sample(1))
	if err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "record-v1.jsonl")
	if *update {
		if err := os.WriteFile(golden, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b, want) {
		t.Errorf("Marshal:\ngot  %s\nwant %s", b, want)
	}
}

func TestUnmarshalErrors(t *testing.T) {
	good, _ := Marshal(sample(1))
	good = bytes.TrimSuffix(good, []byte("\n"))
	flip := bytes.Clone(good)
	flip[10] ^= 1
	v2 := bytes.Replace(good, []byte(`{"v":1,`), []byte(`{"v":2,`), 1)
	for _, tc := range []struct {
		name string
		line []byte
		want error
	}{
		{"empty", nil, ErrFormat},
		{"no sum", []byte(`{"v":1}`), ErrFormat},
		{"flipped bit", flip, ErrChecksum},
		{"truncated", good[:len(good)-5], ErrFormat},
		{"v2 with stale sum", v2, ErrChecksum},
		{"bad hex", append(bytes.Clone(good[:len(good)-4]), `zz"}`...), ErrFormat},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Unmarshal(tc.line); !errors.Is(err, tc.want) {
				t.Errorf("Unmarshal = %v, want %v", err, tc.want)
			}
		})
	}
	// A correctly summed line of a newer version.
	b, _ := json.Marshal(map[string]any{"v": 2, "seq": 1})
	line := resum(t, b)
	if _, err := Unmarshal(line); !errors.Is(err, ErrVersion) {
		t.Errorf("v2 line: %v, want ErrVersion", err)
	}
}

// resum appends a valid sum member to an arbitrary JSON object.
func resum(t *testing.T, obj []byte) []byte {
	t.Helper()
	r := &Record{}
	_ = r
	sum := sha256Hex(obj)
	return fmt.Appendf(nil, "%s%s%s\"}", obj[:len(obj)-1], sumPrefix, sum)
}

func TestAppendAndRead(t *testing.T) {
	dir := t.TempDir()
	name := filepath.Join(dir, "ledger.jsonl")
	for i := 1; i <= 3; i++ {
		if err := Append(name, sample(uint64(i))); err != nil {
			t.Fatal(err)
		}
	}
	l, err := ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Records) != 3 || len(l.Findings) != 0 || l.NextSeq() != 4 {
		t.Fatalf("got %d records, findings %v, next %d", len(l.Records), l.Findings, l.NextSeq())
	}
	// A torn tail: half a line, then an append.
	line, _ := Marshal(sample(4))
	f, _ := os.OpenFile(name, os.O_WRONLY|os.O_APPEND, 0)
	f.Write(line[:len(line)/2])
	f.Close()
	before, _ := os.ReadFile(name)
	l, _ = ReadFile(name)
	if len(l.Records) != 3 || !l.TornTail || len(l.Findings) != 1 || l.Findings[0].Code != CodeTornTail || l.Findings[0].Line != 4 {
		t.Fatalf("torn: %d records, torn %v, findings %v", len(l.Records), l.TornTail, l.Findings)
	}
	if err := Append(name, sample(l.NextSeq())); err != nil {
		t.Fatal(err)
	}
	after, _ := os.ReadFile(name)
	if !bytes.HasPrefix(after, before) {
		t.Fatal("Append rewrote earlier bytes")
	}
	l, _ = ReadFile(name)
	if len(l.Records) != 4 || l.TornTail || len(l.Findings) != 1 || l.Findings[0].Code != CodeDamagedLine || l.Records[3].Seq != 4 {
		t.Fatalf("after append: %d records, torn %v, findings %v", len(l.Records), l.TornTail, l.Findings)
	}
}

func TestReadMissingFile(t *testing.T) {
	l, err := ReadFile(filepath.Join(t.TempDir(), "none.jsonl"))
	if err != nil || len(l.Records) != 0 || l.NextSeq() != 1 {
		t.Fatalf("ReadFile(missing) = %+v, %v", l, err)
	}
}

// TestReadGolden reads every testdata/*.jsonl and compares the summary
// with testdata/NAME.golden (refresh with -update).
func TestReadGolden(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join("testdata", "*.jsonl"))
	if len(files) < 4 {
		t.Fatalf("only %d testdata files", len(files))
	}
	for _, name := range files {
		t.Run(filepath.Base(name), func(t *testing.T) {
			data, err := os.ReadFile(name)
			if err != nil {
				t.Fatal(err)
			}
			l, err := Read(bytes.NewReader(data))
			if err != nil {
				t.Fatal(err)
			}
			var sb strings.Builder
			fmt.Fprintf(&sb, "lines %d records %d torn %v next %d\n", l.Lines, len(l.Records), l.TornTail, l.NextSeq())
			for _, r := range l.Records {
				fmt.Fprintf(&sb, "record seq=%d case=%s record=%d pid=%s\n", r.Seq, r.Case, r.Record, r.PID)
			}
			for _, f := range l.Findings {
				fmt.Fprintf(&sb, "finding %s\n", f)
			}
			golden := strings.TrimSuffix(name, ".jsonl") + ".golden"
			if *update {
				os.WriteFile(golden, []byte(sb.String()), 0o644)
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if sb.String() != string(want) {
				t.Errorf("got\n%s\nwant\n%s", sb.String(), want)
			}
		})
	}
}

func TestReadLongLine(t *testing.T) {
	good, _ := Marshal(sample(1))
	var b bytes.Buffer
	b.Write(bytes.Repeat([]byte("x"), MaxLineLen+10))
	b.WriteByte('\n')
	b.Write(good)
	l, err := Read(&b)
	if err != nil || len(l.Records) != 1 || len(l.Findings) != 1 || l.Findings[0].Code != CodeLineTooLong {
		t.Fatalf("got %+v, %v", l, err)
	}
}

// TestFixtures writes the reader fixtures in testdata with -update (see
// testdata/README.md) and otherwise checks that they are still what this
// code would write.
func TestFixtures(t *testing.T) {
	line := func(seq uint64, c Case, rec int) []byte {
		r := sample(seq)
		r.Case, r.Record, r.Consumed = c, rec, uint32(rec)
		b, err := Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	three := bytes.Join([][]byte{line(1, CaseNormal, 1), line(2, CaseMultiple, 3), line(3, CaseNone, 3)}, nil)
	four := line(4, CaseNormal, 4)
	damaged := bytes.Clone(line(2, CaseNormal, 2))
	damaged[20] ^= 0x20
	v2 := resum(t, []byte(`{"v":2,"seq":9,"future":true}`))
	fixtures := map[string][]byte{
		"three.jsonl":          three,
		"torn-tail.jsonl":      append(bytes.Clone(three), four[:len(four)/3]...),
		"nul-tail.jsonl":       append(bytes.Clone(three), make([]byte, 300)...),
		"torn-then-next.jsonl": slicesConcat(three, four[:40], []byte("\n"), line(4, CaseNormal, 4)),
		"damaged-middle.jsonl": slicesConcat(line(1, CaseNormal, 1), damaged, line(3, CaseNormal, 3)),
		"newer-version.jsonl":  slicesConcat(line(1, CaseNormal, 1), v2, []byte("\n")),
		"seq-order.jsonl":      slicesConcat(line(2, CaseNormal, 1), line(2, CaseNormal, 2)),
		"not-a-ledger.jsonl":   []byte("hello world\n{\"v\":1}\n"),
	}
	for name, want := range fixtures {
		p := filepath.Join("testdata", name)
		if *update {
			if err := os.WriteFile(p, want, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		got, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs from what this code writes; refresh with -update", p)
		}
	}
}

func slicesConcat(bs ...[]byte) []byte { return bytes.Join(bs, nil) }

// TestActivationFields: the fields added for PKI sticks and host-based
// activation round-trip, and a line written before they existed (the
// golden record-v1.jsonl) still reads with them empty.
func TestActivationFields(t *testing.T) {
	r := sample(4)
	r.Kind = "pki"
	r.PID = ""
	r.AMT.RootHashes = []RootHash{{Name: "provstick site root", Algorithm: "SHA-256", Hash: strings.Repeat("0f", 32), UserAdded: true, Active: true}}
	r.Activation = &Activation{Mode: "client-control", Result: ActivationActivated, Password: "derived:0123abcd",
		Realm: "Digest:A3829B3827DE4D33D4449B366831B8F6", ControlMode: "client", ProvisioningState: "post", ElapsedMS: 120}
	b, err := Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"kind":"pki"`, `"root_hashes":[{"name":"provstick site root","alg":"SHA-256"`, `"activation":{"mode":"client-control","result":"activated","password":"derived:0123abcd"`} {
		if !bytes.Contains(b, []byte(want)) {
			t.Errorf("line lacks %s:\n%s", want, b)
		}
	}
	got, err := Unmarshal(bytes.TrimSuffix(b, []byte("\n")))
	if err != nil {
		t.Fatal(err)
	}
	r.V, r.Sum = Version, got.Sum
	if !reflect.DeepEqual(got, r) {
		t.Errorf("round trip:\ngot  %+v\nwant %+v", got, r)
	}
	old, err := os.ReadFile(filepath.Join("testdata", "record-v1.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	o, err := Unmarshal(bytes.TrimSuffix(old, []byte("\n")))
	if err != nil {
		t.Fatal(err)
	}
	if o.Kind != "" || o.Activation != nil || o.AMT.RootHashes != nil {
		t.Errorf("old line read with new fields: %+v", o)
	}
}

// TestKioskCheckField: the optional kiosk_check member round-trips, keeps
// the line at v1 (older readers, which decode without DisallowUnknownFields,
// skip it), and a line written before it existed reads with it nil. The
// fixture record-kiosk-check.jsonl is such a line for readers to come.
func TestKioskCheckField(t *testing.T) {
	r := sample(5)
	r.KioskCheck = &KioskCheck{Result: KioskReachable, Interface: "eth0", MAC: "00:16:3e:00:00:01", Address: "10.77.0.100/24",
		DHCP: "10.77.0.1", DNS: "10.77.0.1", Domain: "line7.factory.example", DomainSource: "dhcp",
		Name: "provisionserver.line7.factory.example", Kiosk: "10.77.0.1:9971", ElapsedMS: 850}
	b, err := Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join("testdata", "record-kiosk-check.jsonl")
	if *update {
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if want, err := os.ReadFile(p); err != nil || !bytes.Equal(b, want) {
		t.Errorf("%s differs from what this code writes (%v); refresh with -update", p, err)
	}
	if !bytes.HasPrefix(b, []byte(`{"v":1,`)) || !bytes.Contains(b, []byte(`"kiosk_check":{"result":"reachable","interface":"eth0"`)) {
		t.Errorf("line:\n%s", b)
	}
	got, err := Unmarshal(bytes.TrimSuffix(b, []byte("\n")))
	if err != nil {
		t.Fatal(err)
	}
	r.V, r.Sum = Version, got.Sum
	if !reflect.DeepEqual(got, r) {
		t.Errorf("round trip:\ngot  %+v\nwant %+v", got.KioskCheck, r.KioskCheck)
	}
	// What a reader from before the field does with the line: the v1
	// fields it knows decode, the new member is skipped.
	var older struct {
		V     int    `json:"v"`
		Seq   uint64 `json:"seq"`
		Stick string `json:"stick"`
		PID   string `json:"pid"`
	}
	if err := json.Unmarshal(b, &older); err != nil || older.V != 1 || older.Seq != 5 || older.PID != "0000-037M" {
		t.Errorf("an older reader: %+v, %v", older, err)
	}
	old, err := os.ReadFile(filepath.Join("testdata", "record-v1.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	if o, err := Unmarshal(bytes.TrimSuffix(old, []byte("\n"))); err != nil || o.KioskCheck != nil {
		t.Errorf("old line: %+v, %v", o, err)
	}
}
