package netsvc

// DHCP for an isolated network with nothing else on it
// (../../../shared/specs/amt-psk.md §1: "where nothing else hands out
// addresses, DHCP (options 1, 3, 6, 15, lease)"). Off by default: a second
// DHCP server on a network with one already is a classic outage, so the
// server probes the interface first and refuses to start if anything
// answers a DISCOVER (dhcp_linux.go).

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// Lease is one address handed to one client.
type Lease struct {
	MAC      string // aa:bb:cc:dd:ee:ff
	IP       netip.Addr
	Hostname string // option 12 from the client, if any
	Expires  time.Time
}

// LeaseStore persists leases (the kiosk store). Leases is read once at
// start; SaveLease is called for each lease granted, renewed or released
// (released: Expires in the past).
type LeaseStore interface {
	Leases(ctx context.Context) ([]Lease, error)
	SaveLease(ctx context.Context, l Lease) error
}

// DHCPOptions configure a DHCP server.
type DHCPOptions struct {
	// Interface the server answers on (and probes). Required.
	Interface string
	// ServerIP is the kiosk's address on the interface: the server
	// identifier (option 54), and the DNS server (option 6) unless DNS is
	// set. Required.
	ServerIP netip.Addr
	// Range is the first and last address handed out (inclusive), in the
	// same subnet as ServerIP. Required.
	RangeStart, RangeEnd netip.Addr
	// Prefix is the subnet (option 1 from its length); 0 bits → /24.
	PrefixBits int
	// Router (option 3); invalid → none (an isolated network may have no
	// router).
	Router netip.Addr
	// DNS (option 6); invalid → ServerIP (the kiosk answers DNS).
	DNS netip.Addr
	// Suffix is option 15, the domain AMT uses to find
	// provisionserver.<suffix>. Required.
	Suffix string
	// LeaseTime; 0 → 1 h.
	LeaseTime time.Duration
	// Leases persist the leases; nil keeps them in memory only.
	Leases LeaseStore
	// ProbeTimeout is how long the server listens for another DHCP
	// server's OFFER before it starts; 0 → 3 s.
	ProbeTimeout time.Duration
	// Logger: leases at info, refusals at warn. nil discards.
	Logger *slog.Logger
	// Now is the clock (tests); nil → time.Now.
	Now func() time.Time
}

// ErrOtherServer: another DHCP server answered on the interface; the
// kiosk's must not start. The error names the server.
var ErrOtherServer = errors.New("netsvc: another DHCP server answers on this network")

// ErrNoAddress: the range has no free address.
var ErrNoAddress = errors.New("dhcp: no free address in the range")

// DHCPStats counts what the server did.
type DHCPStats struct {
	Offers, Acks, Naks, Releases, Ignored uint64
}

// DHCP is the server's lease logic; Serve (dhcp_linux.go) puts it on the
// wire.
type DHCP struct {
	o   DHCPOptions
	log *slog.Logger
	now func() time.Time

	mu     sync.Mutex
	byMAC  map[string]*Lease
	byIP   map[netip.Addr]*Lease
	loaded bool

	offers, acks, naks, releases, ignored atomic.Uint64
}

// NewDHCP checks the options.
func NewDHCP(o DHCPOptions) (*DHCP, error) {
	if o.Interface == "" {
		return nil, errors.New("dhcp: no interface")
	}
	if !o.ServerIP.Is4() {
		return nil, fmt.Errorf("dhcp: server address %v: want IPv4", o.ServerIP)
	}
	if o.PrefixBits == 0 {
		o.PrefixBits = 24
	}
	if o.PrefixBits < 8 || o.PrefixBits > 30 {
		return nil, fmt.Errorf("dhcp: prefix length %d: want 8 to 30", o.PrefixBits)
	}
	pfx := netip.PrefixFrom(o.ServerIP, o.PrefixBits).Masked()
	if !o.RangeStart.Is4() || !o.RangeEnd.Is4() || o.RangeEnd.Less(o.RangeStart) || !pfx.Contains(o.RangeStart) || !pfx.Contains(o.RangeEnd) {
		return nil, fmt.Errorf("dhcp: range %v-%v: want IPv4 addresses in %v, first ≤ last", o.RangeStart, o.RangeEnd, pfx)
	}
	if o.Router.IsValid() && !o.Router.Is4() {
		return nil, fmt.Errorf("dhcp: router %v: want IPv4", o.Router)
	}
	if !o.DNS.IsValid() {
		o.DNS = o.ServerIP
	}
	o.Suffix = strings.TrimSuffix(strings.TrimSpace(o.Suffix), ".")
	if o.Suffix == "" {
		return nil, errors.New("dhcp: no DNS suffix (option 15): AMT finds the kiosk as provisionserver.<suffix>")
	}
	if o.LeaseTime <= 0 {
		o.LeaseTime = time.Hour
	}
	if o.ProbeTimeout <= 0 {
		o.ProbeTimeout = 3 * time.Second
	}
	d := &DHCP{o: o, log: o.Logger, now: o.Now, byMAC: map[string]*Lease{}, byIP: map[netip.Addr]*Lease{}}
	if d.log == nil {
		d.log = slog.New(slog.DiscardHandler)
	}
	if d.now == nil {
		d.now = time.Now
	}
	return d, nil
}

// Stats returns the counters.
func (d *DHCP) Stats() DHCPStats {
	return DHCPStats{Offers: d.offers.Load(), Acks: d.acks.Load(), Naks: d.naks.Load(), Releases: d.releases.Load(), Ignored: d.ignored.Load()}
}

// load reads the persisted leases once.
func (d *DHCP) load(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.loaded || d.o.Leases == nil {
		d.loaded = true
		return nil
	}
	ls, err := d.o.Leases.Leases(ctx)
	if err != nil {
		return fmt.Errorf("dhcp: reading leases: %w", err)
	}
	for _, l := range ls {
		l := l
		d.byMAC[l.MAC] = &l
		d.byIP[l.IP] = &l
	}
	d.loaded = true
	return nil
}

// Leases returns the current leases (tests, web).
func (d *DHCP) Leases() []Lease {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]Lease, 0, len(d.byMAC))
	for _, l := range d.byMAC {
		out = append(out, *l)
	}
	return out
}

// pick returns the address for mac: its lease, the requested address if
// free, or the first free address of the range. Called with d.mu held.
func (d *DHCP) pick(mac string, want netip.Addr, now time.Time) (netip.Addr, error) {
	if l, ok := d.byMAC[mac]; ok && d.inRange(l.IP) {
		return l.IP, nil
	}
	free := func(a netip.Addr) bool {
		l, ok := d.byIP[a]
		return a != d.o.ServerIP && a != d.o.Router && (!ok || l.MAC == mac || l.Expires.Before(now))
	}
	if want.IsValid() && d.inRange(want) && free(want) {
		return want, nil
	}
	for a := d.o.RangeStart; ; a = a.Next() {
		if free(a) {
			return a, nil
		}
		if a == d.o.RangeEnd {
			break
		}
	}
	return netip.Addr{}, ErrNoAddress
}

func (d *DHCP) inRange(a netip.Addr) bool {
	return a.Is4() && !a.Less(d.o.RangeStart) && !d.o.RangeEnd.Less(a)
}

// grant records a lease for mac at ip. Called with d.mu held.
func (d *DHCP) grant(mac string, ip netip.Addr, host string, exp time.Time) Lease {
	if old, ok := d.byMAC[mac]; ok && old.IP != ip {
		delete(d.byIP, old.IP)
	}
	if other, ok := d.byIP[ip]; ok && other.MAC != mac {
		delete(d.byMAC, other.MAC)
	}
	l := &Lease{MAC: mac, IP: ip, Hostname: host, Expires: exp}
	d.byMAC[mac], d.byIP[ip] = l, l
	return *l
}

// Handle answers one client message; nil means no answer.
func (d *DHCP) Handle(ctx context.Context, m *dhcpv4.DHCPv4) *dhcpv4.DHCPv4 {
	if err := d.load(ctx); err != nil {
		d.log.Error("dhcp", "err", err)
		return nil
	}
	if m.OpCode != dhcpv4.OpcodeBootRequest || len(m.ClientHWAddr) != 6 {
		d.ignored.Add(1)
		return nil
	}
	mac := m.ClientHWAddr.String()
	now := d.now()
	switch m.MessageType() {
	case dhcpv4.MessageTypeDiscover:
		want, _ := netip.AddrFromSlice(m.RequestedIPAddress().To4())
		d.mu.Lock()
		ip, err := d.pick(mac, want, now)
		if err == nil {
			// Held briefly for the REQUEST; not persisted until then.
			if _, ok := d.byMAC[mac]; !ok {
				d.grant(mac, ip, m.HostName(), now.Add(time.Minute))
			}
		}
		d.mu.Unlock()
		if err != nil {
			d.log.Warn("dhcp: no address to offer", "mac", mac, "err", err)
			d.ignored.Add(1)
			return nil
		}
		d.offers.Add(1)
		d.log.Debug("dhcp offer", "mac", mac, "ip", ip)
		return d.reply(m, dhcpv4.MessageTypeOffer, ip)
	case dhcpv4.MessageTypeRequest:
		if sid := m.ServerIdentifier(); sid != nil && !sid.Equal(net.IP(d.o.ServerIP.AsSlice())) {
			// The client chose another server's offer: drop ours.
			d.mu.Lock()
			if l, ok := d.byMAC[mac]; ok && l.Expires.Sub(now) <= time.Minute {
				delete(d.byMAC, mac)
				delete(d.byIP, l.IP)
			}
			d.mu.Unlock()
			d.ignored.Add(1)
			return nil
		}
		want, _ := netip.AddrFromSlice(m.RequestedIPAddress().To4())
		if !want.IsValid() || want.IsUnspecified() {
			want, _ = netip.AddrFromSlice(m.ClientIPAddr.To4())
		}
		d.mu.Lock()
		ip, err := d.pick(mac, want, now)
		var l Lease
		ok := err == nil && ip == want
		if ok {
			l = d.grant(mac, ip, m.HostName(), now.Add(d.o.LeaseTime))
		}
		d.mu.Unlock()
		if !ok {
			d.naks.Add(1)
			d.log.Info("dhcp: refused a request", "mac", mac, "requested", want)
			return d.nak(m)
		}
		if d.o.Leases != nil {
			if err := d.o.Leases.SaveLease(ctx, l); err != nil {
				d.log.Error("dhcp: saving a lease", "mac", mac, "ip", ip, "err", err)
				d.naks.Add(1)
				return d.nak(m)
			}
		}
		d.acks.Add(1)
		d.log.Info("dhcp lease", "mac", mac, "ip", ip, "hostname", l.Hostname, "expires", l.Expires.UTC().Format(time.RFC3339))
		return d.reply(m, dhcpv4.MessageTypeAck, ip)
	case dhcpv4.MessageTypeRelease:
		d.mu.Lock()
		l, ok := d.byMAC[mac]
		var rel Lease
		if ok {
			l.Expires = now.Add(-time.Second)
			rel = *l
		}
		d.mu.Unlock()
		if ok {
			d.releases.Add(1)
			if d.o.Leases != nil {
				if err := d.o.Leases.SaveLease(ctx, rel); err != nil {
					d.log.Error("dhcp: saving a released lease", "mac", mac, "err", err)
				}
			}
		}
		return nil
	default:
		d.ignored.Add(1)
		return nil
	}
}

func (d *DHCP) reply(m *dhcpv4.DHCPv4, t dhcpv4.MessageType, ip netip.Addr) *dhcpv4.DHCPv4 {
	mods := []dhcpv4.Modifier{
		dhcpv4.WithMessageType(t),
		dhcpv4.WithYourIP(net.IP(ip.AsSlice())),
		dhcpv4.WithServerIP(net.IP(d.o.ServerIP.AsSlice())),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IP(d.o.ServerIP.AsSlice()))),
		dhcpv4.WithNetmask(net.CIDRMask(d.o.PrefixBits, 32)),
		dhcpv4.WithOption(dhcpv4.OptDNS(net.IP(d.o.DNS.AsSlice()))),
		dhcpv4.WithOption(dhcpv4.OptDomainName(d.o.Suffix)),
		dhcpv4.WithLeaseTime(uint32(d.o.LeaseTime / time.Second)),
	}
	if d.o.Router.IsValid() {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptRouter(net.IP(d.o.Router.AsSlice()))))
	}
	r, err := dhcpv4.NewReplyFromRequest(m, mods...)
	if err != nil {
		d.log.Error("dhcp: building a reply", "err", err)
		return nil
	}
	return r
}

func (d *DHCP) nak(m *dhcpv4.DHCPv4) *dhcpv4.DHCPv4 {
	r, err := dhcpv4.NewReplyFromRequest(m, dhcpv4.WithMessageType(dhcpv4.MessageTypeNak),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IP(d.o.ServerIP.AsSlice()))))
	if err != nil {
		return nil
	}
	return r
}
