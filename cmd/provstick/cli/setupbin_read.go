package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/provstick/provstick/internal/stickimage"
	"github.com/provstick/provstick/setupbin"
	"github.com/spf13/cobra"
)

func openSetupbin(name string) (*setupbin.ReadCloser, error) {
	rc, err := setupbin.Open(name)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return rc, nil
}

type setupbinViewFlags struct {
	json, showSecrets bool
	profile           string
}

func newSetupbinViewCmd(e *env) *cobra.Command {
	var f setupbinViewFlags
	c := &cobra.Command{
		Use:   "view FILE",
		Short: "Show every record of a setup.bin (secrets masked)",
		Long: `view prints the header, each record with its state (consumed, next, unused)
and entries, and every finding. PPS and passwords are masked unless
--show-secrets is given. --json prints the same for programs.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error { return runSetupbinView(e, &f, args[0]) },
	}
	c.Flags().BoolVar(&f.json, "json", false, "print JSON")
	c.Flags().BoolVar(&f.showSecrets, "show-secrets", false, "print PPS and passwords in clear")
	c.Flags().StringVar(&f.profile, "profile", "", "also check the file against a firmware profile: "+profileNames())
	return c
}

// viewJSON is view --json's document.
type viewJSON struct {
	File      string             `json:"file"`
	Size      int64              `json:"size"`
	Version   string             `json:"version"`
	Flags     uint16             `json:"flags"`
	NoConsume bool               `json:"no_consume"`
	Records   uint32             `json:"record_count"`
	Consumed  uint32             `json:"consumed"`
	Remaining int                `json:"remaining"`
	Chunks    uint16             `json:"chunks_per_record"`
	Modules   []uint16           `json:"modules"`
	List      []viewRecord       `json:"records"`
	Findings  []setupbin.Finding `json:"findings"`
}

type viewRecord struct {
	Index     int         `json:"index"`
	Number    uint32      `json:"number"`
	State     string      `json:"state"`
	Scrambled bool        `json:"scrambled"`
	Offset    int64       `json:"offset"`
	Entries   []viewEntry `json:"entries"`
}

type viewEntry struct {
	Module   uint16 `json:"module"`
	Variable uint16 `json:"variable"`
	Name     string `json:"name"`
	Value    string `json:"value"`
	Secret   bool   `json:"secret,omitempty"`
}

func recordState(r *setupbin.Reader, rec *setupbin.Record) string {
	next := int(r.Header.NextIndex())
	switch {
	case r.Header.NoConsumeHonoured():
		if rec.Index == 0 {
			return "every-machine"
		}
		return "unused"
	case rec.Index < next:
		return "consumed"
	case rec.Index == next:
		return "next"
	default:
		return "unused"
	}
}

func profileFindings(r *setupbin.Reader, name string) ([]setupbin.Finding, error) {
	fs := r.Findings
	if name == "" {
		return fs, nil
	}
	p, err := setupbin.ProfileByName(name)
	if err != nil {
		return nil, fmt.Errorf("flag --profile: %w", err)
	}
	return append(append([]setupbin.Finding(nil), fs...), r.CheckProfile(p)...), nil
}

func runSetupbinView(e *env, f *setupbinViewFlags, name string) error {
	rc, err := openSetupbin(name)
	if err != nil {
		return err
	}
	defer rc.Close()
	r := &rc.Reader
	findings, err := profileFindings(r, f.profile)
	if err != nil {
		return err
	}
	if f.showSecrets {
		e.log.Warn("printing secrets in clear", "file", name)
	}
	if f.json {
		doc := viewJSON{File: name, Size: r.Size, Version: r.Header.Version.String(), Flags: uint16(r.Header.Flags),
			NoConsume: r.Header.NoConsume(), Records: r.Header.RecordCount, Consumed: r.Header.Consumed,
			Remaining: r.Remaining(), Chunks: r.Header.ChunksPerRecord, Findings: findings}
		if doc.Findings == nil {
			doc.Findings = []setupbin.Finding{}
		}
		for _, m := range r.Header.Modules {
			doc.Modules = append(doc.Modules, uint16(m))
		}
		doc.List = make([]viewRecord, 0, len(r.Records))
		for _, rec := range r.Records {
			vr := viewRecord{Index: rec.Index, Number: rec.Number, State: recordState(r, rec), Scrambled: rec.Scrambled(), Offset: rec.Offset, Entries: []viewEntry{}}
			for _, en := range rec.Entries {
				info := setupbin.LookupVar(en.Var)
				ve := viewEntry{Module: uint16(en.Var.Module()), Variable: en.Var.ID(), Name: en.Var.String(), Value: en.Format(f.showSecrets)}
				ve.Secret = info != nil && info.Secret
				vr.Entries = append(vr.Entries, ve)
			}
			doc.List = append(doc.List, vr)
		}
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(doc)
	}

	printSummary(e.stdout, name, r)
	tw := tabwriter.NewWriter(e.stdout, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "INDEX\tNUMBER\tSTATE\tPID\tPPS\tNEW PASSWORD\tOTHER")
	for _, rec := range r.Records {
		pid, pps, pw := "-", "-", "-"
		var other []string
		for _, en := range rec.Entries {
			switch en.Var {
			case setupbin.VarPID:
				pid = en.Format(true)
				if p, err := en.PID(); err == nil {
					pid = p.Display()
				}
			case setupbin.VarPPS:
				pps = en.Format(f.showSecrets)
				if p, err := en.PPS(); err == nil && f.showSecrets {
					pps = p.RevealDisplay()
				}
			case setupbin.VarNewPassword:
				pw = en.Format(f.showSecrets)
			case setupbin.VarCurrentPassword, setupbin.VarManageability:
			default:
				other = append(other, fmt.Sprintf("%s=%s", shortVar(en.Var), en.Format(f.showSecrets)))
			}
		}
		if len(other) == 0 {
			other = []string{"-"}
		}
		fmt.Fprintf(tw, "%d\t%d\t%s\t%s\t%s\t%s\t%s\n", rec.Index, rec.Number, recordState(r, rec), pid, pps, pw, strings.Join(other, " "))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	printFindings(e.stdout, findings)
	return nil
}

func shortVar(v setupbin.Var) string { return fmt.Sprintf("%d/%d", v.Module(), v.ID()) }

func printSummary(w io.Writer, name string, r *setupbin.Reader) {
	h := &r.Header
	scrambled := 0
	for _, rec := range r.Records {
		if rec.Scrambled() {
			scrambled++
		}
	}
	fmt.Fprintf(w, "%s: setup.bin format %s, %d bytes\n", name, h.Version, r.Size)
	fmt.Fprintf(w, "records: %d, consumed: %d, remaining: %d\n", h.RecordCount, h.Consumed, r.Remaining())
	if h.NoConsume() {
		if h.NoConsumeHonoured() {
			fmt.Fprintln(w, "don't-consume file: every machine gets record 0")
		} else {
			fmt.Fprintln(w, "don't-consume flag set, but format 1.0 firmware ignores it")
		}
	}
	if scrambled > 0 {
		fmt.Fprintf(w, "scrambled records: %d\n", scrambled)
	}
}

func printFindings(w io.Writer, fs []setupbin.Finding) {
	if len(fs) == 0 {
		fmt.Fprintln(w, "findings: none")
		return
	}
	fmt.Fprintf(w, "findings: %d\n", len(fs))
	for _, f := range fs {
		fmt.Fprintf(w, "  %s\n", f)
	}
}

func newSetupbinSummaryCmd(e *env) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "summary FILE",
		Short: "Print version, counts and consumed/remaining records",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			rc, err := openSetupbin(args[0])
			if err != nil {
				return err
			}
			defer rc.Close()
			r := &rc.Reader
			if asJSON {
				errs := 0
				for _, f := range r.Findings {
					if f.Severity == setupbin.SevError {
						errs++
					}
				}
				return json.NewEncoder(e.stdout).Encode(map[string]any{
					"file": args[0], "version": r.Header.Version.String(), "record_count": r.Header.RecordCount,
					"consumed": r.Header.Consumed, "remaining": r.Remaining(), "no_consume": r.Header.NoConsume(),
					"findings": len(r.Findings), "errors": errs,
				})
			}
			printSummary(e.stdout, args[0], r)
			errs, warns := 0, 0
			for _, f := range r.Findings {
				switch f.Severity {
				case setupbin.SevError:
					errs++
				case setupbin.SevWarning:
					warns++
				}
			}
			fmt.Fprintf(e.stdout, "findings: %d errors, %d warnings (provstick setupbin verify %s for details)\n", errs, warns, args[0])
			return nil
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

func newSetupbinVerifyCmd(e *env) *cobra.Command {
	var profile string
	var asJSON bool
	c := &cobra.Command{
		Use:   "verify FILE",
		Short: "Check a setup.bin against the format rules; exit 1 on any error finding",
		Long: `verify prints every finding (error, warning, info) with its code and offset,
and exits 1 when any finding is an error: the firmware would ignore the file
or fail a record. With --profile it also checks the variables and version
against what that firmware generation accepts.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			rc, err := openSetupbin(args[0])
			if err != nil {
				return err
			}
			defer rc.Close()
			fs, err := profileFindings(&rc.Reader, profile)
			if err != nil {
				return err
			}
			if asJSON {
				if fs == nil {
					fs = []setupbin.Finding{}
				}
				if err := json.NewEncoder(e.stdout).Encode(fs); err != nil {
					return err
				}
			} else {
				printFindings(e.stdout, fs)
			}
			if setupbin.HasErrors(fs) {
				return &exitError{code: 1, err: fmt.Errorf("%s: the firmware would reject this file or some of its records (see the error findings)", args[0])}
			}
			if !asJSON {
				fmt.Fprintf(e.stdout, "%s: ok\n", args[0])
			}
			return nil
		},
	}
	c.Flags().StringVar(&profile, "profile", "", "also check against a firmware profile: "+profileNames())
	c.Flags().BoolVar(&asJSON, "json", false, "print the findings as JSON")
	return c
}

func newSetupbinConsumeCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "consume FILE|IMAGE",
		Short: "Consume the next record, exactly as the BIOS does",
		Long: `consume does to the file what the BIOS does when a machine takes a record:
it increments the consumed counter, zeroes the record's body and clears its
valid bit, in place and crash-safely. For test sticks and simulations.

FILE may also be a whole stick image (or stick device): setup.bin is then
found where the BIOS finds it — the first partition's FAT32 root, in
contiguous clusters — and consumed in place.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			rec, err := consumeFileOrImage(args[0])
			if err != nil {
				return fmt.Errorf("consuming a record of %s: %w", args[0], err)
			}
			pid := "?"
			if en, ok := rec.Lookup(setupbin.VarPID); ok {
				if p, err := en.PID(); err == nil {
					pid = p.Display()
				}
			}
			e.log.Debug("record consumed", "file", args[0], "index", rec.Index, "pid", pid)
			fmt.Fprintf(e.stdout, "consumed record %d (number %d, PID %s)\n", rec.Index, rec.Number, pid)
			return nil
		},
	}
}

func newSetupbinUnconsumeCmd(e *env) *cobra.Command {
	var secrets string
	c := &cobra.Command{
		Use:   "unconsume FILE --secrets secrets.json",
		Short: "Restore the last consumed record (for test sticks)",
		Long: `unconsume undoes the last consume: it rewrites the record the counter last
handed out from the secrets file written by create, and decrements the
counter, in place and crash-safely. A consumed record's secrets are gone
from setup.bin itself, so the secrets file is required.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if secrets == "" {
				return errors.New("flag --secrets is required: a consumed record can only be restored from its secrets")
			}
			s, err := readSecrets(secrets)
			if err != nil {
				return err
			}
			rc, err := openSetupbin(args[0])
			if err != nil {
				return err
			}
			h := rc.Header
			rc.Close()
			if h.Consumed == 0 {
				return fmt.Errorf("unconsuming %s: %w (consumed counter is 0)", args[0], setupbin.ErrNoUnusedRecord)
			}
			idx := int(h.Consumed) - 1
			prof, err := setupbin.ProfileByName(s.Profile)
			if err != nil {
				return fmt.Errorf("secrets file %s field profile: %w", secrets, err)
			}
			k, err := s.psk(idx)
			if err != nil {
				return fmt.Errorf("unconsuming %s: %w", args[0], err)
			}
			rec, err := k.Record(prof)
			if err != nil {
				return fmt.Errorf("unconsuming %s: rebuilding record %d: %w", args[0], idx, err)
			}
			rec.Index, rec.Number = idx, uint32(idx+1)
			if err := setupbin.UnconsumeFile(args[0], rec); err != nil {
				return fmt.Errorf("unconsuming %s: %w", args[0], err)
			}
			fmt.Fprintf(e.stdout, "restored record %d (number %d, PID %s)\n", idx, idx+1, k.PID.Display())
			return nil
		},
	}
	c.Flags().StringVar(&secrets, "secrets", "", "secrets file written by create")
	return c
}

func newSetupbinRepairCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "repair FILE",
		Short: "Fix the MeshCommander chunk-count bug and the module list, in place",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			changes, err := setupbin.RepairFile(args[0])
			if err != nil {
				return fmt.Errorf("repairing %s: %w", args[0], err)
			}
			if len(changes) == 0 {
				fmt.Fprintf(e.stdout, "%s: nothing to repair\n", args[0])
				return nil
			}
			for _, c := range changes {
				fmt.Fprintf(e.stdout, "%s: %s\n", args[0], c)
			}
			return nil
		},
	}
}

// consumeFileOrImage consumes the next record of a setup.bin file, or of
// the setup.bin inside a stick image when the file is one.
func consumeFileOrImage(name string) (*setupbin.Record, error) {
	f, err := os.OpenFile(name, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	size := fi.Size()
	if size == 0 && !fi.Mode().IsRegular() { // a block device
		if size, err = f.Seek(0, io.SeekEnd); err != nil {
			return nil, err
		}
	}
	ext, lerr := stickimage.Locate(f, size)
	if lerr != nil {
		if !errors.Is(lerr, stickimage.ErrLayout) {
			return nil, lerr
		}
		// Not a stick image: the file is setup.bin itself.
		f.Close()
		return setupbin.ConsumeFile(name)
	}
	rec, err := setupbin.Consume(stickimage.View{F: f, Ext: ext}, ext.Size)
	if err != nil {
		return nil, fmt.Errorf("setup.bin at byte %d of the image: %w", ext.Offset, err)
	}
	return rec, f.Close()
}
