package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/provstick/provstick/internal/tlspsk"
	"github.com/provstick/provstick/internal/wsman"
	"github.com/provstick/provstick/kiosk"
	"github.com/provstick/provstick/kiosk/netsvc"
	"github.com/provstick/provstick/kiosk/pki"
	"github.com/provstick/provstick/kiosk/provision"
	"github.com/provstick/provstick/setupbin"
	"github.com/spf13/cobra"
)

func init() { register(newKioskCmd) }

func newKioskCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "kiosk",
		Short: "Run the offline provisioning server (hellos, DNS, PSK and PKI provisioning)",
	}
	cmd.AddCommand(newKioskServeCmd(e), newKioskAuditCmd(e), newKioskHashPasswordCmd(e), newKioskCredentialsCmd(e))
	addSubcommands(e, cmd)
	return cmd
}

type kioskServeFlags struct {
	store   storeFlags
	runFor  time.Duration
	helloOn string
	dnsOn   string
	webOn   string
	// DHCP (off unless --dhcp-interface is given).
	dhcpIface  string
	dhcpRange  string
	dhcpRouter string
	dhcpPrefix int
	plainHTTP  string
	floodRate  float64
	floodBurst int
	// PKI (off unless kiosk.pki.dir or --pki-dir is given).
	pkiDir            string
	pkiPassphraseFile string
	pkiSecrets        []string
}

func newKioskServeCmd(e *env) *cobra.Command {
	var f kioskServeFlags
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Listen for hellos and provision the machines that send them",
		Long: `kiosk serve is the Setup and Configuration Server of an isolated network
(specs/amt-psk.md). It listens for AMT hellos (kiosk.hello_listen, TCP 9971),
optionally answers DNS for provisionserver.<suffix> (kiosk.dns_listen,
kiosk.dns_suffixes, kiosk.address) and DHCP (--dhcp-interface, off by
default: options 1, 3, 6 = the kiosk, 15 = the first suffix, leases kept in
the store; it refuses to start if another DHCP server answers on the
interface), and provisions every machine whose hello
names a PID of the pool: TLS-PSK back to the machine's 16993, spec §6 steps
1-11 (time, key pair on the device, a certificate signed by the kiosk CA,
TLS, a new per-machine admin and MEBx password, commit), then a TLS
reconnection that must show the kiosk-signed certificate.

Progress is kept in the store, so a restarted kiosk resumes where it
stopped. The kiosk CA is created in the store on first run. Every hello and
every step goes to the store's history; failures are classified with the
technician's next step. Runs until interrupted (or --run-for).

With a site PKI (--pki-dir or kiosk.pki.dir, made by 'provstick kiosk ca
init'; its key's passphrase from --pki-passphrase-file, kiosk.pki.passphrase_file
or $PROVSTICK_PKI_PASSPHRASE) the kiosk also provisions machines that send
version-3 (PKI) hellos: TLS to 16993 presenting the site's provisioning
chain, AdminSetup to admin control mode, then the same TLS steps (specs/pki.md).
It logs in with the MEBx password the sticks' records set, read from the
secrets files 'provstick setupbin pki --new-password' wrote (--pki-secrets,
kiosk.pki.secrets): a PKI hello names no record, so every record must set
the same password. The admin password AdminSetup sets is kept sealed in
the store. A machine that refuses the site's chain (or whose hello shows it
does not trust the site root) is reported once and not tried again until
its hellos start over.`,
		Example: `  provstick kiosk serve
  provstick kiosk serve --hello-listen 127.0.0.1:9971 --dns-listen 127.0.0.1:5353
  provstick kiosk serve --pki-dir site-pki --pki-secrets stick-secrets.json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runKioskServe(cmd.Context(), e, f)
		},
	}
	f.store.register(cmd)
	fl := cmd.Flags()
	fl.DurationVar(&f.runFor, "run-for", 0, "stop after this long (default: run until interrupted)")
	fl.StringVar(&f.helloOn, "hello-listen", "", "hello listener `address` (overrides kiosk.hello_listen)")
	fl.StringVar(&f.dnsOn, "dns-listen", "", "DNS `address` (overrides kiosk.dns_listen)")
	fl.StringVar(&f.webOn, "web-listen", "", "web console `address` (overrides kiosk.web.listen; \"\" there turns it off)")
	fl.StringVar(&f.dhcpIface, "dhcp-interface", "", "serve DHCP on this `interface` (off by default; refuses to start if another DHCP server answers there; Linux, needs root)")
	fl.StringVar(&f.dhcpRange, "dhcp-range", "", "DHCP `first-last` addresses handed out, e.g. 10.0.0.100-10.0.0.199 (needed with --dhcp-interface)")
	fl.StringVar(&f.dhcpRouter, "dhcp-router", "", "DHCP option 3 router `address` (default: none)")
	fl.IntVar(&f.dhcpPrefix, "dhcp-prefix", 24, "subnet prefix `length` of the DHCP network")
	fl.Float64Var(&f.floodRate, "hello-flood-rate", 100, "hellos per second accepted from one source address (AMT sends one a minute; simulators on one address send more); negative: no limit")
	fl.IntVar(&f.floodBurst, "hello-flood-burst", 200, "hellos accepted at once from one source address")
	fl.StringVar(&f.plainHTTP, "plain-http", "never", "provision over plain HTTP on 16992: never, fallback (when 16993 refuses the connection; not encrypted) or always")
	fl.StringVar(&f.pkiDir, "pki-dir", "", "site PKI `directory` for PKI provisioning (overrides kiosk.pki.dir; made by provstick kiosk ca init)")
	fl.StringVar(&f.pkiPassphraseFile, "pki-passphrase-file", "", "`file` holding the passphrase of the provisioning key (overrides kiosk.pki.passphrase_file; else $"+envPKIPassphrase+")")
	fl.StringSliceVar(&f.pkiSecrets, "pki-secrets", nil, "secrets `file`s written by provstick setupbin pki for this site's sticks (overrides kiosk.pki.secrets)")
	return cmd
}

func runKioskServe(ctx context.Context, e *env, f kioskServeFlags) error {
	kc := e.cfg.Kiosk
	if f.helloOn != "" {
		kc.HelloListen = f.helloOn
	}
	if f.dnsOn != "" {
		kc.DNSListen = f.dnsOn
	}
	keyForm, err := tlspsk.ParseKeyForm(kc.KeyForm)
	if err != nil {
		return fmt.Errorf("configuration field kiosk.key_form: %w", err)
	}
	var enc wsman.PSKEncoding
	switch kc.PSKEncoding {
	case "text":
		enc = wsman.PSKText
	case "base64":
		enc = wsman.PSKBase64
	default:
		return fmt.Errorf("configuration field kiosk.psk_encoding: invalid value %q (want text or base64)", kc.PSKEncoding)
	}
	if kc.AMTTLSPort < 1 || kc.AMTTLSPort > 65535 {
		return fmt.Errorf("configuration field kiosk.amt_tls_port: invalid value %d", kc.AMTTLSPort)
	}
	if kc.Concurrency < 1 || kc.Concurrency > 4096 {
		return fmt.Errorf("configuration field kiosk.concurrency: invalid value %d (want 1 to 4096)", kc.Concurrency)
	}
	users, err := kioskUsers(kc.Users)
	if err != nil {
		return err
	}
	plain, err := provision.ParsePlainMode(f.plainHTTP)
	if err != nil {
		return fmt.Errorf("flag --plain-http: %w", err)
	}
	port := strconv.Itoa(kc.AMTTLSPort)
	var mu sync.Mutex // stdout lines from the workers
	o := kiosk.Options{
		Logger:              e.log,
		HelloReadTimeout:    kc.HelloReadTimeout,
		HelloFloodRate:      f.floodRate,
		HelloFloodBurst:     f.floodBurst,
		MaxHelloConnections: kc.MaxHelloConnections,
		Provision: provision.Options{
			Concurrency: kc.Concurrency, StepTimeout: kc.StepTimeout, VerifyDelay: kc.VerifyDelay,
			KeyForm: keyForm, PSKEncoding: enc, Plain: plain, Users: users, NextPSK: kc.NextPSK,
			Resolve: func(_ context.Context, j provision.Job) (string, error) {
				if !j.Peer.Addr().IsValid() {
					return "", errors.New("no peer address")
				}
				return net.JoinHostPort(j.Peer.Addr().String(), port), nil
			},
			OnResult: func(r provision.Result) {
				mu.Lock()
				defer mu.Unlock()
				switch r.Outcome {
				case provision.OutcomeProvisioned:
					fmt.Fprintf(e.stdout, "provisioned %s (PID %s) in %v\n", r.Job.UUID, r.Job.PID, r.Duration.Round(time.Millisecond))
				case provision.OutcomeFailed:
					fmt.Fprintf(e.stdout, "failed %s (PID %s): %v; next: %s\n", r.Job.UUID, r.Job.PID, r.Failure, r.Failure.Class.Advice())
				case provision.OutcomeUnknownPID:
					fmt.Fprintf(e.stdout, "hello from %s with PID %s: PID not in this pool\n", r.Job.UUID, r.Job.PID)
				}
			},
		},
	}
	if kc.DNSListen != "" {
		addr, err := netip.ParseAddr(kc.Address)
		if err != nil {
			return fmt.Errorf("configuration field kiosk.address: %q is not an IP address (needed to answer DNS)", kc.Address)
		}
		o.DNS = &netsvc.DNSOptions{Suffixes: kc.DNSSuffixes, SCSFQDN: kc.SCSFQDN, Answer: addr}
		if _, err := netsvc.NewDNS(*o.DNS); err != nil {
			return fmt.Errorf("configuration of kiosk DNS: %w", err)
		}
	}

	if f.dhcpIface != "" {
		d, err := dhcpOptions(kc.Address, kc.DNSSuffixes, f)
		if err != nil {
			return err
		}
		o.DHCP = d
	}

	if f.pkiDir != "" {
		kc.PKI.Dir = f.pkiDir
	}
	if f.pkiPassphraseFile != "" {
		kc.PKI.PassphraseFile = f.pkiPassphraseFile
	}
	if len(f.pkiSecrets) > 0 {
		kc.PKI.Secrets = f.pkiSecrets
	}
	if kc.PKI.Dir != "" {
		if o.PKI, err = kioskPKIOptions(e, kc.PKI, port, kc.StepTimeout, kc.VerifyDelay); err != nil {
			return err
		}
		o.PKIQueue = provision.PKIQueueOptions{Concurrency: kc.Concurrency, OnResult: func(r provision.PKIResult) {
			mu.Lock()
			defer mu.Unlock()
			printPKIResult(e, r)
		}}
	}

	if f.webOn != "" {
		kc.Web.Listen = f.webOn
	}
	console := newKioskConsole(kc.Web)
	if console != nil {
		o.Provision.OnResult = console.countResults(o.Provision.OnResult)
		if next := o.PKIQueue.OnResult; next != nil {
			o.PKIQueue.OnResult = func(r provision.PKIResult) {
				console.count("pki-" + string(r.Outcome))
				next(r)
			}
		}
	}

	s, err := openStore(ctx, e, &f.store, true)
	if err != nil {
		return err
	}
	defer s.Close()
	o.Store = s

	lc := net.ListenConfig{}
	o.HelloListener, err = lc.Listen(ctx, "tcp", kc.HelloListen)
	if err != nil {
		return fmt.Errorf("listening for hellos on %s: %w", kc.HelloListen, err)
	}
	if kc.DNSListen != "" {
		if o.DNSConn, err = lc.ListenPacket(ctx, "udp", kc.DNSListen); err != nil {
			o.HelloListener.Close()
			return fmt.Errorf("listening for DNS on %s: %w", kc.DNSListen, err)
		}
		if o.DNSListener, err = lc.Listen(ctx, "tcp", o.DNSConn.LocalAddr().String()); err != nil {
			o.HelloListener.Close()
			o.DNSConn.Close()
			return fmt.Errorf("listening for DNS over TCP on %s: %w", kc.DNSListen, err)
		}
	}
	k, err := kiosk.New(ctx, o)
	if err != nil {
		return err
	}
	fp := k.CA().Fingerprint()
	fmt.Fprintf(e.stdout, "kiosk: hellos on %s", o.HelloListener.Addr())
	if o.DNSConn != nil {
		fmt.Fprintf(e.stdout, ", DNS on %s", o.DNSConn.LocalAddr())
	}
	if o.DHCP != nil {
		fmt.Fprintf(e.stdout, ", DHCP on %s", o.DHCP.Interface)
	}
	fmt.Fprintf(e.stdout, "; CA %s, SHA-256 %x\n", k.CA().Certificate().Subject.CommonName, fp[:])
	if o.PKI != nil {
		fmt.Fprintf(e.stdout, "kiosk: PKI provisioning as %s, site root SHA-256 %s\n", o.PKI.Site.FQDN(), o.PKI.Site.RootHashHex())
	}
	if console != nil {
		if err := console.start(ctx, e, kc.Web, s, k, kc.Concurrency); err != nil {
			return err
		}
	}
	if f.runFor > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, f.runFor)
		defer cancel()
	}
	if err := console.serve(ctx, k); err != nil {
		return err
	}
	st := k.HelloStats()
	fmt.Fprintf(e.stdout, "kiosk stopped: %d hellos (%d PSK, %d PKI, %d malformed, %d over the flood limit)\n", st.Connections, st.PSK, st.PKI, st.Malformed, st.Flooded)
	return nil
}

// dhcpOptions builds the DHCP server's options from the kiosk address, the
// first DNS suffix (option 15) and the flags.
func dhcpOptions(address string, suffixes []string, f kioskServeFlags) (*netsvc.DHCPOptions, error) {
	ip, err := netip.ParseAddr(address)
	if err != nil {
		return nil, fmt.Errorf("configuration field kiosk.address: %q is not an IP address (needed for DHCP)", address)
	}
	if len(suffixes) == 0 {
		return nil, errors.New("configuration field kiosk.dns_suffixes: empty (DHCP option 15 needs a suffix)")
	}
	first, last, ok := strings.Cut(f.dhcpRange, "-")
	a, err1 := netip.ParseAddr(strings.TrimSpace(first))
	b, err2 := netip.ParseAddr(strings.TrimSpace(last))
	if !ok || err1 != nil || err2 != nil {
		return nil, fmt.Errorf("flag --dhcp-range: %q: want FIRST-LAST IPv4 addresses", f.dhcpRange)
	}
	d := &netsvc.DHCPOptions{Interface: f.dhcpIface, ServerIP: ip, RangeStart: a, RangeEnd: b, PrefixBits: f.dhcpPrefix, Suffix: suffixes[0]}
	if f.dhcpRouter != "" {
		if d.Router, err = netip.ParseAddr(f.dhcpRouter); err != nil {
			return nil, fmt.Errorf("flag --dhcp-router: %q is not an IP address", f.dhcpRouter)
		}
	}
	if _, err := netsvc.NewDHCP(*d); err != nil {
		return nil, fmt.Errorf("configuration of kiosk DHCP: %w", err)
	}
	return d, nil
}

// kioskPKIOptions loads the site PKI (provisioning chain and key) and the
// sticks' secrets files into the PKI provisioner's options. The MEBx
// password is the one every record of the secrets files set: a PKI hello
// carries no PID, only the UUID and the trusted root hashes, so nothing
// tells which record a machine consumed; files whose records set
// different passwords are refused here rather than tried on the machines
// (failed Digest logins count towards AMT's lock-out).
func kioskPKIOptions(e *env, pc KioskPKIConfig, port string, stepTimeout, verifyDelay time.Duration) (*provision.PKIOptions, error) {
	if len(pc.Secrets) == 0 {
		return nil, errors.New("PKI provisioning (kiosk.pki.dir) needs the sticks' secrets files: --pki-secrets or kiosk.pki.secrets (written by provstick setupbin pki --new-password)")
	}
	pass, err := secretFrom(e, pc.PassphraseFile, envPKIPassphrase, "site PKI passphrase", false)
	if err != nil {
		return nil, err
	}
	site, err := pki.Load(pc.Dir, pass)
	if err != nil {
		return nil, fmt.Errorf("loading the site PKI: %w", err)
	}
	root := site.RootHashHex()
	var pw setupbin.Password
	for _, file := range pc.Secrets {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("reading the PKI secrets: %w", err)
		}
		var sec pkiSecrets
		if err := json.Unmarshal(b, &sec); err != nil {
			return nil, fmt.Errorf("PKI secrets file %s: %w", file, err)
		}
		if sec.Kind != "pki" || sec.Version != 1 {
			return nil, fmt.Errorf("PKI secrets file %s: kind %q version %d: want a file written by provstick setupbin pki", file, sec.Kind, sec.Version)
		}
		if !strings.EqualFold(sec.RootHash, root) {
			return nil, fmt.Errorf("PKI secrets file %s: its records add root %s, not this site's %s (%s)", file, sec.RootHash, root, pc.Dir)
		}
		if len(sec.Records) == 0 {
			return nil, fmt.Errorf("PKI secrets file %s: no records", file)
		}
		for _, r := range sec.Records {
			if r.NewPassword == "" {
				return nil, fmt.Errorf("PKI secrets file %s: record %d: no new_mebx_password", file, r.Index)
			}
			if pw == "" {
				pw = setupbin.Password(r.NewPassword)
			} else if string(pw) != r.NewPassword {
				return nil, fmt.Errorf("PKI secrets file %s: record %d sets another MEBx password than the first record read: a PKI hello does not say which record a machine took, so the kiosk needs one password for all (write the sticks with provstick setupbin pki --new-password)", file, r.Index)
			}
		}
	}
	return &provision.PKIOptions{Site: site, Lookup: provision.FixedPassword(pw, nil), Logger: e.log,
		StepTimeout: stepTimeout, VerifyDelay: verifyDelay,
		Resolve: func(_ context.Context, j provision.PKIJob) (string, error) {
			if !j.Peer.Addr().IsValid() {
				return "", errors.New("no peer address")
			}
			return net.JoinHostPort(j.Peer.Addr().Unmap().String(), port), nil
		}}, nil
}

// printPKIResult writes the technician's line for a PKI run.
func printPKIResult(e *env, r provision.PKIResult) {
	switch r.Outcome {
	case provision.OutcomeProvisioned:
		fmt.Fprintf(e.stdout, "provisioned (PKI, admin control mode) %s in %v\n", r.Job.UUID, r.Duration.Round(time.Millisecond))
	case provision.OutcomeUnknownMachine:
		fmt.Fprintf(e.stdout, "PKI hello from %s: machine unknown to this kiosk; next: %s\n", r.Job.UUID, provision.PKIAdvice(provision.ClassUnknownMachine))
	case provision.OutcomeFailed:
		state := ""
		if r.AdminSet {
			state = " (admin control mode set, admin password kept in the store)"
		}
		fmt.Fprintf(e.stdout, "failed (PKI) %s%s: %v; next: %s\n", r.Job.UUID, state, r.Failure, provision.PKIAdvice(r.Failure.Class))
	}
}

// kioskUsers turns kiosk.users into step 8 users, naming the entry and
// field of a bad value.
func kioskUsers(cs []KioskUserConfig) ([]provision.User, error) {
	var us []provision.User
	for i, c := range cs {
		field := fmt.Sprintf("kiosk.users[%d]", i)
		acc, err := wsman.ParseAccessPermission(c.Access)
		if err != nil {
			return nil, fmt.Errorf("configuration field %s.access: %w", field, err)
		}
		u := provision.User{Name: c.Name, Access: acc}
		for j, n := range c.Realms {
			r, err := wsman.ParseRealm(n)
			if err != nil {
				return nil, fmt.Errorf("configuration field %s.realms[%d]: %w", field, j, err)
			}
			u.Realms = append(u.Realms, r)
		}
		us = append(us, u)
	}
	if err := provision.CheckUsers(us); err != nil {
		return nil, fmt.Errorf("configuration field kiosk.users: %w", err)
	}
	return us, nil
}
