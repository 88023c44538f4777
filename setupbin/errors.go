// Package setupbin reads and writes setup.bin, the Intel AMT USB-key
// provisioning file the BIOS reads from a USB stick at power-on
// (specs/setupbin.md): one header chunk and N records, each carrying MEBx
// password changes and a PID/PPS pair, one record consumed per machine.
//
// It is a pure library, shaped like archive/zip: NewReader/Open to read,
// NewWriter to stream records out, Consume/Unconsume to do what the BIOS
// does. It also holds the PID/PPS and MEBx password rules (§4).
package setupbin

import (
	"crypto/rand"
	"errors"
)

var randReader = rand.Reader

// Sentinel errors; callers branch with errors.Is.
var (
	// ErrFormat: the file breaks the layout of specs/setupbin.md §2.
	ErrFormat = errors.New("setupbin: not a valid setup.bin file")
	// ErrValue: a value breaks the rules of §3 or §4.
	ErrValue = errors.New("setupbin: invalid value")
	// ErrCheckChar: a PID or PPS check character is wrong (§4.1).
	ErrCheckChar = errors.New("setupbin: wrong check character")
)
