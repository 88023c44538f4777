package tlspsk

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rc4"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"hash"
	"io"
)

// suite describes one cipher suite: key exchange is always plain PSK.
type suite struct {
	id         uint16
	name       string
	keyLen     int // cipher key bytes
	macLen     int // HMAC output and key bytes
	blockLen   int // CBC block size; 0 for the RC4 stream cipher
	mac        func() hash.Hash
	minVersion uint16
	rc4        bool
}

var suites = []*suite{
	{id: TLS_PSK_WITH_AES_128_CBC_SHA, name: "TLS_PSK_WITH_AES_128_CBC_SHA", keyLen: 16, macLen: sha1.Size, blockLen: aes.BlockSize, mac: sha1.New, minVersion: VersionTLS10},
	{id: TLS_PSK_WITH_AES_256_CBC_SHA, name: "TLS_PSK_WITH_AES_256_CBC_SHA", keyLen: 32, macLen: sha1.Size, blockLen: aes.BlockSize, mac: sha1.New, minVersion: VersionTLS10},
	{id: TLS_PSK_WITH_AES_128_CBC_SHA256, name: "TLS_PSK_WITH_AES_128_CBC_SHA256", keyLen: 16, macLen: sha256.Size, blockLen: aes.BlockSize, mac: sha256.New, minVersion: VersionTLS12},
	{id: TLS_PSK_WITH_RC4_128_SHA, name: "TLS_PSK_WITH_RC4_128_SHA", keyLen: 16, macLen: sha1.Size, mac: sha1.New, minVersion: VersionTLS10, rc4: true},
}

func suiteByID(id uint16) *suite {
	for _, s := range suites {
		if s.id == id {
			return s
		}
	}
	return nil
}

var zeroBlock [aes.BlockSize]byte

// cbcMode is implemented by the standard library's CBC modes; SetIV lets one
// BlockMode be reused for every record's explicit IV.
type cbcMode interface {
	cipher.BlockMode
	SetIV([]byte)
}

// cipherState is one direction's record protection after ChangeCipherSpec.
type cipherState struct {
	mac        hash.Hash
	cbc        cbcMode       // nil for RC4
	stream     cipher.Stream // RC4
	explicitIV bool          // TLS 1.1 and later
	blockLen   int
	macLen     int
	macBuf     []byte
}

func newCipherState(version uint16, s *suite, macKey, key, iv []byte, encrypt bool) (*cipherState, error) {
	cs := &cipherState{
		mac:        hmac.New(s.mac, macKey),
		explicitIV: version >= VersionTLS11,
		blockLen:   s.blockLen,
		macLen:     s.macLen,
		macBuf:     make([]byte, 0, s.macLen),
	}
	if s.rc4 {
		c, err := rc4.NewCipher(key)
		if err != nil {
			return nil, err
		}
		cs.stream = c
		return cs, nil
	}
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	if len(iv) == 0 {
		iv = make([]byte, s.blockLen) // replaced by each record's explicit IV
	}
	var m cipher.BlockMode
	if encrypt {
		m = cipher.NewCBCEncrypter(b, iv)
	} else {
		m = cipher.NewCBCDecrypter(b, iv)
	}
	cbc, ok := m.(cbcMode)
	if !ok {
		return nil, errors.New("tlspsk: CBC mode without SetIV")
	}
	cs.cbc = cbc
	return cs, nil
}

// Record layer constants (RFC 5246 §6.2).
const (
	recordHeaderLen = 5
	maxPlaintext    = 16384
	maxCiphertext   = maxPlaintext + 2048
)

// Record content types.
const (
	recordChangeCipherSpec uint8 = 20
	recordAlert            uint8 = 21
	recordHandshake        uint8 = 22
	recordApplicationData  uint8 = 23
)

// halfConn is one direction of the record layer: the version written into
// headers, the sequence number and the active protection (nil until
// ChangeCipherSpec).
type halfConn struct {
	version uint16
	seq     uint64
	cs      *cipherState
	next    *cipherState // installed by ChangeCipherSpec
}

func (hc *halfConn) changeCipherSpec() error {
	if hc.next == nil {
		return errors.New("tlspsk: ChangeCipherSpec without keys")
	}
	hc.cs, hc.next = hc.next, nil
	hc.seq = 0
	return nil
}

func (hc *halfConn) incSeq() error {
	hc.seq++
	if hc.seq == 0 {
		// RFC 5246 §6.1: renegotiate before the sequence number wraps; we
		// do not renegotiate, so we stop.
		return errors.New("tlspsk: record sequence number wrapped")
	}
	return nil
}

// macHeader writes seq_num | type | version | length into the MAC.
func (hc *halfConn) macHeader(h hash.Hash, typ uint8, n int) {
	var b [13]byte
	binary.BigEndian.PutUint64(b[:8], hc.seq)
	b[8] = typ
	binary.BigEndian.PutUint16(b[9:11], hc.version)
	binary.BigEndian.PutUint16(b[11:13], uint16(n))
	h.Write(b[:])
}

// seal appends one protected record holding payload (at most maxPlaintext
// bytes) to dst and returns the extended slice.
func (hc *halfConn) seal(dst []byte, typ uint8, payload []byte, rnd io.Reader) ([]byte, error) {
	start := len(dst)
	dst = append(dst, typ, byte(hc.version>>8), byte(hc.version), 0, 0)
	cs := hc.cs
	if cs == nil {
		dst = append(dst, payload...)
		binary.BigEndian.PutUint16(dst[start+3:], uint16(len(payload)))
		return dst, nil
	}
	var iv []byte
	if cs.cbc != nil && cs.explicitIV {
		ivStart := len(dst)
		dst = append(dst, zeroBlock[:cs.blockLen]...)
		iv = dst[ivStart:]
		if _, err := io.ReadFull(rnd, iv); err != nil {
			return dst[:start], err
		}
	}
	body := len(dst)
	dst = append(dst, payload...)
	cs.mac.Reset()
	hc.macHeader(cs.mac, typ, len(payload))
	cs.mac.Write(payload)
	dst = cs.mac.Sum(dst)
	if cs.cbc != nil {
		padLen := cs.blockLen - 1 - (len(dst)-body)%cs.blockLen
		for i := 0; i <= padLen; i++ {
			dst = append(dst, byte(padLen))
		}
		if iv != nil {
			cs.cbc.SetIV(iv)
		}
		cs.cbc.CryptBlocks(dst[body:], dst[body:])
	} else {
		cs.stream.XORKeyStream(dst[body:], dst[body:])
	}
	binary.BigEndian.PutUint16(dst[start+3:], uint16(len(dst)-start-recordHeaderLen))
	return dst, hc.incSeq()
}

// open removes the protection from one record's fragment in place and
// returns the plaintext. A failure returns the alert to send: bad_record_mac
// for any decryption, padding or MAC error (RFC 5246 §7.2.2, one alert for
// all so that they cannot be told apart), record_overflow for a fragment
// longer than allowed.
func (hc *halfConn) open(typ uint8, frag []byte) ([]byte, alert) {
	cs := hc.cs
	if cs == nil {
		if len(frag) > maxPlaintext {
			return nil, alertRecordOverflow
		}
		return frag, 0
	}
	var payload []byte
	if cs.cbc == nil {
		if len(frag) < cs.macLen {
			return nil, alertBadRecordMAC
		}
		cs.stream.XORKeyStream(frag, frag)
		payload = frag[:len(frag)-cs.macLen]
		cs.mac.Reset()
		hc.macHeader(cs.mac, typ, len(payload))
		cs.mac.Write(payload)
		cs.macBuf = cs.mac.Sum(cs.macBuf[:0])
		if !hmac.Equal(cs.macBuf, frag[len(payload):]) {
			return nil, alertBadRecordMAC
		}
	} else {
		bl := cs.blockLen
		if cs.explicitIV {
			if len(frag) < bl {
				return nil, alertBadRecordMAC
			}
			cs.cbc.SetIV(frag[:bl])
			frag = frag[bl:]
		}
		// At least one block, and room for the MAC and one padding byte.
		minLen := (cs.macLen + 1 + bl - 1) / bl * bl
		if len(frag) < minLen || len(frag)%bl != 0 {
			return nil, alertBadRecordMAC
		}
		cs.cbc.CryptBlocks(frag, frag)
		n := len(frag)
		padLen := int(frag[n-1])
		// good is 1 when padLen+1 bytes of padding fit after the MAC and
		// all of them equal padLen; computed without branching on secret
		// data. We look at the last 256 bytes (or all) whatever padLen is.
		good := subtle.ConstantTimeLessOrEq(padLen+1+cs.macLen, n)
		check := min(256, n)
		for i := 0; i < check; i++ {
			inPad := subtle.ConstantTimeLessOrEq(i, padLen)
			eq := subtle.ConstantTimeByteEq(frag[n-1-i], byte(padLen))
			good &= subtle.ConstantTimeSelect(inPad, eq, 1)
		}
		remove := subtle.ConstantTimeSelect(good, padLen+1, 0)
		payloadLen := n - remove - cs.macLen
		payload = frag[:payloadLen]
		cs.mac.Reset()
		hc.macHeader(cs.mac, typ, payloadLen)
		cs.mac.Write(payload)
		cs.macBuf = cs.mac.Sum(cs.macBuf[:0])
		// Hash the padding too, so that the MAC costs about the same
		// whatever the padding length (a partial Lucky Thirteen defence,
		// as crypto/tls does).
		cs.mac.Write(frag[n-remove:])
		macOK := subtle.ConstantTimeCompare(cs.macBuf, frag[payloadLen:payloadLen+cs.macLen])
		if macOK&good != 1 {
			return nil, alertBadRecordMAC
		}
	}
	if len(payload) > maxPlaintext {
		return nil, alertRecordOverflow
	}
	if err := hc.incSeq(); err != nil {
		return nil, alertInternalError
	}
	return payload, 0
}
