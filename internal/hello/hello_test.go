package hello

import (
	"bytes"
	"encoding/hex"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden hellos in testdata/")

// exampleUUID is the spec §2 example: 939b524b-13d4-1d18-e487-1c697a6b7a2b.
var exampleUUID = UUID{0x4b, 0x52, 0x9b, 0x93, 0xd4, 0x13, 0x18, 0x1d, 0xe4, 0x87, 0x1c, 0x69, 0x7a, 0x6b, 0x7a, 0x2b}

func TestUUIDSpecExample(t *testing.T) {
	const text = "939b524b-13d4-1d18-e487-1c697a6b7a2b"
	if got := exampleUUID.String(); got != text {
		t.Errorf("String() = %s, want %s", got, text)
	}
	for _, s := range []string{text, "939B524B-13D4-1D18-E487-1C697A6B7A2B"} {
		u, err := ParseUUID(s)
		if err != nil || u != exampleUUID {
			t.Errorf("ParseUUID(%q) = %x, %v; want %x", s, u[:], err, exampleUUID[:])
		}
	}
	for _, bad := range []string{"", "939b524b13d41d18e4871c697a6b7a2b", "939b524b-13d4-1d18-e487-1c697a6b7a2g", "939b524b-13d4-1d18-e487_1c697a6b7a2b"} {
		if _, err := ParseUUID(bad); err == nil {
			t.Errorf("ParseUUID(%q) succeeded", bad)
		}
	}
}

func pskHello() *Hello {
	return &Hello{AdminCredentialsSet: true, Version: VersionPSK, RetryCount: 3, UUID: exampleUUID, PID: "ABCD0123"}
}

func pkiHello() *Hello {
	return &Hello{Version: VersionPKI, RetryCount: 14, UUID: exampleUUID, RootHashes: []RootHash{
		{Type: HashSHA1, Hash: bytes.Repeat([]byte{0x11}, 20)},
		{Type: HashSHA256, Hash: bytes.Repeat([]byte{0x22}, 32)},
		{Type: HashSHA384, Hash: bytes.Repeat([]byte{0x33}, 48)},
	}}
}

func TestPSKHelloBytes(t *testing.T) {
	got, err := pskHello().MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	// Written by hand from the spec §2 table.
	want, _ := hex.DecodeString("0100" + "0200" + "03000000" + "4b529b93d413181de4871c697a6b7a2b" + hex.EncodeToString([]byte("ABCD0123")))
	if !bytes.Equal(got, want) {
		t.Errorf("got %x, want %x", got, want)
	}
	if len(got) != SizePSK {
		t.Errorf("length %d, want %d", len(got), SizePSK)
	}
}

func TestGolden(t *testing.T) {
	for _, tc := range []struct {
		file string
		h    *Hello
	}{
		{"psk.bin", pskHello()},
		{"pki.bin", pkiHello()},
	} {
		t.Run(tc.file, func(t *testing.T) {
			b, err := tc.h.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join("testdata", tc.file)
			if *update {
				if err := os.WriteFile(path, b, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(b, want) {
				t.Errorf("got %x, want %x", b, want)
			}
			h, err := Parse(want)
			if err != nil {
				t.Fatal(err)
			}
			if !equal(h, tc.h) {
				t.Errorf("Parse = %+v, want %+v", h, tc.h)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	good, _ := pskHello().MarshalBinary()
	pki, _ := pkiHello().MarshalBinary()
	mut := func(b []byte, f func([]byte) []byte) []byte { return f(bytes.Clone(b)) }
	for _, tc := range []struct {
		name    string
		in      []byte
		field   string
		version bool
	}{
		{"empty", nil, "length", false},
		{"short", good[:31], "length", false},
		{"long", append(bytes.Clone(good), 0), "length", false},
		{"admin 2", mut(good, func(b []byte) []byte { b[0] = 2; return b }), "AdminCredentialsSet", false},
		{"version 1", mut(good, func(b []byte) []byte { b[2] = 1; return b }), "Version", true},
		{"retry 15", mut(good, func(b []byte) []byte { b[4] = 15; return b }), "RetryCount", false},
		{"PID dash", mut(good, func(b []byte) []byte { b[27] = '-'; return b }), "PID", false},
		{"PID NUL", mut(good, func(b []byte) []byte { b[31] = 0; return b }), "PID", false},
		{"pki no count", pki[:24], "length", false},
		{"pki count too big", mut(pki, func(b []byte) []byte { b[24] = 200; return b }), "hash count", false},
		{"pki bad type", mut(pki, func(b []byte) []byte { b[25] = 9; return b }), "hash 0 type", false},
		{"pki bad length", mut(pki, func(b []byte) []byte { b[26] = 32; return b }), "hash 0 length", false},
		{"pki trailing", append(bytes.Clone(pki), 0), "length", false},
		{"pki truncated", pki[:len(pki)-1], "hash 2", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(tc.in)
			if !errors.Is(err, ErrFormat) {
				t.Fatalf("err = %v, want ErrFormat", err)
			}
			if errors.Is(err, ErrVersion) != tc.version {
				t.Errorf("errors.Is(err, ErrVersion) = %v", !tc.version)
			}
			fe, ok := errors.AsType[*FormatError](err)
			if !ok || fe.Field != tc.field {
				t.Errorf("err = %v, want a FormatError on field %q", err, tc.field)
			}
		})
	}
	if b, err := os.ReadFile(filepath.Join("testdata", "garbage.notahello")); err != nil {
		t.Fatal(err)
	} else if _, err := Parse(b); !errors.Is(err, ErrFormat) {
		t.Errorf("garbage.notahello: err = %v, want ErrFormat", err)
	}
}

func TestAppendErrors(t *testing.T) {
	for _, h := range []*Hello{
		{Version: VersionPSK, PID: "SHORT"},
		{Version: VersionPSK, PID: "ABCD-123"},
		{Version: 7, PID: "ABCD0123"},
		{Version: VersionPSK, PID: "ABCD0123", RetryCount: 15},
		{Version: VersionPKI, RootHashes: []RootHash{{Type: HashSHA256, Hash: make([]byte, 20)}}},
	} {
		if _, err := h.MarshalBinary(); !errors.Is(err, ErrFormat) {
			t.Errorf("%+v: err = %v, want ErrFormat", h, err)
		}
	}
}

func equal(a, b *Hello) bool {
	if a.AdminCredentialsSet != b.AdminCredentialsSet || a.Version != b.Version || a.RetryCount != b.RetryCount ||
		a.UUID != b.UUID || a.PID != b.PID || len(a.RootHashes) != len(b.RootHashes) {
		return false
	}
	for i := range a.RootHashes {
		if a.RootHashes[i].Type != b.RootHashes[i].Type || !bytes.Equal(a.RootHashes[i].Hash, b.RootHashes[i].Hash) {
			return false
		}
	}
	return true
}
