package cli

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/provstick/provstick/internal/atomicfile"
	"github.com/provstick/provstick/kiosk/store"
	"github.com/provstick/provstick/setupbin"
	"github.com/spf13/cobra"
)

func init() { register(newSetupbinCmd) }

// newSetupbinCmd is "provstick setupbin": create, read and change setup.bin
// files (specs/setupbin.md).
func newSetupbinCmd(e *env) *cobra.Command {
	c := &cobra.Command{
		Use:   "setupbin",
		Short: "Create, inspect and change setup.bin provisioning files",
		Long: `setup.bin is the file the BIOS reads from a USB stick at power-on: a header and
N records, each holding MEBx password changes and a PID/PPS pair. The BIOS
hands one record to each machine and "consumes" it.

A setup.bin holds PPS and passwords in plain text (its scrambling is +0x11
per byte): treat the file and the stick like a key ring.`,
	}
	c.AddCommand(newSetupbinCreateCmd(e), newSetupbinViewCmd(e), newSetupbinSummaryCmd(e),
		newSetupbinVerifyCmd(e), newSetupbinConsumeCmd(e), newSetupbinUnconsumeCmd(e), newSetupbinRepairCmd(e))
	addSubcommands(e, c)
	return c
}

type setupbinCreateFlags struct {
	generate        int
	pairs           string
	version         string
	profile         string
	currentPassword string
	newPassword     string
	passwordLength  int
	noConsume       bool
	scramble        string
	serverAddr      string
	serverPort      uint16
	domain          string
	hostname        string
	dhcp            string
	output          string
	secrets         string
	force           bool
	fromPool        bool
	stick           string
	records         int
	store           storeFlags
}

func newSetupbinCreateCmd(e *env) *cobra.Command {
	var f setupbinCreateFlags
	c := &cobra.Command{
		Use:   "create -o setup.bin --secrets secrets.json (--generate N | --pairs FILE)",
		Short: "Write a setup.bin with one PSK record per machine",
		Long: `create writes a setup.bin whose records each carry the current MEBx password,
a new MEBx password, manageability = AMT and a PID/PPS pair, plus the
network settings the firmware profile accepts.

The PID/PPS pairs are fresh (--generate N) or read from a CSV/JSON file of
PID,PPS[,new password[,current password]] (--pairs). New MEBx passwords are
generated per record unless --new-password fixes one for all.

With --from-pool --stick LABEL --records N the records are drawn from the
pool store instead (one transaction: no entry ever goes to two sticks), and
the store keeps the secrets.

Otherwise every record's PID, PPS and passwords go to the --secrets file
(mode 0600), the only copy of the secrets: keep it. Neither file is ever
overwritten (setup.bin only with --force), and both appear whole or not at
all.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runSetupbinCreate(cmd.Context(), e, &f) },
	}
	fl := c.Flags()
	fl.IntVar(&f.generate, "generate", 0, "generate N fresh PID/PPS pairs")
	fl.StringVar(&f.pairs, "pairs", "", "read PID/PPS pairs from a CSV or JSON `file`")
	fl.StringVar(&f.version, "version", "", "format version 1, 2, 2.1, 3 or 4 (default: the profile's)")
	fl.StringVar(&f.profile, "profile", setupbin.ProfileAMT6to10.Name, "firmware profile: "+profileNames())
	fl.StringVar(&f.currentPassword, "current-password", string(setupbin.DefaultMEBxPassword), "the MEBx password the machines have now")
	fl.StringVar(&f.newPassword, "new-password", "", "one new MEBx password for every record (default: a generated one per record)")
	fl.IntVar(&f.passwordLength, "password-length", 16, "length of generated MEBx passwords (8-32)")
	fl.BoolVar(&f.noConsume, "no-consume", false, "set the don't-consume flag: every machine gets record 0 (format 2.0+)")
	fl.StringVar(&f.scramble, "scramble", "default", "scramble record bodies: default (4.0 only), on, off")
	fl.StringVar(&f.serverAddr, "server-addr", "", "provisioning server IPv4/IPv6 address (2/17)")
	fl.Uint16Var(&f.serverPort, "server-port", 0, "provisioning server port (2/18)")
	fl.StringVar(&f.domain, "domain", "", "domain name (2/12)")
	fl.StringVar(&f.hostname, "hostname", "", "host name (2/11)")
	fl.StringVar(&f.dhcp, "dhcp", "", "DHCP (2/13): enabled or disabled")
	fl.StringVarP(&f.output, "output", "o", "", "setup.bin to write")
	fl.StringVar(&f.secrets, "secrets", "", "secrets file to write (JSON, mode 0600)")
	fl.BoolVar(&f.force, "force", false, "replace an existing setup.bin")
	fl.BoolVar(&f.fromPool, "from-pool", false, "draw the records from the pool store (store.dsn)")
	fl.StringVar(&f.stick, "stick", "", "with --from-pool: the new stick's label")
	fl.IntVar(&f.records, "records", 0, "with --from-pool: how many records to draw")
	f.store.register(c)
	return c
}

func profileNames() string {
	var names []string
	for _, p := range setupbin.Profiles() {
		names = append(names, p.Name)
	}
	return strings.Join(names, ", ")
}

// createPlan is the validated form of the create flags.
type createPlan struct {
	prof     *setupbin.Profile
	opts     setupbin.WriterOptions
	template setupbin.PSK // network settings and passwords common to all
	fixedNew bool
	pwLen    int
}

func planCreate(f *setupbinCreateFlags, n uint32) (*createPlan, error) {
	prof, err := setupbin.ProfileByName(f.profile)
	if err != nil {
		return nil, fmt.Errorf("flag --profile: %w", err)
	}
	if !prof.PSK() {
		return nil, fmt.Errorf("flag --profile: profile %s does not accept PID/PPS (2/1, 2/2): PSK provisioning is for AMT 10 and older", prof.Name)
	}
	p := &createPlan{prof: prof, pwLen: f.passwordLength}
	p.opts = setupbin.WriterOptions{Profile: prof, Records: n, NoConsume: f.noConsume}
	if f.version != "" {
		if p.opts.Version, err = setupbin.ParseVersion(f.version); err != nil {
			return nil, fmt.Errorf("flag --version: %w", err)
		}
	}
	switch f.scramble {
	case "default":
		p.opts.Scramble = setupbin.ScrambleDefault
	case "on":
		p.opts.Scramble = setupbin.ScrambleOn
	case "off":
		p.opts.Scramble = setupbin.ScrambleOff
	default:
		return nil, fmt.Errorf("flag --scramble: invalid value %q (want default, on or off)", f.scramble)
	}
	t := &p.template
	t.CurrentPassword = setupbin.Password(f.currentPassword)
	if err := setupbin.ValidateCurrentPassword(t.CurrentPassword); err != nil {
		return nil, fmt.Errorf("flag --current-password: %w", err)
	}
	if f.newPassword != "" {
		t.NewPassword = setupbin.Password(f.newPassword)
		if err := setupbin.ValidateMEBxPassword(t.NewPassword); err != nil {
			return nil, fmt.Errorf("flag --new-password: %w", err)
		}
		p.fixedNew = true
	} else if f.passwordLength < 8 || f.passwordLength > 32 {
		return nil, fmt.Errorf("flag --password-length: invalid value %d (want 8 to 32)", f.passwordLength)
	}
	if f.serverAddr != "" {
		if t.ServerAddr, err = netip.ParseAddr(f.serverAddr); err != nil {
			return nil, fmt.Errorf("flag --server-addr: invalid value %q: not an IPv4 or IPv6 address", f.serverAddr)
		}
	}
	t.ServerPort, t.DomainName, t.HostName = f.serverPort, f.domain, f.hostname
	switch f.dhcp {
	case "":
	case "enabled":
		t.DHCP = setupbin.DHCPEnabled
	case "disabled":
		t.DHCP = setupbin.DHCPDisabled
	default:
		return nil, fmt.Errorf("flag --dhcp: invalid value %q (want enabled or disabled)", f.dhcp)
	}
	return p, nil
}

// record builds the record for one pair, completing it from the template.
func (p *createPlan) record(pid setupbin.PID, pps setupbin.PPS, newPW, curPW setupbin.Password) (setupbin.PSK, setupbin.Record, error) {
	k := p.template
	k.PID, k.PPS = pid, pps
	if curPW != "" {
		k.CurrentPassword = curPW
	}
	switch {
	case newPW != "":
		k.NewPassword = newPW
	case !p.fixedNew:
		pw, err := setupbin.GenerateMEBxPassword(nil, p.pwLen)
		if err != nil {
			return k, setupbin.Record{}, err
		}
		k.NewPassword = pw
	}
	rec, err := k.Record(p.prof)
	return k, rec, err
}

func runSetupbinCreate(ctx context.Context, e *env, f *setupbinCreateFlags) (retErr error) {
	if f.output == "" {
		return errors.New("flag --output (-o) is required: the setup.bin to write")
	}
	sources := 0
	for _, on := range []bool{f.generate != 0, f.pairs != "", f.fromPool} {
		if on {
			sources++
		}
	}
	if sources != 1 {
		return errors.New("give exactly one of --generate N, --pairs FILE or --from-pool")
	}
	if f.secrets == "" && !f.fromPool {
		return errors.New("flag --secrets is required: without it the records' PPS and passwords would be lost")
	}
	if f.fromPool && (f.stick == "" || f.records <= 0) {
		return errors.New("--from-pool needs --stick LABEL and --records N")
	}
	if !f.fromPool && (f.stick != "" || f.records != 0) {
		return errors.New("flags --stick and --records go with --from-pool")
	}
	if f.generate < 0 || f.generate > 1_000_000 {
		return fmt.Errorf("flag --generate: invalid value %d (want 1 to 1000000)", f.generate)
	}
	var pairs []store.ImportEntry
	n := f.generate
	if f.pairs != "" {
		pf, err := os.Open(f.pairs)
		if err != nil {
			return fmt.Errorf("reading pairs: %w", err)
		}
		pairs, err = store.ParseImport(pf)
		pf.Close()
		if err != nil {
			return fmt.Errorf("reading pairs from %s: %w", f.pairs, err)
		}
		if len(pairs) == 0 {
			return fmt.Errorf("reading pairs from %s: no PID/PPS pairs in it", f.pairs)
		}
		seen := make(map[setupbin.PID]int, len(pairs))
		for _, pe := range pairs {
			if first, dup := seen[pe.PID]; dup {
				return fmt.Errorf("reading pairs from %s: line %d: PID %s already on line %d: a PID must never go to two machines", f.pairs, pe.Line, pe.PID.Display(), first)
			}
			seen[pe.PID] = pe.Line
		}
		n = len(pairs)
	}
	if f.fromPool {
		n = f.records
	}
	plan, err := planCreate(f, uint32(n))
	if err != nil {
		return err
	}
	if f.noConsume && n > 1 {
		e.log.Warn("don't-consume file: every machine gets record 0 and the other records are never used", "records", n)
	}
	if abs(f.output) == abs(f.secrets) {
		return errors.New("flags --output and --secrets name the same file")
	}

	// Both files are written to temporary names and appear only when both
	// are complete; the secrets first, so that a setup.bin never exists
	// without the copy of its secrets.
	var sec *atomicfile.File
	if f.secrets != "" {
		if sec, err = atomicfile.Create(f.secrets, 0o600, true); err != nil {
			return fmt.Errorf("secrets file: %w", err)
		}
		defer sec.Abort()
	}
	out, err := atomicfile.Create(f.output, 0o644, !f.force)
	if err != nil {
		return fmt.Errorf("setup.bin: %w", err)
	}
	defer out.Abort()

	var pool *store.Store
	if f.fromPool {
		// Drawing is the last step that can fail for a reason of the
		// user's (a locked store, too few free entries), so nothing is
		// drawn for a file that cannot be written.
		if pool, err = openStore(ctx, e, &f.store, true); err != nil {
			return err
		}
		defer pool.Close()
		_, drawn, err := pool.AllocateStick(ctx, store.StickSpec{Label: f.stick, Recipe: "setupbin", Count: n, Profile: plan.prof.Name})
		if err != nil {
			return fmt.Errorf("drawing %d records for stick %s from the pool: %w", n, f.stick, err)
		}
		pairs = make([]store.ImportEntry, len(drawn))
		for i, d := range drawn {
			pairs[i] = store.ImportEntry{Line: d.Record, PID: d.PID, PPS: d.PPS, NewPassword: d.NewPassword, CurrentPassword: d.CurrentPassword, Profile: d.Profile}
		}
		// From here on a failure leaves the entries allocated to the
		// stick in the store: never lost, never drawn again.
		defer func() {
			if retErr != nil {
				retErr = fmt.Errorf("%w (the %d drawn entries stay allocated to stick %s in the store; retire them with provstick pool void)", retErr, n, f.stick)
			}
		}()
	}

	bw := bufio.NewWriterSize(out, 1<<16)
	w, err := setupbin.NewWriter(bw, plan.opts)
	if err != nil {
		return fmt.Errorf("writing %s: %w", f.output, err)
	}
	hdr := w.Header()
	var secW io.Writer = io.Discard
	if sec != nil {
		secW = sec
	}
	sw, err := newSecretsWriter(secW, secretsHeader{
		Format: secretsFormat, SetupBin: filepath.Base(f.output), Created: time.Now().UTC().Format(time.RFC3339),
		Version: hdr.Version.String(), Profile: plan.prof.Name, Records: n, Scrambled: w.Scrambled(),
	})
	if err != nil {
		return fmt.Errorf("writing %s: %w", f.secrets, err)
	}
	seen := make(map[setupbin.PID]bool, n)
	for i := 0; i < n; i++ {
		var pid setupbin.PID
		var pps setupbin.PPS
		var newPW, curPW setupbin.Password
		if pairs != nil {
			pe := pairs[i]
			pid, pps, newPW, curPW = pe.PID, pe.PPS, pe.NewPassword, pe.CurrentPassword
		} else {
			for {
				if pid, err = setupbin.GeneratePID(nil); err != nil {
					return err
				}
				if !seen[pid] {
					break
				}
			}
			seen[pid] = true
			if pps, err = setupbin.GeneratePPS(nil); err != nil {
				return err
			}
		}
		k, rec, err := plan.record(pid, pps, newPW, curPW)
		if err != nil {
			switch {
			case f.fromPool:
				return fmt.Errorf("stick %s record %d (PID %s): %w", f.stick, i+1, pid.Display(), err)
			case pairs != nil:
				return fmt.Errorf("%s line %d: %w", f.pairs, pairs[i].Line, err)
			}
			return fmt.Errorf("record %d: %w", i, err)
		}
		if err := w.AddRecord(rec); err != nil {
			return fmt.Errorf("writing %s: record %d: %w", f.output, i, err)
		}
		if err := sw.add(secretsRecord{Index: i, Number: i + 1, PID: pid.String(), PPS: pps.Reveal(),
			CurrentPassword: k.CurrentPassword.Reveal(), NewPassword: k.NewPassword.Reveal()}); err != nil {
			return fmt.Errorf("writing %s: %w", f.secrets, err)
		}
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", f.output, err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("writing %s: %w", f.output, err)
	}
	if err := sw.close(plan.template); err != nil {
		return fmt.Errorf("writing %s: %w", f.secrets, err)
	}
	if sec != nil {
		if err := sec.Commit(); err != nil {
			return fmt.Errorf("secrets file: %w", err)
		}
	}
	if err := out.Commit(); err != nil {
		// The secrets of a file that was never written are no use: remove
		// them so a retry can write both again.
		if sec != nil {
			os.Remove(f.secrets)
		}
		return fmt.Errorf("setup.bin: %w", err)
	}
	if pool != nil {
		if err := pool.MarkStick(ctx, f.stick, store.StickMark{BuiltAt: time.Now()}); err != nil {
			return fmt.Errorf("setup.bin written, but recording it in the store: %w", err)
		}
	}
	e.log.Debug("setup.bin written", "file", f.output, "records", n, "version", hdr.Version.String(), "profile", plan.prof.Name, "scrambled", w.Scrambled())
	fmt.Fprintf(e.stdout, "wrote %s: %d records, format %s, profile %s\n", f.output, n, hdr.Version, plan.prof.Name)
	if pool != nil {
		fmt.Fprintf(e.stdout, "drew records 1-%d for stick %s from the pool\n", n, f.stick)
	}
	if sec != nil {
		fmt.Fprintf(e.stdout, "wrote %s: the PID, PPS and passwords of every record (mode 0600)\n", f.secrets)
		if pool == nil {
			fmt.Fprintf(e.stderr, "provstick: %s is the only copy of these secrets (no pool store was used): keep it safe and private\n", f.secrets)
		}
	}
	return nil
}

func abs(p string) string {
	a, err := filepath.Abs(p)
	if err != nil {
		return p
	}
	return a
}

// The secrets file: JSON, one object with a header and the records, written
// record by record so that its memory does not grow with the record count.
const secretsFormat = "provstick-setupbin-secrets/1"

type secretsHeader struct {
	Format    string `json:"format"`
	SetupBin  string `json:"setup_bin"`
	Created   string `json:"created"`
	Version   string `json:"version"`
	Profile   string `json:"profile"`
	Records   int    `json:"record_count"`
	Scrambled bool   `json:"scrambled"`
}

type secretsRecord struct {
	Index           int    `json:"index"`
	Number          int    `json:"number"`
	PID             string `json:"pid"`
	PPS             string `json:"pps"`
	CurrentPassword string `json:"current_password"`
	NewPassword     string `json:"new_password"`
}

// secretsSettings are the settings every record shares (Unconsume rebuilds
// a record from them and the record's secrets).
type secretsSettings struct {
	ServerAddr string `json:"server_addr,omitempty"`
	ServerPort uint16 `json:"server_port,omitempty"`
	DomainName string `json:"domain_name,omitempty"`
	HostName   string `json:"host_name,omitempty"`
	DHCP       uint8  `json:"dhcp,omitempty"`
}

type secretsFile struct {
	secretsHeader
	Settings   secretsSettings `json:"settings"`
	RecordList []secretsRecord `json:"records"`
}

type secretsWriter struct {
	w     *bufio.Writer
	n     int
	first bool
}

func newSecretsWriter(w io.Writer, h secretsHeader) (*secretsWriter, error) {
	sw := &secretsWriter{w: bufio.NewWriter(w), first: true}
	hb, err := json.Marshal(h)
	if err != nil {
		return nil, err
	}
	// Open the object with the header's fields, then the record list.
	sw.w.Write(hb[:len(hb)-1])
	sw.w.WriteString(",\n\"records\": [")
	return sw, nil
}

func (sw *secretsWriter) add(r secretsRecord) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if !sw.first {
		sw.w.WriteByte(',')
	}
	sw.first = false
	sw.w.WriteString("\n  ")
	_, err = sw.w.Write(b)
	sw.n++
	return err
}

func (sw *secretsWriter) close(t setupbin.PSK) error {
	s := secretsSettings{ServerPort: t.ServerPort, DomainName: t.DomainName, HostName: t.HostName, DHCP: uint8(t.DHCP)}
	if t.ServerAddr.IsValid() {
		s.ServerAddr = t.ServerAddr.String()
	}
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	sw.w.WriteString("\n],\n\"settings\": ")
	sw.w.Write(b)
	sw.w.WriteString("}\n")
	return sw.w.Flush()
}

// readSecrets reads a secrets file written by create.
func readSecrets(name string) (*secretsFile, error) {
	b, err := os.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("reading secrets file: %w", err)
	}
	var s secretsFile
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("reading secrets file %s: not a provstick secrets file: %v", name, jsonErrNoValue(err))
	}
	if s.Format != secretsFormat {
		return nil, fmt.Errorf("reading secrets file %s: field format: unsupported value %q (want %q)", name, s.Format, secretsFormat)
	}
	return &s, nil
}

// jsonErrNoValue keeps a JSON error's position but drops any quoted value,
// which could be a secret.
func jsonErrNoValue(err error) string {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Sprintf("JSON syntax error at byte %d", se.Offset)
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fmt.Sprintf("field %s: wrong type at byte %d", te.Field, te.Offset)
	}
	return "malformed JSON"
}

// pskFromSecrets rebuilds record index's PSK from a secrets file.
func (s *secretsFile) psk(index int) (setupbin.PSK, error) {
	var k setupbin.PSK
	var sr *secretsRecord
	for i := range s.RecordList {
		if s.RecordList[i].Index == index {
			sr = &s.RecordList[i]
			break
		}
	}
	if sr == nil {
		return k, fmt.Errorf("the secrets file has no record %d", index)
	}
	var err error
	if k.PID, err = setupbin.ParsePID(sr.PID); err != nil {
		return k, fmt.Errorf("secrets file record %d: %w", index, err)
	}
	if k.PPS, err = setupbin.ParsePPS(sr.PPS); err != nil {
		return k, fmt.Errorf("secrets file record %d: %w", index, err)
	}
	k.CurrentPassword, k.NewPassword = setupbin.Password(sr.CurrentPassword), setupbin.Password(sr.NewPassword)
	st := s.Settings
	if st.ServerAddr != "" {
		if k.ServerAddr, err = netip.ParseAddr(st.ServerAddr); err != nil {
			return k, fmt.Errorf("secrets file field settings.server_addr: invalid value %q", st.ServerAddr)
		}
	}
	k.ServerPort, k.DomainName, k.HostName, k.DHCP = st.ServerPort, st.DomainName, st.HostName, setupbin.DHCPMode(st.DHCP)
	return k, nil
}
