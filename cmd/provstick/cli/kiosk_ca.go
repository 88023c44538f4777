package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/provstick/provstick/kiosk/pki"
)

// subcommands are constructors of subcommands added to an existing parent
// command (by its name) from a file of their own; the parent calls
// addSubcommands. This keeps e.g. "kiosk ca" out of kiosk.go.
var subcommands = map[string][]func(*env) *cobra.Command{}

func registerSub(parent string, f func(*env) *cobra.Command) {
	subcommands[parent] = append(subcommands[parent], f)
}

// addSubcommands adds the registered subcommands of parent.
func addSubcommands(e *env, parent *cobra.Command) {
	for _, f := range subcommands[parent.Name()] {
		parent.AddCommand(f(e))
	}
}

func init() { registerSub("kiosk", newKioskCACmd) }

// envPKIPassphrase holds the site PKI passphrase when no file is given.
const envPKIPassphrase = "PROVSTICK_PKI_PASSPHRASE"

type kioskCAFlags struct {
	dir            string
	suffix         string
	host           string
	rootName       string
	passphraseFile string
	workFactor     int
}

func (f *kioskCAFlags) register(c *cobra.Command, create bool) {
	fl := c.Flags()
	fl.StringVar(&f.dir, "dir", "site-pki", "site PKI `directory` (root and provisioning certificate, keys age-encrypted)")
	if create {
		fl.StringVar(&f.suffix, "suffix", "", "PKI DNS suffix the machines get in setup.bin 2/3 (required)")
		fl.StringVar(&f.host, "host", "provisionserver", "the kiosk's host name under the suffix (the provisioning certificate's CN)")
		fl.StringVar(&f.rootName, "root-name", "", "the root's common name (default \"provstick site root\")")
		fl.StringVar(&f.passphraseFile, "passphrase-file", "", "passphrase for the keys, from this file (else $"+envPKIPassphrase+", else asked on the terminal)")
		fl.IntVar(&f.workFactor, "scrypt-work-factor", 18, "log2 of the scrypt cost of the key files (10 to 22)")
	}
}

func newKioskCACmd(e *env) *cobra.Command {
	c := &cobra.Command{
		Use:   "ca",
		Short: "The site's own provisioning PKI (AMT's PKI path, admin control mode)",
	}
	var fi kioskCAFlags
	initCmd := &cobra.Command{
		Use:   "init --suffix DOMAIN [--dir DIR]",
		Short: "Create an offline site root and a provisioning certificate AMT accepts",
		Long: `init creates the site PKI in --dir: a root certificate (its SHA-256 hash is
what sticks write into setup.bin 2/8 so that machines trust it) and a
provisioning certificate under it carrying Intel's provisioning OID
2.16.840.1.113741.1.2.3, its common name <host>.<suffix>. Both keys are
RSA 2048, encrypted at rest with age (scrypt passphrase). Keep the root key
file offline; the kiosk needs only provisioning.pem and provisioning-key.age.
It never replaces an existing site.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runKioskCAInit(cmd.Context(), e, &fi) },
	}
	fi.register(initCmd, true)
	var fs kioskCAFlags
	showCmd := &cobra.Command{
		Use:   "show [--dir DIR]",
		Short: "Print the site root hash and the provisioning certificate (no passphrase needed)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := pki.LoadPublic(fs.dir)
			if err != nil {
				return err
			}
			printSite(e, s)
			return nil
		},
	}
	fs.register(showCmd, false)
	c.AddCommand(initCmd, showCmd)
	return c
}

func runKioskCAInit(_ context.Context, e *env, f *kioskCAFlags) error {
	if f.suffix == "" {
		return errors.New("flag --suffix is required: the PKI DNS suffix the machines get")
	}
	if err := pki.ValidSuffix(strings.TrimSuffix(f.suffix, ".")); err != nil {
		return fmt.Errorf("flag --suffix: %w", err)
	}
	if f.workFactor < 10 || f.workFactor > 22 {
		return fmt.Errorf("flag --scrypt-work-factor: invalid value %d (want 10 to 22)", f.workFactor)
	}
	pass, err := secretFrom(e, f.passphraseFile, envPKIPassphrase, "site PKI passphrase", true)
	if err != nil {
		return err
	}
	s, err := pki.Init(f.dir, pass, pki.Options{Suffix: f.suffix, Host: f.host, RootName: f.rootName, WorkFactor: f.workFactor})
	if err != nil {
		return err
	}
	e.log.Info("site PKI created", "dir", f.dir)
	printSite(e, s)
	return nil
}

func printSite(e *env, s *pki.Site) {
	w := e.stdout
	fmt.Fprintf(w, "Root:                   %s\n", s.Root.Subject.CommonName)
	fmt.Fprintf(w, "Root SHA-256:           %s\n", s.RootHashHex())
	fmt.Fprintf(w, "Root valid until:       %s\n", s.Root.NotAfter.UTC().Format("2006-01-02"))
	fmt.Fprintf(w, "Provisioning CN:        %s\n", s.Leaf.Subject.CommonName)
	fmt.Fprintf(w, "Provisioning valid:     %s to %s\n", s.Leaf.NotBefore.UTC().Format("2006-01-02"), s.Leaf.NotAfter.UTC().Format("2006-01-02"))
	mark := "none (AMT will refuse it)"
	if pki.HasProvisioningMark(s.Leaf) {
		mark = "Intel provisioning OID/OU present"
	}
	fmt.Fprintf(w, "Provisioning mark:      %s\n", mark)
	fmt.Fprintf(w, "setup.bin: provstick setupbin pki --pki-root-hash %s --pki-suffix %s\n", s.RootHashHex(), strings.TrimPrefix(s.Leaf.Subject.CommonName[strings.Index(s.Leaf.Subject.CommonName, ".")+1:], "."))
}
