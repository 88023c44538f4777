package netsvc

import (
	"bytes"
	"flag"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

var update = flag.Bool("update", false, "rewrite the DHCP messages in testdata")

// seedMessages are the client messages under testdata: a DISCOVER, a
// REQUEST for our server and a RELEASE, from one fixed MAC and
// transaction id.
func seedMessages(t testing.TB) map[string][]byte {
	hw, _ := net.ParseMAC("02:00:00:00:00:0a")
	xid := dhcpv4.TransactionID{1, 2, 3, 4}
	out := map[string][]byte{}
	for name, typ := range map[string]dhcpv4.MessageType{"discover": dhcpv4.MessageTypeDiscover, "request": dhcpv4.MessageTypeRequest, "release": dhcpv4.MessageTypeRelease} {
		m, err := dhcpv4.New(dhcpv4.WithTransactionID(xid), dhcpv4.WithMessageType(typ), dhcpv4.WithHwAddr(hw),
			dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IPv4(10, 9, 0, 100))),
			dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IPv4(10, 9, 0, 1))))
		if err != nil {
			t.Fatal(err)
		}
		out["dhcp-"+name+".bin"] = m.ToBytes()
	}
	return out
}

// TestDHCPSeeds keeps testdata/dhcp-*.bin (refresh with -update).
func TestDHCPSeeds(t *testing.T) {
	for name, want := range seedMessages(t) {
		path := filepath.Join("testdata", name)
		if *update {
			if err := os.WriteFile(path, want, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v (run with -update)", err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s: got %x, want %x (run with -update)", name, got, want)
		}
	}
}

// FuzzDHCP feeds arbitrary datagrams through the DHCP message parser and
// the lease logic: no panic, and every answer is to a BOOTREQUEST with an
// address from the range. Seeded from testdata/dhcp-*.bin.
func FuzzDHCP(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "dhcp-*.bin"))
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
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
