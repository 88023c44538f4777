// Command provstick provisions Intel AMT (vPro) PCs from a USB stick, offline.
//
// It builds setup.bin files and bootable sticks, keeps the pool of PID/PPS
// pairs, and runs the kiosk that provisions machines over TLS-PSK and
// WS-Management. Run "provstick help" for the commands.
package main

import (
	"os"

	"github.com/provstick/provstick/cmd/provstick/cli"
)

func main() {
	os.Exit(cli.Main())
}
