package tlspsk

import (
	"crypto/hmac"
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/binary"
	"hash"
)

// Sizes fixed by the protocol.
const (
	randomLen       = 32 // RFC 5246 §7.4.1.2
	masterSecretLen = 48 // RFC 5246 §8.1
	finishedLen     = 12 // RFC 5246 §7.4.9 (verify_data_length for our suites)
)

// pHash is P_hash of RFC 5246 §5: it fills out with
// HMAC(secret, A(1)+seed) | HMAC(secret, A(2)+seed) | …, A(i) = HMAC(secret, A(i-1)).
func pHash(out, secret, seed []byte, h func() hash.Hash) {
	mac := hmac.New(h, secret)
	mac.Write(seed)
	a := mac.Sum(nil) // A(1)
	var block []byte
	for len(out) > 0 {
		mac.Reset()
		mac.Write(a)
		mac.Write(seed)
		block = mac.Sum(block[:0])
		n := copy(out, block)
		out = out[n:]
		mac.Reset()
		mac.Write(a)
		a = mac.Sum(a[:0])
	}
}

// prf10 is the TLS 1.0/1.1 PRF (RFC 2246 §5, RFC 4346 §5): the secret is
// split in two halves (sharing the middle byte when its length is odd),
// P_MD5 over the first XOR P_SHA-1 over the second.
func prf10(out, secret []byte, label string, seed []byte) {
	ls := make([]byte, 0, len(label)+len(seed))
	ls = append(append(ls, label...), seed...)
	half := (len(secret) + 1) / 2
	s1, s2 := secret[:half], secret[len(secret)-half:]
	pHash(out, s1, ls, md5.New)
	tmp := make([]byte, len(out))
	pHash(tmp, s2, ls, sha1.New)
	for i := range out {
		out[i] ^= tmp[i]
	}
}

// prf12 is the TLS 1.2 PRF with SHA-256 (RFC 5246 §5), the PRF of every
// TLS 1.2 suite this package implements (RFC 4279 via RFC 5246 §5, RFC 5487).
func prf12(out, secret []byte, label string, seed []byte) {
	ls := make([]byte, 0, len(label)+len(seed))
	ls = append(append(ls, label...), seed...)
	pHash(out, secret, ls, sha256.New)
}

func prfFor(version uint16) func(out, secret []byte, label string, seed []byte) {
	if version >= VersionTLS12 {
		return prf12
	}
	return prf10
}

// pskPremaster is the plain-PSK premaster secret of RFC 4279 §2:
// uint16 N | N zero bytes | uint16 N | psk. For a 32-byte PSK this is the
// 68 bytes "00 20 | 32 × 00 | 00 20 | PPS" of spec §3.
func pskPremaster(psk []byte) []byte {
	n := len(psk)
	b := make([]byte, 0, 4+2*n)
	b = binary.BigEndian.AppendUint16(b, uint16(n))
	b = append(b, make([]byte, n)...)
	b = binary.BigEndian.AppendUint16(b, uint16(n))
	return append(b, psk...)
}

// masterSecret derives the 48-byte master secret (RFC 5246 §8.1).
func masterSecret(version uint16, premaster, clientRandom, serverRandom []byte) []byte {
	seed := make([]byte, 0, 2*randomLen)
	seed = append(append(seed, clientRandom...), serverRandom...)
	out := make([]byte, masterSecretLen)
	prfFor(version)(out, premaster, "master secret", seed)
	return out
}

// keyBlock is the key expansion of RFC 5246 §6.3, cut into the client and
// server write MAC keys, cipher keys and (TLS 1.0 only) IVs.
type keyBlock struct {
	clientMAC, serverMAC, clientKey, serverKey, clientIV, serverIV []byte
}

func expandKeys(version uint16, s *suite, master, clientRandom, serverRandom []byte) keyBlock {
	ivLen := 0
	if version == VersionTLS10 {
		ivLen = s.blockLen
	}
	n := 2*s.macLen + 2*s.keyLen + 2*ivLen
	seed := make([]byte, 0, 2*randomLen)
	seed = append(append(seed, serverRandom...), clientRandom...)
	b := make([]byte, n)
	prfFor(version)(b, master, "key expansion", seed)
	var k keyBlock
	take := func(n int) []byte { p := b[:n:n]; b = b[n:]; return p }
	k.clientMAC, k.serverMAC = take(s.macLen), take(s.macLen)
	k.clientKey, k.serverKey = take(s.keyLen), take(s.keyLen)
	k.clientIV, k.serverIV = take(ivLen), take(ivLen)
	return k
}

// finishedSum computes verify_data (RFC 5246 §7.4.9) over the handshake
// transcript: PRF(master, label, MD5(t)|SHA-1(t)) before TLS 1.2,
// PRF(master, label, SHA-256(t)) in TLS 1.2.
func finishedSum(version uint16, master []byte, label string, transcript []byte) []byte {
	var h []byte
	if version >= VersionTLS12 {
		s := sha256.Sum256(transcript)
		h = s[:]
	} else {
		m := md5.Sum(transcript)
		s := sha1.Sum(transcript)
		h = append(m[:], s[:]...)
	}
	out := make([]byte, finishedLen)
	prfFor(version)(out, master, label, h)
	return out
}
