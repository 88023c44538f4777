package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/provstick/provstick/internal/ledger"
	khello "github.com/provstick/provstick/kiosk/hello"
	"github.com/provstick/provstick/kiosk/netsvc"
)

// fakeNet is a scripted Network: each step returns what the test set, or
// blocks until ctx ends when block is true.
type fakeNet struct {
	lease      *Lease
	leaseErr   error
	blockLease bool
	// leaseIgnoresCtx: Lease blocks for a minute whatever ctx says (as
	// DHCP's transaction ID waiting for entropy did).
	leaseIgnoresCtx bool
	// noCarrier: Lease waits for a carrier until ctx ends.
	noCarrier  bool
	addrs      []netip.Addr
	resolveErr error
	probeErr   error
	blockProbe bool

	mu       sync.Mutex
	asked    string // name resolved
	server   netip.Addr
	probed   netip.AddrPort
	resolved int
}

func (f *fakeNet) Lease(ctx context.Context) (*Lease, error) {
	if f.leaseIgnoresCtx {
		time.Sleep(time.Minute)
	}
	if f.noCarrier {
		<-ctx.Done()
		return nil, fmt.Errorf("%w: eth0: no carrier: %w", ErrNoLink, ctx.Err())
	}
	if f.blockLease {
		<-ctx.Done()
		return nil, fmt.Errorf("%w on eth0: %w", ErrNoLease, ctx.Err())
	}
	return f.lease, f.leaseErr
}

func (f *fakeNet) Resolve(_ context.Context, server netip.Addr, name string) ([]netip.Addr, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.asked, f.server = name, server
	f.resolved++
	return f.addrs, f.resolveErr
}

func (f *fakeNet) Probe(ctx context.Context, ap netip.AddrPort) error {
	f.mu.Lock()
	f.probed = ap
	f.mu.Unlock()
	if f.blockProbe {
		<-ctx.Done()
		return fmt.Errorf("connecting to %s: %w", ap, ctx.Err())
	}
	return f.probeErr
}

var _ Network = (*fakeNet)(nil)

func testLease() *Lease {
	return &Lease{Interface: "eth0", MAC: "52:54:00:12:34:56", Addr: netip.MustParsePrefix("10.77.0.100/24"),
		Server: netip.MustParseAddr("10.77.0.1"), DNS: []netip.Addr{netip.MustParseAddr("10.77.0.1")}, Domain: "line7.factory.example"}
}

func TestKioskCheck(t *testing.T) {
	kiosk := []netip.Addr{netip.MustParseAddr("10.77.0.1")}
	noDNS := testLease()
	noDNS.DNS = nil
	noDomain := testLease()
	noDomain.Domain = ""
	tests := []struct {
		name       string
		net        *fakeNet
		domain     string // recipe
		me         string // ME suffix
		want       string // result
		wantName   string
		wantSource string
		wantScreen string
	}{
		{name: "reachable by DHCP's domain", net: &fakeNet{lease: testLease(), addrs: kiosk}, want: ledger.KioskReachable,
			wantName: "provisionserver.line7.factory.example", wantSource: "dhcp",
			wantScreen: "Kiosk reachable: provisionserver.line7.factory.example → 10.77.0.1:9971."},
		{name: "the ME's suffix wins over DHCP's", net: &fakeNet{lease: testLease(), addrs: kiosk}, me: "ME.Example", want: ledger.KioskReachable,
			wantName: "provisionserver.me.example", wantSource: "me"},
		{name: "the recipe's domain wins", net: &fakeNet{lease: testLease(), addrs: kiosk}, domain: "recipe.example.", me: "me.example", want: ledger.KioskReachable,
			wantName: "provisionserver.recipe.example", wantSource: "recipe"},
		{name: "no NIC", net: &fakeNet{leaseErr: fmt.Errorf("%w (no driver?)", ErrNoNIC)}, want: ledger.KioskNoNIC,
			wantScreen: "Kiosk NOT reachable: no wired network interface"},
		{name: "no link", net: &fakeNet{leaseErr: fmt.Errorf("eth0: %w", ErrNoLink)}, want: ledger.KioskNoLink,
			wantScreen: "Kiosk NOT reachable: no network link"},
		{name: "no DHCP answer", net: &fakeNet{blockLease: true}, want: ledger.KioskNoDHCP, wantScreen: "Kiosk NOT reachable: no DHCP answer. Check"},
		{name: "a lease that ignores its context", net: &fakeNet{blockLease: true, leaseIgnoresCtx: true}, want: ledger.KioskNoDHCP, wantScreen: "no DHCP answer"},
		{name: "no DNS server", net: &fakeNet{lease: noDNS}, want: ledger.KioskNoDNSServer, wantScreen: "names no DNS server"},
		{name: "no domain", net: &fakeNet{lease: noDomain}, want: ledger.KioskNoDomain, wantScreen: "option 15"},
		{name: "name unknown", net: &fakeNet{lease: testLease(), resolveErr: fmt.Errorf("x: %w", ErrNotResolved)}, want: ledger.KioskNotResolved,
			wantName: "provisionserver.line7.factory.example", wantScreen: "provisionserver.line7.factory.example does not resolve at 10.77.0.1. Check the kiosk's DNS"},
		{name: "refused", net: &fakeNet{lease: testLease(), addrs: kiosk, probeErr: fmt.Errorf("x: %w", ErrRefused)}, want: ledger.KioskRefused,
			wantName: "provisionserver.line7.factory.example", wantScreen: "10.77.0.1:9971 refused the connection"},
		{name: "no answer", net: &fakeNet{lease: testLease(), addrs: kiosk, blockProbe: true}, want: ledger.KioskTimeout,
			wantName: "provisionserver.line7.factory.example", wantScreen: "did not answer. Check the kiosk's DNS and DHCP and the cabling"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			k := &KioskCheck{Net: tc.net, Timeout: 300 * time.Millisecond, Domain: tc.domain, Logger: slog.New(slog.NewTextHandler(t.Output(), nil))}
			start := time.Now()
			r := k.Finish(t.Context(), tc.me, StaticSCS{})
			if took := time.Since(start); took > 2*time.Second {
				t.Errorf("took %v with a 300 ms timeout", took)
			}
			if r.Result != tc.want || r.Name != tc.wantName {
				t.Errorf("got %+v, want result %s name %q", r, tc.want, tc.wantName)
			}
			if tc.wantSource != "" && r.DomainSource != tc.wantSource {
				t.Errorf("domain source %q, want %q", r.DomainSource, tc.wantSource)
			}
			if (r.Result == ledger.KioskReachable) != (r.Error == "") {
				t.Errorf("result %s with error %q", r.Result, r.Error)
			}
			lines := strings.Join(KioskLines(r), "\n")
			if !strings.Contains(lines, tc.wantScreen) {
				t.Errorf("screen %q, want %q", lines, tc.wantScreen)
			}
			if r.Result == ledger.KioskReachable && (r.Kiosk != "10.77.0.1:9971" || tc.net.server.String() != "10.77.0.1" || r.Address != "10.77.0.100/24") {
				t.Errorf("%+v, asked %s", r, tc.net.server)
			}
			if tc.wantSource == "me" && r.DHCPDomain != "line7.factory.example" {
				t.Errorf("DHCP domain %q not recorded next to the ME's", r.DHCPDomain)
			}
		})
	}
}

// TestKioskCheckStartedEarly: the binary starts the check before it has
// read agent.json (with the longest timeout) and configures it after; the
// configured timeout counts from Start, and a link that never comes up is
// reported as no link, not as no DHCP answer.
func TestKioskCheckStartedEarly(t *testing.T) {
	k := &KioskCheck{Net: &fakeNet{noCarrier: true}, Timeout: MaxKioskTimeout}
	k.Start(t.Context())
	secs := 1
	k.Configure(&CheckKioskConf{Timeout: &secs, Domain: "x.example"})
	start := time.Now()
	r := k.Finish(t.Context(), "", StaticSCS{})
	if took := time.Since(start); r.Result != ledger.KioskNoLink || took > 3*time.Second || k.Port != DefaultKioskPort {
		t.Errorf("%+v after %v (port %d)", r, took, k.Port)
	}
	k2 := &KioskCheck{Net: &fakeNet{blockLease: true}, Timeout: MaxKioskTimeout}
	k2.Start(t.Context())
	k2.Stop()
	<-k2.done
	if !errors.Is(k2.err, ErrNoLease) {
		t.Errorf("a stopped check's lease: %v", k2.err)
	}
}

// TestKioskCheckEarlyStart: the lease is fetched from Start on, and the
// timeout counts from Start, so a long wait between Start and Finish
// leaves no time for a lease that never comes.
func TestKioskCheckEarlyStart(t *testing.T) {
	k := &KioskCheck{Net: &fakeNet{blockLease: true}, Timeout: 200 * time.Millisecond}
	k.Start(t.Context())
	time.Sleep(300 * time.Millisecond)
	start := time.Now()
	r := k.Finish(t.Context(), "", StaticSCS{})
	if r.Result != ledger.KioskNoDHCP || time.Since(start) > 100*time.Millisecond || r.ElapsedMS < 200 {
		t.Errorf("%+v after %v", r, time.Since(start))
	}
}

// TestResolveAndProbe: the real resolver against the kiosk's DNS server
// (kiosk/netsvc) and the real probe against the kiosk's hello listener
// (kiosk/hello), on loopback: the name resolves, an unknown one does not,
// the probe is counted as a probe and not as a malformed hello, and a
// closed port is refused.
func TestResolveAndProbe(t *testing.T) {
	ctx := t.Context()
	d, err := netsvc.NewDNS(netsvc.DNSOptions{Suffixes: []string{"line7.factory.example"}, Answer: netip.MustParseAddr("127.0.0.1")})
	if err != nil {
		t.Fatal(err)
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- d.Serve(sctx, pc, nil) }()
	t.Cleanup(func() { stop(); <-done })
	srv := netip.MustParseAddrPort(pc.LocalAddr().String())

	addrs, err := resolveAt(ctx, srv, "Provisionserver.LINE7.factory.example")
	if err != nil || len(addrs) != 1 || addrs[0].String() != "127.0.0.1" {
		t.Fatalf("resolving: %v, %v", addrs, err)
	}
	if _, err := resolveAt(ctx, srv, "provisionserver.elsewhere.example"); !errors.Is(err, ErrNotResolved) {
		t.Errorf("an unknown name: %v, want ErrNotResolved", err)
	}

	var handled int
	var mu sync.Mutex
	l, err := khello.New(khello.Options{Handler: func(context.Context, khello.Received) { mu.Lock(); handled++; mu.Unlock() }})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lctx, lstop := context.WithCancel(ctx)
	ldone := make(chan error, 1)
	go func() { ldone <- l.Serve(lctx, ln) }()
	ap := netip.MustParseAddrPort(ln.Addr().String())
	if err := ProbeTCP(ctx, ap); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for l.Stats().Probes != 1 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	lstop()
	<-ldone
	mu.Lock()
	defer mu.Unlock()
	if s := l.Stats(); s.Probes != 1 || s.Malformed != 0 || handled != 0 {
		t.Errorf("listener stats %+v, handled %d: want one probe", s, handled)
	}
	if err := ProbeTCP(ctx, ap); !errors.Is(err, ErrRefused) {
		t.Errorf("a closed port: %v, want ErrRefused", err)
	}
}

// TestRunKioskCheck: Run records the check in the ledger line and on the
// screen; a failed check turns a good result into ATTENTION.
func TestRunKioskCheck(t *testing.T) {
	for _, reach := range []bool{true, false} {
		t.Run(fmt.Sprint("reachable=", reach), func(t *testing.T) {
			root, psks := stick(t, 3, true)
			consume(t, root, 1)
			st := inSetup(t, psks[0].PID.String())
			st.PKISuffix = "Line7.Factory.Example" // set in MEBx (read with GetPKIFQDNSuffix): AMT uses it before DHCP's
			addr, _ := simulator(t, st)
			cfg := config(t, root, addr)
			l := testLease()
			l.Domain = "dhcp.example"
			fn := &fakeNet{lease: l, addrs: []netip.Addr{netip.MustParseAddr("10.77.0.1")}}
			if !reach {
				fn.resolveErr = fmt.Errorf("asking: %w", ErrNotResolved)
			}
			cfg.KioskCheck = NewKioskCheck(fn, &CheckKioskConf{}, cfg.Logger)
			res, err := Run(t.Context(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			kc := readLedger(t, root).Last().KioskCheck
			if kc == nil || (kc.Result == ledger.KioskReachable) != reach {
				t.Fatalf("ledger kiosk_check %+v", kc)
			}
			// The simulator's ME has a DNS suffix; AMT would use it.
			if kc.DomainSource != "me" || fn.asked != "provisionserver.line7.factory.example" || kc.DHCPDomain != "dhcp.example" {
				t.Errorf("asked %q, record %+v (ME suffix %q)", fn.asked, kc, res.Record.AMT.DNSSuffix)
			}
			want := "Kiosk reachable: " + fn.asked + " → 10.77.0.1:9971."
			if !reach {
				want = "Kiosk NOT reachable: " + fn.asked + " does not resolve"
			}
			if !strings.Contains(res.Message, want) || res.OK != reach {
				t.Errorf("OK %v, message:\n%s\nwant %q", res.OK, res.Message, want)
			}
		})
	}
}

// TestKioskCheckStatic: with a static SCS address from setup.bin the
// check looks nothing up, as AMT does not (spec §1 item 1), and probes
// that address at the record's port, or the check's when the record has
// none.
func TestKioskCheckStatic(t *testing.T) {
	scs := netip.MustParseAddr("10.77.0.9")
	tests := []struct {
		name       string
		net        *fakeNet
		static     StaticSCS
		want       string
		wantKiosk  string
		wantScreen string
	}{
		{name: "reachable at the record's port", net: &fakeNet{lease: testLease()}, static: StaticSCS{Addr: scs, Port: 16999, Record: 12},
			want: ledger.KioskReachable, wantKiosk: "10.77.0.9:16999",
			wantScreen: "Kiosk reachable: the static address in setup.bin record 12 → 10.77.0.9:16999."},
		{name: "no port in the record", net: &fakeNet{lease: testLease()}, static: StaticSCS{Addr: scs, Record: 12},
			want: ledger.KioskReachable, wantKiosk: "10.77.0.9:9971"},
		{name: "no DNS server is no problem", net: &fakeNet{lease: &Lease{Interface: "eth0", Addr: netip.MustParsePrefix("10.77.0.100/24")}}, static: StaticSCS{Addr: scs, Port: 9971, Record: 12},
			want: ledger.KioskReachable, wantKiosk: "10.77.0.9:9971"},
		{name: "refused", net: &fakeNet{lease: testLease(), probeErr: fmt.Errorf("x: %w", ErrRefused)}, static: StaticSCS{Addr: scs, Port: 9971, Record: 12},
			want: ledger.KioskRefused, wantKiosk: "10.77.0.9:9971",
			wantScreen: "the static address in setup.bin record 12 → 10.77.0.9:9971 refused the connection"},
		{name: "no lease", net: &fakeNet{blockLease: true}, static: StaticSCS{Addr: scs, Port: 9971, Record: 12},
			want: ledger.KioskNoDHCP, wantScreen: "no DHCP answer"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			k := &KioskCheck{Net: tc.net, Timeout: 300 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(t.Output(), nil))}
			r := k.Finish(t.Context(), "me.example", tc.static)
			if r.Result != tc.want || r.Kiosk != tc.wantKiosk {
				t.Errorf("got %+v, want result %s kiosk %q", r, tc.want, tc.wantKiosk)
			}
			if tc.net.resolved != 0 || r.Name != "" || r.Domain != "" {
				t.Errorf("looked up %q (%d times): %+v", tc.net.asked, tc.net.resolved, r)
			}
			if tc.wantKiosk != "" && r.Static != "setup.bin record 12" {
				t.Errorf("static %q, want the record named", r.Static)
			}
			if lines := strings.Join(KioskLines(r), "\n"); !strings.Contains(lines, tc.wantScreen) {
				t.Errorf("screen %q, want %q", lines, tc.wantScreen)
			}
		})
	}
}
