package setupbin

import (
	"fmt"
	"slices"
)

// PKI describes a PKI provisioning record (specs/setupbin.md §3,
// specs/pki.md §2): the MEBx passwords, manageability = AMT, the site's
// root hash added and user hashes enabled, the PKI DNS suffix, the
// configuration server FQDN, remote configuration enabled and provisioning
// started. Record builds the entries; (*Record).PKI reads them back.
// Unlike PSK it carries no PID/PPS, so profile amt11+ takes it.
type PKI struct {
	CurrentPassword Password // 1/1; "" means "admin" (factory-fresh)
	NewPassword     Password // 1/2; §4.2 rules
	// RootHash is the site root's certificate hash, added by 2/8 and
	// enabled by 2/7 = 1. SHA-256 (32 bytes) or SHA-384 (48) need format
	// 3.0+, which both PKI profiles write; SHA-1 (20) is allowed for
	// completeness.
	RootHash []byte
	// RootName names the hash in the ME (≤ 32 printable ASCII); "" →
	// "provstick site root".
	RootName string
	Suffix   string // 2/3 PKI DNS suffix; required
	// ServerFQDN is 2/4; "" → none (the machine looks for
	// provisionserver.<suffix>, specs/amt-psk.md §1).
	ServerFQDN string
	// NoRemoteConfig leaves 2/5 out (it is written as 1 by default).
	NoRemoteConfig bool
	// NoStart leaves 2/28 out (it is written as 1, "start", by default).
	NoStart bool
}

// DefaultRootName is the 2/8 name when PKI.RootName is empty.
const DefaultRootName = "provstick site root"

// Record checks p and returns its record, entries in (module, variable)
// order, so 2/28 follows 2/3 and 2/4 as the MEBx wants and 2/7 (enable)
// precedes 2/8 (add). With a profile, variables it does not accept are
// refused.
func (p *PKI) Record(prof *Profile) (Record, error) {
	cur := p.CurrentPassword
	if cur == "" {
		cur = DefaultMEBxPassword
	}
	if err := ValidateCurrentPassword(cur); err != nil {
		return Record{}, err
	}
	if err := ValidateMEBxPassword(p.NewPassword); err != nil {
		return Record{}, err
	}
	alg := HashAlg(0)
	switch len(p.RootHash) {
	case 20:
		alg = HashSHA1
	case 32:
		alg = HashSHA256
	case 48:
		alg = HashSHA384
	default:
		return Record{}, &ValueError{Field: "root hash", Value: fmt.Sprintf("%d bytes", len(p.RootHash)), Reason: "want 20 (SHA-1), 32 (SHA-256) or 48 (SHA-384) bytes", Err: ErrValue}
	}
	name := p.RootName
	if name == "" {
		name = DefaultRootName
	}
	if len(name) > 32 || printableASCII([]byte(name)) >= 0 {
		return Record{}, &ValueError{Field: "root hash name", Value: name, Reason: "want at most 32 printable ASCII characters", Err: ErrValue}
	}
	if p.Suffix == "" {
		return Record{}, &ValueError{Field: "PKI DNS suffix", Reason: "required", Err: ErrValue}
	}
	es := []Entry{
		PasswordEntry(VarCurrentPassword, cur),
		PasswordEntry(VarNewPassword, p.NewPassword),
		U8Entry(VarManageability, 1),
		TextEntry(VarPKIDNSSuffix, p.Suffix),
	}
	if p.ServerFQDN != "" {
		es = append(es, TextEntry(VarConfigServerFQDN, p.ServerFQDN))
	}
	if !p.NoRemoteConfig {
		es = append(es, U8Entry(VarRemoteConfig, 1))
	}
	es = append(es, U8Entry(VarUserHashes, 1), HashEntry(UserHash{Alg: alg, Hash: slices.Clone(p.RootHash), Name: name}))
	if !p.NoStart {
		es = append(es, U8Entry(VarProvisioningHalt, 1))
	}
	for i := range es {
		e := &es[i]
		if prof != nil && !prof.Accepts(e.Var) {
			return Record{}, fmt.Errorf("setupbin: building PKI record: %s is not accepted by profile %s: %w", e.Var, prof.Name, ErrValue)
		}
		if i < 2 {
			continue // passwords checked above
		}
		if pr := checkValue(e, LookupVar(e.Var), V4_0); pr != nil {
			return Record{}, fmt.Errorf("setupbin: building PKI record: %s: %w", pr.msg, ErrValue)
		}
	}
	return Record{Entries: es}, nil
}

// PKI reads a PKI record back. It fails when a value does not decode or
// the record has no PKI DNS suffix or no added hash.
func (r *Record) PKI() (PKI, error) {
	var p PKI
	var hasHash, remote, start bool
	for _, e := range r.Entries {
		var err error
		switch e.Var {
		case VarCurrentPassword:
			p.CurrentPassword, err = e.Password()
		case VarNewPassword:
			p.NewPassword, err = e.Password()
		case VarPKIDNSSuffix:
			p.Suffix, err = e.Text()
		case VarConfigServerFQDN:
			p.ServerFQDN, err = e.Text()
		case VarRemoteConfig:
			var x uint8
			x, err = e.U8()
			remote = x == 1
		case VarProvisioningHalt:
			var x uint8
			x, err = e.U8()
			start = x == 1
		case VarAddUserHash:
			var h UserHash
			h, err = e.Hash()
			p.RootHash, p.RootName, hasHash = h.Hash, h.Name, true
		}
		if err != nil {
			return PKI{}, fmt.Errorf("setupbin: reading PKI of record %d: %w", r.Index, err)
		}
	}
	if p.Suffix == "" || !hasHash {
		return PKI{}, fmt.Errorf("setupbin: reading PKI of record %d: no PKI DNS suffix or no added root hash: %w", r.Index, ErrValue)
	}
	p.NoRemoteConfig, p.NoStart = !remote, !start
	return p, nil
}
