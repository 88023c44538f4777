package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/provstick/provstick/kiosk/reconcile"
)

type ledgerImportFlags struct {
	store storeFlags
	json  bool
}

func newLedgerImportCmd(e *env) *cobra.Command {
	var f ledgerImportFlags
	cmd := &cobra.Command{
		Use:   "import FILE|IMAGE|MOUNTDIR",
		Short: "Reconcile a returned stick's ledger with the pool",
		Long: `import reads the ledger of a stick that came back — the file
provstick/ledger.jsonl, a stick image, or the directory where the stick is
mounted — and reconciles it with the store: each record the ledger
attributes to a machine becomes "consumed" by that machine (its AMT UUID,
DMI serial, MACs and TPM endorsement key are recorded), the stick's ledger
import time is set, and what does not add up is reported: damaged lines,
another pool's stick, a counter that went backwards, a copied stick (one
PID on two machines, or two different ledgers for one stick).

FILE may also hold QR texts (PSL1:…), one a line, as a phone's scanner
gives them from the technician's screen (recipe agent.qr) at sites where
sticks do not come back: each is decoded to the ledger line it holds and
verified like any other line. Such a line is shorter than the one on the
stick (no EK certificate, no root hashes) and names it by its checksum:
when the stick does come back, its ledger imports without a conflict.

Importing the same ledger again changes nothing. A damaged ledger is never
fatal: its valid lines are imported. The status is 1 when the report holds
an alarm. Needs no passphrase.`,
		Example: `  provstick ledger import /media/PROVSTICK
  provstick ledger import stick.img --json
  provstick ledger import scanned-qr-codes.txt`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			data, where, err := readLedgerSource(args[0])
			if err != nil {
				return err
			}
			s, err := openStore(cmd.Context(), e, &f.store, false)
			if err != nil {
				return err
			}
			defer s.Close()
			rep, err := reconcile.Import(cmd.Context(), s, where, bytes.NewReader(data), reconcile.Options{Logger: e.log})
			if err != nil {
				return err
			}
			if f.json {
				enc := json.NewEncoder(e.stdout)
				enc.SetIndent("", "  ")
				if err := enc.Encode(rep); err != nil {
					return err
				}
			} else {
				printImport(e.stdout, rep)
			}
			if rep.Alarms() > 0 {
				return &exitError{code: 1}
			}
			return nil
		},
	}
	f.store.register(cmd)
	cmd.Flags().BoolVar(&f.json, "json", false, "print the report as JSON")
	return cmd
}

func printImport(w io.Writer, rep *reconcile.Report) {
	stick := rep.Stick
	if stick == "" {
		stick = "(none)"
	}
	fmt.Fprintf(w, "%s: stick %s, %d records, %d lines", rep.Source, stick, rep.Records, rep.Lines)
	if rep.Damaged > 0 {
		fmt.Fprintf(w, ", %d damaged", rep.Damaged)
	}
	if rep.QRTexts+rep.QRBad > 0 {
		fmt.Fprintf(w, ", %d QR texts decoded", rep.QRTexts)
		if rep.QRBad > 0 {
			fmt.Fprintf(w, " (%d unreadable)", rep.QRBad)
		}
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "consumed %d, already known %d, new ledger records %d", rep.Consumed, rep.Matched, rep.NewRecords)
	if rep.Repeat {
		fmt.Fprint(w, " (imported before)")
	}
	fmt.Fprintln(w)
	printDiscrepancies(w, rep.Discrepancies)
}

func printDiscrepancies(w io.Writer, ds []reconcile.Discrepancy) {
	if len(ds) == 0 {
		fmt.Fprintln(w, "no discrepancies")
		return
	}
	fmt.Fprintf(w, "%d discrepancies:\n", len(ds))
	for _, d := range ds {
		fmt.Fprintf(w, "%s %s: %s: %s\n    next: %s\n", d.Severity, d.Kind, d.Subject, d.Detail, d.Advice)
	}
}

type ledgerDiscrepanciesFlags struct {
	store storeFlags
	json  bool
	at    string
}

func newLedgerDiscrepanciesCmd(e *env) *cobra.Command {
	var f ledgerDiscrepanciesFlags
	cmd := &cobra.Command{
		Use:   "discrepancies",
		Short: "List what the ledgers, the pool and the hellos disagree on",
		Long: `discrepancies lists, alarms first: PIDs used by two machines (copied
sticks), stick counters that went backwards, records consumed whose machine
has not said hello within the 6-hour hello window, hellos with PIDs that no
imported ledger names (the stick has not come back yet) or that this pool
never issued, entries still allocated to sticks declared lost, and what
ledger imports found (damaged lines, other pools' sticks). Needs no
passphrase. The status is 1 when there is an alarm.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			now := time.Now()
			if f.at != "" {
				t, err := time.Parse(time.RFC3339, f.at)
				if err != nil {
					return fmt.Errorf("flag --at: %w", err)
				}
				now = t
			}
			s, err := openStore(cmd.Context(), e, &f.store, false)
			if err != nil {
				return err
			}
			defer s.Close()
			ds, err := reconcile.Discrepancies(cmd.Context(), s, now)
			if err != nil {
				return err
			}
			if f.json {
				if ds == nil {
					ds = []reconcile.Discrepancy{}
				}
				enc := json.NewEncoder(e.stdout)
				enc.SetIndent("", "  ")
				if err := enc.Encode(ds); err != nil {
					return err
				}
			} else {
				printDiscrepancies(e.stdout, ds)
			}
			for _, d := range ds {
				if d.Severity == reconcile.SeverityAlarm {
					return &exitError{code: 1}
				}
			}
			return nil
		},
	}
	f.store.register(cmd)
	cmd.Flags().BoolVar(&f.json, "json", false, "print as JSON")
	cmd.Flags().StringVar(&f.at, "at", "", "judge the hello window at this `time` (RFC 3339) instead of now")
	return cmd
}

func newLedgerLostCmd(e *env) *cobra.Command {
	var sf storeFlags
	var found, void bool
	cmd := &cobra.Command{
		Use:   "lost LABEL",
		Short: "Declare a stick lost (or --found again)",
		Long: `lost records that a stick is lost. Its allocated entries stay allocated
(a machine may still take one of its records) and are listed by
"provstick ledger discrepancies" until voided: --void voids them at once.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := openStore(cmd.Context(), e, &sf, false)
			if err != nil {
				return err
			}
			defer s.Close()
			if err := s.MarkStickLost(cmd.Context(), args[0], !found); err != nil {
				return err
			}
			if found {
				fmt.Fprintf(e.stdout, "stick %s found again\n", args[0])
				return nil
			}
			fmt.Fprintf(e.stdout, "stick %s declared lost\n", args[0])
			if void {
				n, err := s.VoidStick(cmd.Context(), args[0], "stick "+args[0]+" lost")
				if err != nil {
					return err
				}
				fmt.Fprintf(e.stdout, "voided %d allocated entries\n", n)
			}
			return nil
		},
	}
	sf.register(cmd)
	cmd.Flags().BoolVar(&found, "found", false, "the stick was found again")
	cmd.Flags().BoolVar(&void, "void", false, "also void the entries still allocated to the stick")
	return cmd
}
