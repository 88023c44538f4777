package amthi

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/provstick/provstick/initramfs/heci"
)

var update = flag.Bool("update", false, "rewrite the golden files under ../testdata/amthi")

const goldenDir = "../testdata/amthi"

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// specResp builds a response by hand from specs/heci.md §3, independently
// of the package's encoder: header {1, 1, 0, cmd|0x800000, 4+len(body)},
// status 0, body.
func specResp(cmd uint32, body ...[]byte) []byte {
	b := []byte{1, 1, 0, 0}
	b = binary.LittleEndian.AppendUint32(b, cmd|0x00800000)
	n := 4
	for _, p := range body {
		n += len(p)
	}
	b = binary.LittleEndian.AppendUint32(b, uint32(n))
	b = append(b, 0, 0, 0, 0)
	for _, p := range body {
		b = append(b, p...)
	}
	return b
}

func u32(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }
func u16(v uint16) []byte { return binary.LittleEndian.AppendUint16(nil, v) }
func fixed(s string, n int) []byte {
	b := make([]byte, n)
	copy(b, s)
	return b
}

type golden struct {
	name    string
	req     Request
	reqHex  string   // by hand from §3
	resp    Response // what the decoded response must equal (nil: no body)
	respRaw []byte   // by hand from §3
}

func goldens(t testing.TB) []golden {
	var hash [64]byte
	for i := range 32 {
		hash[i] = byte(0xA0 + i)
	}
	var lsa []byte
	lsa = append(lsa, fixed("$$OsAdmin", 33)...)
	lsa = append(lsa, fixed("s3cret-from-ME", 33)...)
	return []golden{
		{"GetCodeVersions", GetCodeVersions{}, "01 01 00 00 1a 00 00 04 00 00 00 00",
			&GetCodeVersionsResponse{BIOS: "SIM.BIOS.0001", Versions: []CodeVersion{{"AMT", "11.8.50"}, {"Sku", "16392"}}},
			specResp(0x0400001A, fixed("SIM.BIOS.0001", 65), u32(2),
				u16(3), fixed("AMT", 20), u16(7), fixed("11.8.50", 20),
				u16(3), fixed("Sku", 20), u16(5), fixed("16392", 20))},
		{"GetProvisioningMode", GetProvisioningMode{}, "01 01 00 00 08 00 00 04 00 00 00 00",
			&GetProvisioningModeResponse{Mode: ModeEnterprise}, specResp(0x04000008, u32(1), u32(0))},
		{"Unprovision", Unprovision{Mode: ModeEnterprise}, "01 01 00 00 10 00 00 04 04 00 00 00 01 00 00 00",
			&UnprovisionResponse{}, specResp(0x04000010)},
		{"GetProvisioningState", GetProvisioningState{}, "01 01 00 00 11 00 00 04 00 00 00 00",
			&GetProvisioningStateResponse{State: StateIn}, specResp(0x04000011, u32(1))},
		{"GetSecurityParameters", GetSecurityParameters{}, "01 01 00 00 1b 00 00 04 00 00 00 00",
			&GetSecurityParametersResponse{EnterpriseMode: true, TLSEnabled: true, ProvisioningState: StatePost, NetworkInterfaceEnabled: true, LinkIsUp: true},
			specResp(0x0400001B, u32(1), u32(1), u32(0), u32(2), u32(1), u32(0), u32(0), u32(0), u32(1), make([]byte, 32))},
		{"GetMACAddresses", GetMACAddresses{}, "01 01 00 00 25 00 00 04 00 00 00 00",
			&GetMACAddressesResponse{Dedicated: MAC{0, 0x16, 0x3e, 1, 2, 3}, Host: MAC{0, 0x16, 0x3e, 1, 2, 4}},
			specResp(0x04000025, []byte{0, 0x16, 0x3e, 1, 2, 3, 0, 0x16, 0x3e, 1, 2, 4})},
		{"StartConfiguration", StartConfiguration{}, "01 01 00 00 29 00 00 04 00 00 00 00", nil, specResp(0x04000029)},
		{"SetProvisioningServerOTP", SetProvisioningServerOTP{OTP: NewSecret("otp")}, "01 01 00 00 2a 00 00 04 05 00 00 00 03 00 6f 74 70", nil, specResp(0x0400002A)},
		{"GetProvisioningTLSMode", GetProvisioningTLSMode{}, "01 01 00 00 2b 00 00 04 00 00 00 00",
			&GetProvisioningTLSModeResponse{Mode: TLSModePSK}, specResp(0x0400002B, u32(1))},
		{"EnumerateHashHandles", EnumerateHashHandles{}, "01 01 00 00 2c 00 00 04 00 00 00 00",
			&EnumerateHashHandlesResponse{Handles: []uint32{1, 2, 7}}, specResp(0x0400002C, u32(3), u32(1), u32(2), u32(7))},
		{"GetCertHashEntry", GetCertHashEntry{Handle: 7}, "01 01 00 00 2d 00 00 04 04 00 00 00 07 00 00 00",
			&GetCertHashEntryResponse{IsActive: true, Hash: hash, Algorithm: HashSHA256, Name: "Kiosk Root"},
			specResp(0x0400002D, u32(0), u32(1), hash[:], []byte{2}, u16(10), []byte("Kiosk Root"))},
		{"SetDnsSuffix", SetDNSSuffix{Suffix: "lab.example"}, "01 01 00 00 2f 00 00 04 0d 00 00 00 0b 00 6c 61 62 2e 65 78 61 6d 70 6c 65", nil, specResp(0x0400002F)},
		{"GetZeroTouchEnabled", GetZeroTouchEnabled{}, "01 01 00 00 30 00 00 04 00 00 00 00",
			&GetZeroTouchEnabledResponse{Enabled: true}, specResp(0x04000030, u32(1))},
		{"GetPKIFQDNSuffix", GetPKIFQDNSuffix{}, "01 01 00 00 36 00 00 04 00 00 00 00",
			&GetPKIFQDNSuffixResponse{Suffix: "lab.example"}, specResp(0x04000036, u16(11), []byte("lab.example"))},
		{"GetRemoteAccessConnectionStatus", GetRemoteAccessConnectionStatus{}, "01 01 00 00 46 00 00 04 00 00 00 00",
			&GetRemoteAccessConnectionStatusResponse{Network: 1, MPSHost: "mps"}, specResp(0x04000046, u32(1), u32(0), u32(0), u16(3), []byte("mps"))},
		{"GetLANInterfaceSettings", GetLANInterfaceSettings{Index: InterfaceWired}, "01 01 00 00 48 00 00 04 04 00 00 00 00 00 00 00",
			&GetLANInterfaceSettingsResponse{Enabled: true, IPv4: 0xC0A80A05, DHCPEnabled: true, DHCPMode: 2, LinkUp: true, MAC: MAC{0, 0x16, 0x3e, 1, 2, 3}},
			specResp(0x04000048, u32(1), u32(0xC0A80A05), u32(1), []byte{2, 1, 0, 0x16, 0x3e, 1, 2, 3})},
		{"GetUUID", GetUUID{}, "01 01 00 00 5c 00 00 04 00 00 00 00",
			&GetUUIDResponse{UUID: UUID{0x4b, 0x52, 0x9b, 0x93, 0xd4, 0x13, 0x18, 0x1d, 0xe4, 0x87, 0x1c, 0x69, 0x7a, 0x6b, 0x7a, 0x2b}},
			specResp(0x0400005C, unhex(t, "4b529b93 d413 181d e487 1c697a6b7a2b"))},
		{"StopConfiguration", StopConfiguration{}, "01 01 00 00 5e 00 00 04 00 00 00 00", nil, specResp(0x0400005E)},
		{"GetLocalSystemAccount", GetLocalSystemAccount{}, "01 01 00 00 67 00 00 04 28 00 00 00" + strings.Repeat(" 00", 40),
			&GetLocalSystemAccountResponse{User: "$$OsAdmin", Password: NewSecret("s3cret-from-ME")}, specResp(0x04000067, lsa)},
		{"GetControlMode", GetControlMode{}, "01 01 00 00 6b 00 00 04 00 00 00 00",
			&GetControlModeResponse{Mode: ControlAdmin}, specResp(0x0400006B, u32(2))},
	}
}

// newResponse returns an empty response of the type cmd answers with, or
// nil for commands without a response body.
func newResponse(cmd Command) (Response, bool) {
	switch cmd {
	case CmdGetCodeVersions:
		return &GetCodeVersionsResponse{}, true
	case CmdGetProvisioningMode:
		return &GetProvisioningModeResponse{}, true
	case CmdUnprovision:
		return &UnprovisionResponse{}, true
	case CmdGetProvisioningState:
		return &GetProvisioningStateResponse{}, true
	case CmdGetSecurityParameters:
		return &GetSecurityParametersResponse{}, true
	case CmdGetMACAddresses:
		return &GetMACAddressesResponse{}, true
	case CmdGetProvisioningTLSMode:
		return &GetProvisioningTLSModeResponse{}, true
	case CmdEnumerateHashHandles:
		return &EnumerateHashHandlesResponse{}, true
	case CmdGetCertHashEntry:
		return &GetCertHashEntryResponse{}, true
	case CmdGetZeroTouchEnabled:
		return &GetZeroTouchEnabledResponse{}, true
	case CmdGetPKIFQDNSuffix:
		return &GetPKIFQDNSuffixResponse{}, true
	case CmdGetRemoteAccessConnectionStatus:
		return &GetRemoteAccessConnectionStatusResponse{}, true
	case CmdGetLANInterfaceSettings:
		return &GetLANInterfaceSettingsResponse{}, true
	case CmdGetUUID:
		return &GetUUIDResponse{}, true
	case CmdGetLocalSystemAccount:
		return &GetLocalSystemAccountResponse{}, true
	case CmdGetControlMode:
		return &GetControlModeResponse{}, true
	case CmdStartConfiguration, CmdStopConfiguration, CmdSetProvisioningServerOTP, CmdSetDNSSuffix:
		return nil, true
	}
	return nil, false
}

func TestGolden(t *testing.T) {
	for _, g := range goldens(t) {
		t.Run(g.name, func(t *testing.T) {
			req := MarshalRequest(g.req)
			if want := unhex(t, g.reqHex); !bytes.Equal(req, want) {
				t.Errorf("request: got %x, want %x", req, want)
			}
			resp := MarshalResponse(g.req.Command(), StatusSuccess, g.resp)
			if !bytes.Equal(resp, g.respRaw) {
				t.Errorf("response: got %x, want %x", resp, g.respRaw)
			}
			for suffix, b := range map[string][]byte{".req.bin": req, ".resp.bin": resp} {
				path := filepath.Join(goldenDir, g.name+suffix)
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
			// The response file decodes to the expected struct.
			got, ok := newResponse(g.req.Command())
			if !ok {
				t.Fatalf("no response type for %v", g.req.Command())
			}
			if err := UnmarshalResponse(g.respRaw, g.req.Command(), got); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, g.resp) {
				t.Errorf("decoded %+v, want %+v", got, g.resp)
			}
			// The request header parses back.
			h, body, err := ParseRequest(req)
			if err != nil || h.Command != g.req.Command() || !bytes.Equal(body, g.req.AppendBody(nil)) {
				t.Errorf("ParseRequest = %+v, %x, %v", h, body, err)
			}
		})
	}
}

// fakeTransport answers every Send with a fixed reply.
type fakeTransport struct {
	reply []byte
	err   error
	sent  []byte
}

func (f *fakeTransport) Send(_ context.Context, req []byte) ([]byte, error) {
	f.sent = req
	return f.reply, f.err
}
func (f *fakeTransport) MaxMessageLen() int { return 4096 }
func (f *fakeTransport) Close() error       { return nil }

func TestExecute(t *testing.T) {
	ctx := t.Context()
	ft := &fakeTransport{reply: specResp(0x0400005C, unhex(t, "4b529b93 d413 181d e487 1c697a6b7a2b"))}
	r, err := GetUUID{}.Execute(ctx, ft)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := r.UUID.String(), "939b524b-13d4-1d18-e487-1c697a6b7a2b"; got != want {
		t.Errorf("UUID = %s, want %s (specs/amt-psk.md example)", got, want)
	}
	if u, err := ParseUUID("939b524b-13d4-1d18-e487-1c697a6b7a2b"); err != nil || u != r.UUID {
		t.Errorf("ParseUUID = %x, %v", u, err)
	}

	// A failing status is an error matching the Status.
	b := specResp(0x04000011)
	binary.LittleEndian.PutUint32(b[12:16], uint32(StatusNotReady))
	ft.reply = b
	_, err = GetProvisioningState{}.Execute(ctx, ft)
	if !errors.Is(err, StatusNotReady) || !strings.Contains(err.Error(), "NOT_READY") || !strings.Contains(err.Error(), "GetProvisioningState") {
		t.Errorf("got %v, want NOT_READY naming the command", err)
	}
	var st Status
	if !errors.As(err, &st) || st != StatusNotReady {
		t.Errorf("errors.As status = %v", st)
	}

	// A transport error keeps its identity.
	ft.err = heci.ErrReset
	if _, err := (GetUUID{}).Execute(ctx, ft); !errors.Is(err, heci.ErrReset) {
		t.Errorf("got %v, want ErrReset", err)
	}
}

func TestStatus(t *testing.T) {
	if got := StatusInvalidPIDFormat.Error(); got != "AMT status INVALID_PID_FORMAT (0x2A)" {
		t.Errorf("got %q", got)
	}
	if got := Status(0x1234).Error(); got != "AMT status 0x1234" {
		t.Errorf("got %q", got)
	}
	if Status(0x1234).Name() != "" || StatusBlockingComponent.Name() != "BLOCKING_COMPONENT" {
		t.Error("Name")
	}
}

func TestResponseErrors(t *testing.T) {
	good := specResp(0x04000011, u32(2))
	tests := []struct {
		name string
		b    []byte
		cmd  Command
		want []string
	}{
		{"short", good[:10], CmdGetProvisioningState, []string{"GetProvisioningState", "response length 10"}},
		{"wrong command", good, CmdGetControlMode, []string{"GetControlMode", "0x04800011", "0x0480006B"}},
		{"length field", func() []byte { b := bytes.Clone(good); b[8] = 9; return b }(), CmdGetProvisioningState, []string{"length field 9", "want 8"}},
		{"reserved", func() []byte { b := bytes.Clone(good); b[2] = 1; return b }(), CmdGetProvisioningState, []string{"reserved 1"}},
		{"major", func() []byte { b := bytes.Clone(good); b[0] = 2; return b }(), CmdGetProvisioningState, []string{"major version 2"}},
		{"body too short", specResp(0x04000011, []byte{1, 0}), CmdGetProvisioningState, []string{"GetProvisioningState", "body length 2", "want 4"}},
		{"count too big", specResp(0x0400002C, u32(0x40000000), u32(1)), CmdEnumerateHashHandles, []string{"EnumerateHashHandles", "handle count 1073741824"}},
		{"versions count", specResp(0x0400001A, fixed("", 65), u32(3), make([]byte, 44)), CmdGetCodeVersions, []string{"version count 3"}},
		{"version string", specResp(0x0400001A, fixed("", 65), u32(1), u16(21), make([]byte, 42)), CmdGetCodeVersions, []string{"string length 21"}},
		{"name too long", specResp(0x0400002D, make([]byte, 73), u16(5), []byte("ab")), CmdGetCertHashEntry, []string{"GetCertHashEntry", "too short for name"}},
		{"no NUL", specResp(0x04000067, bytes.Repeat([]byte("a"), 66)), CmdGetLocalSystemAccount, []string{"no NUL"}},
		{"unprovision extra", specResp(0x04000010, []byte{1, 2}), CmdUnprovision, []string{"want 0 or 4"}},
		{"trailing", specResp(0x04000036, u16(1), []byte("ab")), CmdGetPKIFQDNSuffix, []string{"trailing"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, _ := newResponse(tt.cmd)
			err := UnmarshalResponse(tt.b, tt.cmd, r)
			if !errors.Is(err, ErrProtocol) {
				t.Fatalf("got %v, want ErrProtocol", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestSecretNeverPrints(t *testing.T) {
	r := &GetLocalSystemAccountResponse{User: "u", Password: NewSecret("hunter2")}
	for _, s := range []string{fmt.Sprintf("%v", r), fmt.Sprintf("%+v", r), fmt.Sprintf("%#v", r), fmt.Sprint(r.Password)} {
		if strings.Contains(s, "hunter2") {
			t.Errorf("secret printed: %s", s)
		}
	}
	if r.Password.Reveal() != "hunter2" {
		t.Error("Reveal")
	}
}
