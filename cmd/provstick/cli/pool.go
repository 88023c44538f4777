package cli

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/provstick/provstick/kiosk/store"
	"github.com/provstick/provstick/setupbin"
	"github.com/spf13/cobra"
)

func init() { register(newPoolCmd) }

// newPoolCmd is "provstick pool": the pool of PID/PPS entries in the store
// (store.dsn: a SQLite file or a postgres:// URL).
func newPoolCmd(e *env) *cobra.Command {
	var sf storeFlags
	cmd := &cobra.Command{
		Use:   "pool",
		Short: "Manage the pool of PID/PPS entries",
		Long: `The pool holds every PID/PPS pair provstick issued, with the MEBx passwords
that go with it, encrypted at rest. Entries are free until drawn for a stick;
then consumed by a machine, seen saying hello, provisioned — or failed, or
voided by hand. Every change is recorded ("pool history").

The store is store.dsn: a SQLite file (default provstick.db next to the
configuration) or a postgres:// URL shared by several stations. Commands that
touch secrets need the store passphrase: --passphrase-file,
$PROVSTICK_STORE_PASSPHRASE, or the terminal; or --key-file.`,
	}
	sf.register(cmd)
	cmd.AddCommand(newPoolGenerateCmd(e, &sf), newPoolImportCmd(e, &sf), newPoolExportCmd(e, &sf),
		newPoolStatusCmd(e, &sf), newPoolVoidCmd(e, &sf), newPoolHistoryCmd(e, &sf))
	return cmd
}

// newPasswordFlags choose the new MEBx password of entries.
type newPasswordFlags struct {
	current string
	mode    string // "generated" or "fixed"
	file    string
	length  int
}

func (f *newPasswordFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.current, "current-password", string(setupbin.DefaultMEBxPassword), "the MEBx password the machines have now")
	fl.StringVar(&f.mode, "new-password", "generated", "new MEBx password: generated (random per entry) or fixed (one for all, from --new-password-file or $"+envNewPassword+")")
	fl.StringVar(&f.file, "new-password-file", "", "file holding the fixed new MEBx password")
	fl.IntVar(&f.length, "password-length", 16, "length of generated passwords (8-32)")
}

// resolve returns the current password and the fixed new password ("" for
// generated ones).
func (f *newPasswordFlags) resolve(e *env) (cur, nw setupbin.Password, err error) {
	cur = setupbin.Password(f.current)
	if err := setupbin.ValidateCurrentPassword(cur); err != nil {
		return "", "", fmt.Errorf("flag --current-password: %w", err)
	}
	if f.length < 8 || f.length > 32 {
		return "", "", fmt.Errorf("flag --password-length: invalid value %d (want 8 to 32)", f.length)
	}
	switch f.mode {
	case "generated":
		if f.file != "" {
			return "", "", errors.New("flag --new-password-file needs --new-password fixed")
		}
		return cur, "", nil
	case "fixed":
		b, err := secretFrom(e, f.file, envNewPassword, "new MEBx password", true)
		if err != nil {
			return "", "", err
		}
		nw = setupbin.Password(b)
		if err := setupbin.ValidateMEBxPassword(nw); err != nil {
			return "", "", err
		}
		return cur, nw, nil
	}
	return "", "", fmt.Errorf("flag --new-password: invalid value %q (want generated or fixed)", f.mode)
}

func newPoolGenerateCmd(e *env, sf *storeFlags) *cobra.Command {
	var count int
	var profile string
	var pw newPasswordFlags
	cmd := &cobra.Command{
		Use:   "generate --count N --profile P",
		Short: "Generate fresh random entries into the pool",
		Long: `Generate draws N fresh PID/PPS pairs (unique in the pool forever) for the
firmware profile P (` + strings.Join(store.Profiles, ", ") + `) and stores them encrypted, with the
machines' current MEBx password and a new one (random per entry by default).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cur, nw, err := pw.resolve(e)
			if err != nil {
				return err
			}
			if count < 1 || count > store.MaxAdd {
				return fmt.Errorf("flag --count: invalid value %d (want 1 to %d)", count, store.MaxAdd)
			}
			s, err := openStore(cmd.Context(), e, sf, true)
			if err != nil {
				return err
			}
			defer s.Close()
			pids, err := s.Generate(cmd.Context(), store.GenerateSpec{Count: count, Profile: profile, CurrentPassword: cur, NewPassword: nw, NewPasswordLength: pw.length})
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "generated %d %s entries, %s to %s\n", len(pids), profile, pids[0].Display(), pids[len(pids)-1].Display())
			return nil
		},
	}
	cmd.Flags().IntVar(&count, "count", 0, "number of entries")
	cmd.Flags().StringVar(&profile, "profile", "", "firmware profile: "+strings.Join(store.Profiles, ", "))
	cmd.MarkFlagRequired("count")
	cmd.MarkFlagRequired("profile")
	pw.register(cmd)
	return cmd
}

func newPoolImportCmd(e *env, sf *storeFlags) *cobra.Command {
	var profile string
	var pw newPasswordFlags
	var af ageFlags
	cmd := &cobra.Command{
		Use:   "import FILE",
		Short: "Import entries from a CSV or JSON file",
		Long: `Import reads PID,PPS[,new password[,current password]] lines (CSV, '#'
comments, an optional header naming the columns) or a JSON array of objects
with keys pid, pps, password, current_password, profile. A file written by
"pool export" (age-encrypted or plain) is read back too, free entries only.

Check characters are verified. A PID that repeats in the file or is already
in the pool is refused with its line number, and then nothing is imported.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cur, nw, err := pw.resolve(e)
			if err != nil {
				return err
			}
			name := args[0]
			data, err := os.ReadFile(name)
			if err != nil {
				return fmt.Errorf("reading the import file: %w", err)
			}
			if isAge(data) {
				if data, err = af.decrypt(e, data); err != nil {
					return fmt.Errorf("decrypting %s: %w", name, err)
				}
			}
			es, err := store.ParseImport(bytes.NewReader(data))
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			s, err := openStore(cmd.Context(), e, sf, true)
			if err != nil {
				return err
			}
			defer s.Close()
			if err := s.Import(cmd.Context(), es, store.ImportSpec{Profile: profile, CurrentPassword: cur, NewPassword: nw, NewPasswordLength: pw.length, Source: filepath.Base(name)}); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			fmt.Fprintf(e.stdout, "imported %d entries from %s\n", len(es), name)
			return nil
		},
	}
	cmd.Flags().StringVar(&profile, "profile", "", "firmware profile of entries whose line names none: "+strings.Join(store.Profiles, ", "))
	pw.register(cmd)
	af.registerDecrypt(cmd)
	return cmd
}

func newPoolExportCmd(e *env, sf *storeFlags) *cobra.Command {
	var out string
	var plain bool
	var states []string
	var af ageFlags
	cmd := &cobra.Command{
		Use:   "export -o FILE",
		Short: "Export entries with their secrets, encrypted with age",
		Long: `Export writes the entries (all, or those in --state) as CSV with their PPS
and passwords, encrypted with age (https://age-encryption.org): to the
--recipient public keys, or else with a passphrase (--export-passphrase-file,
$PROVSTICK_EXPORT_PASSPHRASE, or the terminal). "age -d" or "pool import"
read it back. --plain writes the secrets unencrypted, with a warning.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return errors.New("flag -o is required")
			}
			var sts []store.State
			for _, st := range states {
				if !slicesContains(store.States, store.State(st)) {
					return fmt.Errorf("flag --state: invalid value %q", st)
				}
				sts = append(sts, store.State(st))
			}
			s, err := openStore(cmd.Context(), e, sf, true)
			if err != nil {
				return err
			}
			defer s.Close()
			var wrap func(io.Writer) (io.WriteCloser, error)
			if plain {
				fmt.Fprintf(e.stderr, "provstick: warning: writing PPS and passwords UNENCRYPTED to %s\n", out)
			} else {
				if wrap, err = af.encrypter(e); err != nil {
					return err
				}
			}
			n := 0
			err = writeFileAtomic(out, func(w io.Writer) error {
				bw := bufio.NewWriter(w)
				var dst io.Writer = bw
				var enc io.WriteCloser
				if wrap != nil {
					if enc, err = wrap(bw); err != nil {
						return fmt.Errorf("encrypting the export: %w", err)
					}
					dst = enc
				}
				if n, err = s.Export(cmd.Context(), dst, sts...); err != nil {
					return err
				}
				if enc != nil {
					if err := enc.Close(); err != nil {
						return fmt.Errorf("encrypting the export: %w", err)
					}
				}
				return bw.Flush()
			})
			if err != nil {
				return err
			}
			how := "encrypted with age"
			if plain {
				how = "UNENCRYPTED"
			}
			fmt.Fprintf(e.stdout, "exported %d entries to %s (%s)\n", n, out, how)
			return nil
		},
	}
	cmd.Flags().StringVarP(&out, "output", "o", "", "file to write")
	cmd.Flags().BoolVar(&plain, "plain", false, "write the secrets unencrypted")
	cmd.Flags().StringSliceVar(&states, "state", nil, "export only entries in these states (free, allocated, ...)")
	af.registerEncrypt(cmd)
	return cmd
}

func slicesContains[T comparable](s []T, v T) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func newPoolStatusCmd(e *env, sf *storeFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show entry counts by profile and state, and the sticks running low",
		Long: fmt.Sprintf(`Status prints how many entries each profile has in each state, then the
sticks running low: those with fewer than %d%% of their records unconsumed
(allocated and not yet known to be consumed by a machine or voided). It
reads counters kept up to date by every change, so it is fast on any pool.
It needs no passphrase.`, store.LowPercent),
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := openStore(cmd.Context(), e, sf, false)
			if err != nil {
				return err
			}
			defer s.Close()
			st, err := s.Status(cmd.Context())
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "PROFILE\tSTATE\tENTRIES")
			for _, c := range st.Counts {
				fmt.Fprintf(tw, "%s\t%s\t%d\n", c.Profile, c.State, c.N)
			}
			tw.Flush()
			if len(st.Counts) == 0 {
				fmt.Fprintln(e.stdout, "(the pool is empty)")
			}
			fmt.Fprintf(e.stdout, "\nsticks running low (under %d%% of records unconsumed): %d\n", store.LowPercent, len(st.Low))
			if len(st.Low) > 0 {
				tw = tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "STICK\tPROFILE\tRECORDS\tUNCONSUMED")
				for _, k := range st.Low {
					fmt.Fprintf(tw, "%s\t%s\t%d\t%d\n", k.Label, k.Profile, k.Records, k.Unconsumed)
				}
				tw.Flush()
			}
			return nil
		},
	}
}

func newPoolVoidCmd(e *env, sf *storeFlags) *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use:   "void PID --reason TEXT",
		Short: "Retire an entry for good",
		Long: `Void retires an entry in any state (a lost stick, a leaked export, a
scrapped machine); a void entry is never drawn again. Needs no passphrase.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			pid, err := setupbin.ParsePID(args[0])
			if err != nil {
				return err
			}
			if strings.TrimSpace(reason) == "" {
				return errors.New("flag --reason is required")
			}
			s, err := openStore(cmd.Context(), e, sf, false)
			if err != nil {
				return err
			}
			defer s.Close()
			if err := s.Void(cmd.Context(), pid, reason); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "voided %s\n", pid.Display())
			return nil
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why the entry is retired")
	return cmd
}

func newPoolHistoryCmd(e *env, sf *storeFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "history PID",
		Short: "Show every state change of an entry",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			pid, err := setupbin.ParsePID(args[0])
			if err != nil {
				return err
			}
			s, err := openStore(cmd.Context(), e, sf, false)
			if err != nil {
				return err
			}
			defer s.Close()
			evs, err := s.History(cmd.Context(), pid)
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "TIME\tCHANGE\tSTATION\tACTOR\tSTICK\tMACHINE\tREASON")
			for _, ev := range evs {
				from := string(ev.From)
				if from == "" {
					from = "new"
				}
				stick := ""
				if ev.Stick != "" {
					stick = fmt.Sprintf("%s#%d", ev.Stick, ev.Record)
				}
				fmt.Fprintf(tw, "%s\t%s→%s\t%s\t%s\t%s\t%s\t%s\n", ev.At.Format("2006-01-02T15:04:05Z"), from, ev.To,
					dash(ev.Station), dash(ev.Actor), dash(stick), dash(ev.Machine), dash(ev.Reason))
			}
			return tw.Flush()
		},
	}
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
