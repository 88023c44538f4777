package tlspsk

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
)

// Protocol versions.
const (
	VersionTLS10 uint16 = 0x0301
	VersionTLS11 uint16 = 0x0302
	VersionTLS12 uint16 = 0x0303
)

// Cipher suites (RFC 4279 §2, RFC 5487 §3.1).
const (
	TLS_PSK_WITH_RC4_128_SHA        uint16 = 0x008A
	TLS_PSK_WITH_AES_128_CBC_SHA    uint16 = 0x008C
	TLS_PSK_WITH_AES_256_CBC_SHA    uint16 = 0x008D
	TLS_PSK_WITH_AES_128_CBC_SHA256 uint16 = 0x00AE

	// scsvRenegotiation is TLS_EMPTY_RENEGOTIATION_INFO_SCSV (RFC 5746 §3.3).
	scsvRenegotiation uint16 = 0x00FF
)

// VersionName returns "TLS 1.0" and so on, or a hex number for others.
func VersionName(v uint16) string {
	switch v {
	case VersionTLS10:
		return "TLS 1.0"
	case VersionTLS11:
		return "TLS 1.1"
	case VersionTLS12:
		return "TLS 1.2"
	case 0x0300:
		return "SSL 3.0"
	}
	return fmt.Sprintf("0x%04X", v)
}

// CipherSuiteName returns the RFC name of a suite this package knows, or a
// hex number.
func CipherSuiteName(id uint16) string {
	if s := suiteByID(id); s != nil {
		return s.name
	}
	return fmt.Sprintf("0x%04X", id)
}

// Sentinel errors. Handshake errors wrap one of these together with the
// *AlertError that was sent or received, so callers use errors.Is.
var (
	// ErrUnknownIdentity: the server does not know the PSK identity
	// (alert unknown_psk_identity, 115).
	ErrUnknownIdentity = errors.New("tlspsk: unknown PSK identity")
	// ErrBadKey: both sides completed the key exchange but their keys
	// differ — bad_record_mac or decrypt_error at Finished. For AMT this
	// means the wrong PPS (or the wrong KeyForm) for this PID.
	ErrBadKey = errors.New("tlspsk: PSK mismatch (the peers' keys differ)")
	// ErrVersion: the peers share no protocol version (alert
	// protocol_version, 70, sent or received).
	ErrVersion = errors.New("tlspsk: no common protocol version")
	// ErrNoCipherSuite: the peers share no cipher suite.
	ErrNoCipherSuite = errors.New("tlspsk: no common cipher suite")
	// ErrHandshakeClosed: the peer closed the connection before the
	// handshake finished.
	ErrHandshakeClosed = errors.New("tlspsk: connection closed during handshake")
)

// Config configures a client or a server. A Config may be shared by many
// connections and must not be modified after first use.
type Config struct {
	// MinVersion and MaxVersion bound the protocol version; zero means
	// VersionTLS10 and VersionTLS12.
	MinVersion, MaxVersion uint16

	// CipherSuites lists the suites in order of preference. Nil means
	// 0x008C, 0x008D, 0x00AE, then 0x008A if AllowRC4. A server picks the
	// first of its own list that the client offers.
	CipherSuites []uint16

	// AllowRC4 permits TLS_PSK_WITH_RC4_128_SHA (0x008A), which old AMT
	// firmware may offer alone (spec §3 [U]). RC4 is broken; leave it off
	// unless a device needs it.
	AllowRC4 bool

	// Identity is the client's key selection: it receives the server's PSK
	// identity hint ("" when the server sent none) and returns the identity
	// to send and the key. Required on a client. Use KeyForm to build the
	// key from a PID/PPS pair.
	Identity func(hint string) (identity string, key []byte, err error)

	// Hint is the PSK identity hint a server sends in a ServerKeyExchange;
	// "" means no ServerKeyExchange at all (both occur on AMT devices).
	Hint string

	// GetKey is the server's key lookup by the identity the client sent.
	// Required on a server. Return an error wrapping ErrUnknownIdentity (or
	// a nil key) to answer with alert unknown_psk_identity (115).
	GetKey func(identity string) ([]byte, error)

	// Rand is the source of randoms and explicit IVs; nil means crypto/rand.
	Rand io.Reader

	// Logger receives debug lines about handshakes (never key material);
	// nil discards.
	Logger *slog.Logger

	// testHookMaster, when set, receives the randoms and the master secret
	// after the key exchange; tests compare it with OpenSSL's key log.
	testHookMaster func(clientRandom, serverRandom, master []byte)
}

func (c *Config) rand() io.Reader {
	if c.Rand != nil {
		return c.Rand
	}
	return rand.Reader
}

func (c *Config) logger() *slog.Logger {
	if c.Logger != nil {
		return c.Logger
	}
	return slog.New(slog.DiscardHandler)
}

func (c *Config) minVersion() uint16 {
	if c.MinVersion != 0 {
		return c.MinVersion
	}
	return VersionTLS10
}

func (c *Config) maxVersion() uint16 {
	if c.MaxVersion != 0 {
		return c.MaxVersion
	}
	return VersionTLS12
}

// suites returns the configured suites this package implements, filtered by
// AllowRC4, in preference order.
func (c *Config) suites() []*suite {
	ids := c.CipherSuites
	if ids == nil {
		ids = []uint16{TLS_PSK_WITH_AES_128_CBC_SHA, TLS_PSK_WITH_AES_256_CBC_SHA, TLS_PSK_WITH_AES_128_CBC_SHA256, TLS_PSK_WITH_RC4_128_SHA}
	}
	out := make([]*suite, 0, len(ids))
	for _, id := range ids {
		s := suiteByID(id)
		if s == nil || (s.rc4 && !c.AllowRC4) {
			continue
		}
		out = append(out, s)
	}
	return out
}

func (c *Config) check(client bool) error {
	minV, maxV := c.minVersion(), c.maxVersion()
	if minV < VersionTLS10 || maxV > VersionTLS12 || minV > maxV {
		return fmt.Errorf("tlspsk: config: versions %s..%s: only TLS 1.0 to 1.2 are supported", VersionName(minV), VersionName(maxV))
	}
	if len(c.suites()) == 0 {
		return fmt.Errorf("tlspsk: config: CipherSuites %04X: %w", c.CipherSuites, ErrNoCipherSuite)
	}
	if client && c.Identity == nil {
		return errors.New("tlspsk: config: Identity is nil on a client")
	}
	if !client && c.GetKey == nil {
		return errors.New("tlspsk: config: GetKey is nil on a server")
	}
	if len(c.Hint) > 0xFFFF {
		return fmt.Errorf("tlspsk: config: Hint is %d bytes, more than 65535", len(c.Hint))
	}
	return nil
}

// ConnectionState describes a connection.
type ConnectionState struct {
	Version           uint16 // VersionTLS10 …
	CipherSuite       uint16 // TLS_PSK_WITH_AES_128_CBC_SHA …
	HandshakeComplete bool
	Identity          string // the PSK identity the client sent
	Hint              string // the PSK identity hint; "" if none was sent
}

// KeyForm selects how a PID/PPS pair becomes PSK bytes.
//
// UNCONFIRMED ON REAL FIRMWARE (specs/amt-psk.md §3, [U]): the default,
// KeyPPSASCII, is what the sources suggest — identity = the 8 PID characters,
// PSK = the 32 PPS characters as ASCII, no dashes — but no Intel device has
// confirmed it. KeyPPSDashed keeps the displayed form with dashes. The AMT
// simulator implements the same switch so tests cover both branches.
type KeyForm int

const (
	// KeyPPSASCII: the 32 PPS characters as ASCII, without dashes.
	KeyPPSASCII KeyForm = iota
	// KeyPPSDashed: the PPS as displayed, dashes every 4 characters
	// ("NKLD-G5DC-RRNQ-E9YZ-ZIJL-7LFL-VJED-69XJ", 39 bytes; the spec calls
	// it the 40-character form).
	KeyPPSDashed
)

// String returns "pps-ascii" or "pps-dashed".
func (f KeyForm) String() string {
	switch f {
	case KeyPPSASCII:
		return "pps-ascii"
	case KeyPPSDashed:
		return "pps-dashed"
	}
	return fmt.Sprintf("KeyForm(%d)", int(f))
}

// ParseKeyForm is the inverse of String, for configuration files.
func ParseKeyForm(s string) (KeyForm, error) {
	switch s {
	case "pps-ascii", "":
		return KeyPPSASCII, nil
	case "pps-dashed":
		return KeyPPSDashed, nil
	}
	return 0, fmt.Errorf("tlspsk: key form %q: want pps-ascii or pps-dashed", s)
}

// Key returns the PSK for a PID/PPS pair in form f. pps may be given with or
// without dashes; it is not validated here (setupbin checks PPS syntax). pid
// is unused by both forms today and is there for a PID-derived form, should
// firmware turn out to use one.
func (f KeyForm) Key(pid, pps string) []byte {
	_ = pid
	plain := strings.ReplaceAll(pps, "-", "")
	switch f {
	case KeyPPSDashed:
		b := make([]byte, 0, len(plain)+len(plain)/4)
		for i := 0; i < len(plain); i++ {
			if i > 0 && i%4 == 0 {
				b = append(b, '-')
			}
			b = append(b, plain[i])
		}
		return b
	default:
		return []byte(plain)
	}
}

// Identity returns the PSK identity for a PID: its characters without dashes.
func Identity(pid string) string { return strings.ReplaceAll(pid, "-", "") }
