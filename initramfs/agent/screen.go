package agent

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// ScreenKind colours the technician's screen.
type ScreenKind int

// The kinds of screen.
const (
	ScreenWorking   ScreenKind = iota // white on blue: do not remove the stick yet
	ScreenDone                        // black on green: remove the stick
	ScreenAttention                   // black on yellow: read what follows
	ScreenProblem                     // white on red: nothing (useful) was written
)

// Screen is what the technician sees on the machine's display: a coloured
// title bar, the message, and a footer (the countdown). It is drawn on the
// Linux text console (vgacon under legacy BIOS, fbcon on the UEFI
// framebuffer or on the VESA one a legacy BIOS boot gets for a QR code) with ANSI/VT escape sequences, so the kernel renders the
// glyphs and no font or image library goes into the initramfs.
type Screen struct {
	Kind  ScreenKind
	Title string
	// Lead is the headline under the title (bright), Lines the rest; each
	// is wrapped to the screen's width.
	Lead   string
	Lines  []string
	Footer string
	// QR, when set, is drawn at the right if one of its forms fits the
	// console (QR.Fit); otherwise a line says why there is none.
	QR *QR
}

// ResultScreen turns the agent's result into a screen.
func ResultScreen(res *Result) Screen {
	lines := strings.Split(strings.TrimSpace(res.Message), "\n")
	s := Screen{Lead: lines[0], Lines: lines[1:]}
	switch {
	case res.OK:
		s.Kind, s.Title = ScreenDone, "DONE - REMOVE THE STICK"
	case res.Record != nil && res.Record.Record != 0:
		s.Kind, s.Title = ScreenAttention, "ATTENTION - READ BELOW, TELL THE KIOSK OPERATOR"
	default:
		s.Kind, s.Title = ScreenProblem, "PROBLEM - READ BELOW"
	}
	if res.Record != nil {
		s.Lines = append(s.Lines, "Stick: "+res.Record.Stick)
	}
	return s
}

// sgr is the bar's ANSI SGR attributes. Black text is never bold: on
// VGA, bold black is dark grey, unreadable on green.
func (k ScreenKind) sgr() string {
	switch k {
	case ScreenDone:
		return "0;30;42"
	case ScreenAttention:
		return "0;30;43"
	case ScreenProblem:
		return "1;37;41"
	}
	return "1;37;44"
}

// strong lines are drawn bright: what the technician must do or must not
// miss.
var strong = []string{"Remove the stick", "PROBLEM", "WARNING", "Do not use this stick", "Kiosk NOT reachable"}

const (
	esc        = "\x1b["
	clearAll   = esc + "0m" + esc + "2J" + esc + "H"
	hideCursor = esc + "?25l"
	// Console blanking and powersave off (console_codes(4): ESC [ 9 ; n ]
	// and ESC [ 14 ; n ]): the screen must still be there when the
	// technician comes back.
	noBlank = esc + "9;0]" + esc + "14;0]"
)

// FooterRow is the 1-based row the footer is drawn on for a screen of
// rows rows.
func FooterRow(rows int) int { return max(rows-1, 1) }

// Render returns the escape sequences that draw s on a console of cols ×
// rows characters (the whole screen is redrawn).
func (s Screen) Render(cols, rows int) []byte {
	cols, rows = max(cols, 40), max(rows, 10)
	code := s.QR.Fit(cols, rows)
	if s.QR != nil {
		if code == nil {
			s.Lines = append(s.Lines, fmt.Sprintf("No QR code: this %dx%d screen is too small for one.", cols, rows))
		} else {
			s.Lines = append(s.Lines, "QR code: this ledger line, for the kiosk if the stick does not come back.")
		}
	}
	var b strings.Builder
	b.WriteString(noBlank + hideCursor + clearAll)
	textCols := cols
	if code != nil {
		textCols = cols - code.Cols()
	}
	bar := func(text string) {
		fmt.Fprintf(&b, esc+"%sm%s"+esc+"0m\r\n", s.Kind.sgr(), pad(text, textCols))
	}
	bar("")
	bar("  " + toConsole(s.Title))
	bar("")
	b.WriteString("\r\n")
	row := 5
	budget := FooterRow(rows) - 2 // rows left for text above the footer
	put := func(attr, text string) {
		for _, l := range wrap(toConsole(text), textCols-4) {
			if row > budget {
				return
			}
			fmt.Fprintf(&b, "  %s%s"+esc+"0m\r\n", attr, l)
			row++
		}
	}
	put(esc+"1m", s.Lead)
	for _, l := range s.Lines {
		if row <= budget {
			b.WriteString("\r\n")
			row++
		}
		attr := ""
		for _, p := range strong {
			if strings.HasPrefix(l, p) {
				attr = esc + "1m"
			}
		}
		put(attr, l)
	}
	if code != nil {
		top := 1 + (rows-code.Rows())/2
		for i, l := range code.lines() {
			fmt.Fprintf(&b, esc+"%d;%dH"+esc+"0;1;37;40m%s"+esc+"0m", top+i, textCols+1, l)
		}
	}
	if s.Footer != "" {
		b.Write(s.footerUpdate(textCols, rows))
	}
	return []byte(b.String())
}

// FooterUpdate redraws only the footer row (the countdown), beside the QR
// code if there is one.
func (s Screen) FooterUpdate(cols, rows int) []byte {
	cols, rows = max(cols, 40), max(rows, 10)
	if code := s.QR.Fit(cols, rows); code != nil {
		cols -= code.Cols()
	}
	return s.footerUpdate(cols, rows)
}

func (s Screen) footerUpdate(width, rows int) []byte {
	return fmt.Appendf(nil, esc+"%d;1H"+esc+"%sm%s"+esc+"0m", FooterRow(rows), s.Kind.sgr(), pad("  "+toConsole(s.Footer), width))
}

func pad(s string, n int) string {
	if k := utf8.RuneCountInString(s); k < n {
		return s + strings.Repeat(" ", n-k)
	}
	return string([]rune(s)[:n])
}

// wrap breaks s into lines of at most width runes at spaces.
func wrap(s string, width int) []string {
	var out []string
	var cur []rune
	for _, w := range strings.Fields(s) {
		r := []rune(w)
		for len(r) > width { // a word longer than a line
			if len(cur) > 0 {
				out = append(out, string(cur))
				cur = nil
			}
			out = append(out, string(r[:width]))
			r = r[width:]
		}
		switch {
		case len(cur) == 0:
			cur = r
		case len(cur)+1+len(r) <= width:
			cur = append(append(cur, ' '), r...)
		default:
			out = append(out, string(cur))
			cur = r
		}
	}
	if len(cur) > 0 {
		out = append(out, string(cur))
	}
	return out
}

// toConsole keeps text to what the console's default (CP437) font can
// show: the arrow stays (CP437 0x1A), dashes and quotes become ASCII, and
// control characters are dropped so that text from the stick or the ME
// cannot send escape sequences.
func toConsole(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r == '→':
			return r
		case r == '–' || r == '—':
			return '-'
		case r == '“' || r == '”':
			return '"'
		case r == '‘' || r == '’':
			return '\''
		case r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0):
			return -1
		case r > 0x7e:
			return '?'
		}
		return r
	}, s)
}
