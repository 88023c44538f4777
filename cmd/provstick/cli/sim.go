package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/provstick/provstick/initramfs/heci/amthi"
	"github.com/provstick/provstick/internal/amtsim"
	"github.com/provstick/provstick/internal/tlspsk"
	"github.com/provstick/provstick/internal/wsman"
	"github.com/provstick/provstick/setupbin"
	"github.com/spf13/cobra"
)

func init() { register(newSimCmd) }

func newSimCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "sim",
		Short: "Run simulated AMT machines for tests and demos",
	}
	cmd.AddCommand(newSimMECmd(e))
	cmd.AddCommand(newSimAMTCmd(e))
	return cmd
}

type simMEFlags struct {
	listen     string
	uuid       string
	state      string
	control    string
	amtVersion string
	dnsSuffix  string
	pid        string
	noAMT      bool
	notReady   time.Duration
	lme        bool
}

func newSimMECmd(e *env) *cobra.Command {
	var f simMEFlags
	cmd := &cobra.Command{
		Use:   "me",
		Short: "Serve a simulated Intel ME (HECI) on a Unix socket",
		Long: `sim me serves the ME side of one simulated AMT machine: the AMT host
interface and the MKHI firmware version, over the stream framing of
specs/heci.md §5, until interrupted.

Point "provstick amtinfo --mei unix:///path" at it, or start QEMU with the
socket as a virtio-serial port named org.provstick.mei:

  -device virtio-serial -chardev socket,id=me,path=/path \
  -device virtserialport,chardev=me,name=org.provstick.mei

and run "provstick amtinfo --mei virtio:org.provstick.mei" in the guest.`,
		Example: `  provstick sim me --listen unix:///tmp/me.sock
  provstick sim me --listen unix:///tmp/me.sock --state in --pid ABCD0123 --dns-suffix lab.example`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runSimME(cmd.Context(), e, f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.listen, "listen", "", "address to listen on: unix:///path/to.sock (required)")
	fl.StringVar(&f.uuid, "uuid", "", "device UUID (default 939b524b-13d4-1d18-e487-1c697a6b7a2b)")
	fl.StringVar(&f.state, "state", "pre", "provisioning state: pre, in or post")
	fl.StringVar(&f.control, "control", "", "control mode when --state post: client or admin (default admin)")
	fl.StringVar(&f.amtVersion, "amt-version", "", "AMT version string (default 11.8.50)")
	fl.StringVar(&f.dnsSuffix, "dns-suffix", "", "DNS suffix the ME holds")
	fl.StringVar(&f.pid, "pid", "", "PID stored by setup.bin (with --state in)")
	fl.BoolVar(&f.noAMT, "no-amt", false, "simulate a SKU without AMT (the AMT host interface does not exist)")
	fl.DurationVar(&f.notReady, "not-ready", 0, "stay not ready for this long after starting")
	fl.BoolVar(&f.lme, "lme", false, "serve the LME client: local WS-Man for host-based activation (specs/pki.md)")
	_ = cmd.MarkFlagRequired("listen")
	return cmd
}

func simState(f simMEFlags) (amtsim.State, error) {
	st := amtsim.DefaultState()
	if f.uuid != "" {
		u, err := amthi.ParseUUID(f.uuid)
		if err != nil {
			return st, fmt.Errorf("flag --uuid: %w", err)
		}
		st.UUID = u
	}
	if f.amtVersion != "" {
		st.AMTVersion = f.amtVersion
	}
	st.AMTPresent = !f.noAMT
	st.DNSSuffix, st.PKISuffix = f.dnsSuffix, f.dnsSuffix
	switch strings.ToLower(f.state) {
	case "pre":
	case "in":
		st.ProvisioningState, st.ProvisioningMode, st.TLSMode = amthi.StateIn, amthi.ModeEnterprise, amthi.TLSModePKI
		if f.pid != "" {
			st.PID, st.TLSMode = f.pid, amthi.TLSModePSK
		}
	case "post":
		st.ProvisioningState, st.ProvisioningMode, st.ControlMode = amthi.StatePost, amthi.ModeEnterprise, amthi.ControlAdmin
	default:
		return st, fmt.Errorf("flag --state: invalid value %q (want pre, in or post)", f.state)
	}
	switch strings.ToLower(f.control) {
	case "":
	case "admin":
		st.ControlMode = amthi.ControlAdmin
	case "client":
		st.ControlMode = amthi.ControlClient
	default:
		return st, fmt.Errorf("flag --control: invalid value %q (want client or admin)", f.control)
	}
	if f.control != "" && st.ProvisioningState != amthi.StatePost {
		return st, fmt.Errorf("flag --control: only with --state post")
	}
	if f.pid != "" && st.ProvisioningState != amthi.StateIn {
		return st, fmt.Errorf("flag --pid: only with --state in")
	}
	return st, nil
}

func runSimME(ctx context.Context, e *env, f simMEFlags) error {
	st, err := simState(f)
	if err != nil {
		return err
	}
	ln, err := amtsim.Listen(f.listen)
	if err != nil {
		return err
	}
	srv := amtsim.NewMEServer(amtsim.NewDevice(st), &amtsim.MEOptions{Logger: e.log, LME: f.lme})
	defer srv.Close()
	if f.notReady > 0 {
		srv.NotReadyFor(f.notReady)
	}
	e.log.Info("ME simulator listening", "address", f.listen, "uuid", st.UUID.String(), "state", st.ProvisioningState.String())
	if err := srv.Serve(ctx, ln); err != nil {
		return err
	}
	e.log.Info("ME simulator stopped")
	return nil
}

// ---- sim amt ----

type simAMTFlags struct {
	devices     int
	setupbin    string
	pid         string
	pps         string
	mebx        string
	domain      string
	helloTo     string
	dns         string
	helloPort   int
	timeScale   float64
	listen      string
	perAddress  bool
	portBase    int
	amtVersion  string
	keyForm     string
	pskEncoding string
	noHint      bool
	noHello     bool
	commitDelay time.Duration
	runFor      time.Duration

	faultOn        string
	wrongPPS       bool
	dropStep       int
	dropAfter      bool
	slow           time.Duration
	commitFail     int
	mebxFail       bool
	realm          string
	duplicateHello int
	garbageHello   int
}

func newSimAMTCmd(e *env) *cobra.Command {
	var f simAMTFlags
	cmd := &cobra.Command{
		Use:   "amt",
		Short: "Run simulated AMT machines on the network (hello, TLS-PSK, WS-Man)",
		Long: `sim amt runs the network side of one or more simulated AMT machines in
PSK setup mode (specs/amt-psk.md): each sends hellos to the SCS on the AMT
schedule (retry counts 0-14: 5 one minute apart, 5 ten minutes apart, 5 an
hour apart, divided by --time-scale), serves TLS-PSK and WS-Management on
its 16993 and plain HTTP Digest on its 16992, and follows the provisioning
state machine until CommitChanges, after which 16993 serves TLS with the
certificate the kiosk signed over the machine's own key and hellos stop.

Each machine consumes one record of --setupbin (the valid records in file
order; the file is not changed), which gives its PID/PPS, MEBx password and
any SCS address and domain the record holds; or, for one machine, --pid,
--pps and --mebx-password. Machine i has the UUID
939b524b-13d4-1d18-e487-1c697a6b7a2b with its last 4 bytes set to i+1.

Machines listen on --listen with ports from --port-base (machine i on
base+2i and base+2i+1; 0 picks free ports), or with --per-address each on
its own address from --listen upward on 16992/16993, sending hellos from
that address, as real machines do. One JSON line per machine on stdout
gives its UUID, PID and addresses.

Unconfirmed protocol details are switches, the same as the kiosk's:
--key-form (TLS-PSK key bytes) and --psk-encoding (SetTLSPSK). The --fault-*
flags inject faults into the machines --fault-on lists (default: all).`,
		Example: `  provstick sim amt --setupbin setup.bin --devices 50 --hello-to 127.0.0.1:9971 --time-scale 60
  provstick sim amt --setupbin setup.bin --dns 127.0.0.1:5353 --domain lab.example --per-address --listen 127.0.1.1
  provstick sim amt --pid ABCD0123 --pps 0123-4567-89AB-CDEF-0123-4567-89AB-CDEF --mebx-password 'P@ssw0rd1' --no-hello`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runSimAMT(cmd.Context(), e, f)
		},
	}
	fl := cmd.Flags()
	fl.IntVar(&f.devices, "devices", 1, "number of machines")
	fl.StringVar(&f.setupbin, "setupbin", "", "setup.bin `file` whose valid records the machines consume, one each")
	fl.StringVar(&f.pid, "pid", "", "PID of the one machine (instead of --setupbin)")
	fl.StringVar(&f.pps, "pps", "", "PPS of the one machine (instead of --setupbin)")
	fl.StringVar(&f.mebx, "mebx-password", "", "MEBx password of the one machine (default admin)")
	fl.StringVar(&f.domain, "domain", "", "DNS domain: hellos go to provisionserver.<domain> (overrides the record's)")
	fl.StringVar(&f.helloTo, "hello-to", "", "static SCS `host:port` for hellos (overrides the record's)")
	fl.StringVar(&f.dns, "dns", "", "DNS server `host:port` that resolves provisionserver.<domain>")
	fl.IntVar(&f.helloPort, "hello-port", 9971, "SCS port when found through DNS")
	fl.Float64Var(&f.timeScale, "time-scale", 1, "divide the hello schedule and the commit delay by this factor")
	fl.StringVar(&f.listen, "listen", "127.0.0.1", "IP address to listen on (machine 0's with --per-address)")
	fl.BoolVar(&f.perAddress, "per-address", false, "each machine on its own address from --listen upward, ports 16992/16993")
	fl.IntVar(&f.portBase, "port-base", 0, "machine i listens on base+2i (HTTP) and base+2i+1 (TLS); 0: free ports")
	fl.StringVar(&f.amtVersion, "amt-version", "9.5.30", "AMT version the machines report")
	fl.StringVar(&f.keyForm, "key-form", "pps-ascii", "TLS-PSK key bytes: pps-ascii or pps-dashed (unconfirmed, spec §3)")
	fl.StringVar(&f.pskEncoding, "psk-encoding", "text", "SetTLSPSK encoding: text or base64 (unconfirmed, spec §6)")
	fl.BoolVar(&f.noHint, "no-identity-hint", false, "send no PSK identity hint (the PID by default)")
	fl.BoolVar(&f.noHello, "no-hello", false, "send no hellos")
	fl.DurationVar(&f.commitDelay, "commit-delay", 5*time.Second, "16993 refuses connections this long after a commit (scaled)")
	fl.DurationVar(&f.runFor, "run-for", 0, "stop after this long (default: run until interrupted)")
	fl.StringVar(&f.faultOn, "fault-on", "", "comma-separated machine indexes the faults apply to (default: all)")
	fl.BoolVar(&f.wrongPPS, "fault-wrong-pps", false, "store a PPS other than the record's (TLS-PSK fails)")
	fl.IntVar(&f.dropStep, "fault-drop-step", 0, "drop the connection at the first request of provisioning step `k` (spec §6, 1-12)")
	fl.BoolVar(&f.dropAfter, "fault-drop-after", false, "with --fault-drop-step: let the call take effect, then drop")
	fl.DurationVar(&f.slow, "fault-slow", 0, "delay every WS-Man reply by this long")
	fl.IntVar(&f.commitFail, "fault-commit", 0, "first CommitChanges returns this value (1, 38 or 2057)")
	fl.BoolVar(&f.mebxFail, "fault-mebx-2054", false, "first SetMEBxPassword returns 2054 (invalid password)")
	fl.StringVar(&f.realm, "fault-realm", "", "change the Digest realm to this value once started")
	fl.IntVar(&f.duplicateHello, "fault-duplicate-hellos", 0, "send every hello 1+N times")
	fl.IntVar(&f.garbageHello, "fault-garbage-hellos", 0, "precede the first N hellos with garbage")
	return cmd
}

// simMachine is the JSON line printed per machine.
type simMachine struct {
	Index int    `json:"index"`
	UUID  string `json:"uuid"`
	PID   string `json:"pid"`
	HTTP  string `json:"http"`
	TLS   string `json:"tls"`
	Realm string `json:"realm"`
}

func simAMTRecords(f simAMTFlags) ([]amtsim.SetupRecord, []string, error) {
	switch {
	case f.setupbin != "" && (f.pid != "" || f.pps != "" || f.mebx != ""):
		return nil, nil, errors.New("flags --setupbin and --pid/--pps/--mebx-password: use one or the other")
	case f.setupbin != "":
		rc, err := setupbin.Open(f.setupbin)
		if err != nil {
			return nil, nil, fmt.Errorf("reading %s: %w", f.setupbin, err)
		}
		defer rc.Close()
		var recs []amtsim.SetupRecord
		var scs []string
		for _, r := range rc.Records {
			if len(recs) == f.devices {
				break
			}
			if !r.Valid() {
				continue
			}
			p, err := r.PSK()
			if err != nil {
				// A PKI record (site root hash, suffix; no PID/PPS) makes a
				// machine that sends version-3 hellos.
				k, kerr := r.PKI()
				if kerr != nil {
					return nil, nil, fmt.Errorf("reading %s record %d: neither PSK (%w) nor PKI (%w)", f.setupbin, r.Index, err, kerr)
				}
				recs = append(recs, amtsim.PKISetupRecord(k))
				scs = append(scs, "")
				continue
			}
			rec := amtsim.SetupRecord{PID: p.PID.String(), PPS: amtsim.NewSecret(p.PPS.Reveal()), DNSSuffix: p.DomainName}
			if p.NewPassword != "" {
				rec.MEBxPassword = amtsim.NewSecret(p.NewPassword.Reveal())
			}
			addr := ""
			if p.ServerAddr.IsValid() && p.ServerPort != 0 {
				addr = netip.AddrPortFrom(p.ServerAddr, p.ServerPort).String()
			}
			recs = append(recs, rec)
			scs = append(scs, addr)
		}
		if len(recs) < f.devices {
			return nil, nil, fmt.Errorf("%s has %d valid records, fewer than --devices %d", f.setupbin, len(recs), f.devices)
		}
		return recs, scs, nil
	case f.pid != "" || f.pps != "":
		if f.devices != 1 {
			return nil, nil, errors.New("flags --pid/--pps: only with --devices 1 (use --setupbin for more)")
		}
		// The simulator holds what it is given: lengths are checked, check
		// characters are not (setupbin checks those when it writes files).
		pid, pps := strings.ReplaceAll(f.pid, "-", ""), strings.ReplaceAll(f.pps, "-", "")
		if len(pid) != 8 || !alnum(pid) {
			return nil, nil, fmt.Errorf("flag --pid: %q is not 8 letters and digits (dashes ignored)", f.pid)
		}
		if len(pps) != 32 || !alnum(pps) {
			return nil, nil, errors.New("flag --pps: not 32 letters and digits (dashes ignored)")
		}
		rec := amtsim.SetupRecord{PID: pid, PPS: amtsim.NewSecret(pps)}
		if f.mebx != "" {
			rec.MEBxPassword = amtsim.NewSecret(f.mebx)
		}
		return []amtsim.SetupRecord{rec}, []string{""}, nil
	}
	return nil, nil, errors.New("no PID/PPS: give --setupbin FILE (or --pid and --pps for one machine)")
}

func runSimAMT(ctx context.Context, e *env, f simAMTFlags) error {
	if f.devices < 1 || f.devices > 65000 {
		return fmt.Errorf("flag --devices: %d, want 1 to 65000", f.devices)
	}
	if f.timeScale <= 0 {
		return fmt.Errorf("flag --time-scale: %v, want a positive factor", f.timeScale)
	}
	keyForm, err := tlspsk.ParseKeyForm(f.keyForm)
	if err != nil {
		return fmt.Errorf("flag --key-form: %w", err)
	}
	var enc wsman.PSKEncoding
	switch f.pskEncoding {
	case "text":
		enc = wsman.PSKText
	case "base64":
		enc = wsman.PSKBase64
	default:
		return fmt.Errorf("flag --psk-encoding: invalid value %q (want text or base64)", f.pskEncoding)
	}
	if f.helloTo != "" {
		if _, _, err := net.SplitHostPort(f.helloTo); err != nil {
			return fmt.Errorf("flag --hello-to: %w", err)
		}
	}
	if f.dns != "" {
		if _, _, err := net.SplitHostPort(f.dns); err != nil {
			return fmt.Errorf("flag --dns: %w", err)
		}
	}
	if f.commitFail != 0 && !slices.Contains([]int{1, 38, 2057}, f.commitFail) {
		return fmt.Errorf("flag --fault-commit: %d, want 1, 38 or 2057", f.commitFail)
	}
	if f.dropStep < 0 || f.dropStep > amtsim.StepAudit {
		return fmt.Errorf("flag --fault-drop-step: %d, want 1 to 12", f.dropStep)
	}
	faultOn := map[int]bool{}
	if f.faultOn != "" {
		for _, s := range strings.Split(f.faultOn, ",") {
			i, err := strconv.Atoi(strings.TrimSpace(s))
			if err != nil || i < 0 || i >= f.devices {
				return fmt.Errorf("flag --fault-on: %q is not a machine index (0 to %d)", s, f.devices-1)
			}
			faultOn[i] = true
		}
	}
	recs, scs, err := simAMTRecords(f)
	if err != nil {
		return err
	}
	base := amtsim.DefaultState()
	base.AMTVersion = f.amtVersion
	fo := amtsim.FleetOptions{
		Devices: f.devices, Base: base, Records: recs, Host: f.listen, PerAddress: f.perAddress, HTTPPort: f.portBase,
		Net: amtsim.NetOptions{
			Logger: e.log, KeyForm: keyForm, PSKEncoding: enc, NoIdentityHint: f.noHint,
			CommitDowntime: time.Duration(float64(f.commitDelay) / f.timeScale),
			Hello: amtsim.HelloOptions{SCS: f.helloTo, DNSServer: f.dns, Domain: f.domain, Port: f.helloPort,
				TimeScale: f.timeScale, Disabled: f.noHello},
		},
	}
	fo.Prepare = func(i int, s *amtsim.NetServer) {
		if scs[i] != "" {
			s.Device().Update(func(st *amtsim.State) { st.Net.SCS = scs[i] })
		}
		if len(faultOn) == 0 || faultOn[i] {
			simFaults(s, f)
		}
	}
	if f.perAddress && f.portBase != 0 {
		fo.HTTPPort, fo.TLSPort = f.portBase, f.portBase+1
	}
	fleet, err := amtsim.StartFleet(ctx, fo)
	if err != nil {
		return err
	}
	defer fleet.Close()
	enc2 := json.NewEncoder(e.stdout)
	for i, m := range fleet.Machines {
		st := m.Net.Device().State()
		if err := enc2.Encode(simMachine{Index: i, UUID: st.UUID.String(), PID: st.PID, HTTP: m.HTTPAddr, TLS: m.TLSAddr, Realm: m.Net.Realm()}); err != nil {
			return fmt.Errorf("writing the machine list: %w", err)
		}
	}
	e.log.Info("AMT simulator running", "machines", len(fleet.Machines), "time_scale", f.timeScale)
	if f.runFor > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, f.runFor)
		defer cancel()
	}
	<-ctx.Done()
	e.log.Info("AMT simulator stopped")
	return nil
}

func simFaults(s *amtsim.NetServer, f simAMTFlags) {
	if f.wrongPPS {
		s.StoreWrongPPS()
	}
	if f.dropStep > 0 {
		s.DropAtStep(f.dropStep, f.dropAfter, 1)
	}
	if f.slow > 0 {
		s.SlowResponses(f.slow)
	}
	if f.commitFail != 0 {
		s.ForceReturn("CommitChanges", wsman.Status(f.commitFail))
	}
	if f.mebxFail {
		s.ForceReturn("SetMEBxPassword", wsman.StatusInvalidPassword)
	}
	if f.realm != "" {
		s.ChangeRealm(f.realm)
	}
	if f.duplicateHello > 0 {
		s.DuplicateHellos(f.duplicateHello)
	}
	if f.garbageHello > 0 {
		s.GarbageHellos(f.garbageHello)
	}
}

func alnum(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z') {
			return false
		}
	}
	return true
}
