package setupbin

import (
	"fmt"
	"strings"
)

// Profile is a firmware generation: the format versions its BIOS reads and
// the variables its MEBx accepts (specs/setupbin.md §3, "Profiles"). A
// Writer given a Profile refuses anything else, because an unknown
// variable wastes the record.
type Profile struct {
	Name        string
	Description string
	Versions    []Version // format versions this generation reads
	// DefaultVersion is the version to write when none is chosen.
	DefaultVersion Version
	accept         [3][64]bool
	noManualSetup  bool // newer MEBx aborts on 2/29 = 1
}

// Reads reports whether the generation reads files of version v.
func (p *Profile) Reads(v Version) bool {
	for _, x := range p.Versions {
		if x == v {
			return true
		}
	}
	return false
}

// Accepts reports whether the generation's MEBx accepts variable v.
func (p *Profile) Accepts(v Var) bool {
	m, id := v.Module(), v.ID()
	return m >= 1 && m <= 2 && id < 64 && p.accept[m][id]
}

// PSK reports whether the generation takes PID/PPS (2/1, 2/2).
func (p *Profile) PSK() bool { return p.Accepts(VarPID) && p.Accepts(VarPPS) }

func (p *Profile) String() string { return p.Name }

// checkValue returns a problem when the generation rejects e's value.
func (p *Profile) checkValue(e *Entry) *problem {
	if p.noManualSetup && e.Var == VarManualSetup && len(e.Value) == 1 && e.Value[0] == 1 {
		return &problem{code: CodeProfileValue, msg: fmt.Sprintf("%s = 1: profile %s's MEBx aborts the record on it", e.Var, p.Name)}
	}
	return nil
}

func newProfile(name, desc string, def Version, versions []Version, maxSince Version, except ...Var) *Profile {
	p := &Profile{Name: name, Description: desc, Versions: versions, DefaultVersion: def}
	for i := range catalogue {
		info := &catalogue[i]
		if info.Legacy || info.Since > maxSince {
			continue
		}
		p.accept[info.Var.Module()][info.Var.ID()] = true
	}
	for _, v := range except {
		p.accept[v.Module()][v.ID()] = false
	}
	return p
}

// The profiles. Which versions a generation reads beyond the one it
// introduced is UNCONFIRMED (see specs/setupbin.md §3); the defaults are
// the oldest version that carries a PSK record for the generation.
var (
	// ProfileAMT2to5: AMT 2.x–5.x (2006–2009), formats 1.0, 2.0, 2.1.
	// Default 1.0: a PSK record needs nothing newer; pick 2.1 for the
	// server address, host and domain name, DHCP.
	ProfileAMT2to5 = newProfile("amt2-5", "AMT 2.x to 5.x: formats 1.0, 2.0, 2.1; PSK", V1_0,
		[]Version{V1_0, V2_0, V2_1}, V2_1)
	// ProfileAMT6to10: AMT 6–10 (2010–2015), formats 3.0 and 4.0, PSK and
	// PKI variables. Default 3.0, the format AMT 6 introduced.
	ProfileAMT6to10 = newProfile("amt6-10", "AMT 6 to 10: formats 3.0, 4.0; PSK and PKI", V3_0,
		[]Version{V3_0, V4_0}, V4_0)
	// ProfileAMT11Plus: AMT 11 and later, format 4.0 without PID/PPS
	// (Intel's newest MEBx code aborts on 2/1 and 2/2) and without the
	// firmware update qualifier 1/5; 2/29 = 1 aborts.
	ProfileAMT11Plus = func() *Profile {
		p := newProfile("amt11+", "AMT 11 and later: format 4.0; PKI only, no PID/PPS", V4_0,
			[]Version{V4_0}, V4_0, VarPID, VarPPS, VarFWUpdateQualifier)
		p.noManualSetup = true
		return p
	}()
)

var profiles = []*Profile{ProfileAMT2to5, ProfileAMT6to10, ProfileAMT11Plus}

// Profiles returns every profile, oldest generation first.
func Profiles() []*Profile { return append([]*Profile(nil), profiles...) }

// ProfileByName returns the profile named name ("amt2-5", "amt6-10",
// "amt11+"), case-insensitively.
func ProfileByName(name string) (*Profile, error) {
	for _, p := range profiles {
		if strings.EqualFold(p.Name, name) {
			return p, nil
		}
	}
	names := make([]string, len(profiles))
	for i, p := range profiles {
		names[i] = p.Name
	}
	return nil, &ValueError{Field: "profile", Value: name, Reason: "want one of " + strings.Join(names, ", "), Err: ErrValue}
}

// CheckProfile returns the findings a file gets against profile p: a
// version the generation does not read, variables it does not accept,
// values it rejects. They come on top of r.Findings.
func (r *Reader) CheckProfile(p *Profile) []Finding {
	var fs findings
	if !p.Reads(r.Header.Version) {
		fs.add(CodeProfileVersion, SevError, 0x18, -1, "profile %s's firmware does not read format %s (it reads %s)", p.Name, r.Header.Version, versionList(p.Versions))
	}
	for _, rec := range r.Records {
		for k := range rec.Entries {
			e := &rec.Entries[k]
			if LookupVar(e.Var) == nil {
				continue // already an error finding
			}
			if !p.Accepts(e.Var) {
				fs.add(CodeProfileVariable, SevError, e.Offset, rec.Index, "record %d: %s is not accepted by profile %s: the MEBx aborts the record", rec.Index, e.Var, p.Name)
				continue
			}
			if pr := p.checkValue(e); pr != nil {
				fs.add(pr.code, SevError, e.Offset, rec.Index, "record %d: %s", rec.Index, pr.msg)
			}
		}
	}
	return fs.list
}

func versionList(vs []Version) string {
	s := make([]string, len(vs))
	for i, v := range vs {
		s[i] = v.String()
	}
	return strings.Join(s, ", ")
}
