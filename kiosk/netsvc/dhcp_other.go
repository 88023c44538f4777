//go:build !linux

package netsvc

import (
	"context"
	"errors"
)

var errDHCPLinux = errors.New("dhcp: the kiosk's DHCP server runs on Linux only")

// Probe is Linux-only.
func (d *DHCP) Probe(context.Context) error { return errDHCPLinux }

// Serve is Linux-only.
func (d *DHCP) Serve(context.Context) error { return errDHCPLinux }
