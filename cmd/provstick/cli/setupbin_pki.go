package cli

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/provstick/provstick/internal/atomicfile"
	"github.com/provstick/provstick/kiosk/pki"
	"github.com/provstick/provstick/setupbin"
)

func init() { registerSub("setupbin", newSetupbinPKICmd) }

type setupbinPKIFlags struct {
	output          string
	secrets         string
	records         int
	profile         string
	rootHash        string
	pkiDir          string
	suffix          string
	serverFQDN      string
	currentPassword string
	newPassword     string
	passwordLength  int
	noStart         bool
	force           bool
}

func newSetupbinPKICmd(e *env) *cobra.Command {
	var f setupbinPKIFlags
	c := &cobra.Command{
		Use:   "pki -o setup.bin --secrets FILE --records N (--pki-root-hash HEX | --pki-dir DIR) --pki-suffix DOMAIN",
		Short: "Write a setup.bin whose records add the site root hash for AMT's PKI path",
		Long: `pki writes a setup.bin for PKI provisioning (admin control mode) on machines
that no longer take PID/PPS (AMT 11+) or that should use PKI (AMT 6-10). Each
record sets the current and a new MEBx password, manageability = AMT, the PKI
DNS suffix (2/3), optionally the configuration server FQDN (2/4), remote
configuration enabled (2/5), user-defined hashes enabled (2/7) with the site
root's SHA-256 hash added (2/8), and provisioning started (2/28) — only what
the profile accepts.

The root hash is given in hex or read from a site PKI directory made by
'provstick kiosk ca init'. New MEBx passwords are generated per record unless
--new-password fixes one; they go to the --secrets file (mode 0600).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runSetupbinPKI(e, &f) },
	}
	fl := c.Flags()
	fl.StringVarP(&f.output, "output", "o", "", "setup.bin to write")
	fl.StringVar(&f.secrets, "secrets", "", "secrets file to write (JSON, mode 0600): the records' MEBx passwords")
	fl.IntVar(&f.records, "records", 1, "number of records (machines)")
	fl.StringVar(&f.profile, "profile", setupbin.ProfileAMT11Plus.Name, "firmware profile: "+profileNames())
	fl.StringVar(&f.rootHash, "pki-root-hash", "", "the site root's SHA-256 certificate hash, 64 hex digits")
	fl.StringVar(&f.pkiDir, "pki-dir", "", "read the root hash (and the suffix) from this site PKI directory")
	fl.StringVar(&f.suffix, "pki-suffix", "", "PKI DNS suffix (2/3); default with --pki-dir: the provisioning certificate's")
	fl.StringVar(&f.serverFQDN, "server-fqdn", "", "configuration server FQDN (2/4)")
	fl.StringVar(&f.currentPassword, "current-password", string(setupbin.DefaultMEBxPassword), "the MEBx password the machines have now")
	fl.StringVar(&f.newPassword, "new-password", "", "one new MEBx password for every record (default: a generated one per record)")
	fl.IntVar(&f.passwordLength, "password-length", 16, "length of generated MEBx passwords (8-32)")
	fl.BoolVar(&f.noStart, "no-start", false, "leave out 2/28 = 1 (provisioning start)")
	fl.BoolVar(&f.force, "force", false, "replace an existing setup.bin")
	return c
}

type pkiSecrets struct {
	Version  int               `json:"version"`
	Kind     string            `json:"kind"`
	Profile  string            `json:"profile"`
	Suffix   string            `json:"pki_suffix"`
	RootHash string            `json:"root_sha256"`
	Records  []pkiSecretRecord `json:"records"`
}

type pkiSecretRecord struct {
	Index       int    `json:"index"`
	NewPassword string `json:"new_mebx_password"`
}

func runSetupbinPKI(e *env, f *setupbinPKIFlags) error {
	if f.output == "" || f.secrets == "" {
		return errors.New("flags --output (-o) and --secrets are required")
	}
	if abs(f.output) == abs(f.secrets) {
		return errors.New("flags --output and --secrets name the same file")
	}
	if f.records < 1 || f.records > 65535 {
		return fmt.Errorf("flag --records: invalid value %d (want 1 to 65535)", f.records)
	}
	prof, err := setupbin.ProfileByName(f.profile)
	if err != nil {
		return fmt.Errorf("flag --profile: %w", err)
	}
	var hash []byte
	switch {
	case f.rootHash != "" && f.pkiDir != "":
		return errors.New("give one of --pki-root-hash and --pki-dir")
	case f.rootHash != "":
		hash, err = hex.DecodeString(strings.TrimSpace(f.rootHash))
		if err != nil || len(hash) != 32 {
			return fmt.Errorf("flag --pki-root-hash %q: want 64 hexadecimal digits (SHA-256)", f.rootHash)
		}
	case f.pkiDir != "":
		s, err := pki.LoadPublic(f.pkiDir)
		if err != nil {
			return err
		}
		h := s.RootHash()
		hash = h[:]
		if f.suffix == "" {
			cn := s.Leaf.Subject.CommonName
			if i := strings.IndexByte(cn, '.'); i >= 0 {
				f.suffix = cn[i+1:]
			}
		}
	default:
		return errors.New("give the site root with --pki-root-hash HEX or --pki-dir DIR")
	}
	if f.suffix == "" {
		return errors.New("flag --pki-suffix is required")
	}
	if err := pki.ValidSuffix(f.suffix); err != nil {
		return fmt.Errorf("flag --pki-suffix: %w", err)
	}
	sec := pkiSecrets{Version: 1, Kind: "pki", Profile: prof.Name, Suffix: f.suffix, RootHash: hex.EncodeToString(hash)}
	recs := make([]setupbin.Record, 0, f.records)
	for i := range f.records {
		pw := setupbin.Password(f.newPassword)
		if pw == "" {
			if pw, err = setupbin.GenerateMEBxPassword(nil, f.passwordLength); err != nil {
				return fmt.Errorf("generating a MEBx password: %w", err)
			}
		}
		p := setupbin.PKI{CurrentPassword: setupbin.Password(f.currentPassword), NewPassword: pw, RootHash: hash,
			Suffix: f.suffix, ServerFQDN: f.serverFQDN, NoStart: f.noStart}
		rec, err := p.Record(prof)
		if err != nil {
			return fmt.Errorf("record %d: %w", i, err)
		}
		recs = append(recs, rec)
		sec.Records = append(sec.Records, pkiSecretRecord{Index: i, NewPassword: string(pw)})
	}
	sf, err := atomicfile.Create(f.secrets, 0o600, true)
	if err != nil {
		return fmt.Errorf("secrets file: %w", err)
	}
	defer sf.Abort()
	out, err := atomicfile.Create(f.output, 0o644, !f.force)
	if err != nil {
		return fmt.Errorf("setup.bin: %w", err)
	}
	defer out.Abort()
	w, err := setupbin.NewWriter(out, setupbin.WriterOptions{Profile: prof, Records: uint32(f.records)})
	if err != nil {
		return fmt.Errorf("writing %s: %w", f.output, err)
	}
	for i, r := range recs {
		if err := w.AddRecord(r); err != nil {
			return fmt.Errorf("writing record %d: %w", i, err)
		}
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", f.output, err)
	}
	enc := json.NewEncoder(sf)
	enc.SetIndent("", "  ")
	if err := enc.Encode(sec); err != nil {
		return fmt.Errorf("writing the secrets: %w", err)
	}
	if err := sf.Commit(); err != nil {
		return fmt.Errorf("secrets file: %w", err)
	}
	if err := out.Commit(); err != nil {
		return fmt.Errorf("setup.bin: %w", err)
	}
	fmt.Fprintf(e.stdout, "wrote %s: %d PKI records, profile %s, suffix %s, root SHA-256 %s\n", f.output, f.records, prof.Name, f.suffix, sec.RootHash)
	fmt.Fprintf(e.stdout, "wrote %s: the records' MEBx passwords (keep it secret)\n", f.secrets)
	return nil
}
