package agent

import (
	"context"
	crand "crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// LinkNetwork is the target's own network: wired Ethernet interfaces
// brought up with netlink, DHCPv4 with nclient4 (a raw socket, so it
// needs root and af_packet, built into Debian's kernel), Go's resolver
// and a TCP dial. The NIC drivers must be loaded already (the builder
// packs e1000e, igb, r8169, e1000 and virtio_net when the recipe enables
// check_kiosk).
type LinkNetwork struct {
	// Sys is the sysfs root (empty: "/sys").
	Sys    string
	Logger *slog.Logger
}

var _ Network = LinkNetwork{}

// DHCPAttempt bounds one DISCOVER or REQUEST exchange; the client tries
// again until the check's context ends.
const DHCPAttempt = 2 * time.Second

// Lease brings every wired interface up, waits for a carrier on each and
// asks DHCP on each that has one, in parallel; the first lease wins and
// is configured (address and, if the lease names one, the default route).
func (n LinkNetwork) Lease(ctx context.Context) (*Lease, error) {
	log := n.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	links, err := n.wired()
	if err != nil {
		return nil, err
	}
	if len(links) == 0 {
		return nil, fmt.Errorf("%w (no driver for this machine's NIC in the initramfs?)", ErrNoNIC)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	t0 := time.Now()
	go entropy() // gathers while the links negotiate
	type result struct {
		link    netlink.Link
		lease   *nclient4.Lease
		carrier bool
		err     error
	}
	results := make(chan result, len(links))
	for _, l := range links {
		name := l.Attrs().Name
		if err := netlink.LinkSetUp(l); err != nil {
			results <- result{link: l, err: fmt.Errorf("bringing %s up: %w", name, err)}
			continue
		}
		go func() {
			if err := n.waitCarrier(ctx, name); err != nil {
				results <- result{link: l, err: err}
				return
			}
			log.Debug("link up", "interface", name, "after", time.Since(t0))
			if err := waitEntropy(ctx, log); err != nil {
				results <- result{link: l, carrier: true, err: fmt.Errorf("%w on %s: %w", ErrNoLease, name, err)}
				return
			}
			t1 := time.Now()
			lease, err := dhcpLease(ctx, name)
			log.Debug("dhcp", "interface", name, "took", time.Since(t1), "err", err)
			results <- result{link: l, lease: lease, carrier: true, err: err}
		}()
	}
	var errs []error
	carrier := false
	for range links {
		r := <-results
		carrier = carrier || r.carrier
		if r.err != nil {
			errs = append(errs, r.err)
			continue
		}
		cancel() // the others
		return configure(r.link, r.lease)
	}
	if !carrier {
		return nil, fmt.Errorf("%w: %w", ErrNoLink, errors.Join(errs...))
	}
	return nil, fmt.Errorf("%w: %w", ErrNoLease, errors.Join(errs...))
}

// wired lists the Ethernet devices that are not wireless.
func (n LinkNetwork) wired() ([]netlink.Link, error) {
	all, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("listing network interfaces: %w", err)
	}
	var out []netlink.Link
	for _, l := range all {
		a := l.Attrs()
		if l.Type() != "device" || a.EncapType != "ether" || a.Flags&net.FlagLoopback != 0 {
			continue
		}
		if _, err := os.Stat(filepath.Join(sysRoot(n.Sys), "class", "net", a.Name, "wireless")); err == nil {
			continue
		}
		out = append(out, l)
	}
	return out, nil
}

// waitCarrier polls /sys/class/net/NAME/carrier (autonegotiation takes a
// few seconds on real NICs) until it reads 1 or ctx ends.
func (n LinkNetwork) waitCarrier(ctx context.Context, name string) error {
	p := filepath.Join(sysRoot(n.Sys), "class", "net", name, "carrier")
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		if b, err := os.ReadFile(p); err == nil && strings.TrimSpace(string(b)) == "1" {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: no carrier: %w", name, ctx.Err())
		case <-t.C:
		}
	}
}

var entropy = sync.OnceValue(func() error {
	var b [1]byte
	_, err := crand.Read(b[:])
	return err
})

// waitEntropy makes sure the kernel's random number generator is ready
// before DHCP: nclient4's transaction ID polls getrandom without blocking
// (for up to two minutes, whatever its context), and never makes the
// kernel gather entropy. crypto/rand's blocking getrandom does (jitter
// entropy, a second or so on a machine without a trusted RDRAND, as QEMU's
// default CPU). Bounded by ctx.
func waitEntropy(ctx context.Context, log *slog.Logger) error {
	t0 := time.Now()
	done := make(chan error, 1)
	go func() { done <- entropy() }()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("reading random numbers: %w", err)
		}
		log.Debug("random numbers ready", "waited", time.Since(t0))
		return nil
	case <-ctx.Done():
		return fmt.Errorf("waiting for the kernel's random numbers: %w", ctx.Err())
	}
}

// dhcpLease runs DISCOVER/OFFER/REQUEST/ACK on name until ctx ends.
func dhcpLease(ctx context.Context, name string) (*nclient4.Lease, error) {
	c, err := nclient4.New(name, nclient4.WithTimeout(DHCPAttempt), nclient4.WithRetry(1000))
	if err != nil {
		return nil, fmt.Errorf("starting DHCP on %s: %w", name, err)
	}
	defer c.Close()
	l, err := c.Request(ctx, dhcpv4.WithRequestedOptions(dhcpv4.OptionSubnetMask, dhcpv4.OptionRouter,
		dhcpv4.OptionDomainNameServer, dhcpv4.OptionDomainName))
	if err != nil {
		return nil, fmt.Errorf("%w on %s: %w", ErrNoLease, name, err)
	}
	return l, nil
}

// configure puts the lease's address (and default route) on the link.
func configure(link netlink.Link, l *nclient4.Lease) (*Lease, error) {
	ack := l.ACK
	name := link.Attrs().Name
	ip := ack.YourIPAddr.To4()
	mask := ack.SubnetMask()
	if mask == nil {
		mask = ip.DefaultMask()
	}
	addr, ok := netip.AddrFromSlice(ip)
	if !ok {
		return nil, fmt.Errorf("%w on %s: the ACK gives no IPv4 address", ErrNoLease, name)
	}
	bits, _ := mask.Size()
	out := &Lease{Interface: name, MAC: link.Attrs().HardwareAddr.String(), Addr: netip.PrefixFrom(addr, bits), Domain: ack.DomainName()}
	if s, ok := netip.AddrFromSlice(ack.ServerIdentifier().To4()); ok {
		out.Server = s
	}
	for _, d := range ack.DNS() {
		if a, ok := netip.AddrFromSlice(d.To4()); ok {
			out.DNS = append(out.DNS, a)
		}
	}
	if err := netlink.AddrAdd(link, &netlink.Addr{IPNet: &net.IPNet{IP: ip, Mask: mask}}); err != nil && !errors.Is(err, unix.EEXIST) {
		return nil, fmt.Errorf("configuring %s on %s: %w", out.Addr, name, err)
	}
	if rs := ack.Router(); len(rs) > 0 {
		if gw, ok := netip.AddrFromSlice(rs[0].To4()); ok {
			out.Router = gw
			err := netlink.RouteAdd(&netlink.Route{LinkIndex: link.Attrs().Index, Gw: rs[0].To4()})
			if err != nil && !errors.Is(err, unix.EEXIST) {
				return nil, fmt.Errorf("adding the default route via %s on %s: %w", gw, name, err)
			}
		}
	}
	return out, nil
}

// Resolve asks server with ResolveWith.
func (LinkNetwork) Resolve(ctx context.Context, server netip.Addr, name string) ([]netip.Addr, error) {
	return ResolveWith(ctx, server, name)
}

// Probe connects with ProbeTCP.
func (LinkNetwork) Probe(ctx context.Context, addr netip.AddrPort) error {
	return ProbeTCP(ctx, addr)
}
