package agent

// TestVMKioskCheck boots a stick built with images/check-kiosk.yaml once
// under QEMU (TCG, SeaBIOS) with the real vPro NIC model, -device e1000e,
// on a tap device inside a network namespace of its own. In that
// namespace the kiosk's own services run (this test binary re-executed
// with `ip netns exec`, role "kiosknet", as kiosk/netns_linux_test.go
// does): kiosk/netsvc's DHCP (option 15 "dhcp.line7.example") and DNS
// (answering provisionserver.line7.factory.example with 10.77.0.1), and
// kiosk/hello's listener on 10.77.0.1:9971. The simulated ME has the DNS
// suffix line7.factory.example (as set in MEBx), which AMT — and so the
// agent — uses before DHCP's: the check only passes if that order holds.
//
// The agent must load e1000e from the initramfs, get a lease, resolve the
// name with the lease's DNS server, connect and close; the ledger line
// read back from the image has kiosk_check "reachable" with the lease and
// 10.77.0.1:9971, the screen (OCR) says "Kiosk reachable", and the hello
// listener counted one probe and no malformed hello. Negative cases (no
// link, no DHCP, unknown name, refused, timeout) are unit tests against a
// fake (kiosk_test.go) and the real DNS server and listener on loopback.
//
// Guest view: as in vm_test.go, plus eth0 = e1000e on the tap (10.77.0.x
// by DHCP), without its option ROM (SeaBIOS would spend seconds under TCG
// initialising iPXE; the firmware's network boot is not what is tested).
// Add provstick.debug=1 to the command line below for the agent's
// per-step timings (link up, DHCP, DNS) on the console. Needs root and iproute2 (network namespaces, tap devices);
// under CI=true their absence fails the test. Addresses are private to the
// test's namespace; nothing leaves it.

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/provstick/provstick/internal/amtsim"
	"github.com/provstick/provstick/internal/ledger"
	"github.com/provstick/provstick/internal/netnstest"
	khello "github.com/provstick/provstick/kiosk/hello"
	"github.com/provstick/provstick/kiosk/netsvc"
)

const (
	envKioskNetRole  = "PROVSTICK_AGENT_NETNS_ROLE"
	envKioskNetIface = "PROVSTICK_AGENT_NETNS_IFACE"
	envKioskNetDir   = "PROVSTICK_AGENT_NETNS_DIR"
	vmKioskIP        = "10.77.0.1"
	vmMESuffix       = "line7.factory.example"
	vmDHCPSuffix     = "dhcp.line7.example"
)

// kioskNetStats is what the role reports when it stops.
type kioskNetStats struct {
	Hello     khello.Stats
	DNS       netsvc.DNSStats
	Leases    []netsvc.Lease
	ServeErrs []string
}

func TestVMKioskCheck(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a VM under TCG; skipped with -short")
	}
	netnstest.Need(t, "a network namespace and a tap device")
	id := netnstest.ID()
	ns, tap := "provstick-a-"+id, "pvtap"+id
	netnstest.Add(t, ns)
	netnstest.IP(t, "-n", ns, "tuntap", "add", "dev", tap, "mode", "tap")
	netnstest.IP(t, "-n", ns, "addr", "add", vmKioskIP+"/24", "dev", tap)
	netnstest.IP(t, "-n", ns, "link", "set", tap, "up")
	netnstest.IP(t, "-n", ns, "link", "set", "lo", "up")

	dir := t.TempDir()
	kiosk := netnstest.Start(t, ns, envKioskNetRole+"=kiosknet", envKioskNetIface+"="+tap, envKioskNetDir+"="+dir)
	stopped := false
	stop := func() kioskNetStats {
		t.Helper()
		if !stopped {
			stopped = true
			netnstest.Stop(t, kiosk, "the kiosk side")
		}
		var st kioskNetStats
		if b, err := os.ReadFile(filepath.Join(dir, "stats.json")); err != nil || json.Unmarshal(b, &st) != nil {
			t.Errorf("the kiosk side's stats: %v", err)
		}
		return st
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(dir, "ready")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the kiosk side did not start")
		}
		time.Sleep(50 * time.Millisecond)
	}

	s := buildStickRecipe(t, t.TempDir(), "../../images/check-kiosk.yaml", 3, 1, "provstick.mei=virtio:org.provstick.mei provstick.countdown=600")
	conf, err := ParseConf(s.get(t, ConfPath))
	if err != nil || conf.CheckKiosk == nil {
		t.Fatalf("the builder's agent.json from images/check-kiosk.yaml: %+v, %v", conf, err)
	}
	s.consume(t, 1)
	m := newMachine(t, "kiosk-check", 0xC7, s.psks[0].PID.String(), false)
	m.dev.Update(func(st *amtsim.State) { st.PKISuffix = vmMESuffix })

	drawn := make(chan struct{})
	var once sync.Once
	v := startVM(t, vmOpts{m: m, img: s.img, netns: ns,
		extra: []string{"-netdev", "tap,id=n0,ifname=" + tap + ",script=no,downscript=no", "-device", "e1000e,netdev=n0,mac=52:54:00:4b:49:4f,romfile="},
		onLine: func(v *vm, line string) {
			if strings.Contains(line, "provstick: screen drawn") {
				once.Do(func() { close(drawn) })
			}
		}})
	qemuExit := make(chan error, 1)
	go func() { qemuExit <- v.wait() }()
	var text string
	select {
	case <-drawn:
		// OCR reads the 7 of line7 as "?": match the rest.
		_, text, err = checkScreen(t, v, []string{"DONE", "Kiosk reachable: provisionserver.line", ".factory.example", vmKioskIP + ":9971"})
		if err != nil {
			t.Error(err)
		}
		v.monitor("quit")
		<-qemuExit
	case err := <-qemuExit:
		t.Fatalf("QEMU exited before the screen was drawn: %v; console:\n%s", err, v.output())
	}
	out := v.output()
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "provstick:") || strings.HasPrefix(l, "  ") || strings.Contains(l, "random numbers ready") ||
			strings.Contains(l, "link up") || strings.Contains(l, "msg=dhcp") || strings.Contains(l, "kiosk check") {
			t.Log(l)
		}
	}
	st := stop()
	t.Logf("kiosk side: hello %+v, DNS %+v, leases %+v", st.Hello, st.DNS, st.Leases)

	raw, l := readLedgerImage(t, s.img, false)
	if len(l.Records) != 1 {
		t.Fatalf("ledger: %d records\n%s", len(l.Records), raw)
	}
	t.Logf("ledger line: %s", strings.TrimSpace(string(raw)))
	kc := l.Last().KioskCheck
	if kc == nil {
		t.Fatalf("no kiosk_check in the ledger line; console:\n%s", out)
	}
	want := ledger.KioskCheck{Result: ledger.KioskReachable, MAC: "52:54:00:4b:49:4f", DNS: vmKioskIP, DHCP: vmKioskIP,
		Domain: vmMESuffix, DomainSource: "me", DHCPDomain: vmDHCPSuffix, Name: "provisionserver." + vmMESuffix, Kiosk: vmKioskIP + ":9971"}
	got := *kc
	got.Interface, got.Address, got.ElapsedMS, got.Error = "", "", 0, ""
	if got != want {
		t.Errorf("kiosk_check %+v\nwant        %+v", *kc, want)
	}
	if p, err := netip.ParsePrefix(kc.Address); err != nil || !p.Addr().Is4() || !strings.HasPrefix(kc.Address, "10.77.0.") || kc.Interface == "" {
		t.Errorf("lease %q on %q", kc.Address, kc.Interface)
	}
	if len(st.Leases) != 1 || st.Leases[0].MAC != want.MAC || st.Leases[0].IP.String()+"/24" != kc.Address {
		t.Errorf("the kiosk's DHCP leases %+v, the agent says %s", st.Leases, kc.Address)
	}
	if st.Hello.Probes != 1 || st.Hello.Malformed != 0 || st.Hello.PSK != 0 {
		t.Errorf("hello listener %+v: want exactly one probe", st.Hello)
	}
	if st.DNS.Answered == 0 {
		t.Errorf("the kiosk's DNS answered nothing: %+v", st.DNS)
	}
	if !ocrHas(text, "Kiosk reachable") {
		t.Errorf("screen:\n%s", text)
	}
	var phases string
	for _, line := range strings.Split(out, "\n") {
		if i := strings.Index(line, "agent phases: "); i >= 0 {
			phases = line[i:]
		}
	}
	t.Logf("kiosk check took %d ms from its start at init (NIC drivers loaded) to the connection closed; %s; load average %s", kc.ElapsedMS, phases, loadAvg())
	runPart := 0.0 // what the check added to Run (the rest overlapped the stick search and the ME)
	if m := kioskPhaseRE.FindStringSubmatch(phases); m != nil {
		runPart = dur(m[1]).Seconds()
	}
	fmt.Printf("BENCH boot=kiosk-check kiosk_check=%.2f kiosk_check_in_run=%.2f qemu_to_fsync=%.2f qemu_to_ready=%.2f\n",
		float64(kc.ElapsedMS)/1000, runPart, v.mark("provstick: ledger: line").Seconds(), v.mark("provstick: ready").Seconds())
}

var kioskPhaseRE = regexp.MustCompile(`kiosk-check (\S+?),`)

// kioskNetRole runs inside the test's network namespace: the kiosk's
// DHCP and DNS and a hello listener on the tap, until SIGTERM; then it
// writes what they counted to stats.json.
func kioskNetRole(role string) int {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo})).With("role", role)
	if role != "kiosknet" {
		log.Error("unknown role")
		return 2
	}
	if err := runKioskNet(log); err != nil {
		log.Error("kiosk side failed", "err", err)
		return 1
	}
	return 0
}

func runKioskNet(log *slog.Logger) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	iface, dir := os.Getenv(envKioskNetIface), os.Getenv(envKioskNetDir)
	kip := netip.MustParseAddr(vmKioskIP)
	dnsSrv, err := netsvc.NewDNS(netsvc.DNSOptions{Suffixes: []string{vmMESuffix}, Answer: kip, Logger: log})
	if err != nil {
		return err
	}
	dhcp, err := netsvc.NewDHCP(netsvc.DHCPOptions{Interface: iface, ServerIP: kip, RangeStart: netip.MustParseAddr("10.77.0.100"),
		RangeEnd: netip.MustParseAddr("10.77.0.150"), Suffix: vmDHCPSuffix, ProbeTimeout: 500 * time.Millisecond, Logger: log})
	if err != nil {
		return err
	}
	hl, err := khello.New(khello.Options{Handler: func(context.Context, khello.Received) {}, Logger: log})
	if err != nil {
		return err
	}
	pc, err := net.ListenPacket("udp", vmKioskIP+":53")
	if err != nil {
		return err
	}
	tl, err := net.Listen("tcp", vmKioskIP+":53")
	if err != nil {
		return err
	}
	hln, err := net.Listen("tcp", vmKioskIP+":9971")
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []string
	serve := func(name string, f func() error) {
		wg.Go(func() {
			if err := f(); err != nil {
				mu.Lock()
				errs = append(errs, name+": "+err.Error())
				mu.Unlock()
			}
		})
	}
	serve("dns", func() error { return dnsSrv.Serve(ctx, pc, tl) })
	serve("dhcp", func() error { return dhcp.Serve(ctx) })
	serve("hello", func() error { return hl.Serve(ctx, hln) })
	if err := os.WriteFile(filepath.Join(dir, "ready"), nil, 0o644); err != nil {
		return err
	}
	<-ctx.Done()
	wg.Wait()
	b, err := json.Marshal(kioskNetStats{Hello: hl.Stats(), DNS: dnsSrv.Stats(), Leases: dhcp.Leases(), ServeErrs: errs})
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "stats.json"), b, 0o644); err != nil {
		return err
	}
	if len(errs) > 0 {
		return fmt.Errorf("serving: %s", strings.Join(errs, "; "))
	}
	return nil
}
