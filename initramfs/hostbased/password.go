package hostbased

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"strings"
)

// MinSiteSecret is the shortest site secret DerivePassword accepts.
const MinSiteSecret = 16

// ErrWeakSecret: the site secret is shorter than MinSiteSecret bytes.
var ErrWeakSecret = errors.New("hostbased: site secret shorter than 16 bytes")

// derivedAlphabet: letters, digits and two symbols, none of the
// characters any source forbids in an AMT password (setupbin's §4.2 set).
var derivedEncoding = base64.NewEncoding("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-+").WithPadding(base64.NoPadding)

// derivedSuffix guarantees every character class AMT requires (digit,
// lower, upper, symbol) whatever the encoded part holds; the strength is
// in the 144 bits before it.
const derivedSuffix = "#a7Z"

// DerivePassword is the admin password host-based activation sets on the
// machine whose AMT UUID is uuid, derived from the site secret so that
// the stick never carries a machine's password and the kiosk (which knows
// the secret) can recompute it from the UUID in the ledger line:
//
//	base64'(HMAC-SHA256(secret, "provstick-amt-admin/1" 0x00 lower(uuid))[:18]) "#a7Z"
//
// where base64' is base64 over A–Z a–z 0–9 - + without padding: 28
// characters, within AMT's 8–32 and with a digit, a lower-case and an
// upper-case letter and a symbol.
func DerivePassword(secret []byte, uuid string) (Password, error) {
	if len(secret) < MinSiteSecret {
		return "", ErrWeakSecret
	}
	if uuid == "" {
		return "", errors.New("hostbased: deriving the admin password: no AMT UUID")
	}
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("provstick-amt-admin/1\x00"))
	m.Write([]byte(strings.ToLower(uuid)))
	sum := m.Sum(nil)
	return Password(derivedEncoding.EncodeToString(sum[:18]) + derivedSuffix), nil
}

// KeyID names a secret in the ledger without revealing it: the first 8
// hex digits of SHA-256("provstick-amt-key-id/1" 0x00 secret).
func KeyID(secret []byte) string {
	h := sha256.New()
	h.Write([]byte("provstick-amt-key-id/1\x00"))
	h.Write(secret)
	return hex.EncodeToString(h.Sum(nil)[:4])
}
