package hello

import (
	"encoding/hex"
	"fmt"
)

// UUID is a machine UUID in SMBIOS byte order, as the hello, GetUuid and
// the HECI GetUUID carry it. The same text form (String) appears over
// WS-Management and HECI, so it is the machine's key everywhere.
//
// Example (spec §2): bytes 4b529b93 d413 181d e487 1c697a6b7a2b read
// 939b524b-13d4-1d18-e487-1c697a6b7a2b.
type UUID [16]byte

// String is the text form: bytes 0–3, 4–5 and 6–7 reversed, 8–15 kept,
// lower-case hex (spec §2).
func (u UUID) String() string {
	var b [36]byte
	hex.Encode(b[0:8], []byte{u[3], u[2], u[1], u[0]})
	b[8] = '-'
	hex.Encode(b[9:13], []byte{u[5], u[4]})
	b[13] = '-'
	hex.Encode(b[14:18], []byte{u[7], u[6]})
	b[18] = '-'
	hex.Encode(b[19:23], u[8:10])
	b[23] = '-'
	hex.Encode(b[24:36], u[10:16])
	return string(b[:])
}

// MarshalText returns String's form.
func (u UUID) MarshalText() ([]byte, error) { return []byte(u.String()), nil }

// UnmarshalText is ParseUUID.
func (u *UUID) UnmarshalText(b []byte) error {
	v, err := ParseUUID(string(b))
	if err != nil {
		return err
	}
	*u = v
	return nil
}

// ParseUUID reads the text form (either case) back into SMBIOS byte order.
func ParseUUID(s string) (UUID, error) {
	var u UUID
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return u, fmt.Errorf("parsing UUID %q: want the form xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx", s)
	}
	raw, err := hex.DecodeString(s[0:8] + s[9:13] + s[14:18] + s[19:23] + s[24:36])
	if err != nil {
		return u, fmt.Errorf("parsing UUID %q: %w", s, err)
	}
	// raw is in text order; undo the three reversals.
	u = UUID{raw[3], raw[2], raw[1], raw[0], raw[5], raw[4], raw[7], raw[6]}
	copy(u[8:], raw[8:])
	return u, nil
}
