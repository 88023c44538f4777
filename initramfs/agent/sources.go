package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/provstick/provstick/internal/ledger"
)

// DMIReader reads the machine's SMBIOS identity.
type DMIReader interface {
	ReadDMI() (*ledger.DMI, error)
}

// NICReader lists the host's network interface MAC addresses.
type NICReader interface {
	MACs() ([]string, error)
}

// TPMReader reads the TPM's endorsement key identity. ErrNoTPM (wrapped)
// means there is no TPM device.
type TPMReader interface {
	ReadEK(ctx context.Context) (*ledger.TPM, error)
}

// ErrNoTPM: no TPM device node exists.
var ErrNoTPM = errors.New("agent: no TPM device")

// SysDMI reads /sys/class/dmi/id under Root (empty: "/sys").
type SysDMI struct{ Root string }

// ReadDMI reads sys_vendor, product_name, product_serial and product_uuid.
// The last two are root-only on a running system; the agent is root.
func (s SysDMI) ReadDMI() (*ledger.DMI, error) {
	dir := filepath.Join(sysRoot(s.Root), "class", "dmi", "id")
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil || len(b) > 4096 {
			return ""
		}
		return strings.TrimSpace(string(b))
	}
	d := &ledger.DMI{Vendor: read("sys_vendor"), Model: read("product_name"), Serial: read("product_serial"), SystemUUID: strings.ToLower(read("product_uuid"))}
	if *d == (ledger.DMI{}) {
		return nil, fmt.Errorf("reading DMI from %s: no readable field", dir)
	}
	return d, nil
}

// SysNICs reads /sys/class/net/*/address under Root (empty: "/sys"),
// leaving out loopback and all-zero addresses.
type SysNICs struct{ Root string }

// MACs returns the addresses sorted, lower case.
func (s SysNICs) MACs() ([]string, error) {
	dir := filepath.Join(sysRoot(s.Root), "class", "net")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("listing network interfaces: %w", err)
	}
	var macs []string
	for _, e := range ents {
		if e.Name() == "lo" {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name(), "address"))
		if err != nil || len(b) > 64 {
			continue
		}
		m := strings.ToLower(strings.TrimSpace(string(b)))
		if len(m) != 17 || m == "00:00:00:00:00:00" {
			continue
		}
		macs = append(macs, m)
	}
	slices.Sort(macs)
	macs = slices.Compact(macs)
	if len(macs) == 0 {
		return nil, fmt.Errorf("reading MAC addresses under %s: no network interface with one", dir)
	}
	return macs, nil
}

func sysRoot(r string) string {
	if r == "" {
		return "/sys"
	}
	return r
}
