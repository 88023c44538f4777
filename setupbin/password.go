package setupbin

import (
	"fmt"
	"io"
	"log/slog"
)

// Password is a MEBx or AMT admin password. It is a secret: String and
// LogValue print REDACTED; Reveal gives the characters.
type Password string

// String hides the secret.
func (p Password) String() string { return "REDACTED" }

// GoString hides the secret from %#v too.
func (p Password) GoString() string { return "setupbin.Password(REDACTED)" }

// LogValue keeps the secret out of slog output.
func (p Password) LogValue() slog.Value { return slog.StringValue("REDACTED") }

// Reveal returns the password's characters.
func (p Password) Reveal() string { return string(p) }

// DefaultMEBxPassword is the password of a factory-fresh MEBx (§4.2).
const DefaultMEBxPassword Password = "admin"

// forbidden holds the characters some source forbids in a MEBx password;
// we avoid the union (§4.2). Space and '_' are allowed by Intel but count
// toward no complexity class, and we avoid them too.
const forbidden = "\"',<>:& _"

// forbiddenTab[c] reports whether c is in forbidden (a table: the
// writer checks every password of 100,000-record files).
var forbiddenTab = func() (t [256]bool) {
	for i := 0; i < len(forbidden); i++ {
		t[forbidden[i]] = true
	}
	return t
}()

// ValidateCurrentPassword checks a current MEBx password (variable 1/1):
// 1–32 characters of 7-bit printable ASCII. It is what the machine has now,
// so no complexity rule applies ("admin" on a fresh machine).
func ValidateCurrentPassword(p Password) error {
	if len(p) == 0 || len(p) > 32 {
		return &ValueError{Field: "current MEBx password", Reason: fmt.Sprintf("has %d characters, want 1 to 32", len(p)), Err: ErrValue}
	}
	for i := 0; i < len(p); i++ {
		if p[i] < 0x20 || p[i] > 0x7e {
			return &ValueError{Field: "current MEBx password", Reason: fmt.Sprintf("character %d is not printable 7-bit ASCII", i+1), Err: ErrValue}
		}
	}
	return nil
}

// ValidateMEBxPassword checks a new MEBx password against §4.2: 8–32
// characters of 7-bit printable ASCII with a digit, a lower-case letter, an
// upper-case letter and a non-alphanumeric character, none of
// " ' , < > : & space _. The error names the rule, never the password.
func ValidateMEBxPassword(p Password) error { return validateMEBx(p) }

// Character classes for the §4.2 rules, one table lookup per character.
const (
	clsBad = iota // not printable 7-bit ASCII
	clsForbidden
	clsDigit
	clsLower
	clsUpper
	clsOther
)

var charClass = func() (t [256]uint8) {
	for c := 0; c < 256; c++ {
		switch {
		case c < 0x20 || c > 0x7e:
			t[c] = clsBad
		case forbiddenTab[c]:
			t[c] = clsForbidden
		case c >= '0' && c <= '9':
			t[c] = clsDigit
		case c >= 'a' && c <= 'z':
			t[c] = clsLower
		case c >= 'A' && c <= 'Z':
			t[c] = clsUpper
		default:
			t[c] = clsOther
		}
	}
	return t
}()

// validateMEBx is ValidateMEBxPassword over a string or the bytes of an
// entry, without converting (the reader checks 100,000 of them).
func validateMEBx[T ~string | ~[]byte](p T) error {
	const field = "new MEBx password"
	if len(p) < 8 || len(p) > 32 {
		return &ValueError{Field: field, Reason: fmt.Sprintf("has %d characters, want 8 to 32", len(p)), Err: ErrValue}
	}
	var seen uint8
	for i := 0; i < len(p); i++ {
		switch cls := charClass[p[i]]; cls {
		case clsBad:
			return &ValueError{Field: field, Reason: fmt.Sprintf("character %d is not printable 7-bit ASCII", i+1), Err: ErrValue}
		case clsForbidden:
			return &ValueError{Field: field, Reason: fmt.Sprintf("character %d is one of the forbidden characters \" ' , < > : & space _", i+1), Err: ErrValue}
		default:
			seen |= 1 << cls
		}
	}
	for _, r := range [...]struct {
		cls  uint8
		what string
	}{{clsDigit, "a digit"}, {clsLower, "a lower-case letter"}, {clsUpper, "an upper-case letter"}, {clsOther, "a non-alphanumeric character"}} {
		if seen&(1<<r.cls) == 0 {
			return &ValueError{Field: field, Reason: "needs " + r.what, Err: ErrValue}
		}
	}
	return nil
}

// symbols are the non-alphanumeric characters generated passwords use:
// printable, not forbidden by any source, and easy to type on any keyboard
// layout a MEBx screen may assume.
const symbols = "!#$%*+-=?@"

// GenerateMEBxPassword returns a random password of n characters (8–32)
// that satisfies ValidateMEBxPassword; r is the randomness (nil means
// crypto/rand).
func GenerateMEBxPassword(r io.Reader, n int) (Password, error) {
	if n < 8 || n > 32 {
		return "", fmt.Errorf("setupbin: generating a MEBx password of %d characters: want 8 to 32: %w", n, ErrValue)
	}
	classes := []string{"0123456789", "abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ", symbols}
	all := classes[0] + classes[1] + classes[2] + classes[3]
	for {
		b := make([]byte, n)
		for i := range b {
			c, err := pick(r, all)
			if err != nil {
				return "", err
			}
			b[i] = c
		}
		if p := Password(b); ValidateMEBxPassword(p) == nil {
			return p, nil
		}
		// Missing a class: draw again (rare for n ≥ 12, and uniform).
	}
}

// pick returns a uniformly random byte of set.
func pick(r io.Reader, set string) (byte, error) {
	if r == nil {
		r = randReader
	}
	limit := 256 - 256%len(set)
	var b [1]byte
	for {
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return 0, fmt.Errorf("setupbin: reading random bytes: %w", err)
		}
		if int(b[0]) < limit {
			return set[int(b[0])%len(set)], nil
		}
	}
}
