package setupbin

import (
	"fmt"
	"net/netip"
)

// DHCPMode is the value of 2/13.
type DHCPMode uint8

const (
	DHCPUnset    DHCPMode = 0 // no 2/13 entry
	DHCPDisabled DHCPMode = 1
	DHCPEnabled  DHCPMode = 2
)

// PSK describes a PSK provisioning record: the MEBx passwords, manageability
// = AMT, the PID/PPS pair, and the optional network settings a profile may
// allow. Record builds the entries; (*Record).PSK reads them back. Secret
// fields redact themselves when printed.
type PSK struct {
	CurrentPassword Password   // 1/1; "" means "admin" (factory-fresh)
	NewPassword     Password   // 1/2; §4.2 rules
	PID             PID        // 2/1
	PPS             PPS        // 2/2
	ServerAddr      netip.Addr // 2/17 SCS address; zero value: none
	ServerPort      uint16     // 2/18 SCS port; 0: none
	DomainName      string     // 2/12; "": none
	HostName        string     // 2/11; "": none
	DHCP            DHCPMode   // 2/13; DHCPUnset: none
}

// Record checks p and returns its record: entries sorted by (module,
// variable), values in one allocation. With a profile, variables it does
// not accept are refused; the format version is the Writer's to check.
func (p *PSK) Record(prof *Profile) (Record, error) {
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
	if !p.PID.Valid() {
		return Record{}, &ValueError{Field: "PID", Value: safeASCII(p.PID[:]), Reason: "check character wrong or character outside 0-9A-Z", Err: ErrCheckChar}
	}
	if !p.PPS.Valid() {
		return Record{}, &ValueError{Field: "PPS", Reason: "check character wrong or character outside 0-9A-Z", Err: ErrCheckChar}
	}
	var addr []byte
	if p.ServerAddr.IsValid() {
		addr = AddrEntry(p.ServerAddr).Value
	}
	n := len(cur) + len(p.NewPassword) + 1 + 8 + 32 + len(addr) + 2 + len(p.DomainName) + len(p.HostName) + 1
	ne := 5
	for _, set := range []bool{p.HostName != "", p.DomainName != "", p.DHCP != DHCPUnset, addr != nil, p.ServerPort != 0} {
		if set {
			ne++
		}
	}
	buf := make([]byte, 0, n)
	es := make([]Entry, 0, ne)
	add := func(v Var, b []byte) {
		start := len(buf)
		buf = append(buf, b...)
		es = append(es, Entry{Var: v, Value: buf[start:len(buf):len(buf)]})
	}
	add(VarCurrentPassword, []byte(cur))
	add(VarNewPassword, []byte(p.NewPassword))
	add(VarManageability, []byte{1})
	add(VarPID, p.PID[:])
	add(VarPPS, p.PPS[:])
	if p.HostName != "" {
		add(VarHostName, []byte(p.HostName))
	}
	if p.DomainName != "" {
		add(VarDomainName, []byte(p.DomainName))
	}
	if p.DHCP != DHCPUnset {
		add(VarDHCP, []byte{byte(p.DHCP)})
	}
	if addr != nil {
		add(VarServerAddr, addr)
	}
	if p.ServerPort != 0 {
		add(VarServerPort, le.AppendUint16(nil, p.ServerPort))
	}
	for i := range es {
		e := &es[i]
		info := LookupVar(e.Var)
		if prof != nil && !prof.Accepts(e.Var) {
			return Record{}, fmt.Errorf("setupbin: building PSK record: %s is not accepted by profile %s: %w", e.Var, prof.Name, ErrValue)
		}
		if i < 5 {
			continue // checked above
		}
		if pr := checkValue(e, info, V4_0); pr != nil {
			return Record{}, fmt.Errorf("setupbin: building PSK record: %s: %w", pr.msg, ErrValue)
		}
	}
	return Record{Entries: es}, nil
}

// PSK reads a PSK record back: the passwords, PID, PPS and the optional
// settings. It fails when a value does not decode or PID/PPS is missing.
func (r *Record) PSK() (PSK, error) {
	var p PSK
	var hasPID, hasPPS bool
	for _, e := range r.Entries {
		var err error
		switch e.Var {
		case VarCurrentPassword:
			p.CurrentPassword, err = e.Password()
		case VarNewPassword:
			p.NewPassword, err = e.Password()
		case VarPID:
			p.PID, err = e.PID()
			hasPID = true
		case VarPPS:
			p.PPS, err = e.PPS()
			hasPPS = true
		case VarServerAddr:
			p.ServerAddr, err = e.Addr()
		case VarServerPort:
			p.ServerPort, err = e.U16()
		case VarDomainName:
			p.DomainName, err = e.Text()
		case VarHostName:
			p.HostName, err = e.Text()
		case VarDHCP:
			var x uint8
			x, err = e.U8()
			p.DHCP = DHCPMode(x)
		}
		if err != nil {
			return PSK{}, fmt.Errorf("setupbin: reading PSK of record %d: %w", r.Index, err)
		}
	}
	if !hasPID || !hasPPS {
		return PSK{}, fmt.Errorf("setupbin: reading PSK of record %d: no PID/PPS pair: %w", r.Index, ErrValue)
	}
	return p, nil
}
