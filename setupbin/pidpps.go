package setupbin

import (
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"strings"
)

// The PID/PPS alphabet and check character, specs/setupbin.md §4.1.
const alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"

// checkChar returns the check character over s: the sum of its ASCII codes
// modulo 36, mapped 0–9 → '0'–'9' and 10–35 → 'A'–'Z' (§4.1).
func checkChar(s []byte) byte {
	sum := 0
	for _, c := range s {
		sum += int(c)
	}
	return alphabet[sum%36]
}

// alphaTab[c] reports whether c is in 0-9A-Z (a table: readers check
// 40 characters of every record).
var alphaTab = func() (t [256]bool) {
	for i := 0; i < len(alphabet); i++ {
		t[alphabet[i]] = true
	}
	return t
}()

func inAlphabet(c byte) bool { return alphaTab[c] }

// ppsProblem checks 32 PPS characters in one pass: it returns the 1-based
// position of the first character outside the alphabet (and 0), or 0 and
// the 1-based number of the first group whose check character is wrong,
// or 0, 0.
func ppsProblem(b []byte) (badChar, badGroup int) {
	_ = b[31]
	group := 0
	for g := 0; g < 32; g += 4 {
		c0, c1, c2, c3 := b[g], b[g+1], b[g+2], b[g+3]
		if !alphaTab[c0] || !alphaTab[c1] || !alphaTab[c2] || !alphaTab[c3] {
			for i := g; i < g+4; i++ {
				if !alphaTab[b[i]] {
					return i + 1, 0
				}
			}
		}
		if group == 0 && alphabet[(int(c0)+int(c1)+int(c2))%36] != c3 {
			group = g/4 + 1
		}
	}
	return 0, group
}

// PID is a provisioning identifier: 8 characters of 0-9A-Z, the 8th a check
// character over the first 7, stored without dashes (§4.1). It is not a
// secret: it travels in clear in the hello.
type PID [8]byte

// PPS is a provisioning pass phrase: 32 characters of 0-9A-Z in 8 groups of
// 4, the 4th of each group a check character over its first 3 (§4.1). It is
// a secret: String and LogValue print REDACTED; Reveal gives the characters.
type PPS [32]byte

// String returns the canonical 8-character form without dashes.
func (p PID) String() string { return string(p[:]) }

// Display returns the dashed 9-character form, e.g. "0000-037M".
func (p PID) Display() string { return string(p[:4]) + "-" + string(p[4:]) }

// IsZero reports whether p is the zero value (no PID).
func (p PID) IsZero() bool { return p == PID{} }

// String hides the secret; use Reveal where the characters are needed.
func (p PPS) String() string { return "REDACTED" }

// GoString hides the secret from %#v too.
func (p PPS) GoString() string { return "setupbin.PPS(REDACTED)" }

// LogValue keeps the secret out of slog output.
func (p PPS) LogValue() slog.Value { return slog.StringValue("REDACTED") }

// Reveal returns the canonical 32-character form without dashes.
func (p PPS) Reveal() string { return string(p[:]) }

// RevealDisplay returns the dashed 39-character form (specs/setupbin.md
// §4.1 says 40, but 8 groups of 4 with 7 dashes make 39),
// e.g. "NKLD-G5DC-RRNQ-E9YZ-ZIJL-7LFL-VJED-69XJ".
func (p PPS) RevealDisplay() string {
	var b strings.Builder
	b.Grow(40)
	for i := 0; i < 32; i += 4 {
		if i > 0 {
			b.WriteByte('-')
		}
		b.Write(p[i : i+4])
	}
	return b.String()
}

// IsZero reports whether p is the zero value (no PPS).
func (p PPS) IsZero() bool { return p == PPS{} }

// ValueError says which value of which field is wrong and why. For secret
// fields Value is empty: the error never carries the secret.
type ValueError struct {
	Field  string // "PID", "PPS", "MEBx password", ...
	Value  string // the offending value, or "" for secrets
	Reason string
	Err    error // ErrValue, or ErrCheckChar for a wrong check character
}

func (e *ValueError) Error() string {
	if e.Value == "" {
		return fmt.Sprintf("setupbin: %s: %s", e.Field, e.Reason)
	}
	return fmt.Sprintf("setupbin: %s %q: %s", e.Field, e.Value, e.Reason)
}

func (e *ValueError) Unwrap() error { return e.Err }

// stripDashes removes the display dashes from s when they stand exactly
// every 4 characters; any other dash is left for the alphabet check.
func stripDashes(s string, groups int) string {
	if len(s) != groups*4+groups-1 {
		return s
	}
	var b strings.Builder
	for g := 0; g < groups; g++ {
		if g > 0 {
			if s[g*5-1] != '-' {
				return s
			}
		}
		b.WriteString(s[g*5 : g*5+4])
	}
	return b.String()
}

// ParsePID parses a PID in canonical ("0000037M") or display ("0000-037M")
// form, upper- or lower-case, and verifies its check character.
func ParsePID(s string) (PID, error) {
	var p PID
	c := strings.ToUpper(stripDashes(strings.TrimSpace(s), 2))
	if strings.Contains(c, "-") {
		return p, &ValueError{Field: "PID", Value: s, Reason: "a dash may stand only after the 4th character", Err: ErrValue}
	}
	if len(c) != len(p) {
		return p, &ValueError{Field: "PID", Value: s, Reason: fmt.Sprintf("has %d characters, want 8 (or 9 with a dash)", len(c)), Err: ErrValue}
	}
	for i := 0; i < len(c); i++ {
		if !inAlphabet(c[i]) {
			return p, &ValueError{Field: "PID", Value: s, Reason: fmt.Sprintf("character %d %q is not in 0-9A-Z", i+1, c[i]), Err: ErrValue}
		}
	}
	copy(p[:], c)
	if want := checkChar(p[:7]); p[7] != want {
		return PID{}, &ValueError{Field: "PID", Value: s, Reason: fmt.Sprintf("check character %q wrong, want %q", p[7], want), Err: ErrCheckChar}
	}
	return p, nil
}

// ParsePPS parses a PPS in canonical (32 characters) or display (40, with
// dashes) form and verifies the check character of each group. Errors name
// the group but never carry the secret.
func ParsePPS(s string) (PPS, error) {
	var p PPS
	c := strings.ToUpper(stripDashes(strings.TrimSpace(s), 8))
	if strings.Contains(c, "-") {
		return p, &ValueError{Field: "PPS", Reason: "dashes may stand only between groups of 4 characters", Err: ErrValue}
	}
	if len(c) != len(p) {
		return p, &ValueError{Field: "PPS", Reason: fmt.Sprintf("has %d characters, want 32 (or 39 with dashes)", len(c)), Err: ErrValue}
	}
	for i := 0; i < len(c); i++ {
		if !inAlphabet(c[i]) {
			return p, &ValueError{Field: "PPS", Reason: fmt.Sprintf("character %d is not in 0-9A-Z", i+1), Err: ErrValue}
		}
	}
	copy(p[:], c)
	if g := p.badGroup(); g != 0 {
		return PPS{}, &ValueError{Field: "PPS", Reason: fmt.Sprintf("group %d check character wrong", g), Err: ErrCheckChar}
	}
	return p, nil
}

// Valid reports whether p has the right alphabet and check character.
func (p PID) Valid() bool {
	for _, c := range p {
		if !inAlphabet(c) {
			return false
		}
	}
	return p[7] == checkChar(p[:7])
}

// badGroup returns the 1-based number of the first group whose check
// character is wrong, or 0 when all are right.
func (p PPS) badGroup() int {
	for g := 0; g < 8; g++ {
		grp := p[g*4 : g*4+4]
		if grp[3] != checkChar(grp[:3]) {
			return g + 1
		}
	}
	return 0
}

// Valid reports whether p has the right alphabet and check characters.
func (p PPS) Valid() bool {
	c, g := ppsProblem(p[:])
	return c == 0 && g == 0
}

// randomChars fills dst with characters drawn uniformly from the alphabet,
// by rejection sampling so that no character is more likely than another.
func randomChars(r io.Reader, dst []byte) error {
	if r == nil {
		r = rand.Reader
	}
	var buf [64]byte
	for n := 0; n < len(dst); {
		if _, err := io.ReadFull(r, buf[:]); err != nil {
			return fmt.Errorf("setupbin: reading random bytes: %w", err)
		}
		for _, b := range buf {
			if b >= 252 { // 252 = 7 × 36: keep the mapping uniform
				continue
			}
			dst[n] = alphabet[b%36]
			n++
			if n == len(dst) {
				break
			}
		}
	}
	return nil
}

// GeneratePID returns a fresh random PID; r is the randomness (nil means
// crypto/rand). Uniqueness across a pool is the pool's business.
func GeneratePID(r io.Reader) (PID, error) {
	var p PID
	if err := randomChars(r, p[:7]); err != nil {
		return PID{}, err
	}
	p[7] = checkChar(p[:7])
	return p, nil
}

// GeneratePPS returns a fresh random PPS (24 random characters, about 124
// bits); r is the randomness (nil means crypto/rand).
func GeneratePPS(r io.Reader) (PPS, error) {
	var p PPS
	var free [24]byte
	if err := randomChars(r, free[:]); err != nil {
		return PPS{}, err
	}
	for g := 0; g < 8; g++ {
		copy(p[g*4:g*4+3], free[g*3:g*3+3])
		p[g*4+3] = checkChar(p[g*4 : g*4+3])
	}
	return p, nil
}
