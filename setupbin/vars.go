package setupbin

import (
	"encoding/hex"
	"fmt"
	"net/netip"
	"strings"
)

// Var names a variable: its module in the high 16 bits and its identifier
// within the module in the low 16 (§2.4, §3). Ordering Vars numerically is
// ordering by (module, variable), the order Writers use.
type Var uint32

// MakeVar returns the variable id of module m.
func MakeVar(m Module, id uint16) Var { return Var(uint32(m)<<16 | uint32(id)) }

// Module returns the variable's module.
func (v Var) Module() Module { return Module(v >> 16) }

// ID returns the variable identifier within its module.
func (v Var) ID() uint16 { return uint16(v) }

// String returns "2/1 PID" (module/variable and the catalogue name).
func (v Var) String() string {
	if info := LookupVar(v); info != nil {
		return fmt.Sprintf("%d/%d %s", v.Module(), v.ID(), info.Name)
	}
	return fmt.Sprintf("%d/%d", v.Module(), v.ID())
}

// The variable catalogue, specs/setupbin.md §3.
const (
	VarCurrentPassword   = Var(1<<16 | 1)  // 1/1 current MEBx password
	VarNewPassword       = Var(1<<16 | 2)  // 1/2 new MEBx password
	VarManageability     = Var(1<<16 | 3)  // 1/3 manageability selection
	VarFWLocalUpdate     = Var(1<<16 | 4)  // 1/4 firmware local update
	VarFWUpdateQualifier = Var(1<<16 | 5)  // 1/5 firmware update qualifier
	VarPowerPackage      = Var(1<<16 | 6)  // 1/6 power package GUID
	VarPID               = Var(2<<16 | 1)  // 2/1 PID
	VarPPS               = Var(2<<16 | 2)  // 2/2 PPS
	VarPKIDNSSuffix      = Var(2<<16 | 3)  // 2/3 PKI DNS suffix
	VarConfigServerFQDN  = Var(2<<16 | 4)  // 2/4 configuration server FQDN
	VarRemoteConfig      = Var(2<<16 | 5)  // 2/5 remote configuration enabled
	VarPreinstalledCerts = Var(2<<16 | 6)  // 2/6 pre-installed certificate hashes enabled
	VarUserHashes        = Var(2<<16 | 7)  // 2/7 user-defined hashes
	VarAddUserHash       = Var(2<<16 | 8)  // 2/8 add user-defined hash
	VarRedirection       = Var(2<<16 | 10) // 2/10 SOL / storage redirection
	VarHostName          = Var(2<<16 | 11) // 2/11 host name
	VarDomainName        = Var(2<<16 | 12) // 2/12 domain name
	VarDHCP              = Var(2<<16 | 13) // 2/13 DHCP
	VarIdleTimeout       = Var(2<<16 | 15) // 2/15 idle timeout
	VarServerAddr        = Var(2<<16 | 17) // 2/17 provisioning server address
	VarServerPort        = Var(2<<16 | 18) // 2/18 provisioning server port
	VarStaticIPv4        = Var(2<<16 | 19) // 2/19 static IPv4 settings
	VarPasswordPolicy    = Var(2<<16 | 21) // 2/21 password policy
	VarIPv6              = Var(2<<16 | 22) // 2/22 IPv6 settings
	VarSharedFQDN        = Var(2<<16 | 23) // 2/23 shared / dedicated FQDN
	VarDynamicDNS        = Var(2<<16 | 24) // 2/24 dynamic DNS update
	VarKVM               = Var(2<<16 | 25) // 2/25 KVM enabled
	VarUserConsent       = Var(2<<16 | 26) // 2/26 user consent
	VarRemoteITConsent   = Var(2<<16 | 27) // 2/27 remote IT consent policy
	VarProvisioningHalt  = Var(2<<16 | 28) // 2/28 provisioning halt/activate
	VarManualSetup       = Var(2<<16 | 29) // 2/29 manual setup
)

// Kind says how a variable's value is encoded (§3).
type Kind uint8

const (
	KindBytes    Kind = iota // opaque bytes
	KindPassword             // ASCII, no terminator
	KindText                 // ASCII, no terminator
	KindU8                   // 1 byte
	KindU16                  // 2 bytes little-endian
	KindU32                  // 4 bytes little-endian
	KindPID                  // 8 characters 0-9A-Z with check character
	KindPPS                  // 32 characters 0-9A-Z with check characters
	KindAddr                 // IPv4 or IPv6 address, byte-reversed
	KindHash                 // algorithm + hash + name length + name
	KindGUID                 // 16 bytes, EFI_GUID order
)

var kindNames = [...]string{"bytes", "password", "text", "u8", "u16", "u32", "PID", "PPS", "address", "hash", "GUID"}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("kind %d", uint8(k))
}

// VarInfo is one line of the catalogue.
type VarInfo struct {
	Var    Var
	Name   string
	Kind   Kind
	Since  Version  // format version that introduced it; 0 for Legacy
	Legacy bool     // used by older tools only (not in §3's table): no profile accepts it
	Secret bool     // never printed unless revealed
	MinLen int      // for text, password, bytes
	MaxLen int      // for text, password, bytes
	Values []uint32 // allowed numeric values; nil = any
	Note   string   // what is UNCONFIRMED or odd about it
}

var catalogue = []VarInfo{
	{Var: VarCurrentPassword, Name: "current MEBx password", Kind: KindPassword, Since: V1_0, Secret: true, MinLen: 1, MaxLen: 32, Note: "mandatory; admin on factory-fresh machines"},
	{Var: VarNewPassword, Name: "new MEBx password", Kind: KindPassword, Since: V1_0, Secret: true, MinLen: 8, MaxLen: 32},
	{Var: VarManageability, Name: "manageability selection", Kind: KindU8, Since: V1_0, Values: []uint32{0, 1}, Note: "1 = AMT"},
	{Var: VarFWLocalUpdate, Name: "firmware local update", Kind: KindU8, Since: V2_1, Values: []uint32{0, 1, 2}, Note: "newer MEBx: deprecated, >1 treated as 0"},
	{Var: VarFWUpdateQualifier, Name: "firmware update qualifier", Kind: KindU8, Since: V2_1, Note: "newer MEBx aborts the record"},
	{Var: VarPowerPackage, Name: "power package", Kind: KindGUID, Since: V2_1},
	{Var: VarPID, Name: "PID", Kind: KindPID, Since: V1_0},
	{Var: VarPPS, Name: "PPS", Kind: KindPPS, Since: V1_0, Secret: true},
	{Var: VarPKIDNSSuffix, Name: "PKI DNS suffix", Kind: KindText, Since: V2_0, MinLen: 1, MaxLen: 255},
	{Var: VarConfigServerFQDN, Name: "configuration server FQDN", Kind: KindText, Since: V2_0, MinLen: 1, MaxLen: 255},
	{Var: VarRemoteConfig, Name: "remote configuration", Kind: KindU8, Since: V2_0, Values: []uint32{0, 1}},
	{Var: VarPreinstalledCerts, Name: "pre-installed certificate hashes", Kind: KindU8, Since: V2_0, Values: []uint32{0, 1}},
	{Var: VarUserHashes, Name: "user-defined hashes", Kind: KindU8, Since: V2_0, Values: []uint32{0, 1, 2}, Note: "0 disable, 1 enable, 2 delete"},
	{Var: VarAddUserHash, Name: "add user-defined hash", Kind: KindHash, Since: V2_0, Note: "SHA-256/384 need format 3.0+"},
	{Var: VarRedirection, Name: "SOL / storage redirection", Kind: KindU8, Since: V2_0, Note: "bit 0 SOL, bit 1 storage redirection"},
	{Var: VarHostName, Name: "host name", Kind: KindText, Since: V2_1, MinLen: 1, MaxLen: 63},
	{Var: VarDomainName, Name: "domain name", Kind: KindText, Since: V2_1, MinLen: 1, MaxLen: 255},
	{Var: VarDHCP, Name: "DHCP", Kind: KindU8, Since: V2_1, Values: []uint32{1, 2}, Note: "1 disabled, 2 enabled"},
	{Var: VarIdleTimeout, Name: "idle timeout", Kind: KindU32, Since: V2_1},
	{Var: VarServerAddr, Name: "provisioning server address", Kind: KindAddr, Since: V2_1, Note: "byte-reversed"},
	{Var: VarServerPort, Name: "provisioning server port", Kind: KindU16, Since: V2_1},
	{Var: VarStaticIPv4, Name: "static IPv4 settings", Kind: KindBytes, Since: V2_1, MinLen: 20, MaxLen: 20, Note: "field order UNCONFIRMED"},
	{Var: VarPasswordPolicy, Name: "password policy", Kind: KindU8, Since: V2_1},
	{Var: VarIPv6, Name: "IPv6 settings", Kind: KindBytes, Since: V3_0, MinLen: 1, MaxLen: 204, Note: "MeshCentral: 204 bytes old layout, 84 new; layout UNCONFIRMED"},
	// 2/23–2/29: the spec's version history does not name them; we take
	// them as introduced with 3.0 (AMT 6+). UNCONFIRMED.
	{Var: VarSharedFQDN, Name: "shared/dedicated FQDN", Kind: KindU8, Since: V3_0, Values: []uint32{0, 1}, Note: "0 dedicated, 1 shared; version UNCONFIRMED"},
	{Var: VarDynamicDNS, Name: "dynamic DNS update", Kind: KindU8, Since: V3_0, Values: []uint32{0, 1}, Note: "newer MEBx ignores; version UNCONFIRMED"},
	{Var: VarKVM, Name: "KVM enabled", Kind: KindU8, Since: V3_0, Values: []uint32{0, 1}, Note: "version UNCONFIRMED"},
	{Var: VarUserConsent, Name: "user consent", Kind: KindU8, Since: V3_0, Values: []uint32{0, 1, 0xFF}, Note: "0 none, 1 KVM, 0xFF all; version UNCONFIRMED"},
	{Var: VarRemoteITConsent, Name: "remote IT consent policy", Kind: KindU8, Since: V3_0, Values: []uint32{0, 1}, Note: "version UNCONFIRMED"},
	{Var: VarProvisioningHalt, Name: "provisioning halt/activate", Kind: KindU8, Since: V3_0, Values: []uint32{0, 1}, Note: "0 stop, 1 start; must follow 2/3, 2/4, 2/17; version UNCONFIRMED"},
	{Var: VarManualSetup, Name: "manual setup", Kind: KindU8, Since: V3_0, Values: []uint32{0, 1}, Note: "newer MEBx aborts on 1; version UNCONFIRMED"},
	// IDs older tools know (names as MeshCentral's amt-setupbin.js has
	// them); §3: newer MEBx aborts on them. No profile accepts them.
	{Var: MakeVar(2, 14), Name: "secure firmware update (legacy)", Kind: KindU8, Legacy: true},
	{Var: MakeVar(2, 16), Name: "provisioning mode (legacy)", Kind: KindU8, Legacy: true},
	{Var: MakeVar(2, 20), Name: "VLAN (legacy)", Kind: KindBytes, Legacy: true, MinLen: 0, MaxLen: 488},
	{Var: MakeVar(2, 30), Name: "support channel identifier (legacy)", Kind: KindU32, Legacy: true},
	{Var: MakeVar(2, 31), Name: "support channel description (legacy)", Kind: KindText, Legacy: true, MinLen: 0, MaxLen: 60},
	{Var: MakeVar(2, 32), Name: "service account number (legacy)", Kind: KindText, Legacy: true, MinLen: 0, MaxLen: 32},
	{Var: MakeVar(2, 33), Name: "enrollment passcode (legacy)", Kind: KindText, Legacy: true, Secret: true, MinLen: 0, MaxLen: 32},
	{Var: MakeVar(2, 34), Name: "service type (legacy)", Kind: KindU32, Legacy: true},
	{Var: MakeVar(2, 35), Name: "service provider identifier (legacy)", Kind: KindGUID, Legacy: true},
}

// varTable indexes the catalogue by module (1, 2) and id (< 64).
var varTable [3][64]*VarInfo

func init() {
	for i := range catalogue {
		v := catalogue[i].Var
		varTable[v.Module()][v.ID()] = &catalogue[i]
	}
}

// LookupVar returns the catalogue line of v, or nil for an unknown variable.
func LookupVar(v Var) *VarInfo {
	m, id := v.Module(), v.ID()
	if m == 0 || m > 2 || id >= 64 {
		return nil
	}
	return varTable[m][id]
}

// Catalogue returns every known variable, in (module, variable) order.
func Catalogue() []VarInfo {
	out := make([]VarInfo, 0, len(catalogue))
	for m := 1; m <= 2; m++ {
		for _, info := range varTable[m] {
			if info != nil {
				out = append(out, *info)
			}
		}
	}
	return out
}

// VarByName finds a variable by catalogue name (case-insensitive) or by
// "module/id", e.g. "2/17".
func VarByName(s string) (Var, bool) {
	var m, id uint16
	if n, err := fmt.Sscanf(s, "%d/%d", &m, &id); err == nil && n == 2 {
		return MakeVar(Module(m), id), true
	}
	for i := range catalogue {
		if strings.EqualFold(catalogue[i].Name, s) {
			return catalogue[i].Var, true
		}
	}
	return 0, false
}

// Entry is one variable setting of a record (§2.4). Value holds the
// encoded bytes without padding. Offset is the file offset of the entry
// header (set by Reader, ignored by Writer). String and GoString hide
// secret values.
type Entry struct {
	Var    Var
	Value  []byte
	Offset int64
}

// String describes the entry, hiding secrets.
func (e Entry) String() string { return e.Var.String() + " = " + e.Format(false) }

// GoString hides secrets from %#v too.
func (e Entry) GoString() string { return "setupbin.Entry{" + e.String() + "}" }

// Format renders the value per the catalogue; secret values are masked
// unless reveal is set. Undecodable values render as hex (never for
// secrets).
func (e Entry) Format(reveal bool) string {
	info := LookupVar(e.Var)
	if info != nil && info.Secret && !reveal {
		return "REDACTED"
	}
	v, err := e.Decode()
	if err != nil {
		if info != nil && info.Secret {
			return "(invalid)"
		}
		return "0x" + hex.EncodeToString(e.Value)
	}
	switch x := v.(type) {
	case Password:
		return x.Reveal()
	case PPS:
		return x.RevealDisplay()
	case PID:
		return x.Display()
	case []byte:
		return "0x" + hex.EncodeToString(x)
	case string:
		return fmt.Sprintf("%q", x)
	}
	return fmt.Sprint(v)
}

// Decode returns the typed value per the catalogue: Password, PID, PPS,
// string, uint8, uint16, uint32, netip.Addr, UserHash, GUID or []byte
// (unknown variables and opaque kinds).
func (e Entry) Decode() (any, error) {
	info := LookupVar(e.Var)
	if info == nil {
		return e.Value, nil
	}
	switch info.Kind {
	case KindPassword:
		return e.Password()
	case KindText:
		return e.Text()
	case KindU8:
		return e.U8()
	case KindU16:
		return e.U16()
	case KindU32:
		return e.U32()
	case KindPID:
		return e.PID()
	case KindPPS:
		return e.PPS()
	case KindAddr:
		return e.Addr()
	case KindHash:
		return e.Hash()
	case KindGUID:
		return e.GUID()
	}
	return e.Value, nil
}

func (e Entry) lenErr(want string) error {
	return &ValueError{Field: e.Var.String(), Reason: fmt.Sprintf("value has %d bytes, want %s", len(e.Value), want), Err: ErrValue}
}

// U8 decodes a 1-byte value.
func (e Entry) U8() (uint8, error) {
	if len(e.Value) != 1 {
		return 0, e.lenErr("1")
	}
	return e.Value[0], nil
}

// U16 decodes a 2-byte little-endian value.
func (e Entry) U16() (uint16, error) {
	if len(e.Value) != 2 {
		return 0, e.lenErr("2")
	}
	return le.Uint16(e.Value), nil
}

// U32 decodes a 4-byte little-endian value.
func (e Entry) U32() (uint32, error) {
	if len(e.Value) != 4 {
		return 0, e.lenErr("4")
	}
	return le.Uint32(e.Value), nil
}

func printableASCII(b []byte) int {
	for i, c := range b {
		if c < 0x20 || c > 0x7e {
			return i
		}
	}
	return -1
}

// Text decodes an ASCII text value.
func (e Entry) Text() (string, error) {
	if i := printableASCII(e.Value); i >= 0 {
		return "", &ValueError{Field: e.Var.String(), Reason: fmt.Sprintf("byte %d is not printable ASCII", i+1), Err: ErrValue}
	}
	return string(e.Value), nil
}

// Password decodes a password value (no rule checked beyond ASCII).
func (e Entry) Password() (Password, error) {
	if i := printableASCII(e.Value); i >= 0 {
		return "", &ValueError{Field: e.Var.String(), Reason: fmt.Sprintf("character %d is not printable ASCII", i+1), Err: ErrValue}
	}
	return Password(e.Value), nil
}

// PID decodes and verifies a PID value.
func (e Entry) PID() (PID, error) {
	var p PID
	if len(e.Value) != len(p) {
		return p, e.lenErr("8")
	}
	copy(p[:], e.Value)
	if !p.Valid() {
		return PID{}, &ValueError{Field: "PID", Value: safeASCII(e.Value), Reason: "check character wrong or character outside 0-9A-Z", Err: ErrCheckChar}
	}
	return p, nil
}

// PPS decodes and verifies a PPS value; errors name the group, never the secret.
func (e Entry) PPS() (PPS, error) {
	var p PPS
	if len(e.Value) != len(p) {
		return p, e.lenErr("32")
	}
	copy(p[:], e.Value)
	for i, c := range p {
		if !inAlphabet(c) {
			return PPS{}, &ValueError{Field: "PPS", Reason: fmt.Sprintf("character %d is not in 0-9A-Z", i+1), Err: ErrValue}
		}
	}
	if g := p.badGroup(); g != 0 {
		return PPS{}, &ValueError{Field: "PPS", Reason: fmt.Sprintf("group %d check character wrong", g), Err: ErrCheckChar}
	}
	return p, nil
}

func safeASCII(b []byte) string {
	if printableASCII(b) >= 0 {
		return "0x" + hex.EncodeToString(b)
	}
	return string(b)
}

// Addr decodes the byte-reversed server address of 2/17 (4 or 16 bytes:
// a.b.c.d is stored d,c,b,a).
func (e Entry) Addr() (netip.Addr, error) {
	switch len(e.Value) {
	case 4:
		return netip.AddrFrom4([4]byte{e.Value[3], e.Value[2], e.Value[1], e.Value[0]}), nil
	case 16:
		var a [16]byte
		for i := range a {
			a[i] = e.Value[15-i]
		}
		return netip.AddrFrom16(a), nil
	}
	return netip.Addr{}, e.lenErr("4 or 16")
}

// GUID decodes a 16-byte GUID value.
func (e Entry) GUID() (GUID, error) {
	var g GUID
	if len(e.Value) != 16 {
		return g, e.lenErr("16")
	}
	copy(g[:], e.Value)
	return g, nil
}

// HashAlg is the algorithm byte of a user-defined hash (2/8).
type HashAlg uint8

const (
	HashSHA1   HashAlg = 1 // 20 bytes
	HashSHA256 HashAlg = 2 // 32 bytes, format 3.0+
	HashSHA384 HashAlg = 3 // 48 bytes, format 3.0+
)

// Size returns the digest length of a, or 0 when unknown.
func (a HashAlg) Size() int {
	switch a {
	case HashSHA1:
		return 20
	case HashSHA256:
		return 32
	case HashSHA384:
		return 48
	}
	return 0
}

func (a HashAlg) String() string {
	switch a {
	case HashSHA1:
		return "SHA-1"
	case HashSHA256:
		return "SHA-256"
	case HashSHA384:
		return "SHA-384"
	}
	return fmt.Sprintf("hash algorithm %d", uint8(a))
}

// UserHash is a user-defined certificate hash (2/8).
type UserHash struct {
	Alg  HashAlg
	Hash []byte
	Name string // ≤ 32 characters
}

func (h UserHash) String() string {
	return fmt.Sprintf("%s %x %q", h.Alg, h.Hash, h.Name)
}

// Hash decodes a 2/8 value: u8 algorithm, hash, u8 name length, name.
func (e Entry) Hash() (UserHash, error) {
	bad := func(r string) (UserHash, error) {
		return UserHash{}, &ValueError{Field: e.Var.String(), Reason: r, Err: ErrValue}
	}
	if len(e.Value) < 1 {
		return bad("empty value")
	}
	alg := HashAlg(e.Value[0])
	n := alg.Size()
	if n == 0 {
		return bad(fmt.Sprintf("unknown hash algorithm %d", alg))
	}
	if len(e.Value) < 1+n+1 {
		return bad(fmt.Sprintf("value has %d bytes, too short for a %s hash and a name length", len(e.Value), alg))
	}
	nl := int(e.Value[1+n])
	if nl > 32 {
		return bad(fmt.Sprintf("name length %d, want at most 32", nl))
	}
	if len(e.Value) != 1+n+1+nl {
		return bad(fmt.Sprintf("value has %d bytes, want %d for a %s hash and a %d-byte name", len(e.Value), 1+n+1+nl, alg, nl))
	}
	name := e.Value[2+n:]
	if i := printableASCII(name); i >= 0 {
		return bad(fmt.Sprintf("name byte %d is not printable ASCII", i+1))
	}
	return UserHash{Alg: alg, Hash: append([]byte(nil), e.Value[1:1+n]...), Name: string(name)}, nil
}

// Entry constructors. They encode; the Writer (and Record) checks.

// BytesEntry returns an entry with raw bytes.
func BytesEntry(v Var, b []byte) Entry { return Entry{Var: v, Value: b} }

// TextEntry returns an ASCII text entry.
func TextEntry(v Var, s string) Entry { return Entry{Var: v, Value: []byte(s)} }

// PasswordEntry returns a password entry (1/1 or 1/2).
func PasswordEntry(v Var, p Password) Entry { return Entry{Var: v, Value: []byte(p)} }

// U8Entry returns a 1-byte entry.
func U8Entry(v Var, x uint8) Entry { return Entry{Var: v, Value: []byte{x}} }

// U16Entry returns a 2-byte little-endian entry.
func U16Entry(v Var, x uint16) Entry { return Entry{Var: v, Value: le.AppendUint16(nil, x)} }

// U32Entry returns a 4-byte little-endian entry.
func U32Entry(v Var, x uint32) Entry { return Entry{Var: v, Value: le.AppendUint32(nil, x)} }

// PIDEntry returns the 2/1 entry.
func PIDEntry(p PID) Entry { return Entry{Var: VarPID, Value: append([]byte(nil), p[:]...)} }

// PPSEntry returns the 2/2 entry.
func PPSEntry(p PPS) Entry { return Entry{Var: VarPPS, Value: append([]byte(nil), p[:]...)} }

// GUIDEntry returns a GUID entry (1/6).
func GUIDEntry(v Var, g GUID) Entry { return Entry{Var: v, Value: append([]byte(nil), g[:]...)} }

// AddrEntry returns the 2/17 entry: the address bytes reversed. An IPv4
// address mapped in IPv6 is written as IPv4.
func AddrEntry(a netip.Addr) Entry {
	a = a.Unmap()
	b := a.AsSlice()
	for i, j := 0, len(b)-1; i < j; i, j = i+1, j-1 {
		b[i], b[j] = b[j], b[i]
	}
	return Entry{Var: VarServerAddr, Value: b}
}

// HashEntry returns the 2/8 entry for h.
func HashEntry(h UserHash) Entry {
	b := make([]byte, 0, 2+len(h.Hash)+len(h.Name))
	b = append(b, byte(h.Alg))
	b = append(b, h.Hash...)
	b = append(b, byte(len(h.Name)))
	b = append(b, h.Name...)
	return Entry{Var: VarAddUserHash, Value: b}
}

// problem is a value defect: a finding code and a message free of secrets.
type problem struct {
	code string
	msg  string
}

// checkValue checks an entry's value against the catalogue for a file of
// version ver. It returns nil when the value is right. Unknown and legacy
// variables are the caller's business.
func checkValue(e *Entry, info *VarInfo, ver Version) *problem {
	bad := func(f string, a ...any) *problem {
		return &problem{code: CodeEntryValue, msg: e.Var.String() + ": " + fmt.Sprintf(f, a...)}
	}
	n := len(e.Value)
	switch info.Kind {
	case KindU8, KindU16, KindU32:
		want := 1
		if info.Kind == KindU16 {
			want = 2
		} else if info.Kind == KindU32 {
			want = 4
		}
		if n != want {
			return bad("value has %d bytes, want %d", n, want)
		}
		if info.Values != nil {
			var x uint32
			switch n {
			case 1:
				x = uint32(e.Value[0])
			case 2:
				x = uint32(le.Uint16(e.Value))
			case 4:
				x = le.Uint32(e.Value)
			}
			ok := false
			for _, v := range info.Values {
				ok = ok || v == x
			}
			if !ok {
				return bad("value %d not one of %v", x, info.Values)
			}
		}
	case KindText, KindPassword, KindBytes:
		if n < info.MinLen || n > info.MaxLen {
			if info.MinLen == info.MaxLen {
				return bad("value has %d bytes, want %d", n, info.MinLen)
			}
			return bad("value has %d bytes, want %d to %d", n, info.MinLen, info.MaxLen)
		}
		if info.Kind != KindBytes {
			if i := printableASCII(e.Value); i >= 0 {
				return bad("byte %d is not printable ASCII", i+1)
			}
		}
		if e.Var == VarNewPassword {
			if err := validateMEBx(e.Value); err != nil {
				return &problem{code: CodeNewPasswordRules, msg: err.(*ValueError).Reason + ": the MEBx will refuse it (§4.2)"}
			}
		}
	case KindPID:
		if n != 8 {
			return bad("value has %d bytes, want 8", n)
		}
		var p PID
		copy(p[:], e.Value)
		if !p.Valid() {
			return &problem{code: CodePIDCheck, msg: fmt.Sprintf("PID %s check character wrong or outside 0-9A-Z", safeASCII(e.Value))}
		}
	case KindPPS:
		if n != 32 {
			return bad("value has %d bytes, want 32", n)
		}
		if c, g := ppsProblem(e.Value); c != 0 {
			return &problem{code: CodePPSCheck, msg: fmt.Sprintf("PPS character %d is not in 0-9A-Z", c)}
		} else if g != 0 {
			return &problem{code: CodePPSCheck, msg: fmt.Sprintf("PPS group %d check character wrong", g)}
		}
	case KindAddr:
		if n != 4 && n != 16 {
			return bad("value has %d bytes, want 4 (IPv4) or 16 (IPv6)", n)
		}
	case KindGUID:
		if n != 16 {
			return bad("value has %d bytes, want 16", n)
		}
	case KindHash:
		h, err := e.Hash()
		if err != nil {
			return bad("%s", err.(*ValueError).Reason)
		}
		if h.Alg != HashSHA1 && ver < V3_0 {
			return bad("%s hashes need format 3.0 or later, file is %s", h.Alg, ver)
		}
	}
	return nil
}

// GUID is a 16-byte GUID kept in wire (EFI_GUID, mixed-endian) order.
type GUID [16]byte

// String returns the canonical form, e.g. 5234A9AA-29E1-44A9-8D4D-081C07B96353:
// the first three groups are little-endian on the wire (EFI_GUID).
func (g GUID) String() string {
	return fmt.Sprintf("%08X-%04X-%04X-%X-%X", le.Uint32(g[0:4]), le.Uint16(g[4:6]), le.Uint16(g[6:8]), g[8:10], g[10:16])
}

// ParseGUID parses the canonical form into wire order.
func ParseGUID(s string) (GUID, error) {
	var g GUID
	h := strings.ReplaceAll(strings.TrimSpace(s), "-", "")
	b, err := hex.DecodeString(h)
	if err != nil || len(b) != 16 || len(s) != 36 {
		return g, &ValueError{Field: "GUID", Value: s, Reason: "want XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX", Err: ErrValue}
	}
	// EFI mixed-endian: reverse the first three groups.
	g[0], g[1], g[2], g[3] = b[3], b[2], b[1], b[0]
	g[4], g[5] = b[5], b[4]
	g[6], g[7] = b[7], b[6]
	copy(g[8:], b[8:])
	return g, nil
}
