// Package ledger is the ledger on a provisioning stick: which setup.bin
// record went to which machine, written by the agent on the target
// (initramfs/agent) and read by the kiosk when the stick comes back
// (DESIGN.md §3 decision 7, issue 8).
//
// The file (provstick/ledger.jsonl on the stick) is JSON lines: one Record a
// line, never rewritten, appended with write + fsync of the file and its
// directory. Each line ends with its own checksum as the last member:
//
//	{"v":1,"seq":3,...,"sum":"sha256:<64 hex>"}
//
// The checksum is the SHA-256 of the line's exact bytes with the
// `,"sum":"sha256:…"` member cut out (so `{"v":1,...}` as written, no
// re-encoding). SHA-256 rather than CRC32C: one line is written per boot, so
// speed does not matter, and anyone can check a line with jq and sha256sum;
// neither is a signature — the stick is not a trusted device.
//
// A power cut during an append leaves at most the last line torn (no
// newline, a short line, or NUL bytes the filesystem allocated but never
// filled). Read reports it as a finding and skips it; Append starts the next
// line on a fresh line and never touches earlier bytes.
//
// No record carries a PPS or a password: the PID alone is not a secret (it
// travels in clear in the hello).
package ledger

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Version is the record format this package writes (Record.V).
const Version = 1

// FileName is where the ledger lives on the stick, relative to the FAT root.
const FileName = "provstick/ledger.jsonl"

// MaxLineLen bounds one line; longer lines are reported and skipped.
const MaxLineLen = 64 << 10

// Sentinel errors.
var (
	ErrFormat   = errors.New("ledger: not a valid ledger line")
	ErrChecksum = errors.New("ledger: line checksum does not match")
	ErrVersion  = errors.New("ledger: unknown record version")
)

// Case is what the agent concluded from setup.bin's consumed counter and
// the ledger's last entry.
type Case string

// The cases. Anything other than CaseNormal is shown to the technician.
const (
	// CaseNormal: exactly one record consumed since the last entry; record
	// consumed-1 went to this machine.
	CaseNormal Case = "normal"
	// CaseMultiple: more than one consumed since the last entry; the stick
	// was used on machines that never booted it. The last one is attributed
	// to this machine; the others are listed in Record.Skipped.
	CaseMultiple Case = "multiple-consumed"
	// CaseRollback: the counter is lower than the ledger's: someone restored
	// an older setup.bin. Nothing is attributed.
	CaseRollback Case = "counter-rolled-back"
	// CaseNone: nothing consumed since the last entry (the BIOS did not take
	// a record, or the stick was booted twice).
	CaseNone Case = "nothing-consumed"
	// CaseNoConsume: setup.bin has the do-not-consume flag; the record
	// attributed is the one the BIOS reads every time.
	CaseNoConsume Case = "no-consume"
	// CaseUnknown: setup.bin could not be read.
	CaseUnknown Case = "unknown"
)

// Record is one ledger line. JSON names are stable; new optional fields may
// be added without a version change, removing or changing one needs V+1.
type Record struct {
	V     int       `json:"v"`
	Seq   uint64    `json:"seq"`  // 1, 2, 3… per stick, strictly increasing
	Time  time.Time `json:"time"` // the target's clock, UTC; may be wrong
	Stick string    `json:"stick"`
	Case  Case      `json:"case"`

	// Consumed is setup.bin's consumed counter as read at boot;
	// PrevConsumed the counter recorded by the previous entry (nil for
	// the first).
	Consumed     uint32  `json:"consumed"`
	PrevConsumed *uint32 `json:"prev_consumed,omitempty"`
	// Record is the 1-based record number in the batch attributed to this
	// machine (0: none), Index its 0-based position in setup.bin.
	Record int    `json:"record,omitempty"`
	Index  int    `json:"index"`
	PID    string `json:"pid,omitempty"` // display form 0000-037M
	// Kind is the attributed record's kind when the agent could tell:
	// "psk" (PID/PPS) or "pki" (a site root hash, no PID). Empty in lines
	// written before the field existed.
	Kind string `json:"kind,omitempty"`
	// Skipped lists the record numbers consumed by machines that never
	// booted the stick (CaseMultiple).
	Skipped []int `json:"skipped,omitempty"`
	// NextPID is the PID of the record the BIOS hands out next, so the next
	// boot can name it after the BIOS has zeroed its body.
	NextPID string `json:"next_pid,omitempty"`

	AMT   *AMT     `json:"amt,omitempty"`
	DMI   *DMI     `json:"dmi,omitempty"`
	MACs  []string `json:"macs,omitempty"` // host NICs, lower-case colon form
	TPM   *TPM     `json:"tpm,omitempty"`
	Agent string   `json:"agent,omitempty"` // agent version

	// Activation is the host-based activation the stick's agent.json asked
	// for (nil: none asked).
	Activation *Activation `json:"activation,omitempty"`

	// KioskCheck is whether the machine could reach the kiosk's hello
	// port the way AMT finds it (agent.json check_kiosk; nil: not asked).
	// Added after v1 without a version change: older readers ignore it.
	KioskCheck *KioskCheck `json:"kiosk_check,omitempty"`

	// Missing names each source that gave nothing, with why.
	Missing []Missing `json:"missing,omitempty"`

	// FullSum is set only on a line made for a QR code (ForQR): the Sum of
	// the full ledger line on the stick that this shorter line stands
	// for. The kiosk treats both as the same line.
	FullSum string `json:"full_sum,omitempty"`

	// Sum is set by Marshal and checked by Read; callers leave it empty.
	Sum string `json:"sum,omitempty"`
}

// AMT is what the ME said over HECI.
type AMT struct {
	UUID              string `json:"uuid"`
	AMTVersion        string `json:"amt_version,omitempty"`
	FirmwareVersion   string `json:"fw_version,omitempty"`
	BIOSVersion       string `json:"bios_version,omitempty"`
	BuildNumber       string `json:"build,omitempty"`
	SKU               string `json:"sku,omitempty"`
	ProvisioningState string `json:"provisioning_state,omitempty"`
	ProvisioningMode  string `json:"provisioning_mode,omitempty"`
	ControlMode       string `json:"control_mode,omitempty"`
	TLSMode           string `json:"tls_mode,omitempty"`
	DNSSuffix         string `json:"dns_suffix,omitempty"`
	WiredMAC          string `json:"wired_mac,omitempty"`
	// RootHashes are the ME's trusted root certificate hashes as read at
	// boot (before any activation), so that reconciliation can confirm a
	// PKI stick added the site root.
	RootHashes []RootHash `json:"root_hashes,omitempty"`
}

// RootHash is one trusted root certificate hash in the ME.
type RootHash struct {
	Name      string `json:"name"`
	Algorithm string `json:"alg"`  // SHA-256, SHA-1, SHA-384 (amtinfo's names)
	Hash      string `json:"hash"` // lower-case hex
	Default   bool   `json:"default,omitempty"`
	UserAdded bool   `json:"user_added,omitempty"`
	Active    bool   `json:"active"`
}

// Activation results.
const (
	ActivationActivated = "activated" // the machine is now in client control mode
	ActivationFailed    = "failed"    // Setup was tried and failed, or its outcome is unknown
	ActivationSkipped   = "skipped"   // not tried: no ME, or already provisioned
)

// Activation is the outcome of host-based activation (never a password).
type Activation struct {
	Mode   string `json:"mode"`   // "client-control"
	Result string `json:"result"` // ActivationActivated, ActivationFailed, ActivationSkipped
	// Password says where the admin password came from, never what it is:
	// "derived:<key id>" (per machine from the site secret and the AMT
	// UUID) or "fixed:<key id>".
	Password          string `json:"password,omitempty"`
	Realm             string `json:"realm,omitempty"`
	ControlMode       string `json:"control_mode,omitempty"`       // after the attempt
	ProvisioningState string `json:"provisioning_state,omitempty"` // after the attempt
	Error             string `json:"error,omitempty"`
	ElapsedMS         int64  `json:"elapsed_ms,omitempty"`
}

// Kiosk check results (KioskCheck.Result): "reachable", or the step that
// failed. Readers must accept values they do not know (a newer agent may
// add some) and treat them as a failure.
const (
	KioskReachable   = "reachable"     // TCP connection to the hello port accepted
	KioskNoNIC       = "no-nic"        // no wired interface at all (no driver for the NIC)
	KioskNoLink      = "no-link"       // no wired interface has a carrier (cable?)
	KioskNoDHCP      = "no-dhcp"       // a link, but no DHCP answer
	KioskNoDNSServer = "no-dns-server" // the lease names no DNS server (option 6)
	KioskNoDomain    = "no-domain"     // neither the ME nor DHCP option 15 gives a domain
	KioskNotResolved = "not-resolved"  // provisionserver.<domain> has no address
	KioskRefused     = "refused"       // the address answered, nothing listens on the port
	KioskTimeout     = "timeout"       // the connection attempt got no answer in time
	KioskError       = "error"         // anything else (Error says what)
)

// KioskCheck is the agent's reachability check of the kiosk
// (../../../shared/specs/amt-psk.md §1): a DHCPv4 lease on a wired
// interface, provisionserver.<domain> resolved with the lease's DNS
// server, a TCP connection to the address's hello port closed without a
// hello. Fields after the failing step are empty.
type KioskCheck struct {
	Result    string `json:"result"`              // KioskReachable or the failing step
	Interface string `json:"interface,omitempty"` // e.g. "eth0"
	MAC       string `json:"mac,omitempty"`
	Address   string `json:"address,omitempty"` // the lease, CIDR form
	DHCP      string `json:"dhcp,omitempty"`    // the DHCP server's identifier
	DNS       string `json:"dns,omitempty"`     // the DNS server asked
	// Domain is the suffix used and DomainSource where it came from:
	// "recipe" (check_kiosk.domain), "me" (the ME's DNS suffix, what AMT
	// uses first) or "dhcp" (option 15). DHCPDomain is option 15 when it
	// differs from Domain.
	Domain       string `json:"domain,omitempty"`
	DomainSource string `json:"domain_source,omitempty"`
	DHCPDomain   string `json:"dhcp_domain,omitempty"`
	Name         string `json:"name,omitempty"`  // provisionserver.<domain>
	Kiosk        string `json:"kiosk,omitempty"` // address:port connected to (or tried)
	// Static names the setup.bin record whose static SCS address (2/17,
	// 2/18) Kiosk is, e.g. "setup.bin record 17"; then nothing was looked
	// up, as AMT looks nothing up.
	Static    string `json:"static,omitempty"`
	Error     string `json:"error,omitempty"`
	ElapsedMS int64  `json:"elapsed_ms,omitempty"`
}

// Via says how the check found the kiosk: the name it looked up, or "the
// static address in setup.bin record N"; "" if it got that far in neither.
func (k *KioskCheck) Via() string {
	if k.Static != "" {
		return "the static address in " + k.Static
	}
	return k.Name
}

// DMI is /sys/class/dmi/id.
type DMI struct {
	Vendor     string `json:"vendor,omitempty"`
	Model      string `json:"model,omitempty"`
	Serial     string `json:"serial,omitempty"`
	SystemUUID string `json:"system_uuid,omitempty"`
}

// TPM is the endorsement key's identity.
type TPM struct {
	// EKSHA256 is the SHA-256 of the RSA EK public key, DER
	// SubjectPublicKeyInfo, hex.
	EKSHA256 string `json:"ek_sha256"`
	EKCert   bool   `json:"ek_cert"` // an EK certificate is in NV
	Device   string `json:"device,omitempty"`
	// The EK certificate when one is in NV and readable: its DER bytes
	// (base64 in JSON), SHA-256 (hex) and issuer; EKCertError says why a
	// certificate that is there could not be read.
	EKCertDER    []byte `json:"ek_cert_der,omitempty"`
	EKCertSHA256 string `json:"ek_cert_sha256,omitempty"`
	EKCertIssuer string `json:"ek_cert_issuer,omitempty"`
	EKCertError  string `json:"ek_cert_error,omitempty"`
}

// Missing is one source that gave nothing.
type Missing struct {
	Source string `json:"source"` // amt, dmi, nic, tpm, tpm-ek-cert, pid, setupbin
	Reason string `json:"reason"`
}

const sumPrefix = `,"sum":"sha256:`

// Marshal returns r as one ledger line with its checksum and a final
// newline. r.V zero is written as Version; r.Sum is ignored.
func Marshal(r *Record) ([]byte, error) {
	c := *r
	if c.V == 0 {
		c.V = Version
	}
	c.Sum = ""
	c.Time = c.Time.UTC()
	b, err := json.Marshal(&c)
	if err != nil {
		return nil, fmt.Errorf("encoding ledger record %d: %w", r.Seq, err)
	}
	if len(b) < 2 || b[len(b)-1] != '}' || bytes.IndexByte(b, '\n') >= 0 {
		return nil, fmt.Errorf("encoding ledger record %d: unexpected JSON: %w", r.Seq, ErrFormat)
	}
	sum := sha256.Sum256(b)
	out := make([]byte, 0, len(b)+len(sumPrefix)+len(sum)*2+3)
	out = append(out, b[:len(b)-1]...)
	out = append(out, sumPrefix...)
	out = hex.AppendEncode(out, sum[:])
	out = append(out, '"', '}', '\n')
	if len(out) > MaxLineLen {
		return nil, fmt.Errorf("encoding ledger record %d: %d bytes, more than %d: %w", r.Seq, len(out), MaxLineLen, ErrFormat)
	}
	return out, nil
}

// Unmarshal parses and verifies one line (without its newline).
func Unmarshal(line []byte) (*Record, error) {
	const sumLen = len(sumPrefix) + 64 + 2 // prefix, hex, `"}`
	if len(line) < sumLen+2 || line[0] != '{' || !bytes.HasSuffix(line, []byte(`"}`)) {
		return nil, fmt.Errorf("%w: no trailing sum member", ErrFormat)
	}
	at := len(line) - sumLen
	if !bytes.Equal(line[at:at+len(sumPrefix)], []byte(sumPrefix)) {
		return nil, fmt.Errorf("%w: no trailing sum member", ErrFormat)
	}
	want, err := hex.DecodeString(string(line[at+len(sumPrefix) : len(line)-2]))
	if err != nil {
		return nil, fmt.Errorf("%w: sum is not hex", ErrFormat)
	}
	body := make([]byte, 0, at+1)
	body = append(append(body, line[:at]...), '}')
	got := sha256.Sum256(body)
	if !bytes.Equal(got[:], want) {
		return nil, ErrChecksum
	}
	var probe struct {
		V *int `json:"v"`
	}
	if err := json.Unmarshal(body, &probe); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrFormat, err)
	}
	if probe.V == nil {
		return nil, fmt.Errorf("%w: no v member", ErrFormat)
	}
	if *probe.V != Version {
		return nil, fmt.Errorf("%w: v=%d, this reader knows %d", ErrVersion, *probe.V, Version)
	}
	var r Record
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrFormat, err)
	}
	r.Sum = "sha256:" + hex.EncodeToString(want)
	return &r, nil
}
