package kiosk

// Discovery inside network namespaces (issue 10, "one run inside network
// namespaces with the kiosk's DNS and DHCP doing the discovery"): the
// kiosk runs in one namespace with DHCP, DNS and the hello listener; a
// simulated AMT machine runs in another, joined by a veth pair. The machine
// gets its address with a DHCP client (nclient4), learns the suffix from
// option 15 and the DNS server from option 6, finds the kiosk as
// provisionserver.<suffix>, says hello and is provisioned to post. Each
// side is this test binary re-executed inside its namespace with
// `ip netns exec` (see TestMain and netnsRole), so that every socket it
// opens lives there.
//
// Needs root (CI runs as root) and iproute2's `ip`. The namespaces and
// veth names are unique per run and deleted at the end. Under CI=true a
// missing privilege fails the test instead of skipping it.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"
	"github.com/provstick/provstick/internal/netnstest"

	"github.com/provstick/provstick/internal/amtsim"
	"github.com/provstick/provstick/kiosk/netsvc"
	"github.com/provstick/provstick/kiosk/provision"
	"github.com/provstick/provstick/kiosk/store"
)

const (
	nsKioskIP  = "10.77.0.1"
	nsRogueIP  = "10.77.0.2"
	nsSuffix   = "line7.factory.example"
	envNSRole  = "PROVSTICK_NETNS_ROLE"
	envNSIface = "PROVSTICK_NETNS_IFACE"
	envNSStore = "PROVSTICK_NETNS_STORE"
	envNSRec   = "PROVSTICK_NETNS_RECORD"
	envNSReady = "PROVSTICK_NETNS_READY"
)

// netns is a pair of namespaces joined by a veth pair: kiosk side
// (10.77.0.1/24) and device side (no address).
type netns struct {
	t            *testing.T
	kns, dns     string // namespace names
	kveth, dveth string
}

func newNetns(t *testing.T) *netns {
	netnstest.Need(t, "network namespaces")
	id := netnstest.ID()
	n := &netns{t: t, kns: "provstick-k-" + id, dns: "provstick-d-" + id, kveth: "pvk" + id, dveth: "pvd" + id}
	netnstest.Add(t, n.kns)
	netnstest.Add(t, n.dns)
	netnstest.IP(t, "link", "add", n.kveth, "type", "veth", "peer", "name", n.dveth)
	netnstest.IP(t, "link", "set", n.kveth, "netns", n.kns)
	netnstest.IP(t, "link", "set", n.dveth, "netns", n.dns)
	netnstest.IP(t, "-n", n.kns, "addr", "add", nsKioskIP+"/24", "dev", n.kveth)
	for _, x := range [][2]string{{n.kns, n.kveth}, {n.kns, "lo"}, {n.dns, n.dveth}, {n.dns, "lo"}} {
		netnstest.IP(t, "-n", x[0], "link", "set", x[1], "up")
	}
	return n
}

// start runs this test binary in namespace ns as role.
func (n *netns) start(ns, role string, env ...string) *exec.Cmd {
	n.t.Helper()
	return netnstest.Start(n.t, ns, append([]string{envNSRole + "=" + role}, env...)...)
}

type nsRecord struct {
	PID, PPS, Password string
}

func TestNetnsDHCPDiscovery(t *testing.T) {
	n := newNetns(t)
	ctx := t.Context()
	dir := t.TempDir()
	dsn := filepath.Join(dir, "kiosk.db")
	s, err := store.Open(ctx, dsn, &store.Options{Key: store.Passphrase([]byte("pw")), KDF: testKDF, Station: "netns-test", Actor: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Generate(ctx, store.GenerateSpec{Count: 1, Profile: "amt6-10"}); err != nil {
		t.Fatal(err)
	}
	_, es, err := s.AllocateStick(ctx, store.StickSpec{Label: "netns-1", Recipe: "default", Count: 1, Profile: "amt6-10"})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	rec, _ := json.Marshal(nsRecord{PID: es[0].PID.String(), PPS: es[0].PPS.Reveal(), Password: es[0].NewPassword.Reveal()})

	kiosk := n.start(n.kns, "kiosk", envNSIface+"="+n.kveth, envNSStore+"="+dsn)
	// The kiosk's DHCP server probes for 2 s before it answers; the
	// device's client retries meanwhile.
	dev := n.start(n.dns, "device", envNSIface+"="+n.dveth, envNSRec+"="+string(rec))

	ro, err := store.Open(ctx, dsn, &store.Options{Station: "netns-test", Actor: "test"})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	deadline := time.Now().Add(150 * time.Second)
	for {
		st, err := ro.State(ctx, es[0].PID)
		if err != nil {
			t.Fatal(err)
		}
		if st == store.StateProvisioned {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the device in the other namespace was not provisioned: entry %s", st)
		}
		if kiosk.ProcessState != nil || dev.ProcessState != nil {
			t.Fatal("a side exited early")
		}
		time.Sleep(250 * time.Millisecond)
	}
	netnstest.Stop(t, dev, "device")
	netnstest.Stop(t, kiosk, "kiosk")

	leases, err := ro.DHCPLeases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(leases) != 1 || !strings.HasPrefix(leases[0].IP, "10.77.0.") || leases[0].MAC == "" {
		t.Fatalf("leases %+v", leases)
	}
	hs, err := ro.Hellos(ctx, es[0].PID.String(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(hs) == 0 || !strings.HasPrefix(hs[0].Peer, leases[0].IP+":") {
		t.Fatalf("hellos %+v, want from %s", hs, leases[0].IP)
	}
	hist, err := ro.History(ctx, es[0].PID)
	if err != nil {
		t.Fatal(err)
	}
	if last := hist[len(hist)-1]; last.To != store.StateProvisioned || !strings.Contains(last.Reason, "verified over TLS") {
		t.Errorf("last event %+v", last)
	}
}

// TestNetnsDHCPRefuses: with another DHCP server on the network, the
// kiosk's DHCP refuses to start (and the kiosk with it).
func TestNetnsDHCPRefuses(t *testing.T) {
	n := newNetns(t)
	ready := filepath.Join(t.TempDir(), "ready")
	netnstest.IP(t, "-n", n.dns, "addr", "add", nsRogueIP+"/24", "dev", n.dveth)
	rogue := n.start(n.dns, "rogue", envNSIface+"="+n.dveth, envNSReady+"="+ready)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(ready); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the other DHCP server did not start")
		}
		time.Sleep(50 * time.Millisecond)
	}
	dsn := filepath.Join(t.TempDir(), "kiosk.db")
	refuse := n.start(n.kns, "kiosk-refuse", envNSIface+"="+n.kveth, envNSStore+"="+dsn)
	done := make(chan error, 1)
	go func() { done <- refuse.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("the kiosk did not refuse to start DHCP: %v", err)
		}
	case <-time.After(60 * time.Second):
		refuse.Process.Kill()
		t.Fatal("the kiosk kept running next to another DHCP server")
	}
	netnstest.Stop(t, rogue, "rogue")
}

// netnsRole runs one side of the namespace tests (this binary, started by
// `ip netns exec`); it returns the exit status.
func netnsRole(role string) int {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo})).With("role", role)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	var err error
	switch role {
	case "kiosk":
		err = roleKiosk(ctx, log, false)
	case "kiosk-refuse":
		err = roleKiosk(ctx, log, true)
	case "device":
		err = roleDevice(ctx, log)
	case "rogue":
		err = roleRogue(ctx, log)
	default:
		err = fmt.Errorf("unknown role %q", role)
	}
	if err != nil {
		log.Error("role failed", "err", err)
		return 1
	}
	return 0
}

func roleKiosk(ctx context.Context, log *slog.Logger, expectRefusal bool) error {
	s, err := store.Open(ctx, os.Getenv(envNSStore), &store.Options{Key: store.Passphrase([]byte("pw")), KDF: testKDF, Station: "netns-kiosk", Actor: "kiosk"})
	if err != nil {
		return err
	}
	defer s.Close()
	ip := netip.MustParseAddr(nsKioskIP)
	ln, err := net.Listen("tcp", nsKioskIP+":9971")
	if err != nil {
		return err
	}
	dnsConn, err := net.ListenPacket("udp", nsKioskIP+":53")
	if err != nil {
		return err
	}
	dnsLn, err := net.Listen("tcp", nsKioskIP+":53")
	if err != nil {
		return err
	}
	k, err := New(ctx, Options{Store: s, Logger: log, HelloListener: ln,
		DNS: &netsvc.DNSOptions{Suffixes: []string{nsSuffix}, Answer: ip}, DNSConn: dnsConn, DNSListener: dnsLn,
		DHCP: &netsvc.DHCPOptions{Interface: os.Getenv(envNSIface), ServerIP: ip, RangeStart: netip.MustParseAddr("10.77.0.100"),
			RangeEnd: netip.MustParseAddr("10.77.0.150"), Suffix: nsSuffix, ProbeTimeout: 2 * time.Second},
		Provision: provision.Options{VerifyDelay: 200 * time.Millisecond, StepTimeout: 30 * time.Second},
	})
	if err != nil {
		return err
	}
	err = k.Serve(ctx)
	if expectRefusal {
		if errors.Is(err, netsvc.ErrOtherServer) {
			log.Info("refused as expected", "err", err)
			return nil
		}
		return fmt.Errorf("want %v, got %v", netsvc.ErrOtherServer, err)
	}
	return err
}

func roleDevice(ctx context.Context, log *slog.Logger) error {
	iface := os.Getenv(envNSIface)
	var rec nsRecord
	if err := json.Unmarshal([]byte(os.Getenv(envNSRec)), &rec); err != nil {
		return err
	}
	c, err := nclient4.New(iface, nclient4.WithTimeout(2*time.Second), nclient4.WithRetry(3))
	if err != nil {
		return fmt.Errorf("dhcp client: %w", err)
	}
	var lease *nclient4.Lease
	for lease == nil {
		lctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		lease, err = c.Request(lctx, dhcpv4.WithRequestedOptions(dhcpv4.OptionDomainName, dhcpv4.OptionDomainNameServer))
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			log.Info("no lease yet", "err", err)
			lease = nil
		}
	}
	c.Close()
	ack := lease.ACK
	ip := ack.YourIPAddr.String()
	ones, _ := ack.SubnetMask().Size()
	suffix := ack.DomainName()
	if len(ack.DNS()) == 0 || suffix == "" {
		return fmt.Errorf("lease without DNS (%v) or suffix (%q)", ack.DNS(), suffix)
	}
	dns := ack.DNS()[0].String()
	log.Info("lease", "ip", ip, "dns", dns, "suffix", suffix)
	if out, err := exec.Command("ip", "addr", "add", fmt.Sprintf("%s/%d", ip, ones), "dev", iface).CombinedOutput(); err != nil {
		return fmt.Errorf("ip addr add: %v: %s", err, out)
	}
	base := amtsim.DefaultState()
	base.AMTVersion = "9.5.30"
	f, err := amtsim.StartFleet(ctx, amtsim.FleetOptions{Devices: 1, Base: base, Host: ip, PerAddress: true,
		Records: []amtsim.SetupRecord{{PID: rec.PID, PPS: amtsim.NewSecret(rec.PPS), MEBxPassword: amtsim.NewSecret(rec.Password)}},
		Net: amtsim.NetOptions{Logger: log, CommitDowntime: 100 * time.Millisecond,
			Hello: amtsim.HelloOptions{DNSServer: net.JoinHostPort(dns, "53"), Domain: suffix, TimeScale: 600, Timeout: 5 * time.Second}}})
	if err != nil {
		return err
	}
	<-ctx.Done()
	return f.Close()
}

// roleRogue is another DHCP server on the device side's network (our own
// lease logic, started without the probe).
func roleRogue(ctx context.Context, log *slog.Logger) error {
	iface := os.Getenv(envNSIface)
	d, err := netsvc.NewDHCP(netsvc.DHCPOptions{Interface: iface, ServerIP: netip.MustParseAddr(nsRogueIP),
		RangeStart: netip.MustParseAddr("10.77.0.200"), RangeEnd: netip.MustParseAddr("10.77.0.210"), Suffix: "elsewhere.example", Logger: log})
	if err != nil {
		return err
	}
	conn, err := server4.NewIPv4UDPConn(iface, &net.UDPAddr{Port: dhcpv4.ServerPort})
	if err != nil {
		return err
	}
	srv, err := server4.NewServer(iface, nil, func(pc net.PacketConn, peer net.Addr, m *dhcpv4.DHCPv4) {
		if r := d.Handle(ctx, m); r != nil {
			pc.WriteTo(r.ToBytes(), peer)
		}
	}, server4.WithConn(conn))
	if err != nil {
		return err
	}
	context.AfterFunc(ctx, func() { srv.Close() })
	if err := os.WriteFile(os.Getenv(envNSReady), nil, 0o644); err != nil {
		return err
	}
	srv.Serve()
	return nil
}
