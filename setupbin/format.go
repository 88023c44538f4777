package setupbin

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

var le = binary.LittleEndian

// Layout constants, specs/setupbin.md §2.
const (
	ChunkSize         = 512 // every part of the file is a multiple of this (§2)
	headerFixedLen    = 0x28
	recordHeaderLen   = 24 // §2.3: the first entry starts here
	entryHeaderLen    = 8  // §2.4
	maxChunksAccepted = 10 // newer MEBx accepts 1–10 chunks per record (§2.3)
	// MaxChunksPerRecord is the largest chunk count per record a Writer
	// accepts: newer MEBx accepts 1–10 (§2.3); every file seen uses 1.
	MaxChunksPerRecord = maxChunksAccepted
)

// ErrNoUnusedRecord: every record of the file is consumed (Consume), or
// there is no consumed record to restore (Unconsume).
var ErrNoUnusedRecord = errors.New("setupbin: no unused record left")

// ErrRecordMismatch: Unconsume was given a record that is not the one the
// file held (different number, or a still-valid record with other contents).
var ErrRecordMismatch = errors.New("setupbin: record does not match the file")

// FormatError says where the input stops being a setup.bin file: the file
// offset, the field, the value found, and the sentinel (ErrFormat).
type FormatError struct {
	Off   int64  // file offset of the field
	Field string // field name as in specs/setupbin.md, e.g. "MajorVersion"
	Value any    // the value found (never a secret)
	Err   error  // ErrFormat
	Msg   string // optional detail
}

func (e *FormatError) Error() string {
	s := fmt.Sprintf("setupbin: %s = %v at offset %#x", e.Field, e.Value, e.Off)
	if e.Msg != "" {
		s += ": " + e.Msg
	}
	if e.Err != nil && e.Err != ErrFormat {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *FormatError) Unwrap() error { return e.Err }

// Version is a setup.bin format version, major<<8 | minor (§2.1, §2.2).
type Version uint16

// The five format versions that exist (§2.1).
const (
	V1_0 Version = 0x0100
	V2_0 Version = 0x0200
	V2_1 Version = 0x0201
	V3_0 Version = 0x0300
	V4_0 Version = 0x0400
)

// Versions lists every version that exists, oldest first.
var Versions = []Version{V1_0, V2_0, V2_1, V3_0, V4_0}

// MakeVersion returns the version major.minor (not checked; see Valid).
func MakeVersion(major, minor uint8) Version { return Version(uint16(major)<<8 | uint16(minor)) }

// Major returns the major version (offset 0x18).
func (v Version) Major() uint8 { return uint8(v >> 8) }

// Minor returns the minor version (offset 0x19).
func (v Version) Minor() uint8 { return uint8(v) }

// String returns "4.0" etc.
func (v Version) String() string { return fmt.Sprintf("%d.%d", v.Major(), v.Minor()) }

// Valid reports whether v is one of the five versions that exist.
func (v Version) Valid() bool {
	for _, x := range Versions {
		if v == x {
			return true
		}
	}
	return false
}

// ParseVersion parses "1", "2", "2.1", "3", "4" or "4.0" and friends.
func ParseVersion(s string) (Version, error) {
	maj, min, hasMinor := strings.Cut(strings.TrimSpace(s), ".")
	a, err1 := strconv.ParseUint(maj, 10, 8)
	b := uint64(0)
	var err2 error
	if hasMinor {
		b, err2 = strconv.ParseUint(min, 10, 8)
	}
	v := MakeVersion(uint8(a), uint8(b))
	if err1 != nil || err2 != nil || !v.Valid() {
		return 0, &ValueError{Field: "setup.bin version", Value: s, Reason: "want one of 1.0, 2.0, 2.1, 3.0, 4.0", Err: ErrValue}
	}
	return v, nil
}

// File type GUIDs in wire (EFI_GUID) order, one per major version (§2.1).
var fileTypeGUIDs = [5]GUID{
	1: {0xb5, 0x16, 0xfb, 0x71, 0x87, 0xcb, 0xf9, 0x4a, 0xb4, 0x41, 0xca, 0x7b, 0x38, 0x35, 0x78, 0xf9}, // 71FB16B5-CB87-4AF9-B441-CA7B383578F9
	2: {0x96, 0xb2, 0x81, 0x58, 0xcf, 0x6b, 0x72, 0x4c, 0x8b, 0x91, 0xa1, 0x5e, 0x51, 0x2e, 0x99, 0xc4}, // 5881B296-6BCF-4C72-8B91-A15E512E99C4
	3: {0xa7, 0xf7, 0xf6, 0xc6, 0x89, 0xc4, 0xf6, 0x47, 0x93, 0xed, 0xe2, 0xe5, 0x02, 0x0d, 0xa5, 0x1d}, // C6F6F7A7-C489-47F6-93ED-E2E5020DA51D
	4: {0xaa, 0xa9, 0x34, 0x52, 0xe1, 0x29, 0xa9, 0x44, 0x8d, 0x4d, 0x08, 0x1c, 0x07, 0xb9, 0x63, 0x53}, // 5234A9AA-29E1-44A9-8D4D-081C07B96353
}

// FileTypeGUID returns the file type GUID of v's major version (§2.1).
func (v Version) FileTypeGUID() GUID {
	if m := v.Major(); m >= 1 && m <= 4 {
		return fileTypeGUIDs[m]
	}
	return GUID{}
}

// FileFlags are the header's file flags (offset 0x1A, §2.2).
type FileFlags uint16

// FlagNoConsume: every machine gets record 0; the BIOS does not consume
// (honoured for major ≥ 2, §1).
const FlagNoConsume FileFlags = 1

// RecordFlags are a record's flags (offset 4 of the record, §2.3).
type RecordFlags uint32

const (
	RecordValid     RecordFlags = 1 << 0 // unused; cleared when consumed
	RecordScrambled RecordFlags = 1 << 1 // body stored as byte+0x11 (§2.5)
)

// RecordTypeData is the record type of a data record (0 = invalid, §2.3).
const RecordTypeData uint32 = 1

// Module is a module identifier (§2.4, §3).
type Module uint16

const (
	ModuleME  Module = 1 // ME kernel
	ModuleAMT Module = 2 // AMT configuration
)

func (m Module) String() string {
	switch m {
	case ModuleME:
		return "ME kernel"
	case ModuleAMT:
		return "AMT configuration"
	}
	return fmt.Sprintf("module %d", uint16(m))
}

// Header is the header chunk (§2.2). Reader fills every field from the
// file; Writer computes them from its options.
type Header struct {
	Version          Version   // 0x18, 0x19; the GUID at 0x00 follows the major
	HeaderChunkCount uint16    // 0x10: 1 (0 is the MeshCommander bug)
	HeaderBytes      uint16    // 0x12: 40 + 2 × (modules + terminator)
	RecordNumber     uint32    // 0x14: 0
	Flags            FileFlags // 0x1A
	RecordCount      uint32    // 0x1C: N
	Consumed         uint32    // 0x20: records consumed so far
	ChunksPerRecord  uint16    // 0x24: 1 in every file seen (0 is the MeshCommander bug)
	Reserved         uint16    // 0x26: 0
	Modules          []Module  // 0x28: 0-terminated list
}

// NoConsume reports whether the file's don't-consume flag is set.
func (h *Header) NoConsume() bool { return h.Flags&FlagNoConsume != 0 }

// headerBytesFor returns the header bytes used for m modules (§2.2).
func headerBytesFor(m int) uint16 { return uint16(headerFixedLen + 2*(m+1)) }

// headerFromBytes parses the header chunk. It fails only when b cannot be a
// setup.bin header: shorter than a chunk, unknown GUID, or a version that
// does not exist or does not match the GUID. Everything else is left for
// the findings (checkHeader).
func headerFromBytes(b []byte) (*Header, error) {
	if len(b) < ChunkSize {
		return nil, &FormatError{Off: 0, Field: "file size", Value: len(b), Err: ErrFormat, Msg: "shorter than the 512-byte header chunk"}
	}
	var g GUID
	copy(g[:], b[0:16]) // 0x00, 16 bytes, §2.1
	major := 0
	for m := 1; m <= 4; m++ {
		if g == fileTypeGUIDs[m] {
			major = m
		}
	}
	if major == 0 {
		return nil, &FormatError{Off: 0, Field: "FileTypeGUID", Value: g.String(), Err: ErrFormat, Msg: "not a setup.bin file type GUID"}
	}
	h := &Header{}
	h.HeaderChunkCount = le.Uint16(b[0x10:0x12])              // 0x10, 2 bytes, §2.2
	h.HeaderBytes = le.Uint16(b[0x12:0x14])                   // 0x12, 2 bytes, §2.2
	h.RecordNumber = le.Uint32(b[0x14:0x18])                  // 0x14, 4 bytes, §2.2
	h.Version = MakeVersion(b[0x18], b[0x19])                 // 0x18 + 0x19, 1 byte each, §2.2
	h.Flags = FileFlags(le.Uint16(b[0x1a:0x1c]))              // 0x1A, 2 bytes, §2.2
	h.RecordCount = le.Uint32(b[0x1c:0x20])                   // 0x1C, 4 bytes, §2.2
	h.Consumed = le.Uint32(b[0x20:0x24])                      // 0x20, 4 bytes, §2.2
	h.ChunksPerRecord = le.Uint16(b[0x24:0x26])               // 0x24, 2 bytes, §2.2
	h.Reserved = le.Uint16(b[0x26:0x28])                      // 0x26, 2 bytes, §2.2
	for off := headerFixedLen; off+2 <= ChunkSize; off += 2 { // 0x28, 2 bytes each, §2.2
		m := Module(le.Uint16(b[off : off+2]))
		if m == 0 {
			break
		}
		h.Modules = append(h.Modules, m) // at most 236: bounded by the chunk
	}
	if !h.Version.Valid() {
		return nil, &FormatError{Off: 0x18, Field: "Version", Value: h.Version.String(), Err: ErrFormat, Msg: "only 1.0, 2.0, 2.1, 3.0 and 4.0 exist"}
	}
	if int(h.Version.Major()) != major {
		return nil, &FormatError{Off: 0x18, Field: "MajorVersion", Value: h.Version.Major(), Err: ErrFormat, Msg: fmt.Sprintf("the file type GUID is that of major version %d", major)}
	}
	return h, nil
}

// appendBytes appends the 512-byte header chunk for h, field by field as
// they are (the Writer and Repair set them first).
func (h *Header) appendBytes(b []byte) []byte {
	start := len(b)
	g := h.Version.FileTypeGUID()
	b = append(b, g[:]...)                              // 0x00, 16 bytes, §2.1
	b = le.AppendUint16(b, h.HeaderChunkCount)          // 0x10, 2 bytes, §2.2
	b = le.AppendUint16(b, h.HeaderBytes)               // 0x12, 2 bytes, §2.2
	b = le.AppendUint32(b, h.RecordNumber)              // 0x14, 4 bytes, §2.2
	b = append(b, h.Version.Major(), h.Version.Minor()) // 0x18 + 0x19, §2.2
	b = le.AppendUint16(b, uint16(h.Flags))             // 0x1A, 2 bytes, §2.2
	b = le.AppendUint32(b, h.RecordCount)               // 0x1C, 4 bytes, §2.2
	b = le.AppendUint32(b, h.Consumed)                  // 0x20, 4 bytes, §2.2
	b = le.AppendUint16(b, h.ChunksPerRecord)           // 0x24, 2 bytes, §2.2
	b = le.AppendUint16(b, h.Reserved)                  // 0x26, 2 bytes, §2.2
	for i, m := range h.Modules {                       // 0x28, 2 bytes each, §2.2
		if headerFixedLen+2*(i+1) >= ChunkSize { // keep room for the terminator
			break
		}
		b = le.AppendUint16(b, uint16(m))
	}
	for len(b)-start < ChunkSize { // terminator and zero padding to byte 511
		b = append(b, 0)
	}
	return b
}

// recordHeader is the 24-byte data record header (§2.3).
type recordHeader struct {
	Type        uint32
	Flags       RecordFlags
	Reserved    uint64
	ChunkCount  uint16
	HeaderBytes uint16
	Number      uint32
}

func recordHeaderFromBytes(b []byte) (recordHeader, error) {
	var h recordHeader
	if len(b) < recordHeaderLen {
		return h, &FormatError{Field: "record header", Value: len(b), Err: ErrFormat, Msg: "shorter than 24 bytes"}
	}
	h.Type = le.Uint32(b[0:4])               // +0, 4 bytes, §2.3
	h.Flags = RecordFlags(le.Uint32(b[4:8])) // +4, 4 bytes, §2.3
	h.Reserved = le.Uint64(b[8:16])          // +8, 8 bytes, §2.3
	h.ChunkCount = le.Uint16(b[16:18])       // +16, 2 bytes, §2.3
	h.HeaderBytes = le.Uint16(b[18:20])      // +18, 2 bytes, §2.3
	h.Number = le.Uint32(b[20:24])           // +20, 4 bytes, §2.3
	return h, nil
}

func (h *recordHeader) appendBytes(b []byte) []byte {
	b = le.AppendUint32(b, h.Type)          // +0, 4 bytes, §2.3
	b = le.AppendUint32(b, uint32(h.Flags)) // +4, 4 bytes, §2.3
	b = le.AppendUint64(b, h.Reserved)      // +8, 8 bytes, §2.3
	b = le.AppendUint16(b, h.ChunkCount)    // +16, 2 bytes, §2.3
	b = le.AppendUint16(b, h.HeaderBytes)   // +18, 2 bytes, §2.3
	b = le.AppendUint32(b, h.Number)        // +20, 4 bytes, §2.3
	return b
}

// entryHeader is the 8-byte entry header (§2.4).
type entryHeader struct {
	Module   Module
	Var      uint16
	Len      uint16
	Reserved uint16
}

func entryHeaderFromBytes(b []byte) (entryHeader, error) {
	var h entryHeader
	if len(b) < entryHeaderLen {
		return h, &FormatError{Field: "entry header", Value: len(b), Err: ErrFormat, Msg: "shorter than 8 bytes"}
	}
	h.Module = Module(le.Uint16(b[0:2])) // +0, 2 bytes, §2.4
	h.Var = le.Uint16(b[2:4])            // +2, 2 bytes, §2.4
	h.Len = le.Uint16(b[4:6])            // +4, 2 bytes, §2.4
	h.Reserved = le.Uint16(b[6:8])       // +6, 2 bytes, §2.4
	return h, nil
}

func (h *entryHeader) appendBytes(b []byte) []byte {
	b = le.AppendUint16(b, uint16(h.Module)) // +0, 2 bytes, §2.4
	b = le.AppendUint16(b, h.Var)            // +2, 2 bytes, §2.4
	b = le.AppendUint16(b, h.Len)            // +4, 2 bytes, §2.4
	b = le.AppendUint16(b, h.Reserved)       // +6, 2 bytes, §2.4
	return b
}

// pad4 returns n rounded up to a multiple of 4 (§2.4).
func pad4(n int) int { return (n + 3) &^ 3 }
