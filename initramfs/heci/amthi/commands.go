package amthi

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/netip"

	"github.com/provstick/provstick/initramfs/heci"
)

// LogValue keeps a Secret out of structured logs.
func (s Secret) LogValue() slog.Value { return slog.StringValue("REDACTED") }

// emptyBody is the request or response body of commands without one.
type emptyBody struct{}

func (emptyBody) AppendBody(b []byte) []byte { return b }
func (emptyBody) DecodeBody(cmd Command, b []byte) error {
	return needLen(cmd, b, 0)
}

// DecodeEmptyBody checks that a request has no body (for the simulator).
func DecodeEmptyBody(cmd Command, b []byte) error { return needLen(cmd, b, 0) }

// ---- GetCodeVersions, specs/heci.md §3 ----

// GetCodeVersions asks for the BIOS and firmware component versions
// (specs/heci.md §3, 0x0400001A).
type GetCodeVersions struct{ emptyBody }

// Command is 0x0400001A.
func (GetCodeVersions) Command() Command { return CmdGetCodeVersions }

// Execute sends the command.
func (c GetCodeVersions) Execute(ctx context.Context, t heci.Transport) (*GetCodeVersionsResponse, error) {
	return execute[GetCodeVersionsResponse](ctx, t, c)
}

// CodeVersion is one {description, version} pair, e.g. {"AMT", "11.8.50"}.
type CodeVersion struct {
	Description string `json:"description"`
	Version     string `json:"version"`
}

// GetCodeVersionsResponse: u8 bios[65], u32 count, count × 44-byte
// entries {u16 descLen, u8 desc[20], u16 verLen, u8 ver[20]} (§3).
type GetCodeVersionsResponse struct {
	BIOS     string        `json:"bios"`
	Versions []CodeVersion `json:"versions"`
}

// Lookup returns the version with the given description ("AMT", "Sku",
// "Flash", "Build Number") and whether there is one.
func (r *GetCodeVersionsResponse) Lookup(desc string) (string, bool) {
	for _, v := range r.Versions {
		if v.Description == desc {
			return v.Version, true
		}
	}
	return "", false
}

const (
	biosVersionLen  = 65
	codeVersionLen  = 44
	codeVersionText = 20
)

// AppendBody encodes the body; strings longer than 20 bytes are cut.
func (r *GetCodeVersionsResponse) AppendBody(b []byte) []byte {
	var bios [biosVersionLen]byte
	putCstr(bios[:], r.BIOS, false)
	b = append(b, bios[:]...)
	b = le.AppendUint32(b, uint32(len(r.Versions)))
	for _, v := range r.Versions {
		for _, s := range []string{v.Description, v.Version} {
			var f [codeVersionText]byte
			n := copy(f[:], s)
			b = le.AppendUint16(b, uint16(n))
			b = append(b, f[:]...)
		}
	}
	return b
}

// DecodeBody parses the body, checking the count against the length
// before allocating.
func (r *GetCodeVersionsResponse) DecodeBody(cmd Command, b []byte) error {
	if len(b) < biosVersionLen+4 {
		return &ProtocolError{Command: cmd, Field: "body length", Got: uint64(len(b)), Want: biosVersionLen + 4, Why: "too short for BIOS version and count"}
	}
	r.BIOS = cstr(b[:biosVersionLen])                        // 0x00, 65 bytes
	count := le.Uint32(b[biosVersionLen : biosVersionLen+4]) // 0x41, 4 bytes
	rest := b[biosVersionLen+4:]
	if uint64(count)*codeVersionLen != uint64(len(rest)) {
		return &ProtocolError{Command: cmd, Field: "version count", Got: uint64(count), Want: uint64(len(rest) / codeVersionLen), Why: fmt.Sprintf("%d bytes of entries follow", len(rest))}
	}
	r.Versions = make([]CodeVersion, 0, count)
	for i := range int(count) {
		e := rest[i*codeVersionLen : (i+1)*codeVersionLen]
		dl, vl := le.Uint16(e[0:2]), le.Uint16(e[22:24]) // entry +0x00 and +0x16, 2 bytes each
		if dl > codeVersionText || vl > codeVersionText {
			return &ProtocolError{Command: cmd, Field: fmt.Sprintf("entry %d string length", i), Got: uint64(max(dl, vl)), Want: codeVersionText, Why: "longer than its 20-byte field"}
		}
		r.Versions = append(r.Versions, CodeVersion{
			Description: string(e[2 : 2+dl]),   // entry +0x02, 20 bytes
			Version:     string(e[24 : 24+vl]), // entry +0x18, 20 bytes
		})
	}
	return nil
}

// ---- GetProvisioningMode ----

// ProvisioningMode is the mode of GetProvisioningMode (§3).
type ProvisioningMode uint32

// Provisioning modes (§3).
const (
	ModeNone             ProvisioningMode = 0
	ModeEnterprise       ProvisioningMode = 1
	ModeSmallBusiness    ProvisioningMode = 2
	ModeRemoteAssistance ProvisioningMode = 3
)

func (m ProvisioningMode) String() string {
	switch m {
	case ModeNone:
		return "none"
	case ModeEnterprise:
		return "enterprise"
	case ModeSmallBusiness:
		return "small business"
	case ModeRemoteAssistance:
		return "remote assistance"
	}
	return fmt.Sprintf("mode %d", uint32(m))
}

// GetProvisioningMode asks for the provisioning mode (§3, 0x04000008).
type GetProvisioningMode struct{ emptyBody }

// Command is 0x04000008.
func (GetProvisioningMode) Command() Command { return CmdGetProvisioningMode }

// Execute sends the command.
func (c GetProvisioningMode) Execute(ctx context.Context, t heci.Transport) (*GetProvisioningModeResponse, error) {
	return execute[GetProvisioningModeResponse](ctx, t, c)
}

// GetProvisioningModeResponse: u32 mode, u32 legacy (§3).
type GetProvisioningModeResponse struct {
	Mode   ProvisioningMode
	Legacy bool
}

func (r *GetProvisioningModeResponse) AppendBody(b []byte) []byte {
	return appendBool(le.AppendUint32(b, uint32(r.Mode)), r.Legacy)
}

func (r *GetProvisioningModeResponse) DecodeBody(cmd Command, b []byte) error {
	if err := needLen(cmd, b, 8); err != nil {
		return err
	}
	r.Mode = ProvisioningMode(le.Uint32(b[0:4])) // 0x00, 4 bytes
	r.Legacy = le.Uint32(b[4:8]) != 0            // 0x04, 4 bytes
	return nil
}

// ---- Unprovision ----

// Unprovision returns AMT to the pre-provisioning state (§3, 0x04000010).
type Unprovision struct {
	Mode ProvisioningMode
}

// Command is 0x04000010.
func (Unprovision) Command() Command { return CmdUnprovision }

func (c Unprovision) AppendBody(b []byte) []byte { return le.AppendUint32(b, uint32(c.Mode)) }

// DecodeBody parses the request body (for the simulator).
func (c *Unprovision) DecodeBody(cmd Command, b []byte) error {
	if err := needLen(cmd, b, 4); err != nil {
		return err
	}
	c.Mode = ProvisioningMode(le.Uint32(b)) // 0x00, 4 bytes
	return nil
}

// Execute sends the command.
func (c Unprovision) Execute(ctx context.Context, t heci.Transport) (*UnprovisionResponse, error) {
	return execute[UnprovisionResponse](ctx, t, c)
}

// UnprovisionResponse has no body; some tools read an extra u32, so a
// 4-byte body is accepted too (§3).
type UnprovisionResponse struct {
	Extra *uint32 `json:",omitempty"`
}

func (r *UnprovisionResponse) AppendBody(b []byte) []byte {
	if r.Extra != nil {
		b = le.AppendUint32(b, *r.Extra)
	}
	return b
}

func (r *UnprovisionResponse) DecodeBody(cmd Command, b []byte) error {
	switch len(b) {
	case 0:
		r.Extra = nil
		return nil
	case 4:
		v := le.Uint32(b) // 0x00, 4 bytes
		r.Extra = &v
		return nil
	}
	return &ProtocolError{Command: cmd, Field: "body length", Got: uint64(len(b)), Want: 0, Why: "want 0 or 4"}
}

// ---- GetProvisioningState ----

// ProvisioningState is AMT's provisioning state (§3).
type ProvisioningState uint32

// Provisioning states (§3).
const (
	StatePre  ProvisioningState = 0
	StateIn   ProvisioningState = 1
	StatePost ProvisioningState = 2
)

func (s ProvisioningState) String() string {
	switch s {
	case StatePre:
		return "pre-provisioning"
	case StateIn:
		return "in provisioning"
	case StatePost:
		return "post-provisioning"
	}
	return fmt.Sprintf("state %d", uint32(s))
}

// GetProvisioningState asks for the provisioning state (§3, 0x04000011).
type GetProvisioningState struct{ emptyBody }

// Command is 0x04000011.
func (GetProvisioningState) Command() Command { return CmdGetProvisioningState }

// Execute sends the command.
func (c GetProvisioningState) Execute(ctx context.Context, t heci.Transport) (*GetProvisioningStateResponse, error) {
	return execute[GetProvisioningStateResponse](ctx, t, c)
}

// GetProvisioningStateResponse: u32 state (§3).
type GetProvisioningStateResponse struct {
	State ProvisioningState
}

func (r *GetProvisioningStateResponse) AppendBody(b []byte) []byte {
	return le.AppendUint32(b, uint32(r.State))
}

func (r *GetProvisioningStateResponse) DecodeBody(cmd Command, b []byte) error {
	if err := needLen(cmd, b, 4); err != nil {
		return err
	}
	r.State = ProvisioningState(le.Uint32(b)) // 0x00, 4 bytes
	return nil
}

// ---- GetSecurityParameters ----

// GetSecurityParameters asks for the security settings (§3, 0x0400001B).
type GetSecurityParameters struct{ emptyBody }

// Command is 0x0400001B.
func (GetSecurityParameters) Command() Command { return CmdGetSecurityParameters }

// Execute sends the command.
func (c GetSecurityParameters) Execute(ctx context.Context, t heci.Transport) (*GetSecurityParametersResponse, error) {
	return execute[GetSecurityParametersResponse](ctx, t, c)
}

// GetSecurityParametersResponse: 17 × u32 (§3).
type GetSecurityParametersResponse struct {
	EnterpriseMode          bool              // 0x00
	TLSEnabled              bool              // 0x04
	HWCryptoEnabled         bool              // 0x08
	ProvisioningState       ProvisioningState // 0x0C
	NetworkInterfaceEnabled bool              // 0x10
	SOLEnabled              bool              // 0x14
	IDEREnabled             bool              // 0x18
	FWUpdateEnabled         bool              // 0x1C
	LinkIsUp                bool              // 0x20
	Reserved                [8]uint32         // 0x24
}

func (r *GetSecurityParametersResponse) AppendBody(b []byte) []byte {
	b = appendBool(b, r.EnterpriseMode)
	b = appendBool(b, r.TLSEnabled)
	b = appendBool(b, r.HWCryptoEnabled)
	b = le.AppendUint32(b, uint32(r.ProvisioningState))
	b = appendBool(b, r.NetworkInterfaceEnabled)
	b = appendBool(b, r.SOLEnabled)
	b = appendBool(b, r.IDEREnabled)
	b = appendBool(b, r.FWUpdateEnabled)
	b = appendBool(b, r.LinkIsUp)
	for _, v := range r.Reserved {
		b = le.AppendUint32(b, v)
	}
	return b
}

func (r *GetSecurityParametersResponse) DecodeBody(cmd Command, b []byte) error {
	if err := needLen(cmd, b, 17*4); err != nil {
		return err
	}
	u := func(i int) uint32 { return le.Uint32(b[4*i : 4*i+4]) }
	r.EnterpriseMode = u(0) != 0
	r.TLSEnabled = u(1) != 0
	r.HWCryptoEnabled = u(2) != 0
	r.ProvisioningState = ProvisioningState(u(3))
	r.NetworkInterfaceEnabled = u(4) != 0
	r.SOLEnabled = u(5) != 0
	r.IDEREnabled = u(6) != 0
	r.FWUpdateEnabled = u(7) != 0
	r.LinkIsUp = u(8) != 0
	for i := range r.Reserved {
		r.Reserved[i] = u(9 + i)
	}
	return nil
}

// ---- GetMACAddresses ----

// GetMACAddresses asks for the dedicated and host MAC addresses (§3,
// 0x04000025).
type GetMACAddresses struct{ emptyBody }

// Command is 0x04000025.
func (GetMACAddresses) Command() Command { return CmdGetMACAddresses }

// Execute sends the command.
func (c GetMACAddresses) Execute(ctx context.Context, t heci.Transport) (*GetMACAddressesResponse, error) {
	return execute[GetMACAddressesResponse](ctx, t, c)
}

// GetMACAddressesResponse: u8 dedicated[6], u8 host[6] (§3).
type GetMACAddressesResponse struct {
	Dedicated MAC
	Host      MAC
}

func (r *GetMACAddressesResponse) AppendBody(b []byte) []byte {
	return append(append(b, r.Dedicated[:]...), r.Host[:]...)
}

func (r *GetMACAddressesResponse) DecodeBody(cmd Command, b []byte) error {
	if err := needLen(cmd, b, 12); err != nil {
		return err
	}
	copy(r.Dedicated[:], b[0:6]) // 0x00, 6 bytes
	copy(r.Host[:], b[6:12])     // 0x06, 6 bytes
	return nil
}

// ---- StartConfiguration / StopConfiguration ----

// StartConfiguration enters setup mode: AMT starts sending hellos (§3,
// 0x04000029). Its response has no body.
type StartConfiguration struct{ emptyBody }

// Command is 0x04000029.
func (StartConfiguration) Command() Command { return CmdStartConfiguration }

// Execute sends the command.
func (c StartConfiguration) Execute(ctx context.Context, t heci.Transport) error {
	return roundTrip(ctx, t, c, nil)
}

// StopConfiguration leaves setup mode (§3, 0x0400005E). Its response has
// no body.
type StopConfiguration struct{ emptyBody }

// Command is 0x0400005E.
func (StopConfiguration) Command() Command { return CmdStopConfiguration }

// Execute sends the command.
func (c StopConfiguration) Execute(ctx context.Context, t heci.Transport) error {
	return roundTrip(ctx, t, c, nil)
}

// ---- SetProvisioningServerOTP / SetDnsSuffix ----

// SetProvisioningServerOTP stores the one-time password the provisioning
// server must present (§3, 0x0400002A). The OTP is a secret: it is never
// logged or shown in errors.
type SetProvisioningServerOTP struct {
	OTP Secret
}

// Command is 0x0400002A.
func (SetProvisioningServerOTP) Command() Command { return CmdSetProvisioningServerOTP }

func (c SetProvisioningServerOTP) AppendBody(b []byte) []byte { return appendStr(b, c.OTP.s) }

// DecodeBody parses the request body (for the simulator).
func (c *SetProvisioningServerOTP) DecodeBody(cmd Command, b []byte) error {
	r := rbuf{cmd: cmd, b: b}
	c.OTP = Secret{r.str("OTP")}
	return r.done()
}

// Execute sends the command.
func (c SetProvisioningServerOTP) Execute(ctx context.Context, t heci.Transport) error {
	return roundTrip(ctx, t, c, nil)
}

// SetDNSSuffix sets the DNS suffix AMT uses to find the provisioning
// server (§3 "SetDnsSuffix", 0x0400002F).
type SetDNSSuffix struct {
	Suffix string
}

// Command is 0x0400002F.
func (SetDNSSuffix) Command() Command { return CmdSetDNSSuffix }

func (c SetDNSSuffix) AppendBody(b []byte) []byte { return appendStr(b, c.Suffix) }

// DecodeBody parses the request body (for the simulator).
func (c *SetDNSSuffix) DecodeBody(cmd Command, b []byte) error {
	r := rbuf{cmd: cmd, b: b}
	c.Suffix = r.str("DNS suffix")
	return r.done()
}

// Execute sends the command.
func (c SetDNSSuffix) Execute(ctx context.Context, t heci.Transport) error {
	return roundTrip(ctx, t, c, nil)
}

// ---- GetProvisioningTLSMode ----

// TLSMode is the provisioning TLS mode (§3).
type TLSMode uint32

// Provisioning TLS modes (§3).
const (
	TLSModeNotReady TLSMode = 0
	TLSModePSK      TLSMode = 1
	TLSModePKI      TLSMode = 2
)

func (m TLSMode) String() string {
	switch m {
	case TLSModeNotReady:
		return "not ready"
	case TLSModePSK:
		return "PSK"
	case TLSModePKI:
		return "PKI"
	}
	return fmt.Sprintf("TLS mode %d", uint32(m))
}

// GetProvisioningTLSMode asks for the provisioning TLS mode (§3,
// 0x0400002B).
type GetProvisioningTLSMode struct{ emptyBody }

// Command is 0x0400002B.
func (GetProvisioningTLSMode) Command() Command { return CmdGetProvisioningTLSMode }

// Execute sends the command.
func (c GetProvisioningTLSMode) Execute(ctx context.Context, t heci.Transport) (*GetProvisioningTLSModeResponse, error) {
	return execute[GetProvisioningTLSModeResponse](ctx, t, c)
}

// GetProvisioningTLSModeResponse: u32 mode (§3).
type GetProvisioningTLSModeResponse struct {
	Mode TLSMode
}

func (r *GetProvisioningTLSModeResponse) AppendBody(b []byte) []byte {
	return le.AppendUint32(b, uint32(r.Mode))
}

func (r *GetProvisioningTLSModeResponse) DecodeBody(cmd Command, b []byte) error {
	if err := needLen(cmd, b, 4); err != nil {
		return err
	}
	r.Mode = TLSMode(le.Uint32(b)) // 0x00, 4 bytes
	return nil
}

// ---- EnumerateHashHandles / GetCertHashEntry ----

// EnumerateHashHandles lists the handles of the trusted root certificate
// hashes (§3, 0x0400002C).
type EnumerateHashHandles struct{ emptyBody }

// Command is 0x0400002C.
func (EnumerateHashHandles) Command() Command { return CmdEnumerateHashHandles }

// Execute sends the command.
func (c EnumerateHashHandles) Execute(ctx context.Context, t heci.Transport) (*EnumerateHashHandlesResponse, error) {
	return execute[EnumerateHashHandlesResponse](ctx, t, c)
}

// EnumerateHashHandlesResponse: u32 count, u32 handles[count] (§3).
type EnumerateHashHandlesResponse struct {
	Handles []uint32
}

func (r *EnumerateHashHandlesResponse) AppendBody(b []byte) []byte {
	b = le.AppendUint32(b, uint32(len(r.Handles)))
	for _, h := range r.Handles {
		b = le.AppendUint32(b, h)
	}
	return b
}

func (r *EnumerateHashHandlesResponse) DecodeBody(cmd Command, b []byte) error {
	if len(b) < 4 {
		return &ProtocolError{Command: cmd, Field: "body length", Got: uint64(len(b)), Want: 4, Why: "too short for the count"}
	}
	n := le.Uint32(b[0:4]) // 0x00, 4 bytes
	if uint64(n)*4 != uint64(len(b)-4) {
		return &ProtocolError{Command: cmd, Field: "handle count", Got: uint64(n), Want: uint64(len(b)-4) / 4, Why: fmt.Sprintf("%d bytes of handles follow", len(b)-4)}
	}
	r.Handles = make([]uint32, n)
	for i := range r.Handles {
		r.Handles[i] = le.Uint32(b[4+4*i:]) // 0x04 + 4i, 4 bytes
	}
	return nil
}

// HashAlgorithm is a certificate hash algorithm (§3; the value 3 is
// UNCONFIRMED: SHA-384 or SHA-512).
type HashAlgorithm uint8

// Hash algorithms (§3).
const (
	HashMD5    HashAlgorithm = 0
	HashSHA1   HashAlgorithm = 1
	HashSHA256 HashAlgorithm = 2
	HashSHA384 HashAlgorithm = 3 // UNCONFIRMED: specs/heci.md §3 says SHA-384/512
)

func (a HashAlgorithm) String() string {
	switch a {
	case HashMD5:
		return "MD5"
	case HashSHA1:
		return "SHA-1"
	case HashSHA256:
		return "SHA-256"
	case HashSHA384:
		return "SHA-384"
	}
	return fmt.Sprintf("hash algorithm %d", uint8(a))
}

// Size is the digest length in bytes, or 64 for an unknown algorithm.
func (a HashAlgorithm) Size() int {
	switch a {
	case HashMD5:
		return 16
	case HashSHA1:
		return 20
	case HashSHA256:
		return 32
	case HashSHA384:
		return 48
	}
	return 64
}

// GetCertHashEntry reads one trusted root certificate hash (§3,
// 0x0400002D).
type GetCertHashEntry struct {
	Handle uint32
}

// Command is 0x0400002D.
func (GetCertHashEntry) Command() Command { return CmdGetCertHashEntry }

func (c GetCertHashEntry) AppendBody(b []byte) []byte { return le.AppendUint32(b, c.Handle) }

// DecodeBody parses the request body (for the simulator).
func (c *GetCertHashEntry) DecodeBody(cmd Command, b []byte) error {
	if err := needLen(cmd, b, 4); err != nil {
		return err
	}
	c.Handle = le.Uint32(b) // 0x00, 4 bytes
	return nil
}

// Execute sends the command.
func (c GetCertHashEntry) Execute(ctx context.Context, t heci.Transport) (*GetCertHashEntryResponse, error) {
	return execute[GetCertHashEntryResponse](ctx, t, c)
}

// GetCertHashEntryResponse: u32 isDefault, u32 isActive, u8 hash[64],
// u8 algorithm, u16 nameLen, name (§3). A hash that is not a default one
// was added by a user (setup.bin, MEBx or WS-Man).
type GetCertHashEntryResponse struct {
	IsDefault bool
	IsActive  bool
	Hash      [64]byte
	Algorithm HashAlgorithm
	Name      string
}

// Digest is the hash cut to its algorithm's length.
func (r *GetCertHashEntryResponse) Digest() []byte { return r.Hash[:r.Algorithm.Size()] }

func (r *GetCertHashEntryResponse) AppendBody(b []byte) []byte {
	b = appendBool(b, r.IsDefault)
	b = appendBool(b, r.IsActive)
	b = append(b, r.Hash[:]...)
	b = append(b, byte(r.Algorithm))
	return appendStr(b, r.Name)
}

func (r *GetCertHashEntryResponse) DecodeBody(cmd Command, b []byte) error {
	if len(b) < 4+4+64+1+2 {
		return &ProtocolError{Command: cmd, Field: "body length", Got: uint64(len(b)), Want: 75, Why: "too short for the fixed fields"}
	}
	rb := rbuf{cmd: cmd, b: b}
	r.IsDefault = rb.u32("isDefault") != 0          // 0x00, 4 bytes
	r.IsActive = rb.u32("isActive") != 0            // 0x04, 4 bytes
	copy(r.Hash[:], rb.take(64, "hash"))            // 0x08, 64 bytes
	r.Algorithm = HashAlgorithm(rb.u8("algorithm")) // 0x48, 1 byte
	r.Name = rb.str("name")                         // 0x49, u16 length + bytes
	return rb.done()
}

// ---- GetZeroTouchEnabled ----

// GetZeroTouchEnabled asks whether remote configuration ("zero touch") is
// enabled (§3, 0x04000030).
type GetZeroTouchEnabled struct{ emptyBody }

// Command is 0x04000030.
func (GetZeroTouchEnabled) Command() Command { return CmdGetZeroTouchEnabled }

// Execute sends the command.
func (c GetZeroTouchEnabled) Execute(ctx context.Context, t heci.Transport) (*GetZeroTouchEnabledResponse, error) {
	return execute[GetZeroTouchEnabledResponse](ctx, t, c)
}

// GetZeroTouchEnabledResponse: u32 bool (§3).
type GetZeroTouchEnabledResponse struct {
	Enabled bool
}

func (r *GetZeroTouchEnabledResponse) AppendBody(b []byte) []byte { return appendBool(b, r.Enabled) }

func (r *GetZeroTouchEnabledResponse) DecodeBody(cmd Command, b []byte) error {
	if err := needLen(cmd, b, 4); err != nil {
		return err
	}
	r.Enabled = le.Uint32(b) != 0 // 0x00, 4 bytes
	return nil
}

// ---- GetPKIFQDNSuffix ----

// GetPKIFQDNSuffix asks for the DNS suffix used for PKI provisioning (§3,
// 0x04000036).
type GetPKIFQDNSuffix struct{ emptyBody }

// Command is 0x04000036.
func (GetPKIFQDNSuffix) Command() Command { return CmdGetPKIFQDNSuffix }

// Execute sends the command.
func (c GetPKIFQDNSuffix) Execute(ctx context.Context, t heci.Transport) (*GetPKIFQDNSuffixResponse, error) {
	return execute[GetPKIFQDNSuffixResponse](ctx, t, c)
}

// GetPKIFQDNSuffixResponse: string (§3).
type GetPKIFQDNSuffixResponse struct {
	Suffix string
}

func (r *GetPKIFQDNSuffixResponse) AppendBody(b []byte) []byte { return appendStr(b, r.Suffix) }

func (r *GetPKIFQDNSuffixResponse) DecodeBody(cmd Command, b []byte) error {
	rb := rbuf{cmd: cmd, b: b}
	r.Suffix = rb.str("suffix") // 0x00, u16 length + bytes
	return rb.done()
}

// ---- GetRemoteAccessConnectionStatus ----

// GetRemoteAccessConnectionStatus asks for the CIRA connection status
// (§3, 0x04000046).
type GetRemoteAccessConnectionStatus struct{ emptyBody }

// Command is 0x04000046.
func (GetRemoteAccessConnectionStatus) Command() Command { return CmdGetRemoteAccessConnectionStatus }

// Execute sends the command.
func (c GetRemoteAccessConnectionStatus) Execute(ctx context.Context, t heci.Transport) (*GetRemoteAccessConnectionStatusResponse, error) {
	return execute[GetRemoteAccessConnectionStatusResponse](ctx, t, c)
}

// GetRemoteAccessConnectionStatusResponse: u32 network, u32 remote,
// u32 trigger, string MPS host (§3).
type GetRemoteAccessConnectionStatusResponse struct {
	Network uint32
	Remote  uint32
	Trigger uint32
	MPSHost string
}

func (r *GetRemoteAccessConnectionStatusResponse) AppendBody(b []byte) []byte {
	b = le.AppendUint32(b, r.Network)
	b = le.AppendUint32(b, r.Remote)
	b = le.AppendUint32(b, r.Trigger)
	return appendStr(b, r.MPSHost)
}

func (r *GetRemoteAccessConnectionStatusResponse) DecodeBody(cmd Command, b []byte) error {
	if len(b) < 14 {
		return &ProtocolError{Command: cmd, Field: "body length", Got: uint64(len(b)), Want: 14, Why: "too short for the fixed fields"}
	}
	rb := rbuf{cmd: cmd, b: b}
	r.Network = rb.u32("network")  // 0x00, 4 bytes
	r.Remote = rb.u32("remote")    // 0x04, 4 bytes
	r.Trigger = rb.u32("trigger")  // 0x08, 4 bytes
	r.MPSHost = rb.str("MPS host") // 0x0C, u16 length + bytes
	return rb.done()
}

// ---- GetLANInterfaceSettings ----

// LAN interface indexes (§3).
const (
	InterfaceWired    uint32 = 0
	InterfaceWireless uint32 = 1
)

// GetLANInterfaceSettings reads one network interface's settings (§3,
// 0x04000048).
type GetLANInterfaceSettings struct {
	Index uint32 // InterfaceWired or InterfaceWireless
}

// Command is 0x04000048.
func (GetLANInterfaceSettings) Command() Command { return CmdGetLANInterfaceSettings }

func (c GetLANInterfaceSettings) AppendBody(b []byte) []byte { return le.AppendUint32(b, c.Index) }

// DecodeBody parses the request body (for the simulator).
func (c *GetLANInterfaceSettings) DecodeBody(cmd Command, b []byte) error {
	if err := needLen(cmd, b, 4); err != nil {
		return err
	}
	c.Index = le.Uint32(b) // 0x00, 4 bytes
	return nil
}

// Execute sends the command.
func (c GetLANInterfaceSettings) Execute(ctx context.Context, t heci.Transport) (*GetLANInterfaceSettingsResponse, error) {
	return execute[GetLANInterfaceSettingsResponse](ctx, t, c)
}

// GetLANInterfaceSettingsResponse: u32 enabled, u32 ipv4, u32 dhcpEnabled,
// u8 dhcpMode, u8 linkUp, u8 mac[6] (§3).
type GetLANInterfaceSettingsResponse struct {
	Enabled     bool
	IPv4        uint32 // 0x01020304 is 1.2.3.4
	DHCPEnabled bool
	DHCPMode    uint8
	LinkUp      bool
	MAC         MAC
}

// Addr is the IPv4 address.
func (r *GetLANInterfaceSettingsResponse) Addr() netip.Addr {
	return netip.AddrFrom4([4]byte{byte(r.IPv4 >> 24), byte(r.IPv4 >> 16), byte(r.IPv4 >> 8), byte(r.IPv4)})
}

func (r *GetLANInterfaceSettingsResponse) AppendBody(b []byte) []byte {
	b = appendBool(b, r.Enabled)
	b = le.AppendUint32(b, r.IPv4)
	b = appendBool(b, r.DHCPEnabled)
	link := byte(0)
	if r.LinkUp {
		link = 1
	}
	b = append(b, r.DHCPMode, link)
	return append(b, r.MAC[:]...)
}

func (r *GetLANInterfaceSettingsResponse) DecodeBody(cmd Command, b []byte) error {
	if err := needLen(cmd, b, 20); err != nil {
		return err
	}
	r.Enabled = le.Uint32(b[0:4]) != 0      // 0x00, 4 bytes
	r.IPv4 = le.Uint32(b[4:8])              // 0x04, 4 bytes
	r.DHCPEnabled = le.Uint32(b[8:12]) != 0 // 0x08, 4 bytes
	r.DHCPMode = b[12]                      // 0x0C, 1 byte
	r.LinkUp = b[13] != 0                   // 0x0D, 1 byte
	copy(r.MAC[:], b[14:20])                // 0x0E, 6 bytes
	return nil
}

// ---- GetUUID ----

// GetUUID asks for the device UUID (§3, 0x0400005C).
type GetUUID struct{ emptyBody }

// Command is 0x0400005C.
func (GetUUID) Command() Command { return CmdGetUUID }

// Execute sends the command.
func (c GetUUID) Execute(ctx context.Context, t heci.Transport) (*GetUUIDResponse, error) {
	return execute[GetUUIDResponse](ctx, t, c)
}

// GetUUIDResponse: u8 uuid[16], SMBIOS byte order (§3).
type GetUUIDResponse struct {
	UUID UUID
}

func (r *GetUUIDResponse) AppendBody(b []byte) []byte { return append(b, r.UUID[:]...) }

func (r *GetUUIDResponse) DecodeBody(cmd Command, b []byte) error {
	if err := needLen(cmd, b, 16); err != nil {
		return err
	}
	copy(r.UUID[:], b) // 0x00, 16 bytes
	return nil
}

// ---- GetLocalSystemAccount ----

// GetLocalSystemAccount reads the local OS account AMT created for host
// software (§3, 0x04000067). The request carries 40 reserved bytes.
type GetLocalSystemAccount struct{}

// Command is 0x04000067.
func (GetLocalSystemAccount) Command() Command { return CmdGetLocalSystemAccount }

func (GetLocalSystemAccount) AppendBody(b []byte) []byte { return append(b, make([]byte, 40)...) }

// DecodeBody parses the request body (for the simulator).
func (*GetLocalSystemAccount) DecodeBody(cmd Command, b []byte) error { return needLen(cmd, b, 40) }

// Execute sends the command.
func (c GetLocalSystemAccount) Execute(ctx context.Context, t heci.Transport) (*GetLocalSystemAccountResponse, error) {
	return execute[GetLocalSystemAccountResponse](ctx, t, c)
}

// GetLocalSystemAccountResponse: char user[33], char password[33], each
// NUL-terminated (§3). The password never prints.
type GetLocalSystemAccountResponse struct {
	User     string
	Password Secret
}

func (r *GetLocalSystemAccountResponse) AppendBody(b []byte) []byte {
	var f [66]byte
	putCstr(f[0:33], r.User, true)
	putCstr(f[33:66], r.Password.s, true)
	return append(b, f[:]...)
}

func (r *GetLocalSystemAccountResponse) DecodeBody(cmd Command, b []byte) error {
	if err := needLen(cmd, b, 66); err != nil {
		return err
	}
	for _, f := range []struct {
		name string
		b    []byte
	}{{"user", b[0:33]}, {"password", b[33:66]}} {
		if bytes.IndexByte(f.b, 0) < 0 {
			return &ProtocolError{Command: cmd, Field: f.name + " length", Got: 33, Want: 32, Why: "no NUL terminator"}
		}
	}
	r.User = cstr(b[0:33])              // 0x00, 33 bytes
	r.Password = Secret{cstr(b[33:66])} // 0x21, 33 bytes
	return nil
}

// ---- GetControlMode ----

// ControlMode is AMT's control mode (§3, AMT 7+).
type ControlMode uint32

// Control modes (§3).
const (
	ControlPre    ControlMode = 0
	ControlClient ControlMode = 1
	ControlAdmin  ControlMode = 2
)

func (m ControlMode) String() string {
	switch m {
	case ControlPre:
		return "pre-provisioning"
	case ControlClient:
		return "client control"
	case ControlAdmin:
		return "admin control"
	}
	return fmt.Sprintf("control mode %d", uint32(m))
}

// GetControlMode asks for the control mode (§3, 0x0400006B).
type GetControlMode struct{ emptyBody }

// Command is 0x0400006B.
func (GetControlMode) Command() Command { return CmdGetControlMode }

// Execute sends the command.
func (c GetControlMode) Execute(ctx context.Context, t heci.Transport) (*GetControlModeResponse, error) {
	return execute[GetControlModeResponse](ctx, t, c)
}

// GetControlModeResponse: u32 mode (§3).
type GetControlModeResponse struct {
	Mode ControlMode
}

func (r *GetControlModeResponse) AppendBody(b []byte) []byte {
	return le.AppendUint32(b, uint32(r.Mode))
}

func (r *GetControlModeResponse) DecodeBody(cmd Command, b []byte) error {
	if err := needLen(cmd, b, 4); err != nil {
		return err
	}
	r.Mode = ControlMode(le.Uint32(b)) // 0x00, 4 bytes
	return nil
}
