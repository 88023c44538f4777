// Package amtsim simulates an Intel AMT machine for tests and demos.
//
// A [Device] is the model of one machine: identity, firmware versions,
// provisioning state and the secrets the BIOS left in the ME. The ME side
// ([MEServer], files me*.go) answers the AMT host interface and MKHI over
// the stream framing of specs/heci.md §5, on a Unix socket or as the host
// end of a QEMU virtio-serial chardev. A network-side simulator (hello,
// TLS-PSK, WS-Man) shares the same Device, so one simulated machine looks
// the same whether it is asked over HECI or over the network.
//
// Where real hardware behaviour is not known the simulator makes a choice
// and says so in a comment; see ../../shared/specs/heci.md for what is
// UNCONFIRMED.
//
// The simulator imports initramfs/heci for the framing and codecs: it is a
// test peer for that package, so it speaks exactly the same bytes; the
// golden vectors in initramfs/heci/testdata, written by hand from the spec,
// keep both honest.
package amtsim

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"

	"github.com/provstick/provstick/initramfs/heci/amthi"
	"github.com/provstick/provstick/initramfs/heci/mkhi"
)

// Secret is a password or key held by the simulated ME (PPS, MEBx
// password, OTP). It never prints: String, GoString, LogValue and
// MarshalText give "REDACTED".
type Secret struct{ v string }

// NewSecret wraps a value.
func NewSecret(v string) Secret { return Secret{v} }

// Reveal returns the value, for the code that must use it (for example
// the network side computing a TLS-PSK key).
func (s Secret) Reveal() string { return s.v }

// IsZero reports whether no value is set.
func (s Secret) IsZero() bool { return s.v == "" }

// Equal compares with v in constant time.
func (s Secret) Equal(v string) bool {
	return subtle.ConstantTimeCompare([]byte(s.v), []byte(v)) == 1
}

func (Secret) String() string               { return "REDACTED" }
func (Secret) GoString() string             { return "REDACTED" }
func (Secret) LogValue() slog.Value         { return slog.StringValue("REDACTED") }
func (Secret) MarshalText() ([]byte, error) { return []byte("REDACTED"), nil }

// CertHash is one trusted root certificate hash in the ME.
type CertHash struct {
	Handle    uint32
	Name      string
	Algorithm amthi.HashAlgorithm
	Hash      []byte // Algorithm.Size() bytes
	Default   bool   // false: added by a user (setup.bin, MEBx, WS-Man)
	Active    bool
}

// LAN is one network interface as GetLANInterfaceSettings reports it.
type LAN struct {
	Enabled     bool
	IPv4        [4]byte
	DHCPEnabled bool
	DHCPMode    uint8 // 1 passive, 2 active (as reported; not interpreted)
	LinkUp      bool
	MAC         amthi.MAC
}

// State is everything the simulated machine knows. Get a copy with
// [Device.State]; change it with [Device.Update] or the event methods.
type State struct {
	UUID        amthi.UUID
	BIOSVersion string
	AMTVersion  string // e.g. "11.8.50"
	BuildNumber string
	SKU         string
	FW          mkhi.Version // MKHI code version; Recovery is the same
	// AMTPresent false models a SKU without AMT (or AMT disabled): the
	// AMTHI client does not exist (connect fails with ENOTTY).
	AMTPresent bool
	// Unsupported commands answer UNSUPPORTED, modelling an older
	// generation (which release added which command is not documented).
	Unsupported []amthi.Command

	ProvisioningState amthi.ProvisioningState
	ProvisioningMode  amthi.ProvisioningMode
	ControlMode       amthi.ControlMode
	TLSMode           amthi.TLSMode
	ZeroTouch         bool
	DNSSuffix         string // set by SetDnsSuffix or setup.bin
	PKISuffix         string
	Hashes            []CertHash
	Wired             LAN
	Wireless          *LAN // nil: no wireless interface
	HostMAC           amthi.MAC

	// Secrets as the BIOS or the provisioning left them.
	PID          string // the PSK identifier (not secret by itself)
	PPS          Secret
	MEBxPassword Secret
	OTP          Secret
	LocalUser    string
	LocalPass    Secret

	// Resets counts ME resets.
	Resets int

	// Net is what only the network side uses (net*.go, wsman*.go): realm,
	// ACL, keys, certificates, TLS settings, clock, audit record.
	Net NetState
}

func (s *State) clone() State {
	c := *s
	c.Unsupported = slices.Clone(s.Unsupported)
	c.Hashes = slices.Clone(s.Hashes)
	for i := range c.Hashes {
		c.Hashes[i].Hash = slices.Clone(c.Hashes[i].Hash)
	}
	if s.Wireless != nil {
		w := *s.Wireless
		c.Wireless = &w
	}
	c.Net = s.Net.clone()
	return c
}

// DefaultState is a plausible AMT 11 machine fresh from the factory:
// pre-provisioning, MEBx password "admin", three default root hashes (with
// made-up names and digests: the simulator does not carry Intel's list).
func DefaultState() State {
	var hashes []CertHash
	for i, name := range []string{"Simulated default root A", "Simulated default root B", "Simulated default root C"} {
		sum := sha256.Sum256([]byte(name))
		hashes = append(hashes, CertHash{Handle: uint32(i + 1), Name: name, Algorithm: amthi.HashSHA256, Hash: sum[:], Default: true, Active: true})
	}
	return State{
		UUID:        amthi.UUID{0x4b, 0x52, 0x9b, 0x93, 0xd4, 0x13, 0x18, 0x1d, 0xe4, 0x87, 0x1c, 0x69, 0x7a, 0x6b, 0x7a, 0x2b},
		BIOSVersion: "SIM.0001.2026.1123",
		AMTVersion:  "11.8.50",
		BuildNumber: "3425",
		SKU:         "16392",
		FW:          mkhi.Version{Platform: 3, Major: 11, Minor: 8, Hotfix: 50, Build: 3425},
		AMTPresent:  true,
		TLSMode:     amthi.TLSModeNotReady,
		ZeroTouch:   true,
		Hashes:      hashes,
		Wired: LAN{Enabled: true, IPv4: [4]byte{192, 168, 10, 5}, DHCPEnabled: true, DHCPMode: 2, LinkUp: true,
			MAC: amthi.MAC{0x02, 0x16, 0x3e, 0x00, 0x00, 0x01}},
		HostMAC:      amthi.MAC{0x02, 0x16, 0x3e, 0x00, 0x00, 0x01},
		MEBxPassword: NewSecret("admin"),
		LocalUser:    "$$OsAdmin",
		LocalPass:    NewSecret("sim-local-account"),
	}
}

// Device is one simulated machine, safe for concurrent use by the ME side
// and the network side.
type Device struct {
	mu      sync.Mutex
	st      State
	onReset map[int]func()
	nextID  int
}

// NewDevice returns a device in the given state (see [DefaultState]).
func NewDevice(st State) *Device {
	return &Device{st: st.clone(), onReset: map[int]func(){}}
}

// State returns a copy of the current state.
func (d *Device) State() State {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.st.clone()
}

// shallow returns a copy sharing the slices; writers replace slices
// rather than change their elements, so this is safe to read.
func (d *Device) shallow() State {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.st
}

// Update changes the state under the device's lock. f must replace
// slices (Hashes, Unsupported) rather than change their elements in place.
func (d *Device) Update(f func(*State)) {
	d.mu.Lock()
	defer d.mu.Unlock()
	f(&d.st)
}

// OnReset registers f to run on every ME reset; the returned function
// unregisters it.
func (d *Device) OnReset(f func()) (remove func()) {
	d.mu.Lock()
	defer d.mu.Unlock()
	id := d.nextID
	d.nextID++
	d.onReset[id] = f
	return func() {
		d.mu.Lock()
		delete(d.onReset, id)
		d.mu.Unlock()
	}
}

// Reset is the event "the ME reset": every HECI link drops (the ME side
// sends a reset frame on each channel, specs/heci.md §5).
func (d *Device) Reset() {
	d.mu.Lock()
	d.st.Resets++
	hooks := make([]func(), 0, len(d.onReset))
	for _, f := range d.onReset {
		hooks = append(hooks, f)
	}
	d.mu.Unlock()
	for _, f := range hooks {
		f()
	}
}

// SetupRecord is what the BIOS/MEBx takes from one setup.bin record.
type SetupRecord struct {
	PID          string // 8 characters, no dash; empty for a PKI-only record
	PPS          Secret
	MEBxPassword Secret // the new MEBx password
	DNSSuffix    string // optional: the PKI DNS suffix
	// Hashes are user-added trusted root hashes (PKI path); handles are
	// assigned by the device.
	Hashes []CertHash
}

// ErrInvalidState: the event does not apply in the device's current state.
var ErrInvalidState = errors.New("amtsim: not possible in this provisioning state")

// ApplySetupRecord is the event "the BIOS applied a setup.bin record":
// the MEBx password changes, PID/PPS (and a DNS suffix and hashes, if the
// record has them) are stored, and AMT enters setup: state "in
// provisioning", TLS mode PSK (PKI when the record has no PID).
func (d *Device) ApplySetupRecord(r SetupRecord) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.st.ProvisioningState == amthi.StatePost {
		return fmt.Errorf("applying a setup.bin record: %w (post-provisioning)", ErrInvalidState)
	}
	if !r.MEBxPassword.IsZero() {
		d.st.MEBxPassword = r.MEBxPassword
	}
	d.st.PID, d.st.PPS = r.PID, r.PPS
	if r.DNSSuffix != "" {
		d.st.DNSSuffix = r.DNSSuffix
		d.st.PKISuffix = r.DNSSuffix
	}
	hashes := slices.Clone(d.st.Hashes)
	for _, h := range r.Hashes {
		h.Handle = d.nextHandle(hashes)
		h.Default = false
		h.Hash = slices.Clone(h.Hash)
		hashes = append(hashes, h)
	}
	d.st.Hashes = hashes
	d.st.ProvisioningState = amthi.StateIn
	d.st.ProvisioningMode = amthi.ModeEnterprise
	d.st.TLSMode = amthi.TLSModePSK
	if r.PID == "" {
		d.st.TLSMode = amthi.TLSModePKI
	}
	return nil
}

func (d *Device) nextHandle(hashes []CertHash) uint32 {
	var h uint32
	for _, c := range hashes {
		h = max(h, c.Handle)
	}
	return h + 1
}

// Provisioned is the event "provisioned by the kiosk": post-provisioning
// in the given control mode (admin control for PSK/PKI provisioning).
func (d *Device) Provisioned(mode amthi.ControlMode) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.st.ProvisioningState == amthi.StatePost {
		return fmt.Errorf("provisioning: %w (already post-provisioning)", ErrInvalidState)
	}
	d.st.ProvisioningState = amthi.StatePost
	d.st.ControlMode = mode
	if d.st.ProvisioningMode == amthi.ModeNone {
		d.st.ProvisioningMode = amthi.ModeEnterprise
	}
	return nil
}

// unprovision returns to the factory state of provisioning: user hashes,
// PID/PPS, OTP and DNS suffix are dropped (what real firmware keeps after
// a full unprovision is not documented in specs/; this is the simulator's
// choice).
func (s *State) unprovision() {
	s.ProvisioningState = amthi.StatePre
	s.ProvisioningMode = amthi.ModeNone
	s.ControlMode = amthi.ControlPre
	s.TLSMode = amthi.TLSModeNotReady
	s.PID, s.PPS, s.OTP = "", Secret{}, Secret{}
	s.DNSSuffix, s.PKISuffix = "", ""
	var keep []CertHash
	for _, h := range s.Hashes {
		if h.Default {
			keep = append(keep, h)
		}
	}
	s.Hashes = keep
	s.Net.unprovision()
}
