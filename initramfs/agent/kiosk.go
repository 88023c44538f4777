package agent

// The kiosk reachability check (issue 8, optional check 7): can this
// machine reach the kiosk's hello port the way AMT finds it
// (../../../shared/specs/amt-psk.md §1)? A DHCPv4 lease on a wired
// interface gives the DNS server (option 6) and a domain (option 15); the
// name is provisionserver.<domain>, where the domain is, in order,
//
//  1. check_kiosk.domain from the recipe, when set (the builder's word
//     for what the records configure),
//  2. the ME's DNS suffix (set in MEBx or by setup.bin): AMT uses it
//     before DHCP's, spec §1 item 2,
//  3. DHCP option 15.
//
// The name is resolved with the lease's DNS server (as AMT would, not any
// other resolver), and the first address gets a TCP connection to the
// hello port that is closed at once without a byte: the kiosk counts it
// as a probe, not as a malformed hello (kiosk/hello). When the machine's
// record holds a static SCS address (setup.bin 2/17, port 2/18), AMT skips
// DNS (spec §1 item 1) and so does the check: it probes that address
// once it has a lease.
//
// The network sits behind Network: LinkNetwork (net_linux.go) on the
// target, a fake in the tests.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/provstick/provstick/internal/ledger"
)

// Network is the target's network as the kiosk check uses it. Every call
// ends when ctx does.
type Network interface {
	// Lease brings up the wired interfaces and returns the first DHCPv4
	// lease, configured on its interface. Errors wrap ErrNoNIC (no wired
	// interface), ErrNoLink (no carrier on any) or ErrNoLease (no DHCP
	// answer).
	Lease(ctx context.Context) (*Lease, error)
	// Resolve asks the DNS server for name's IPv4 addresses. An error
	// wraps ErrNotResolved when the server says the name has none.
	Resolve(ctx context.Context, server netip.Addr, name string) ([]netip.Addr, error)
	// Probe opens a TCP connection to addr and closes it without sending
	// anything. An error wraps ErrRefused when nothing listens.
	Probe(ctx context.Context, addr netip.AddrPort) error
}

// Lease is what DHCP gave one interface.
type Lease struct {
	Interface string
	MAC       string
	Addr      netip.Prefix // our address and the subnet
	Server    netip.Addr   // DHCP server identifier (option 54)
	Router    netip.Addr   // option 3; invalid: none
	DNS       []netip.Addr // option 6
	Domain    string       // option 15
}

// Errors of the kiosk check's steps (wrapped).
var (
	ErrNoNIC       = errors.New("no wired network interface")
	ErrNoLink      = errors.New("no network cable: no wired interface has a link")
	ErrNoLease     = errors.New("no DHCP answer")
	ErrNotResolved = errors.New("the name does not resolve")
	ErrRefused     = errors.New("connection refused")
)

// KioskCheck is one run of the check: Start begins getting the lease (it
// runs while the agent waits for the ME), Finish does the rest and says
// what happened. The timeout bounds Start to Finish.
type KioskCheck struct {
	Net     Network
	Timeout time.Duration // whole check; 0: DefaultKioskTimeout
	Port    int           // 0: DefaultKioskPort
	Domain  string        // recipe override; "": the ME's suffix, else DHCP's
	Logger  *slog.Logger

	start  time.Time
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
	lease  *Lease
	err    error
}

// NewKioskCheck returns the check agent.json's check_kiosk asks for.
func NewKioskCheck(n Network, c *CheckKioskConf, log *slog.Logger) *KioskCheck {
	return &KioskCheck{Net: n, Timeout: c.TimeoutDuration(), Port: c.PortNumber(), Domain: c.Domain, Logger: log}
}

// Configure takes the port, domain and timeout from agent.json; the
// binary starts the check before it has read agent.json (when the
// initramfs has NIC drivers, the recipe enabled it) and configures it
// after. The timeout still counts from Start.
func (k *KioskCheck) Configure(c *CheckKioskConf) {
	k.Timeout, k.Port, k.Domain = c.TimeoutDuration(), c.PortNumber(), c.Domain
}

// Stop abandons a started check (agent.json does not ask for it after
// all).
func (k *KioskCheck) Stop() {
	if k.cancel != nil {
		k.cancel()
	}
}

// MaxKioskTimeout is the longest check agent.json may ask for; a check
// started before agent.json is read runs at most this long.
const MaxKioskTimeout = 300 * time.Second

// Start begins bringing the network up; it returns at once. Calling it
// again does nothing.
func (k *KioskCheck) Start(ctx context.Context) {
	if k.done != nil {
		return
	}
	if k.Timeout <= 0 {
		k.Timeout = DefaultKioskTimeout
	}
	if k.Port == 0 {
		k.Port = DefaultKioskPort
	}
	if k.Logger == nil {
		k.Logger = slog.New(slog.DiscardHandler)
	}
	k.start = time.Now()
	k.ctx, k.cancel = context.WithTimeout(ctx, k.Timeout)
	k.done = make(chan struct{})
	go func() {
		defer close(k.done)
		if k.Net == nil {
			k.err = errors.New("no network support in this agent")
			return
		}
		k.lease, k.err = k.Net.Lease(k.ctx)
	}()
}

// StaticSCS is a static SCS address from setup.bin (2/17; 2/18 the
// port), where AMT sends its hello without looking anything up.
type StaticSCS struct {
	Addr   netip.Addr // zero: none, the check looks the kiosk up
	Port   uint16     // 0: none in the record, the check's port
	Record int        // the stick's record number it was read from
}

// Finish waits for the lease and resolves and probes the kiosk, all
// within the timeout counted from Start (Finish starts the check if
// Start was not called). meSuffix is the ME's DNS suffix ("" if none or
// unknown); with a static SCS address the check probes it instead of
// looking provisionserver.<domain> up.
func (k *KioskCheck) Finish(ctx context.Context, meSuffix string, static StaticSCS) *ledger.KioskCheck {
	k.Start(ctx)
	defer k.cancel()
	fctx, fcancel := context.WithDeadline(k.ctx, k.start.Add(k.Timeout))
	defer fcancel()
	r := &ledger.KioskCheck{}
	defer func() {
		r.ElapsedMS = time.Since(k.start).Milliseconds()
		k.Logger.Info("kiosk check", "result", r.Result, "kiosk", r.Kiosk, "name", r.Name, "err", r.Error, "elapsed", time.Since(k.start))
	}()
	fail := func(result string, err error) *ledger.KioskCheck {
		r.Result, r.Error = result, err.Error()
		return r
	}
	select {
	case <-k.done:
	case <-fctx.Done():
		// Time is up: stop Lease and take its word for what was
		// missing (no carrier, or no DHCP answer), unless it does not
		// heed its context either.
		k.cancel()
		select {
		case <-k.done:
		case <-time.After(time.Second):
			return fail(ledger.KioskNoDHCP, fmt.Errorf("%w: no lease within the check's %v", ErrNoLease, k.Timeout))
		}
	case <-ctx.Done():
		return fail(ledger.KioskError, fmt.Errorf("kiosk check: %w", ctx.Err()))
	}
	if k.err != nil {
		switch {
		case errors.Is(k.err, ErrNoNIC):
			return fail(ledger.KioskNoNIC, k.err)
		case errors.Is(k.err, ErrNoLink):
			return fail(ledger.KioskNoLink, k.err)
		case errors.Is(k.err, ErrNoLease):
			return fail(ledger.KioskNoDHCP, k.err)
		case errors.Is(k.err, context.DeadlineExceeded), errors.Is(k.err, context.Canceled):
			return fail(ledger.KioskNoDHCP, fmt.Errorf("%w within %v: %w", ErrNoLease, k.Timeout, k.err))
		}
		return fail(ledger.KioskError, k.err)
	}
	l := k.lease
	r.Interface, r.MAC, r.Address = l.Interface, l.MAC, l.Addr.String()
	if l.Server.IsValid() {
		r.DHCP = l.Server.String()
	}
	if static.Addr.IsValid() {
		port := static.Port
		if port == 0 {
			port = uint16(k.Port)
		}
		r.Static = fmt.Sprintf("setup.bin record %d", static.Record)
		return k.probe(fctx, r, netip.AddrPortFrom(static.Addr.Unmap(), port))
	}
	dhcpDomain := strings.TrimSuffix(l.Domain, ".")
	switch {
	case k.Domain != "":
		r.Domain, r.DomainSource = k.Domain, "recipe"
	case meSuffix != "":
		r.Domain, r.DomainSource = meSuffix, "me"
	case dhcpDomain != "":
		r.Domain, r.DomainSource = dhcpDomain, "dhcp"
	}
	r.Domain = strings.ToLower(strings.TrimSuffix(r.Domain, "."))
	if dhcpDomain != "" && !strings.EqualFold(dhcpDomain, r.Domain) {
		r.DHCPDomain = dhcpDomain
	}
	if len(l.DNS) == 0 {
		return fail(ledger.KioskNoDNSServer, errors.New("the DHCP lease names no DNS server (option 6), so AMT cannot look the kiosk up"))
	}
	r.DNS = l.DNS[0].String()
	if r.Domain == "" {
		return fail(ledger.KioskNoDomain, errors.New("no domain: the ME has no DNS suffix and the DHCP lease no option 15"))
	}
	if !ValidDomain(r.Domain) {
		return fail(ledger.KioskNoDomain, fmt.Errorf("the domain %q (from %s) is not a DNS name", r.Domain, r.DomainSource))
	}
	r.Name = "provisionserver." + r.Domain
	k.Logger.Debug("kiosk check: lease", "interface", l.Interface, "addr", r.Address, "after", time.Since(k.start))
	addrs, err := k.Net.Resolve(fctx, l.DNS[0], r.Name)
	k.Logger.Debug("kiosk check: resolved", "name", r.Name, "addrs", fmt.Sprint(addrs), "after", time.Since(k.start))
	switch {
	case errors.Is(err, ErrNotResolved):
		return fail(ledger.KioskNotResolved, err)
	case err != nil && fctx.Err() != nil:
		return fail(ledger.KioskNotResolved, fmt.Errorf("asking %s for %s: no answer within the %v of the check: %w", r.DNS, r.Name, k.Timeout, err))
	case err != nil:
		return fail(ledger.KioskNotResolved, err)
	case len(addrs) == 0:
		return fail(ledger.KioskNotResolved, fmt.Errorf("%s: %w", r.Name, ErrNotResolved))
	}
	return k.probe(fctx, r, netip.AddrPortFrom(addrs[0], uint16(k.Port)))
}

// probe connects to the kiosk at ap and fills r's result.
func (k *KioskCheck) probe(fctx context.Context, r *ledger.KioskCheck, ap netip.AddrPort) *ledger.KioskCheck {
	fail := func(result string, err error) *ledger.KioskCheck {
		r.Result, r.Error = result, err.Error()
		return r
	}
	r.Kiosk = ap.String()
	err := k.Net.Probe(fctx, ap)
	switch {
	case err == nil:
		r.Result = ledger.KioskReachable
		return r
	case errors.Is(err, ErrRefused):
		return fail(ledger.KioskRefused, err)
	case fctx.Err() != nil || isTimeout(err):
		return fail(ledger.KioskTimeout, err)
	}
	return fail(ledger.KioskError, err)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, syscall.EHOSTUNREACH) || errors.Is(err, syscall.ETIMEDOUT)
}

// DNSTimeout bounds one DNS exchange (the resolver tries again within the
// check's timeout).
const DNSTimeout = 2 * time.Second

// ResolveWith asks server (port 53) for name's IPv4 addresses with Go's
// own resolver, whatever /etc/resolv.conf says (the initramfs has none).
func ResolveWith(ctx context.Context, server netip.Addr, name string) ([]netip.Addr, error) {
	return resolveAt(ctx, netip.AddrPortFrom(server, 53), name)
}

// resolveAt is ResolveWith on any port (the tests' DNS server is not on 53).
func resolveAt(ctx context.Context, server netip.AddrPort, name string) ([]netip.Addr, error) {
	srv := server.String()
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		d := net.Dialer{Timeout: DNSTimeout}
		return d.DialContext(ctx, network, srv)
	}}
	fqdn := strings.TrimSuffix(name, ".") + "."
	addrs, err := r.LookupNetIP(ctx, "ip4", fqdn)
	if err != nil {
		var de *net.DNSError
		if errors.As(err, &de) && de.IsNotFound {
			return nil, fmt.Errorf("asking %s for %s: %w (the DNS server does not know it)", server.Addr(), name, ErrNotResolved)
		}
		if errors.As(err, &de) && !de.IsTimeout && !de.IsTemporary {
			// REFUSED or SERVFAIL: the kiosk's DNS refuses names it
			// does not serve.
			return nil, fmt.Errorf("asking %s for %s: %w (the DNS server refused or failed the query: %v)", server.Addr(), name, ErrNotResolved, err)
		}
		return nil, fmt.Errorf("asking %s for %s: %w", server.Addr(), name, err)
	}
	out := make([]netip.Addr, 0, len(addrs))
	for _, a := range addrs {
		out = append(out, a.Unmap())
	}
	return out, nil
}

// ProbeTCP connects to addr and closes the connection without sending.
func ProbeTCP(ctx context.Context, addr netip.AddrPort) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr.String())
	if err != nil {
		if errors.Is(err, syscall.ECONNREFUSED) {
			return fmt.Errorf("connecting to %s: %w (nothing listens on port %s)", addr, ErrRefused, strconv.Itoa(int(addr.Port())))
		}
		return fmt.Errorf("connecting to %s: %w", addr, err)
	}
	return c.Close()
}

// KioskLines are the screen lines for a check's result: one line saying
// what happened and, when it failed, what to do.
func KioskLines(r *ledger.KioskCheck) []string {
	if r == nil {
		return nil
	}
	name := r.Via()
	if r.Result == ledger.KioskReachable {
		return []string{fmt.Sprintf("Kiosk reachable: %s → %s.", name, r.Kiosk)}
	}
	const cabling = "Check the kiosk's DNS and DHCP and the cabling."
	var what, todo string
	switch r.Result {
	case ledger.KioskNoNIC:
		what, todo = "no wired network interface (no driver for this machine's NIC on the stick)", "Tell the kiosk operator the machine's model (the recipe's check_kiosk.modules)."
	case ledger.KioskNoLink:
		what, todo = "no network link (no cable, or the switch port is off)", "Plug this machine into the kiosk's network."
	case ledger.KioskNoDHCP:
		what, todo = "no DHCP answer", cabling
	case ledger.KioskNoDNSServer:
		what, todo = "the DHCP lease names no DNS server", "Make the kiosk's DHCP hand out its DNS server (option 6)."
	case ledger.KioskNoDomain:
		what, todo = "no domain (the ME has no DNS suffix, DHCP no option 15)", "Set the suffix in the kiosk's DHCP (option 15) or in MEBx."
	case ledger.KioskNotResolved:
		what, todo = fmt.Sprintf("%s does not resolve at %s", orDash(r.Name), orDash(r.DNS)), cabling
	case ledger.KioskRefused:
		what, todo = fmt.Sprintf("%s → %s refused the connection", name, r.Kiosk), "Check that the kiosk is running and listens for hellos on that port."
	case ledger.KioskTimeout:
		what, todo = fmt.Sprintf("%s → %s did not answer", name, r.Kiosk), cabling
	default:
		what, todo = "the check failed", cabling
	}
	return []string{"Kiosk NOT reachable: " + what + ". " + todo}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
