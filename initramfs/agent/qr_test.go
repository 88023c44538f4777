package agent

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/provstick/provstick/internal/ledger"
)

// qrRecord is a line as the VM tests write it (no EK certificate) plus
// what a real machine adds: 20 root hashes and a 1.2 kB EK certificate.
func qrRecord(real bool) (*ledger.Record, string) {
	r := &ledger.Record{Seq: 3, Time: time.Date(2026, 11, 23, 15, 4, 5, 0, time.UTC), Stick: "vm-0001", Case: ledger.CaseMultiple,
		Consumed: 4, PrevConsumed: new(uint32(2)), Record: 104, Index: 3, PID: "V7Y4-AHHN", Kind: "psk", Skipped: []int{103}, NextPID: "IOI7-0XCF",
		AMT: &ledger.AMT{UUID: "939b52a1-13d4-1d18-e487-1c697a6b7aa1", AMTVersion: "11.8.50", FirmwareVersion: "11.8.50.3425", ProvisioningState: "in",
			ProvisioningMode: "pre", ControlMode: "none", RootHashes: []ledger.RootHash{{Name: "Simulated default root A", Algorithm: "SHA-256", Hash: strings.Repeat("3f", 32), Default: true, Active: true}}},
		DMI:   &ledger.DMI{Vendor: "QEMU", Model: "Standard PC (Q35 + ICH9, 2009)", Serial: "", SystemUUID: "939b52a1-13d4-1d18-e487-1c697a6b7aa1"},
		MACs:  []string{"52:54:00:12:34:56"},
		TPM:   &ledger.TPM{EKSHA256: "8c1a60b4d0c3ad4c1b6ae3bd7f2e1f3b47a0e5de8a0b64d8e0f5b3c1f2a1d9e7", Device: "/dev/tpmrm0"},
		Agent: "dev",
	}
	if real {
		for i := range 20 {
			r.AMT.RootHashes = append(r.AMT.RootHashes, ledger.RootHash{Name: fmt.Sprintf("Root %d", i), Algorithm: "SHA-256", Hash: fmt.Sprintf("%064x", i*7919+1), Default: true, Active: true})
		}
		r.TPM.EKCert, r.TPM.EKCertDER = true, bytes.Repeat([]byte{0x30, 0x82, 0x04, 0xb6}, 300)
	}
	line, err := ledger.Marshal(r)
	if err != nil {
		panic(err)
	}
	full, err := ledger.Unmarshal(bytes.TrimSuffix(line, []byte("\n")))
	if err != nil {
		panic(err)
	}
	return full, full.Sum
}

// TestQRFit: what fits where. VGA text (80×25) has no room for any form;
// a framebuffer console at 1024×768 and 1280×800 (8×16 font) takes the
// compact one.
func TestQRFit(t *testing.T) {
	rec, sum := qrRecord(true)
	q, err := QRFor(rec, sum)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		cols, rows int
		form       string
	}{
		{80, 25, ""},
		{100, 37, "compact"},
		{90, 30, "minimal"},
		{128, 48, "compact"},
		{160, 50, "compact"},
		{240, 67, "compact"},
	} {
		code := q.Fit(c.cols, c.rows)
		got := ""
		if code != nil {
			got = code.Form
			if code.Rows() > c.rows || code.Cols()+QRMinTextCols > c.cols || code.Quiet < 2 {
				t.Errorf("%dx%d: %s does not fit", c.cols, c.rows, code)
			}
			t.Logf("%dx%d: %s", c.cols, c.rows, code)
		}
		if got != c.form {
			t.Errorf("%dx%d: form %q, want %q", c.cols, c.rows, got, c.form)
		}
	}
	s := Screen{Kind: ScreenDone, Title: "DONE", Lead: "x", QR: q}
	if out := stripSGR(string(s.Render(80, 25))); !strings.Contains(out, "No QR code: this 80x25 screen is too small for one.") {
		t.Errorf("80x25 does not say there is no QR code:\n%s", out)
	}
}

// TestQRScreenZbar renders a screen with its QR code on an emulated
// console (cells 8×16 pixels, the font's half blocks), and reads the code
// back with zbarimg (zbar-tools), an independent decoder: the text must
// decode to the compact line, which verifies and names the full line.
func TestQRScreenZbar(t *testing.T) {
	for _, size := range [][2]int{{160, 50}, {128, 48}, {90, 30}} {
		t.Run(fmt.Sprintf("%dx%d", size[0], size[1]), func(t *testing.T) {
			rec, sum := qrRecord(true)
			q, err := QRFor(rec, sum)
			if err != nil {
				t.Fatal(err)
			}
			s := ResultScreen(&Result{OK: false, Record: rec, Message: "WARNING: 2 records were consumed.\nRecord 104 → this machine."})
			s.QR, s.Footer = q, "Powering off in 9 s"
			img := emulate(t, s.Render(size[0], size[1]), size[0], size[1])
			text := zbarText(t, img)
			line, err := ledger.DecodeQR(text)
			if err != nil {
				t.Fatalf("zbarimg read %q: %v", text, err)
			}
			got, err := ledger.Unmarshal(line)
			if err != nil {
				t.Fatalf("the scanned line does not verify: %v\n%s", err, line)
			}
			if !ledger.SameLine(got.FullSum, sum) || got.Seq != rec.Seq || got.PID != rec.PID || got.AMT.UUID != rec.AMT.UUID || got.Record != 104 {
				t.Errorf("scanned %+v; want the line %s", got, sum)
			}
			t.Logf("zbarimg: %d characters → %d-byte line %s", len(text), len(line), line)
		})
	}
}

// zbarText decodes the one QR code in img with zbarimg.
func zbarText(t *testing.T, img image.Image) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "screen.png")
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return zbarFile(t, p)
}

// zbarFile runs zbarimg on a PNG (scripts/install-deps.sh installs
// zbar-tools; the test fails without it).
func zbarFile(t *testing.T, p string) string {
	t.Helper()
	out, err := exec.Command("zbarimg", "--quiet", "--raw", "-Sdisable", "-Sqrcode.enable", p).Output()
	if err != nil {
		t.Fatalf("zbarimg %s: %v (is zbar-tools installed?)", p, err)
	}
	return strings.TrimRight(string(out), "\n")
}

var vtRE = regexp.MustCompile(`^\x1b\[([0-9;?]*)([A-Za-z\]])`)

// emulate draws what Render wrote the way the Linux console would, as far
// as Render uses it: CUP, SGR (colours 30–47, bold brightens the
// foreground), CR LF, and the glyphs ▀ ▄ █ and text (any other glyph a
// grey cell).
func emulate(t *testing.T, out []byte, cols, rows int) image.Image {
	t.Helper()
	const cw, ch = 8, 16
	pal := []color.RGBA{{0, 0, 0, 255}, {0xaa, 0, 0, 255}, {0, 0xaa, 0, 255}, {0xaa, 0x55, 0, 255}, {0, 0, 0xaa, 255}, {0xaa, 0, 0xaa, 255}, {0, 0xaa, 0xaa, 255}, {0xaa, 0xaa, 0xaa, 255}}
	img := image.NewRGBA(image.Rect(0, 0, cols*cw, rows*ch))
	x, y, fg, bg, bold := 0, 0, 7, 0, false
	s := string(out)
	for len(s) > 0 {
		if m := vtRE.FindStringSubmatch(s); m != nil {
			s = s[len(m[0]):]
			switch m[2] {
			case "H":
				y, x = 0, 0
				if m[1] != "" {
					p := strings.Split(m[1], ";")
					y, _ = strconv.Atoi(p[0])
					x, _ = strconv.Atoi(p[1])
					y, x = y-1, x-1
				}
			case "m":
				for _, a := range strings.Split(m[1], ";") {
					n, _ := strconv.Atoi(a)
					switch {
					case n == 0:
						fg, bg, bold = 7, 0, false
					case n == 1:
						bold = true
					case n >= 30 && n <= 37:
						fg = n - 30
					case n >= 40 && n <= 47:
						bg = n - 40
					}
				}
			}
			continue
		}
		r := []rune(s[:min(len(s), 4)])[0]
		s = s[len(string(r)):]
		switch r {
		case '\r':
			x = 0
			continue
		case '\n':
			y++
			continue
		}
		if x >= cols || y >= rows {
			t.Fatalf("drawn outside the %dx%d screen at %d,%d", cols, rows, x, y)
		}
		f := pal[fg]
		if bold {
			f = color.RGBA{min(f.R+0x55, 255), min(f.G+0x55, 255), min(f.B+0x55, 255), 255}
		}
		for py := range ch {
			for px := range cw {
				c := pal[bg]
				switch r {
				case '█':
					c = f
				case '▀':
					if py < ch/2 {
						c = f
					}
				case '▄':
					if py >= ch/2 {
						c = f
					}
				case ' ':
				default:
					if px%2 == 0 && py%2 == 0 {
						c = f
					}
				}
				img.Set(x*cw+px, y*ch+py, c)
			}
		}
		x++
	}
	return img
}
