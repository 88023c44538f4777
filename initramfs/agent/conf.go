package agent

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path/filepath"
	"strings"
	"time"

	"github.com/provstick/provstick/initramfs/hostbased"
	"github.com/provstick/provstick/setupbin"
)

// ConfPath is where the builder writes the recipe's agent section.
const ConfPath = "provstick/agent.json"

// ConfFormat is agent.json's format value.
const ConfFormat = "provstick-agent/1"

// Activation modes and password sources in agent.json (and the recipe).
const (
	ModeClientControl = "client-control"
	PasswordDerived   = "derived" // per machine from the site secret and the AMT UUID
	PasswordFixed     = "fixed"   // one password for every machine
)

// ErrConf: agent.json is not valid. The message names the field, never a
// secret.
var ErrConf = errors.New("agent: bad agent.json")

// Conf is provstick/agent.json: the recipe's agent section as the builder
// wrote it. Every field is optional.
type Conf struct {
	Format string `json:"format"`
	Stick  string `json:"stick"`
	After  string `json:"after"`
	// Countdown is the seconds before powering off; nil: 10.
	Countdown *int `json:"countdown"`
	// MEWait bounds the wait for the ME to answer (it may still be
	// resetting after the BIOS applied the record); nil: 30 s.
	MEWait *int `json:"me_wait"`
	// Activate asks for host-based activation; nil: none.
	Activate *ActivateConf `json:"activate"`
	// QR shows the ledger line as a QR code on the technician's screen
	// (ledger.ForQR, ledger.EncodeQR); false: off.
	QR bool `json:"qr"`
	// CheckKiosk asks for the kiosk reachability check (kiosk.go); nil:
	// none (the builder writes the member only when the recipe enables
	// the check).
	CheckKiosk *CheckKioskConf `json:"check_kiosk"`
}

// CheckKioskConf is agent.json's check_kiosk member.
type CheckKioskConf struct {
	// Timeout bounds the whole check (link, DHCP, DNS, connect) in
	// seconds; nil: DefaultKioskTimeout. A machine without a cable costs
	// this much.
	Timeout *int `json:"timeout"`
	// Port is the kiosk's hello port; nil: 9971.
	Port *int `json:"port"`
	// Domain, if set, is used instead of the ME's DNS suffix and DHCP
	// option 15 (see KioskCheck for the order).
	Domain string `json:"domain"`
}

// Kiosk check defaults.
const (
	DefaultKioskTimeout = 20 * time.Second
	DefaultKioskPort    = 9971
)

// TimeoutDuration is Timeout or DefaultKioskTimeout.
func (k *CheckKioskConf) TimeoutDuration() time.Duration {
	if k != nil && k.Timeout != nil {
		return time.Duration(*k.Timeout) * time.Second
	}
	return DefaultKioskTimeout
}

// PortNumber is Port or DefaultKioskPort.
func (k *CheckKioskConf) PortNumber() int {
	if k != nil && k.Port != nil {
		return *k.Port
	}
	return DefaultKioskPort
}

func (k *CheckKioskConf) check() error {
	switch {
	case k.Timeout != nil && (*k.Timeout < 1 || *k.Timeout > 300):
		return fmt.Errorf("%w: check_kiosk.timeout %d: want 1 to 300 seconds", ErrConf, *k.Timeout)
	case k.Port != nil && (*k.Port < 1 || *k.Port > 65535):
		return fmt.Errorf("%w: check_kiosk.port %d: want 1 to 65535", ErrConf, *k.Port)
	case k.Domain != "" && !ValidDomain(k.Domain):
		return fmt.Errorf("%w: check_kiosk.domain %q: not a DNS domain name", ErrConf, k.Domain)
	}
	return nil
}

// ValidDomain reports whether s is a DNS domain name: dot-separated
// labels of 1 to 63 letters, digits and hyphens (not at either end), 253
// characters at most, an optional final dot.
func ValidDomain(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return false
	}
	for l := range strings.SplitSeq(s, ".") {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// ActivateConf is agent.json's activate member.
type ActivateConf struct {
	Mode     string `json:"mode"`     // ModeClientControl
	Password string `json:"password"` // PasswordDerived or PasswordFixed
	// Secret is the site secret (derived) or the password (fixed), base64
	// in JSON. The stick is a key ring (its setup.bin carries MEBx
	// passwords too); see builder.Agent for why derived is the default.
	Secret SecretBytes `json:"secret"`
	// KeyID names the secret in the ledger (hostbased.KeyID); the agent
	// recomputes it and refuses a mismatch (a damaged file).
	KeyID string `json:"key_id"`
	// Timeout bounds the activation in seconds; nil: 60.
	Timeout *int `json:"timeout"`
}

// SecretBytes are secret bytes that print as REDACTED.
type SecretBytes []byte

func (SecretBytes) String() string       { return "REDACTED" }
func (SecretBytes) GoString() string     { return "agent.SecretBytes(REDACTED)" }
func (SecretBytes) LogValue() slog.Value { return slog.StringValue("REDACTED") }

// ParseConf decodes and checks agent.json. Unknown members are ignored (a
// newer builder may add some); a known member with a bad value is an
// error naming it.
func ParseConf(b []byte) (*Conf, error) {
	var c Conf
	if len(bytes.TrimSpace(b)) == 0 {
		return nil, fmt.Errorf("%w: empty", ErrConf)
	}
	if err := json.Unmarshal(b, &c); err != nil {
		// json's message may quote a value; name only the kind of error.
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &se):
			return nil, fmt.Errorf("%w: not JSON (at byte %d)", ErrConf, se.Offset)
		case errors.As(err, &te):
			return nil, fmt.Errorf("%w: member %s: want %s", ErrConf, te.Field, te.Type)
		}
		return nil, fmt.Errorf("%w: a member could not be decoded (secret not base64?)", ErrConf)
	}
	if c.Format != "" && c.Format != ConfFormat {
		return nil, fmt.Errorf("%w: format %q, want %q", ErrConf, c.Format, ConfFormat)
	}
	if c.Countdown != nil && (*c.Countdown < 0 || *c.Countdown > 3600) {
		return nil, fmt.Errorf("%w: countdown %d: want 0 to 3600 seconds", ErrConf, *c.Countdown)
	}
	if c.MEWait != nil && (*c.MEWait < 1 || *c.MEWait > 600) {
		return nil, fmt.Errorf("%w: me_wait %d: want 1 to 600 seconds", ErrConf, *c.MEWait)
	}
	if a := c.Activate; a != nil {
		if err := a.check(); err != nil {
			return nil, err
		}
	}
	if k := c.CheckKiosk; k != nil {
		if err := k.check(); err != nil {
			return nil, err
		}
	}
	return &c, nil
}

func (a *ActivateConf) check() error {
	switch {
	case a.Mode != ModeClientControl:
		return fmt.Errorf("%w: activate.mode %q: want %q", ErrConf, a.Mode, ModeClientControl)
	case a.Password == PasswordDerived:
		if len(a.Secret) < hostbased.MinSiteSecret {
			return fmt.Errorf("%w: activate.secret: %d bytes, want at least %d", ErrConf, len(a.Secret), hostbased.MinSiteSecret)
		}
	case a.Password == PasswordFixed:
		if err := setupbin.ValidateMEBxPassword(setupbin.Password(a.Secret)); err != nil {
			return fmt.Errorf("%w: activate.secret (the fixed password): %w", ErrConf, err)
		}
	default:
		return fmt.Errorf("%w: activate.password %q: want %q or %q", ErrConf, a.Password, PasswordDerived, PasswordFixed)
	}
	if a.KeyID != "" && a.KeyID != hostbased.KeyID(a.Secret) {
		return fmt.Errorf("%w: activate.key_id %q does not match the secret (damaged file?)", ErrConf, a.KeyID)
	}
	if a.Timeout != nil && (*a.Timeout < 1 || *a.Timeout > 600) {
		return fmt.Errorf("%w: activate.timeout %d: want 1 to 600 seconds", ErrConf, *a.Timeout)
	}
	return nil
}

// ReadConf reads root/provstick/agent.json. A stick without one gives an
// empty Conf (every default).
func ReadConf(root string) (*Conf, error) {
	b, err := readSmall(filepath.Join(root, filepath.FromSlash(ConfPath)), 64<<10)
	if errors.Is(err, fs.ErrNotExist) {
		return &Conf{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", ConfPath, err)
	}
	c, err := ParseConf(b)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", ConfPath, err)
	}
	return c, nil
}

// CountdownSeconds is Countdown or 10.
func (c *Conf) CountdownSeconds() int {
	if c != nil && c.Countdown != nil {
		return *c.Countdown
	}
	return 10
}

// MEWaitDuration is MEWait or 30 s.
func (c *Conf) MEWaitDuration() time.Duration {
	if c != nil && c.MEWait != nil {
		return time.Duration(*c.MEWait) * time.Second
	}
	return 30 * time.Second
}

// Activation is what Run needs for the activation c asks for (nil: none).
func (c *Conf) Activation() *Activation {
	if c == nil || c.Activate == nil {
		return nil
	}
	a := c.Activate
	secret := append([]byte(nil), a.Secret...)
	act := &Activation{Mode: a.Mode, Source: a.Password + ":" + hostbased.KeyID(secret)}
	if a.Timeout != nil {
		act.Timeout = time.Duration(*a.Timeout) * time.Second
	}
	if a.Password == PasswordFixed {
		act.Password = func(string) (hostbased.Password, error) { return hostbased.Password(secret), nil }
	} else {
		act.Password = func(uuid string) (hostbased.Password, error) { return hostbased.DerivePassword(secret, uuid) }
	}
	return act
}
