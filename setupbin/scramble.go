package setupbin

import "encoding/binary"

// Scrambling, specs/setupbin.md §2.5: every body byte is stored as
// (byte + 0x11) mod 256. These helpers add a constant to every byte eight
// bytes at a time (SWAR: the high bit of each byte is added separately so
// that no carry crosses into the next byte).

const (
	scrambleAdd   = 0x11
	descrambleAdd = 0xEF // −0x11 mod 256
	hiBits        = 0x8080808080808080
)

// addBytes adds k to every byte of b in place, mod 256.
func addBytes(b []byte, k byte) {
	kk := uint64(k) * 0x0101010101010101
	i := 0
	for ; i+8 <= len(b); i += 8 {
		x := binary.LittleEndian.Uint64(b[i:])
		x = ((x &^ hiBits) + (kk &^ hiBits)) ^ ((x ^ kk) & hiBits)
		binary.LittleEndian.PutUint64(b[i:], x)
	}
	for ; i < len(b); i++ {
		b[i] += k
	}
}

func scramble(b []byte)   { addBytes(b, scrambleAdd) }
func descramble(b []byte) { addBytes(b, descrambleAdd) }

// allBytes reports whether every byte of b equals c.
func allBytes(b []byte, c byte) bool {
	cc := uint64(c) * 0x0101010101010101
	i := 0
	for ; i+8 <= len(b); i += 8 {
		if binary.LittleEndian.Uint64(b[i:]) != cc {
			return false
		}
	}
	for ; i < len(b); i++ {
		if b[i] != c {
			return false
		}
	}
	return true
}
