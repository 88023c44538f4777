package agent

import (
	"fmt"
	"strings"

	"rsc.io/qr"

	"github.com/provstick/provstick/internal/ledger"
)

// QR is the ledger line offered as a QR code on the technician's screen
// (agent.json "qr": true), for sites where sticks do not come back: a
// phone scans it, and the kiosk imports the scanned text (provstick
// ledger import, ledger.ExpandQR).
//
// A real line is 1.5 to 6 kB (the ME's root certificate hashes, the EK
// certificate): as a QR code, version 25 to 40, far more modules than a
// screen can show sharply. So the code holds ledger.ForQR's shorter line
// (about 550 bytes, 340 characters of QR text: version 10 to 12), which
// has its own checksum and names the full line by its checksum; the full
// line comes back with the stick, if it ever does. Where even that does
// not fit, the minimal form (AMT UUID only, about 230 characters), and
// where that does not fit either (VGA text mode, 80×25: at most 50 rows
// of modules, version 7 with a quiet zone), no code and a line saying so.
// A legacy BIOS boot is in VGA text mode unless the builder's syslinux
// entry asks for VESA 1024×768 (recipe boot.bios_video, on by default
// with agent.qr; 128×48 characters); a video BIOS without that mode
// leaves it in text mode, and this line is what the technician sees.
type QR struct {
	forms []qrForm // best first
}

type qrForm struct {
	name string // "compact" or "minimal"
	text string // ledger.EncodeQR of the line
}

// QRFor makes the QR forms of rec, the record of the line whose checksum
// is sum.
func QRFor(rec *ledger.Record, sum string) (*QR, error) {
	q := &QR{}
	for _, f := range []struct {
		name    string
		minimal bool
	}{{"compact", false}, {"minimal", true}} {
		line, err := ledger.Marshal(ledger.ForQR(rec, sum, f.minimal))
		if err != nil {
			return nil, fmt.Errorf("making the QR line: %w", err)
		}
		text, err := ledger.EncodeQR(line)
		if err != nil {
			return nil, fmt.Errorf("making the QR text: %w", err)
		}
		q.forms = append(q.forms, qrForm{f.name, text})
	}
	return q, nil
}

// QRMinTextCols is the width left for the message beside a QR code.
const QRMinTextCols = 30

// QRCode is one QR code fitted to a console: Unicode half blocks (▀ ▄ █,
// which the console's CP437 font has), two modules a character row, one
// a column; on VGA (9×16 cells) and fbcon (8×16) a module is about
// square.
type QRCode struct {
	Form    string // "compact" or "minimal"
	Text    string // what a scanner reads
	Version int
	Level   string // "M" or "L"
	Modules int    // per side, without the quiet zone
	Quiet   int    // light modules around it
	code    *qr.Code
}

// Cols and Rows are the console cells the code takes, quiet zone
// included.
func (c *QRCode) Cols() int { return c.Modules + 2*c.Quiet }
func (c *QRCode) Rows() int { return (c.Modules + 2*c.Quiet + 1) / 2 }

func (c *QRCode) String() string {
	return fmt.Sprintf("%s form, version %d-%s, %d×%d modules, quiet zone %d, %d characters", c.Form, c.Version, c.Level, c.Modules, c.Modules, c.Quiet, len(c.Text))
}

// Fit returns the best code that fits beside QRMinTextCols columns of
// text on a console of cols × rows characters, or nil: the compact form
// before the minimal one, then error correction M before L, then a quiet
// zone of 4 modules before 2.
func (q *QR) Fit(cols, rows int) *QRCode {
	if q == nil {
		return nil
	}
	for _, f := range q.forms {
		for _, lv := range []struct {
			name  string
			level qr.Level
		}{{"M", qr.M}, {"L", qr.L}} {
			code, err := qr.Encode(f.text, lv.level)
			if err != nil {
				continue // too long for any version
			}
			for _, quiet := range []int{4, 2} {
				c := &QRCode{Form: f.name, Text: f.text, Version: (code.Size - 17) / 4, Level: lv.name, Modules: code.Size, Quiet: quiet, code: code}
				if c.Rows() <= rows && c.Cols()+QRMinTextCols <= cols {
					return c
				}
			}
		}
	}
	return nil
}

// lines draws the code, row by row, as characters for a light-on-dark
// console: the glyphs draw the light modules in bright white on black, so
// that the code is dark on light as scanners expect.
func (c *QRCode) lines() []string {
	dark := func(x, y int) bool {
		x, y = x-c.Quiet, y-c.Quiet
		return c.code.Black(x, y) // false outside the code: the quiet zone
	}
	out := make([]string, 0, c.Rows())
	var b strings.Builder
	for row := range c.Rows() {
		b.Reset()
		for x := range c.Cols() {
			top, bottom := !dark(x, 2*row), !dark(x, 2*row+1)
			if 2*row+1 >= c.Cols() { // an odd last module row: the rest is dark screen
				bottom = false
			}
			switch {
			case top && bottom:
				b.WriteRune('█')
			case top:
				b.WriteRune('▀')
			case bottom:
				b.WriteRune('▄')
			default:
				b.WriteByte(' ')
			}
		}
		out = append(out, b.String())
	}
	return out
}
