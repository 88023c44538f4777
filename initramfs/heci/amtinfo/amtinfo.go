// Package amtinfo collects what provstick amtinfo shows and the agent
// records about a machine's AMT: versions, provisioning state and control
// mode, UUID, DNS suffix, wired network settings and the trusted root
// certificate hashes, over any heci.Device (specs/heci.md §3).
package amtinfo

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"

	"github.com/provstick/provstick/initramfs/heci"
	"github.com/provstick/provstick/initramfs/heci/amthi"
	"github.com/provstick/provstick/initramfs/heci/mkhi"
)

// Info is the collected set. JSON field names are stable.
type Info struct {
	UUID              string              `json:"uuid"`
	BIOSVersion       string              `json:"biosVersion"`
	AMTVersion        string              `json:"amtVersion,omitempty"`
	BuildNumber       string              `json:"buildNumber,omitempty"`
	SKU               string              `json:"sku,omitempty"`
	CodeVersions      []amthi.CodeVersion `json:"codeVersions"`
	FirmwareVersion   string              `json:"firmwareVersion,omitempty"` // MKHI code version
	ProvisioningState string              `json:"provisioningState"`         // pre, in, post
	ProvisioningMode  string              `json:"provisioningMode,omitempty"`
	ControlMode       string              `json:"controlMode,omitempty"` // none, client, admin
	TLSMode           string              `json:"provisioningTLSMode,omitempty"`
	DNSSuffix         string              `json:"dnsSuffix"`
	Wired             *LAN                `json:"wired,omitempty"`
	Hashes            []Hash              `json:"certHashes"`
	// Unsupported lists the commands this firmware refused as unknown
	// (UNSUPPORTED), whose fields are therefore empty.
	Unsupported []string `json:"unsupported,omitempty"`
}

// LAN is the wired interface.
type LAN struct {
	MAC     string `json:"mac"`
	IPv4    string `json:"ipv4"`
	DHCP    bool   `json:"dhcp"`
	LinkUp  bool   `json:"linkUp"`
	Enabled bool   `json:"enabled"`
}

// Hash is one trusted root certificate hash.
type Hash struct {
	Handle    uint32 `json:"handle"`
	Name      string `json:"name"`
	Algorithm string `json:"algorithm"`
	Hash      string `json:"hash"` // hex
	Default   bool   `json:"default"`
	UserAdded bool   `json:"userAdded"`
	Active    bool   `json:"active"`
}

// Options tune Collect.
type Options struct {
	// Logger gets a debug line per command; nil discards.
	Logger *slog.Logger
}

func stateName(s amthi.ProvisioningState) string {
	switch s {
	case amthi.StatePre:
		return "pre"
	case amthi.StateIn:
		return "in"
	case amthi.StatePost:
		return "post"
	}
	return fmt.Sprintf("unknown(%d)", uint32(s))
}

func controlName(m amthi.ControlMode) string {
	switch m {
	case amthi.ControlPre:
		return "none"
	case amthi.ControlClient:
		return "client"
	case amthi.ControlAdmin:
		return "admin"
	}
	return fmt.Sprintf("unknown(%d)", uint32(m))
}

// Collect connects to the AMTHI and MKHI clients of dev and reads the set.
// A command the firmware answers UNSUPPORTED is noted in Info.Unsupported;
// a link reset is retried once per command (they are all reads); any other
// failure of an AMTHI command is an error. MKHI failures only leave
// FirmwareVersion empty.
func Collect(ctx context.Context, dev heci.Device, opts *Options) (*Info, error) {
	log := slog.New(slog.DiscardHandler)
	if opts != nil && opts.Logger != nil {
		log = opts.Logger
	}
	t, err := dev.Connect(ctx, heci.AMTHIClient)
	if err != nil {
		return nil, err
	}
	defer t.Close()
	info := &Info{CodeVersions: []amthi.CodeVersion{}, Hashes: []Hash{}}
	// do runs one command, retrying once after a reset; UNSUPPORTED is
	// recorded and not an error.
	do := func(name string, f func() error) error {
		err := f()
		if errors.Is(err, heci.ErrReset) {
			log.Debug("amtinfo: link reset, retrying", "command", name)
			err = f()
		}
		if errors.Is(err, amthi.StatusUnsupported) {
			info.Unsupported = append(info.Unsupported, name)
			return nil
		}
		return err
	}
	steps := []struct {
		name string
		f    func() error
	}{
		{"GetUUID", func() error {
			r, err := amthi.GetUUID{}.Execute(ctx, t)
			if err == nil {
				info.UUID = r.UUID.String()
			}
			return err
		}},
		{"GetCodeVersions", func() error {
			r, err := amthi.GetCodeVersions{}.Execute(ctx, t)
			if err == nil {
				info.BIOSVersion, info.CodeVersions = r.BIOS, r.Versions
				info.AMTVersion, _ = r.Lookup("AMT")
				info.BuildNumber, _ = r.Lookup("Build Number")
				info.SKU, _ = r.Lookup("Sku")
			}
			return err
		}},
		{"GetProvisioningState", func() error {
			r, err := amthi.GetProvisioningState{}.Execute(ctx, t)
			if err == nil {
				info.ProvisioningState = stateName(r.State)
			}
			return err
		}},
		{"GetProvisioningMode", func() error {
			r, err := amthi.GetProvisioningMode{}.Execute(ctx, t)
			if err == nil {
				info.ProvisioningMode = r.Mode.String()
			}
			return err
		}},
		{"GetControlMode", func() error {
			r, err := amthi.GetControlMode{}.Execute(ctx, t)
			if err == nil {
				info.ControlMode = controlName(r.Mode)
			}
			return err
		}},
		{"GetProvisioningTLSMode", func() error {
			r, err := amthi.GetProvisioningTLSMode{}.Execute(ctx, t)
			if err == nil {
				info.TLSMode = r.Mode.String()
			}
			return err
		}},
		{"GetPKIFQDNSuffix", func() error {
			r, err := amthi.GetPKIFQDNSuffix{}.Execute(ctx, t)
			if err == nil {
				info.DNSSuffix = r.Suffix
			}
			return err
		}},
		{"GetLANInterfaceSettings", func() error {
			r, err := amthi.GetLANInterfaceSettings{Index: amthi.InterfaceWired}.Execute(ctx, t)
			if err == nil {
				info.Wired = &LAN{MAC: r.MAC.String(), IPv4: r.Addr().String(), DHCP: r.DHCPEnabled, LinkUp: r.LinkUp, Enabled: r.Enabled}
			}
			return err
		}},
		{"EnumerateHashHandles", func() error {
			r, err := amthi.EnumerateHashHandles{}.Execute(ctx, t)
			if err != nil {
				return err
			}
			hashes := make([]Hash, 0, len(r.Handles))
			for _, h := range r.Handles {
				e, err := amthi.GetCertHashEntry{Handle: h}.Execute(ctx, t)
				if err != nil {
					return err
				}
				hashes = append(hashes, Hash{
					Handle: h, Name: e.Name, Algorithm: e.Algorithm.String(), Hash: hex.EncodeToString(e.Digest()),
					Default: e.IsDefault, UserAdded: !e.IsDefault, Active: e.IsActive,
				})
			}
			info.Hashes = hashes
			return nil
		}},
	}
	for _, s := range steps {
		if err := do(s.name, s.f); err != nil {
			return nil, fmt.Errorf("reading AMT information: %w", err)
		}
	}
	if m, err := dev.Connect(ctx, heci.MKHIClient); err != nil {
		log.Debug("amtinfo: no MKHI client", "err", err)
	} else {
		defer m.Close()
		if r, err := (mkhi.GetFWVersion{}).Execute(ctx, m); err != nil {
			log.Debug("amtinfo: MKHI firmware version", "err", err)
		} else {
			info.FirmwareVersion = r.Code().String()
		}
	}
	return info, nil
}
