package mkhi

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files under ../testdata/mkhi")

const goldenDir = "../testdata/mkhi"

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

type fakeTransport struct{ reply []byte }

func (f *fakeTransport) Send(_ context.Context, req []byte) ([]byte, error) {
	if err := ParseRequest(req); err != nil {
		return nil, err
	}
	return f.reply, nil
}
func (f *fakeTransport) MaxMessageLen() int { return 512 }
func (f *fakeTransport) Close() error       { return nil }

func TestGolden(t *testing.T) {
	want := &GetFWVersionResponse{Blocks: []Version{
		{Platform: 3, Major: 11, Minor: 8, Hotfix: 50, Build: 3425},
		{Platform: 3, Major: 11, Minor: 8, Hotfix: 50, Build: 3400},
	}}
	// By hand: header ff 82 00 00, then {u16 minor, u8 major, u8 platform,
	// u16 build, u16 hotfix} twice.
	raw := unhex(t, "ff 82 00 00  08 00 0b 03 61 0d 32 00  08 00 0b 03 48 0d 32 00")
	if got := want.Marshal(); !bytes.Equal(got, raw) {
		t.Fatalf("got %x, want %x", got, raw)
	}
	req := GetFWVersion{}.Marshal()
	if !bytes.Equal(req, []byte{0xff, 0x02, 0x00, 0x00}) {
		t.Fatalf("request %x, want ff020000 (specs/heci.md §3)", req)
	}
	for name, b := range map[string][]byte{"GetFWVersion.req.bin": req, "GetFWVersion.resp.bin": raw} {
		path := filepath.Join(goldenDir, name)
		if *update {
			if err := os.WriteFile(path, b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		file, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(file, b) {
			t.Errorf("%s: got %x, want %x", path, b, file)
		}
	}
	got, err := GetFWVersion{}.Execute(t.Context(), &fakeTransport{reply: raw})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v, want %+v", got, want)
	}
	if got.Code().String() != "11.8.50.3425" {
		t.Errorf("Code() = %s", got.Code())
	}
	if r, ok := got.Recovery(); !ok || r.Build != 3400 {
		t.Errorf("Recovery() = %v, %v", r, ok)
	}
}

func TestErrors(t *testing.T) {
	tests := []struct {
		name, hex, want string
	}{
		{"short", "ff 82", "2 bytes"},
		{"wrong command", "ff 83 00 00 0000000000000000", "command 0x83"},
		{"no blocks", "ff 82 00 00", "4 bytes"},
		{"partial block", "ff 82 00 00 0800 0b03 610d", "10 bytes"},
		{"four blocks", "ff 82 00 00" + strings.Repeat(" 0000000000000000", 4), "36 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseGetFWVersionResponse(unhex(t, tt.hex))
			if !errors.Is(err, ErrProtocol) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want ErrProtocol containing %q", err, tt.want)
			}
		})
	}
	if _, err := ParseGetFWVersionResponse(unhex(t, "ff 82 00 01 0000000000000000")); err == nil || !strings.Contains(err.Error(), "result 0x01") {
		t.Errorf("result: %v", err)
	}
}
