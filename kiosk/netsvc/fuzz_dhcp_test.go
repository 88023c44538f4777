package netsvc

import (
	"net"
	"net/netip"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// FuzzDHCP feeds arbitrary datagrams through the DHCP message parser and
// the lease logic: no panic, and every answer is to a BOOTREQUEST with an
// address from the range.
func FuzzDHCP(f *testing.F) {
	hw, _ := net.ParseMAC("02:00:00:00:00:0a")
	for _, typ := range []dhcpv4.MessageType{dhcpv4.MessageTypeDiscover, dhcpv4.MessageTypeRequest, dhcpv4.MessageTypeRelease} {
		m, err := dhcpv4.New(dhcpv4.WithMessageType(typ), dhcpv4.WithHwAddr(hw),
			dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IPv4(10, 9, 0, 100))))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(m.ToBytes())
	}
	d, err := NewDHCP(DHCPOptions{Interface: "veth0", ServerIP: netip.MustParseAddr("10.9.0.1"),
		RangeStart: netip.MustParseAddr("10.9.0.100"), RangeEnd: netip.MustParseAddr("10.9.0.120"), Suffix: "factory.example"})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := dhcpv4.FromBytes(b)
		if err != nil {
			return
		}
		r := d.Handle(t.Context(), m)
		if r == nil || r.MessageType() == dhcpv4.MessageTypeNak {
			return
		}
		ip, _ := netip.AddrFromSlice(r.YourIPAddr.To4())
		if m.OpCode != dhcpv4.OpcodeBootRequest || !d.inRange(ip) {
			t.Fatalf("answered %v with %v", m.Summary(), ip)
		}
	})
}
