package netsvc

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

type memLeases struct {
	mu sync.Mutex
	m  map[string]Lease
}

func (s *memLeases) Leases(context.Context) ([]Lease, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Lease
	for _, l := range s.m {
		out = append(out, l)
	}
	return out, nil
}

func (s *memLeases) SaveLease(_ context.Context, l Lease) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m[l.MAC] = l
	return nil
}

func testDHCP(t *testing.T, store LeaseStore, now func() time.Time) *DHCP {
	t.Helper()
	d, err := NewDHCP(DHCPOptions{Interface: "veth0", ServerIP: netip.MustParseAddr("10.9.0.1"),
		RangeStart: netip.MustParseAddr("10.9.0.100"), RangeEnd: netip.MustParseAddr("10.9.0.101"),
		Router: netip.MustParseAddr("10.9.0.254"), Suffix: "factory.example.", LeaseTime: 2 * time.Hour,
		Leases: store, Now: now, Logger: slog.New(slog.NewTextHandler(t.Output(), nil))})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func msg(t *testing.T, typ dhcpv4.MessageType, mac string, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	t.Helper()
	hw, _ := net.ParseMAC(mac)
	m, err := dhcpv4.New(append([]dhcpv4.Modifier{dhcpv4.WithMessageType(typ), dhcpv4.WithHwAddr(hw)}, mods...)...)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestDHCPLeases(t *testing.T) {
	ctx := t.Context()
	store := &memLeases{m: map[string]Lease{}}
	now := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	d := testDHCP(t, store, clock)
	const a, b, c = "02:00:00:00:00:0a", "02:00:00:00:00:0b", "02:00:00:00:00:0c"

	offer := d.Handle(ctx, msg(t, dhcpv4.MessageTypeDiscover, a))
	if offer == nil || offer.MessageType() != dhcpv4.MessageTypeOffer || !offer.YourIPAddr.Equal(net.IPv4(10, 9, 0, 100)) {
		t.Fatalf("offer %v", offer)
	}
	if got := offer.DomainName(); got != "factory.example" {
		t.Errorf("option 15 %q", got)
	}
	if dns := offer.DNS(); len(dns) != 1 || !dns[0].Equal(net.IPv4(10, 9, 0, 1)) {
		t.Errorf("option 6 %v", dns)
	}
	if r := offer.Router(); len(r) != 1 || !r[0].Equal(net.IPv4(10, 9, 0, 254)) {
		t.Errorf("option 3 %v", r)
	}
	if m := offer.SubnetMask(); m.String() != "ffffff00" {
		t.Errorf("option 1 %v", m)
	}
	if lt := offer.IPAddressLeaseTime(0); lt != 2*time.Hour {
		t.Errorf("lease time %v", lt)
	}
	// Another client meanwhile gets the other address.
	offerB := d.Handle(ctx, msg(t, dhcpv4.MessageTypeDiscover, b))
	if offerB == nil || !offerB.YourIPAddr.Equal(net.IPv4(10, 9, 0, 101)) {
		t.Fatalf("offer B %v", offerB)
	}
	// The range is full for a third.
	if r := d.Handle(ctx, msg(t, dhcpv4.MessageTypeDiscover, c)); r != nil {
		t.Fatalf("third client got %v", r)
	}
	sid := dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IPv4(10, 9, 0, 1)))
	ack := d.Handle(ctx, msg(t, dhcpv4.MessageTypeRequest, a, sid, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IPv4(10, 9, 0, 100))),
		dhcpv4.WithOption(dhcpv4.OptHostName("amt-1"))))
	if ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck || !ack.YourIPAddr.Equal(net.IPv4(10, 9, 0, 100)) {
		t.Fatalf("ack %v", ack)
	}
	if l := store.m[a]; l.IP != netip.MustParseAddr("10.9.0.100") || l.Hostname != "amt-1" || !l.Expires.Equal(now.Add(2*time.Hour)) {
		t.Errorf("persisted %+v", l)
	}
	// B asks for A's address: NAK.
	nak := d.Handle(ctx, msg(t, dhcpv4.MessageTypeRequest, b, sid, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IPv4(10, 9, 0, 100)))))
	if nak == nil || nak.MessageType() != dhcpv4.MessageTypeNak {
		t.Fatalf("want NAK, got %v", nak)
	}
	// A request for another server is ignored and frees B's offer.
	other := dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IPv4(10, 9, 0, 2)))
	if r := d.Handle(ctx, msg(t, dhcpv4.MessageTypeRequest, b, other)); r != nil {
		t.Fatalf("answered a request for another server: %v", r)
	}
	if r := d.Handle(ctx, msg(t, dhcpv4.MessageTypeDiscover, c)); r == nil || !r.YourIPAddr.Equal(net.IPv4(10, 9, 0, 101)) {
		t.Fatalf("after B went elsewhere, C got %v", r)
	}

	// A restarted kiosk gives A the same address from the persisted lease.
	d2 := testDHCP(t, store, clock)
	if r := d2.Handle(ctx, msg(t, dhcpv4.MessageTypeDiscover, a)); r == nil || !r.YourIPAddr.Equal(net.IPv4(10, 9, 0, 100)) {
		t.Fatalf("after restart %v", r)
	}
	// Release: the address is free again (persisted as expired).
	d2.Handle(ctx, msg(t, dhcpv4.MessageTypeRelease, a))
	if l := store.m[a]; !l.Expires.Before(now) {
		t.Errorf("released lease %+v", l)
	}
	if r := d2.Handle(ctx, msg(t, dhcpv4.MessageTypeDiscover, b)); r == nil || !r.YourIPAddr.Equal(net.IPv4(10, 9, 0, 100)) {
		t.Fatalf("after release B got %v", r)
	}
	if s := d.Stats(); s.Acks != 1 || s.Naks != 1 || s.Offers != 3 {
		t.Errorf("stats %+v", s)
	}
}

func TestDHCPOptionsInvalid(t *testing.T) {
	ok := DHCPOptions{Interface: "veth0", ServerIP: netip.MustParseAddr("10.9.0.1"), RangeStart: netip.MustParseAddr("10.9.0.100"),
		RangeEnd: netip.MustParseAddr("10.9.0.110"), Suffix: "x.example"}
	for name, mut := range map[string]func(*DHCPOptions){
		"no interface":    func(o *DHCPOptions) { o.Interface = "" },
		"range outside":   func(o *DHCPOptions) { o.RangeEnd = netip.MustParseAddr("10.9.1.1") },
		"range backwards": func(o *DHCPOptions) { o.RangeStart, o.RangeEnd = o.RangeEnd, o.RangeStart },
		"no suffix":       func(o *DHCPOptions) { o.Suffix = " " },
		"ipv6 server":     func(o *DHCPOptions) { o.ServerIP = netip.MustParseAddr("fd00::1") },
	} {
		o := ok
		mut(&o)
		if _, err := NewDHCP(o); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	if _, err := NewDHCP(ok); err != nil {
		t.Fatal(err)
	}
}
