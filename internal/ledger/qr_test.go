package ledger

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// RFC 9285 §4.3 and §4.4's examples.
func TestBase45RFC(t *testing.T) {
	for _, c := range []struct{ in, out string }{
		{"AB", "BB8"},
		{"Hello!!", "%69 VD92EX0"},
		{"base-45", "UJCLQE7W581"},
		{"ietf!", "QED8WEX0"},
		{"", ""},
	} {
		if got := string(appendBase45(nil, []byte(c.in))); got != c.out {
			t.Errorf("base45(%q) = %q, want %q", c.in, got, c.out)
		}
		got, err := decodeBase45(c.out)
		if err != nil || string(got) != c.in {
			t.Errorf("decode(%q) = %q, %v; want %q", c.out, got, err, c.in)
		}
	}
	// §6: a decoder must reject these.
	for _, bad := range []string{"GGW", "A", "ZZ", "AB;", "ab8"} {
		if _, err := decodeBase45(bad); !errors.Is(err, ErrQR) {
			t.Errorf("decode(%q): err %v, want ErrQR", bad, err)
		}
	}
}

// realistic is a line as a real machine writes it: the ME's default root
// hashes (a vPro ME lists about 20; amtinfo -r on the lab's machines
// shows 19 to 24) and an RSA-2048 EK certificate (Intel PTT's are about
// 1.2 kB).
func realistic(t testing.TB, roots, certLen int) *Record {
	r := sample(7)
	r.Kind = "psk"
	r.Agent = "v0.9.0"
	for i := range roots {
		var h [32]byte
		rand.Read(h[:])
		r.AMT.RootHashes = append(r.AMT.RootHashes, RootHash{Name: fmt.Sprintf("VeriSign Class 3 Primary CA-G%d", i), Algorithm: "SHA-256", Hash: hex.EncodeToString(h[:]), Default: true, Active: true})
	}
	if certLen > 0 {
		r.TPM.EKCert = true
		r.TPM.EKCertDER = make([]byte, certLen)
		rand.Read(r.TPM.EKCertDER)
		s := sha256.Sum256(r.TPM.EKCertDER)
		r.TPM.EKCertSHA256, r.TPM.EKCertIssuer = hex.EncodeToString(s[:]), "CN=Intel(R) Client PTT EK Platform CA,O=Intel Corporation,C=US"
		r.Missing = nil
	}
	return r
}

func TestQRRoundTrip(t *testing.T) {
	for _, c := range []struct {
		name string
		rec  *Record
	}{
		{"record-v1", sample(1)},
		{"real-no-cert", realistic(t, 3, 0)},
		{"real-20-roots-cert", realistic(t, 20, 1200)},
	} {
		t.Run(c.name, func(t *testing.T) {
			line, err := Marshal(c.rec)
			if err != nil {
				t.Fatal(err)
			}
			full, err := Unmarshal(bytes.TrimSuffix(line, []byte("\n")))
			if err != nil {
				t.Fatal(err)
			}
			for _, form := range []struct {
				name string
				line []byte
			}{
				{"full", line},
				{"compact", must(Marshal(ForQR(full, full.Sum, false)))},
				{"minimal", must(Marshal(ForQR(full, full.Sum, true)))},
			} {
				text, err := EncodeQR(form.line)
				if err != nil {
					t.Fatal(err)
				}
				back, err := DecodeQR(text)
				if err != nil {
					t.Fatalf("%s: %v", form.name, err)
				}
				if want := bytes.TrimSuffix(form.line, []byte("\n")); !bytes.Equal(back, want) {
					t.Fatalf("%s: decoded\n%s\nwant\n%s", form.name, back, want)
				}
				r, err := Unmarshal(back)
				if err != nil {
					t.Fatalf("%s: the decoded line does not verify: %v", form.name, err)
				}
				if form.name != "full" && (!SameLine(r.FullSum, full.Sum) || r.Seq != full.Seq || r.PID != full.PID || r.AMT.UUID != full.AMT.UUID) {
					t.Errorf("%s: %+v does not name the full line %s", form.name, r, full.Sum)
				}
				if !strings.HasPrefix(text, QRPrefix) || strings.Trim(text[len(QRPrefix):], base45Alphabet) != "" {
					t.Errorf("%s: %q is not prefix + base45", form.name, text)
				}
				t.Logf("%-8s line %5d bytes → QR text %5d characters", form.name, len(form.line)-1, len(text))
			}
		})
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func TestQRErrors(t *testing.T) {
	good := must(EncodeQR(must(Marshal(sample(1)))))
	notLedger := must(EncodeQR([]byte("a")))
	for _, c := range []struct{ name, text string }{
		{"no prefix", good[len(QRPrefix):]},
		{"lower case", strings.ToLower(good)},
		{"truncated", good[:len(good)-3]},
		{"3n+1", good + "A"},
		{"not deflate", QRPrefix + string(appendBase45(nil, []byte{0xff, 0xff, 0xff}))},
		{"empty", ""},
	} {
		if _, err := DecodeQR(c.text); !errors.Is(err, ErrQR) {
			t.Errorf("%s: err %v, want ErrQR", c.name, err)
		}
	}
	if _, err := EncodeQR([]byte("a\nb")); !errors.Is(err, ErrFormat) {
		t.Errorf("two lines: err %v, want ErrFormat", err)
	}
	// A decoded line that is not a ledger line fails Unmarshal, not DecodeQR.
	b, err := DecodeQR(notLedger)
	if err != nil || string(b) != "a" {
		t.Errorf("DecodeQR = %q, %v", b, err)
	}
}

// TestExpandQR: a file of scanned texts (CR LF, a blank line, a bad scan,
// a plain ledger line among them) becomes a ledger Read verifies, with
// line numbers kept.
func TestExpandQR(t *testing.T) {
	l1, l2 := must(Marshal(sample(1))), must(Marshal(sample(2)))
	q2 := must(EncodeQR(l2))
	data := "  " + must(EncodeQR(l1)) + "\r\n" + q2[:len(q2)-5] + "\n" + string(l2) + q2 + "\n"
	out, n, bad := ExpandQR([]byte(data), 1<<20)
	if n != 2 || bad != 1 {
		t.Fatalf("n %d bad %d, want 2 1", n, bad)
	}
	l, err := Read(bytes.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Records) != 3 || l.Lines != 4 || len(l.Findings) != 2 || l.Findings[0].Line != 2 || l.Findings[0].Code != CodeDamagedLine {
		t.Fatalf("records %d lines %d findings %v\n%s", len(l.Records), l.Lines, l.Findings, out)
	}
	if same, _, _ := ExpandQR(l1, 1<<20); !bytes.Equal(same, l1) {
		t.Errorf("a ledger without QR texts changed")
	}
	// The output stays within max: the second text does not fit.
	q1 := must(EncodeQR(l1))
	out, n, bad = ExpandQR([]byte(q1+"\n"+q1+"\n"), len(l1)+10)
	if n != 1 || bad != 1 || len(out) > len(l1)+10+len(q1)+1 {
		t.Errorf("max: n %d bad %d, %d bytes", n, bad, len(out))
	}
}

// TestQRGolden pins the form: the QR texts of testdata/record-v1.jsonl
// and of its compact and minimal lines (ForQR). A change here breaks
// every QR code already printed: give the new form a new QRPrefix.
func TestQRGolden(t *testing.T) {
	line := must(os.ReadFile(filepath.Join("testdata", "record-v1.jsonl")))
	full := must(Unmarshal(bytes.TrimSuffix(line, []byte("\n"))))
	for _, c := range []struct {
		file string
		line []byte
	}{
		{"qr-record-v1.txt", line},
		{"qr-compact-v1.txt", must(Marshal(ForQR(full, full.Sum, false)))},
		{"qr-minimal-v1.txt", must(Marshal(ForQR(full, full.Sum, true)))},
	} {
		text := must(EncodeQR(c.line)) + "\n"
		golden := filepath.Join("testdata", c.file)
		if *update {
			if err := os.WriteFile(golden, []byte(text), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		want, err := os.ReadFile(golden)
		if err != nil {
			t.Fatal(err)
		}
		if text != string(want) {
			t.Errorf("%s:\ngot  %s\nwant %s", c.file, text, want)
		}
		back, err := DecodeQR(strings.TrimSpace(string(want)))
		if err != nil || !bytes.Equal(back, bytes.TrimSuffix(c.line, []byte("\n"))) {
			t.Errorf("%s does not decode to its line: %v", c.file, err)
		}
	}
}
