package agent

import (
	"bytes"
	"strconv"
	"strings"
)

// StickLabel is the FAT volume label of a provisioning stick.
const StickLabel = "PROVSTICK"

// FATLabel returns the volume label in a FAT boot sector (the first 512
// bytes of a partition): at 0x47 for FAT32, 0x2B for FAT12/16, 11 bytes,
// space padded. ok is false when b is not a FAT boot sector.
func FATLabel(b []byte) (label string, ok bool) {
	if len(b) < 512 || b[510] != 0x55 || b[511] != 0xAA {
		return "", false
	}
	switch {
	case bytes.Equal(b[0x52:0x5A], []byte("FAT32   ")) && b[0x42] == 0x29:
		return strings.TrimRight(string(b[0x47:0x52]), " \x00"), true
	case bytes.HasPrefix(b[0x36:0x3E], []byte("FAT")) && b[0x26] == 0x29:
		return strings.TrimRight(string(b[0x2B:0x36]), " \x00"), true
	}
	return "", false
}

// Boot holds the agent's kernel command-line parameters.
type Boot struct {
	MEAddress string // provstick.mei=
	After     string // provstick.after= poweroff (default), reboot, wait
	Countdown int    // provstick.countdown= seconds; -1: not given
	// Hold (provstick.test.hold=NAME, tests only): before writing the
	// ledger, wait for one byte on the virtio-serial port NAME, so a
	// power-cut test can snapshot the machine there and aim its kill.
	Hold string
	// Console (provstick.screen=PATH) is the technician's screen; "none"
	// turns it off. Empty: DefaultConsole.
	Console string
}

// ParseCmdline reads the provstick.* parameters from a kernel command line.
func ParseCmdline(cmdline string) Boot {
	b := Boot{After: "poweroff", Countdown: -1}
	for _, f := range strings.Fields(cmdline) {
		k, v, _ := strings.Cut(f, "=")
		switch k {
		case "provstick.mei":
			b.MEAddress = v
		case "provstick.after":
			if v == "reboot" || v == "wait" || v == "poweroff" {
				b.After = v
			}
		case "provstick.test.hold":
			b.Hold = v
		case "provstick.screen":
			b.Console = v
		case "provstick.countdown":
			if n, err := strconv.Atoi(v); err == nil && n >= 0 && n <= 3600 {
				b.Countdown = n
			}
		}
	}
	return b
}
