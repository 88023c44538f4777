package setupbin

import (
	"bytes"
	"errors"
	"net/netip"
	"strings"
	"testing"
)

// The GUID table of specs/setupbin.md §2.1: canonical string and the
// bytes on disk as Intel's files hold them.
func TestGUIDMixedEndian(t *testing.T) {
	tests := []struct{ s, disk string }{
		{"71FB16B5-CB87-4AF9-B441-CA7B383578F9", "b516fb7187cbf94ab441ca7b383578f9"},
		{"5881B296-6BCF-4C72-8B91-A15E512E99C4", "96b28158cf6b724c8b91a15e512e99c4"},
		{"C6F6F7A7-C489-47F6-93ED-E2E5020DA51D", "a7f7f6c689c4f64793ede2e5020da51d"},
		{"5234A9AA-29E1-44A9-8D4D-081C07B96353", "aaa93452e129a9448d4d081c07b96353"},
	}
	for i, tt := range tests {
		g, err := ParseGUID(tt.s)
		if err != nil {
			t.Fatal(err)
		}
		if got := g[:]; !bytes.Equal(got, mustHex(t, tt.disk)) {
			t.Errorf("%s: got %x, want %s", tt.s, got, tt.disk)
		}
		if g.String() != tt.s {
			t.Errorf("String() = %s, want %s", g, tt.s)
		}
		if fileTypeGUIDs[i+1] != g {
			t.Errorf("file type GUID of major %d: got %x, want %x", i+1, fileTypeGUIDs[i+1], g)
		}
	}
	if _, err := ParseGUID("5234A9AA-29E1-44A9-8D4D"); !errors.Is(err, ErrValue) {
		t.Errorf("short GUID: %v", err)
	}
}

func mustHex(t *testing.T, s string) []byte {
	t.Helper()
	var b []byte
	for i := 0; i+1 < len(s); i += 2 {
		var x byte
		for _, c := range s[i : i+2] {
			x <<= 4
			switch {
			case c >= '0' && c <= '9':
				x |= byte(c - '0')
			default:
				x |= byte(c-'a') + 10
			}
		}
		b = append(b, x)
	}
	return b
}

func TestAddrEntry(t *testing.T) {
	tests := []struct {
		addr string
		want []byte
	}{
		{"192.168.10.1", []byte{1, 10, 168, 192}},
		{"::ffff:10.0.0.2", []byte{2, 0, 0, 10}},
		{"2001:db8::1", append([]byte{1}, append(make([]byte, 11), 0xb8, 0x0d, 0x01, 0x20)...)},
	}
	for _, tt := range tests {
		e := AddrEntry(netip.MustParseAddr(tt.addr))
		if !bytes.Equal(e.Value, tt.want) {
			t.Errorf("%s: got %x, want %x", tt.addr, e.Value, tt.want)
		}
		a, err := e.Addr()
		if err != nil || a != netip.MustParseAddr(tt.addr).Unmap() {
			t.Errorf("%s: decoded %v %v", tt.addr, a, err)
		}
	}
	if _, err := (Entry{Var: VarServerAddr, Value: []byte{1, 2, 3}}).Addr(); !errors.Is(err, ErrValue) {
		t.Errorf("3-byte address: %v", err)
	}
}

func TestHashEntry(t *testing.T) {
	h := UserHash{Alg: HashSHA384, Hash: bytes.Repeat([]byte{7}, 48), Name: "root"}
	e := HashEntry(h)
	got, err := e.Hash()
	if err != nil || got.Alg != h.Alg || !bytes.Equal(got.Hash, h.Hash) || got.Name != h.Name {
		t.Fatalf("round trip: %v %v", got, err)
	}
	if pr := checkValue(&e, LookupVar(VarAddUserHash), V2_1); pr == nil || !strings.Contains(pr.msg, "need format 3.0") {
		t.Errorf("SHA-384 in a 2.1 file: %v", pr)
	}
	if pr := checkValue(&e, LookupVar(VarAddUserHash), V3_0); pr != nil {
		t.Errorf("SHA-384 in a 3.0 file: %v", pr.msg)
	}
	for _, bad := range [][]byte{{}, {9}, {1, 1, 2}, append(append([]byte{1}, make([]byte, 20)...), 40)} {
		if _, err := (Entry{Var: VarAddUserHash, Value: bad}).Hash(); err == nil {
			t.Errorf("%x decoded", bad)
		}
	}
}

func TestEntryRedaction(t *testing.T) {
	pps, _ := ParsePPS("NKLD-G5DC-RRNQ-E9YZ-ZIJL-7LFL-VJED-69XJ")
	for _, e := range []Entry{PPSEntry(pps), PasswordEntry(VarNewPassword, "S3cret!pass"), PasswordEntry(VarCurrentPassword, "S3cret!pass")} {
		for _, s := range []string{e.String(), e.GoString(), e.Format(false)} {
			if strings.Contains(s, "NKLD") || strings.Contains(s, "S3cret") {
				t.Errorf("%s leaks the secret", s)
			}
		}
	}
	if got := PPSEntry(pps).Format(true); got != "NKLD-G5DC-RRNQ-E9YZ-ZIJL-7LFL-VJED-69XJ" {
		t.Errorf("revealed PPS = %q", got)
	}
}

func TestCatalogue(t *testing.T) {
	cat := Catalogue()
	if len(cat) < 31 {
		t.Errorf("catalogue has %d variables", len(cat))
	}
	for i := 1; i < len(cat); i++ {
		if cat[i].Var <= cat[i-1].Var {
			t.Errorf("catalogue not ordered at %s", cat[i].Var)
		}
	}
	for _, c := range []struct {
		v     Var
		since Version
	}{{VarPID, V1_0}, {VarPKIDNSSuffix, V2_0}, {VarServerAddr, V2_1}, {VarPowerPackage, V2_1}, {VarIPv6, V3_0}} {
		if info := LookupVar(c.v); info == nil || info.Since != c.since {
			t.Errorf("%s introduced in %v, want %s", c.v, info, c.since)
		}
	}
	if v, ok := VarByName("2/17"); !ok || v != VarServerAddr {
		t.Errorf("VarByName(2/17) = %s", v)
	}
	if v, ok := VarByName("pps"); !ok || v != VarPPS {
		t.Errorf("VarByName(pps) = %s", v)
	}
}

func TestProfiles(t *testing.T) {
	for _, tt := range []struct {
		prof    string
		v       Var
		accepts bool
	}{
		{"amt2-5", VarPID, true}, {"amt2-5", VarIPv6, false}, {"amt2-5", VarKVM, false},
		{"amt6-10", VarPID, true}, {"amt6-10", VarIPv6, true},
		{"amt11+", VarPID, false}, {"amt11+", VarPPS, false}, {"amt11+", VarFWUpdateQualifier, false}, {"amt11+", VarPKIDNSSuffix, true},
		{"amt6-10", MakeVar(2, 30), false},
	} {
		p, err := ProfileByName(tt.prof)
		if err != nil {
			t.Fatal(err)
		}
		if p.Accepts(tt.v) != tt.accepts {
			t.Errorf("%s accepts %s = %v, want %v", tt.prof, tt.v, !tt.accepts, tt.accepts)
		}
	}
	if _, err := ProfileByName("amt99"); !errors.Is(err, ErrValue) {
		t.Errorf("unknown profile: %v", err)
	}
	if ProfileAMT11Plus.Reads(V3_0) || !ProfileAMT2to5.Reads(V1_0) {
		t.Error("profile versions wrong")
	}
}
