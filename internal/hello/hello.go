// Package hello encodes and decodes the "hello" message an Intel AMT
// machine in setup mode sends to its Setup and Configuration Server (SCS):
// one TCP connection to port 9971, one message, then close
// (../../shared/specs/amt-psk.md §2).
//
// Two versions exist: the 32-byte PSK hello (interface version 2), which
// carries the PID, and the PKI hello (version 3), which carries the
// trusted root certificate hashes instead. Both begin with the same 24
// bytes. The kiosk parses hellos with [Parse]; the AMT simulator
// (internal/amtsim) builds them with [Hello.AppendBinary].
//
// The hello carries no IP address and no firmware version: the IP is the
// TCP peer, the version is read over WS-Management afterwards.
package hello

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Port is the default TCP port the SCS listens on for hellos (spec §2).
const Port = 9971

// Interface versions (spec §2).
const (
	VersionPSK uint16 = 2
	VersionPKI uint16 = 3
)

// Sizes (spec §2).
const (
	// SizePSK is the exact length of a version-2 hello.
	SizePSK = 32
	// headerLen is the part common to both versions.
	headerLen = 24
	// MaxSize bounds a version-3 hello: the header, the count and 255
	// hashes of the largest type (SHA-384). A listener reads at most this
	// many bytes.
	MaxSize = headerLen + 1 + 255*(2+48)
	// MaxRetryCount is the last retry count of the schedule (15 hellos,
	// counted 0–14).
	MaxRetryCount = 14
)

// HashType names a root certificate hash algorithm in a PKI hello.
type HashType uint8

// Hash types (spec §2).
const (
	HashSHA1   HashType = 1
	HashSHA256 HashType = 2
	HashSHA384 HashType = 3
)

// Size returns the digest length of t, or 0 for an unknown type.
func (t HashType) Size() int {
	switch t {
	case HashSHA1:
		return 20
	case HashSHA256:
		return 32
	case HashSHA384:
		return 48
	}
	return 0
}

// String returns "SHA-1", "SHA-256", "SHA-384" or a number.
func (t HashType) String() string {
	switch t {
	case HashSHA1:
		return "SHA-1"
	case HashSHA256:
		return "SHA-256"
	case HashSHA384:
		return "SHA-384"
	}
	return fmt.Sprintf("HashType(%d)", uint8(t))
}

// RootHash is one trusted root certificate hash of a PKI hello.
type RootHash struct {
	Type HashType
	Hash []byte // Type.Size() bytes
}

// Hello is one hello message.
type Hello struct {
	// AdminCredentialsSet reports whether the admin credentials were set
	// (the first field, 0 or 1).
	AdminCredentialsSet bool
	// Version is VersionPSK or VersionPKI.
	Version uint16
	// RetryCount is 0 for the first hello after an ME start, up to
	// MaxRetryCount; it tells how long the machine has been waiting.
	RetryCount uint32
	// UUID is the machine UUID in SMBIOS byte order.
	UUID UUID
	// PID is the 8-character PSK identifier, no dash (version 2 only).
	PID string
	// RootHashes are the trusted root hashes (version 3 only).
	RootHashes []RootHash
}

// Errors. Parse returns a *FormatError wrapping ErrFormat.
var (
	ErrFormat = errors.New("hello: malformed hello")
	// ErrVersion is wrapped (with ErrFormat) when the interface version
	// is neither 2 nor 3.
	ErrVersion = errors.New("hello: unknown interface version")
)

// FormatError locates what is wrong in a hello.
type FormatError struct {
	Off   int    // byte offset of the field
	Field string // "PID", "RetryCount", ...
	Value any    // the offending value (never a secret: a hello holds none)
	Err   error  // ErrFormat, or ErrVersion
}

func (e *FormatError) Error() string {
	return fmt.Sprintf("hello: field %s at offset %d: value %v: %v", e.Field, e.Off, e.Value, e.Err)
}

// Unwrap returns the sentinel; ErrVersion also matches ErrFormat.
func (e *FormatError) Unwrap() []error {
	if e.Err == ErrFormat {
		return []error{ErrFormat}
	}
	return []error{e.Err, ErrFormat}
}

var le = binary.LittleEndian

// Parse decodes a complete hello (everything the peer wrote before it
// closed). The length must be exactly what the version implies.
func Parse(b []byte) (*Hello, error) {
	if len(b) < headerLen {
		return nil, &FormatError{Off: 0, Field: "length", Value: len(b), Err: ErrFormat}
	}
	h := &Hello{}
	admin := le.Uint16(b[0:2]) // 0x00, 2 bytes, spec §2
	if admin > 1 {
		return nil, &FormatError{Off: 0, Field: "AdminCredentialsSet", Value: admin, Err: ErrFormat}
	}
	h.AdminCredentialsSet = admin == 1
	h.Version = le.Uint16(b[2:4])    // 0x02, 2 bytes, spec §2
	h.RetryCount = le.Uint32(b[4:8]) // 0x04, 4 bytes, spec §2
	copy(h.UUID[:], b[8:24])         // 0x08, 16 bytes, SMBIOS order, spec §2
	if h.RetryCount > MaxRetryCount {
		return nil, &FormatError{Off: 4, Field: "RetryCount", Value: h.RetryCount, Err: ErrFormat}
	}
	switch h.Version {
	case VersionPSK:
		if len(b) != SizePSK {
			return nil, &FormatError{Off: 0, Field: "length", Value: len(b), Err: ErrFormat}
		}
		pid := b[24:32] // 0x18, 8 bytes, ASCII, spec §2
		for i, c := range pid {
			if !pidChar(c) {
				return nil, &FormatError{Off: 24 + i, Field: "PID", Value: fmt.Sprintf("%#02x", c), Err: ErrFormat}
			}
		}
		h.PID = string(pid)
	case VersionPKI:
		if len(b) < headerLen+1 {
			return nil, &FormatError{Off: 0, Field: "length", Value: len(b), Err: ErrFormat}
		}
		n := int(b[24]) // 0x18, 1 byte: number of hashes, spec §2
		off := headerLen + 1
		// Each hash takes at least 2+20 bytes: check before allocating.
		if n*(2+20) > len(b)-off {
			return nil, &FormatError{Off: 24, Field: "hash count", Value: n, Err: ErrFormat}
		}
		if n > 0 {
			h.RootHashes = make([]RootHash, 0, n)
		}
		for i := range n {
			if len(b)-off < 2 {
				return nil, &FormatError{Off: off, Field: fmt.Sprintf("hash %d", i), Value: "truncated", Err: ErrFormat}
			}
			t, size := HashType(b[off]), int(b[off+1]) // +0 type, +1 length
			if t.Size() == 0 {
				return nil, &FormatError{Off: off, Field: fmt.Sprintf("hash %d type", i), Value: uint8(t), Err: ErrFormat}
			}
			if size != t.Size() {
				return nil, &FormatError{Off: off + 1, Field: fmt.Sprintf("hash %d length", i), Value: size, Err: ErrFormat}
			}
			off += 2
			if len(b)-off < size {
				return nil, &FormatError{Off: off, Field: fmt.Sprintf("hash %d", i), Value: "truncated", Err: ErrFormat}
			}
			h.RootHashes = append(h.RootHashes, RootHash{Type: t, Hash: append([]byte(nil), b[off:off+size]...)})
			off += size
		}
		if off != len(b) {
			return nil, &FormatError{Off: off, Field: "length", Value: len(b), Err: ErrFormat}
		}
	default:
		return nil, &FormatError{Off: 2, Field: "Version", Value: h.Version, Err: ErrVersion}
	}
	return h, nil
}

// pidChar reports whether c may appear in a PID on the wire: ASCII letters
// and digits (the PID alphabet is a subset; setupbin checks it fully).
func pidChar(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z'
}

// AppendBinary appends the encoded hello to b. It checks the fields the
// way Parse does, so what it writes parses back.
func (h *Hello) AppendBinary(b []byte) ([]byte, error) {
	if h.RetryCount > MaxRetryCount {
		return b, &FormatError{Off: 4, Field: "RetryCount", Value: h.RetryCount, Err: ErrFormat}
	}
	var admin uint16
	if h.AdminCredentialsSet {
		admin = 1
	}
	b = le.AppendUint16(b, admin)        // 0x00
	b = le.AppendUint16(b, h.Version)    // 0x02
	b = le.AppendUint32(b, h.RetryCount) // 0x04
	b = append(b, h.UUID[:]...)          // 0x08
	switch h.Version {
	case VersionPSK:
		if len(h.PID) != 8 {
			return b, &FormatError{Off: 24, Field: "PID", Value: fmt.Sprintf("%d characters", len(h.PID)), Err: ErrFormat}
		}
		for i := 0; i < len(h.PID); i++ {
			if !pidChar(h.PID[i]) {
				return b, &FormatError{Off: 24 + i, Field: "PID", Value: fmt.Sprintf("%#02x", h.PID[i]), Err: ErrFormat}
			}
		}
		b = append(b, h.PID...) // 0x18
	case VersionPKI:
		if len(h.RootHashes) > 255 {
			return b, &FormatError{Off: 24, Field: "hash count", Value: len(h.RootHashes), Err: ErrFormat}
		}
		b = append(b, byte(len(h.RootHashes))) // 0x18
		for i, r := range h.RootHashes {
			if r.Type.Size() == 0 || len(r.Hash) != r.Type.Size() {
				return b, &FormatError{Off: len(b), Field: fmt.Sprintf("hash %d", i), Value: fmt.Sprintf("%v, %d bytes", r.Type, len(r.Hash)), Err: ErrFormat}
			}
			b = append(b, byte(r.Type), byte(len(r.Hash)))
			b = append(b, r.Hash...)
		}
	default:
		return b, &FormatError{Off: 2, Field: "Version", Value: h.Version, Err: ErrVersion}
	}
	return b, nil
}

// MarshalBinary encodes the hello.
func (h *Hello) MarshalBinary() ([]byte, error) {
	return h.AppendBinary(make([]byte, 0, SizePSK))
}
