package amthi

import (
	"bytes"
	"encoding/binary"
	"fmt"
)

var le = binary.LittleEndian

// rbuf is a read cursor over a body; the first short read records an
// error naming the command, the field and the lengths, and later reads
// return zero values.
type rbuf struct {
	cmd Command
	b   []byte
	off int
	err error
}

func (r *rbuf) take(n int, field string) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || n > len(r.b)-r.off {
		r.err = &ProtocolError{Command: r.cmd, Field: "body length", Got: uint64(len(r.b)), Want: uint64(r.off) + uint64(max(n, 0)), Why: "too short for " + field}
		return nil
	}
	p := r.b[r.off : r.off+n]
	r.off += n
	return p
}

func (r *rbuf) u8(field string) uint8 {
	if p := r.take(1, field); p != nil {
		return p[0]
	}
	return 0
}

func (r *rbuf) u16(field string) uint16 {
	if p := r.take(2, field); p != nil {
		return le.Uint16(p)
	}
	return 0
}

func (r *rbuf) u32(field string) uint32 {
	if p := r.take(4, field); p != nil {
		return le.Uint32(p)
	}
	return 0
}

// str reads a u16-length-prefixed string (§3); no terminator is assumed.
func (r *rbuf) str(field string) string {
	n := r.u16(field + " length")
	return string(r.take(int(n), field))
}

// done reports the first error, or an error if bytes are left over.
func (r *rbuf) done() error {
	if r.err == nil && r.off != len(r.b) {
		r.err = &ProtocolError{Command: r.cmd, Field: "body length", Got: uint64(len(r.b)), Want: uint64(r.off), Why: "unexpected trailing bytes"}
	}
	return r.err
}

// needLen checks a fixed-size body before any field is read.
func needLen(cmd Command, b []byte, n int) error {
	if len(b) != n {
		return &ProtocolError{Command: cmd, Field: "body length", Got: uint64(len(b)), Want: uint64(n)}
	}
	return nil
}

func appendStr(b []byte, s string) []byte {
	if len(s) > 0xFFFF {
		s = s[:0xFFFF]
	}
	b = le.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

func appendBool(b []byte, v bool) []byte {
	if v {
		return le.AppendUint32(b, 1)
	}
	return le.AppendUint32(b, 0)
}

// cstr returns the bytes before the first NUL.
func cstr(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// putCstr copies s into a fixed field, cut to leave room for a NUL when
// nul is true, and stops at a NUL in s.
func putCstr(dst []byte, s string, nul bool) {
	s = cstr([]byte(s))
	n := len(dst)
	if nul {
		n--
	}
	copy(dst[:min(n, len(s))], s)
}

// UUID is a device UUID in SMBIOS byte order, as GetUUID and the hello
// carry it.
type UUID [16]byte

// String is the text form every AMT interface shows: bytes 0–3, 4–5 and
// 6–7 reversed, 8–15 kept, lower case (specs/amt-psk.md).
func (u UUID) String() string {
	return fmt.Sprintf("%08x-%04x-%04x-%x-%x", le.Uint32(u[0:4]), le.Uint16(u[4:6]), le.Uint16(u[6:8]), u[8:10], u[10:16])
}

// ParseUUID parses the text form back into SMBIOS byte order.
func ParseUUID(s string) (UUID, error) {
	var u UUID
	var a uint32
	var b, c uint16
	var d [2]byte
	var e [6]byte
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return u, fmt.Errorf("parsing UUID %q: want the form xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx", s)
	}
	if _, err := fmt.Sscanf(s, "%08x-%04x-%04x-%02x%02x-%02x%02x%02x%02x%02x%02x", &a, &b, &c, &d[0], &d[1], &e[0], &e[1], &e[2], &e[3], &e[4], &e[5]); err != nil {
		return u, fmt.Errorf("parsing UUID %q: %w", s, err)
	}
	le.PutUint32(u[0:4], a)
	le.PutUint16(u[4:6], b)
	le.PutUint16(u[6:8], c)
	copy(u[8:10], d[:])
	copy(u[10:], e[:])
	return u, nil
}

// MAC is a 6-byte Ethernet address.
type MAC [6]byte

func (m MAC) String() string {
	return fmt.Sprintf("%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5])
}

// MarshalText makes JSON show the text form.
func (m MAC) MarshalText() ([]byte, error) { return []byte(m.String()), nil }

// MarshalText makes JSON show the text form.
func (u UUID) MarshalText() ([]byte, error) { return []byte(u.String()), nil }

// Secret is a password read from the ME. It never prints: String and
// LogValue return "REDACTED"; use Reveal where the value is really needed.
type Secret struct{ s string }

// NewSecret wraps a password.
func NewSecret(s string) Secret { return Secret{s} }

// Reveal returns the password.
func (s Secret) Reveal() string { return s.s }

func (s Secret) String() string { return "REDACTED" }

// GoString hides the value from %#v too.
func (s Secret) GoString() string { return "REDACTED" }

// MarshalText keeps the value out of JSON output.
func (s Secret) MarshalText() ([]byte, error) { return []byte("REDACTED"), nil }
