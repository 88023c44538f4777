package amthi

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func seedGoldens(f *testing.F) {
	files, err := filepath.Glob(filepath.Join(goldenDir, "*.bin"))
	if err != nil || len(files) == 0 {
		f.Fatalf("no seeds in %s: %v", goldenDir, err)
	}
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
}

// FuzzResponse feeds every response parser: the command is taken from the
// input's header. A response that parses must encode back to a message
// that parses to the same struct. Parsing as a different command must fail.
func FuzzResponse(f *testing.F) {
	seedGoldens(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) < 8 {
			_ = UnmarshalResponse(b, CmdGetUUID, &GetUUIDResponse{})
			return
		}
		cmd := Command(binary.LittleEndian.Uint32(b[4:8])) &^ ResponseBit
		r, ok := newResponse(cmd)
		if !ok {
			return
		}
		if err := UnmarshalResponse(b, cmd, r); err != nil {
			return
		}
		other := CmdGetUUID
		if cmd == CmdGetUUID {
			other = CmdGetControlMode
		}
		if err := UnmarshalResponse(b, other, nil); err == nil {
			t.Fatalf("%v response accepted as %v", cmd, other)
		}
		again := MarshalResponse(cmd, StatusSuccess, r)
		r2, _ := newResponse(cmd)
		if err := UnmarshalResponse(again, cmd, r2); err != nil {
			t.Fatalf("re-encoded %v does not parse: %v (%x)", cmd, err, again)
		}
		if !reflect.DeepEqual(r, r2) {
			t.Fatalf("round trip of %v: %+v != %+v", cmd, r, r2)
		}
	})
}

// FuzzRequest feeds the request side the simulator uses: ParseRequest and
// each request body decoder.
func FuzzRequest(f *testing.F) {
	seedGoldens(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		h, body, err := ParseRequest(b)
		if err != nil {
			return
		}
		var dec interface {
			DecodeBody(Command, []byte) error
		}
		switch h.Command {
		case CmdUnprovision:
			dec = &Unprovision{}
		case CmdSetProvisioningServerOTP:
			dec = &SetProvisioningServerOTP{}
		case CmdSetDNSSuffix:
			dec = &SetDNSSuffix{}
		case CmdGetCertHashEntry:
			dec = &GetCertHashEntry{}
		case CmdGetLANInterfaceSettings:
			dec = &GetLANInterfaceSettings{}
		case CmdGetLocalSystemAccount:
			dec = &GetLocalSystemAccount{}
		default:
			_ = DecodeEmptyBody(h.Command, body)
			return
		}
		if err := dec.DecodeBody(h.Command, body); err != nil {
			return
		}
		req, ok := dec.(Request)
		if !ok {
			t.Fatalf("%T is not a Request", dec)
		}
		if _, lsa := dec.(*GetLocalSystemAccount); lsa {
			return // its 40 reserved bytes are not kept
		}
		if again := MarshalRequest(req); string(again) != string(b) {
			t.Fatalf("re-encoded %x, want %x", again, b)
		}
	})
}
