package netsvc

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/provstick/provstick/internal/amtsim"
	wire "github.com/provstick/provstick/internal/hello"
)

func serveDNS(t *testing.T, o DNSOptions) (*DNS, string) {
	t.Helper()
	o.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	d, err := NewDNS(o)
	if err != nil {
		t.Fatal(err)
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() { done <- d.Serve(ctx, pc, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return d, pc.LocalAddr().String()
}

func TestDNSAnswers(t *testing.T) {
	d, addr := serveDNS(t, DNSOptions{Suffixes: []string{"lab.example", "Line3.Example."}, SCSFQDN: "scs.factory.example",
		Answer: netip.MustParseAddr("127.0.0.1")})
	tests := []struct {
		name  string
		qtype uint16
		net   string
		rcode int
		want  string // A record, "" for none
	}{
		{"provisionserver.lab.example.", dns.TypeA, "udp", dns.RcodeSuccess, "127.0.0.1"},
		{"PROVISIONSERVER.line3.EXAMPLE.", dns.TypeA, "tcp", dns.RcodeSuccess, "127.0.0.1"},
		{"scs.factory.example.", dns.TypeA, "udp", dns.RcodeSuccess, "127.0.0.1"},
		{"provisionserver.lab.example.", dns.TypeAAAA, "udp", dns.RcodeSuccess, ""},
		{"provisionserver.other.example.", dns.TypeA, "udp", dns.RcodeRefused, ""},
		{"www.example.com.", dns.TypeA, "udp", dns.RcodeRefused, ""},
		{"lab.example.", dns.TypeA, "udp", dns.RcodeRefused, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name+"/"+dns.TypeToString[tc.qtype]+"/"+tc.net, func(t *testing.T) {
			m := new(dns.Msg)
			m.SetQuestion(tc.name, tc.qtype)
			c := &dns.Client{Net: tc.net, Timeout: 5 * time.Second}
			r, _, err := c.Exchange(m, addr)
			if err != nil {
				t.Fatal(err)
			}
			if r.Rcode != tc.rcode {
				t.Fatalf("rcode %s, want %s", dns.RcodeToString[r.Rcode], dns.RcodeToString[tc.rcode])
			}
			var got string
			for _, rr := range r.Answer {
				if a, ok := rr.(*dns.A); ok {
					got = a.A.String()
				}
			}
			if got != tc.want {
				t.Errorf("A %q, want %q", got, tc.want)
			}
		})
	}
	if s := d.Stats(); s.Answered != 4 || s.Refused != 3 {
		t.Errorf("stats %+v", s)
	}
}

func TestDNSBadOptions(t *testing.T) {
	for _, o := range []DNSOptions{
		{Suffixes: []string{"lab.example"}},
		{Answer: netip.MustParseAddr("127.0.0.1")},
		{Answer: netip.MustParseAddr("127.0.0.1"), Suffixes: []string{"bad..name"}},
	} {
		if _, err := NewDNS(o); err == nil {
			t.Errorf("NewDNS(%+v) accepted", o)
		}
	}
}

// TestDNSDiscovery: a simulated machine with no static SCS finds the
// kiosk through this DNS server (spec §1 case 2) and its hello arrives.
func TestDNSDiscovery(t *testing.T) {
	_, dnsAddr := serveDNS(t, DNSOptions{Suffixes: []string{"lab.example"}, Answer: netip.MustParseAddr("127.0.0.1")})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	st := amtsim.DefaultState()
	f, err := amtsim.StartFleet(t.Context(), amtsim.FleetOptions{Devices: 1, Base: st,
		Records: []amtsim.SetupRecord{{PID: "ABCD2345", PPS: amtsim.NewSecret("0123456789ABCDEF0123456789ABCDEF"), MEBxPassword: amtsim.NewSecret("P@ssw0rd-1"), DNSSuffix: "lab.example"}},
		Net:     amtsim.NetOptions{Hello: amtsim.HelloOptions{DNSServer: dnsAddr, Port: port, Timeout: 5 * time.Second}}})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ln.(*net.TCPListener).SetDeadline(time.Now().Add(10 * time.Second))
	c, err := ln.Accept()
	if err != nil {
		t.Fatalf("no hello through DNS discovery (port %s): %v", strconv.Itoa(port), err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	h, err := wire.Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if h.PID != "ABCD2345" {
		t.Errorf("hello PID %q", h.PID)
	}
}
