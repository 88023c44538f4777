package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/provstick/provstick/internal/ledger"
	"github.com/provstick/provstick/kiosk/reconcile"
)

func init() { register(newLedgerCmd) }

type ledgerShowFlags struct {
	json bool
}

func newLedgerCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ledger",
		Short: "Read the ledger a stick's agent wrote",
	}
	var f ledgerShowFlags
	show := &cobra.Command{
		Use:   "show FILE|IMAGE",
		Short: "Show and verify a ledger (provstick/ledger.jsonl, or a stick image holding one)",
		Long: `show reads a ledger — the file provstick/ledger.jsonl that the agent appends
to each time the stick boots a machine — checks every line's checksum and
prints one row per record: which setup.bin record went to which machine.

FILE is the ledger itself or a stick image (the first partition's FAT is
read; nothing is written). A torn last line (a power cut during the write)
is reported and skipped; the status is 0. Damaged lines elsewhere, lines of
an unknown version and sequence numbers out of order are reported with
their line number and make the status 1.`,
		Example: `  provstick ledger show /media/PROVSTICK/provstick/ledger.jsonl
  provstick ledger show stick.img --json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error { return runLedgerShow(e, f, args[0]) },
	}
	show.Flags().BoolVar(&f.json, "json", false, "print records and findings as JSON")
	cmd.AddCommand(show, newLedgerImportCmd(e), newLedgerDiscrepanciesCmd(e), newLedgerLostCmd(e))
	return cmd
}

func runLedgerShow(e *env, f ledgerShowFlags, name string) error {
	data, where, err := readLedgerSource(name)
	if err != nil {
		return err
	}
	l, err := ledger.Read(bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("reading %s: %w", where, err)
	}
	if f.json {
		out := struct {
			Source   string           `json:"source"`
			Records  []*ledger.Record `json:"records"`
			Findings []ledger.Finding `json:"findings"`
			TornTail bool             `json:"torn_tail"`
		}{where, l.Records, l.Findings, l.TornTail}
		if out.Records == nil {
			out.Records = []*ledger.Record{}
		}
		if out.Findings == nil {
			out.Findings = []ledger.Finding{}
		}
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(out); err != nil {
			return err
		}
	} else {
		printLedger(e.stdout, where, l)
	}
	for _, fd := range l.Findings {
		if fd.Code != ledger.CodeTornTail {
			return &exitError{code: 1}
		}
	}
	return nil
}

func printLedger(w io.Writer, where string, l *ledger.Log) {
	fmt.Fprintf(w, "%s: %d records, %d lines", where, len(l.Records), l.Lines)
	if l.TornTail {
		fmt.Fprint(w, ", torn last line (power cut during a write; skipped)")
	}
	fmt.Fprintln(w)
	if len(l.Records) > 0 {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SEQ\tTIME\tCASE\tRECORD\tPID\tAMT UUID\tAMT\tSTATE\tTPM EK\tMISSING")
		for _, r := range l.Records {
			rec, pid, uuid, ver, state, ek := "-", dash(r.PID), "-", "-", "-", "-"
			if r.Record > 0 {
				rec = fmt.Sprint(r.Record)
			}
			if r.AMT != nil {
				uuid, ver, state = dash(r.AMT.UUID), dash(r.AMT.AMTVersion), dash(r.AMT.ProvisioningState)
			}
			if r.TPM != nil && len(r.TPM.EKSHA256) >= 16 {
				ek = r.TPM.EKSHA256[:16]
			}
			var miss []string
			for _, m := range r.Missing {
				miss = append(miss, m.Source)
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Seq, r.Time.Format("2006-01-02 15:04:05Z"), r.Case, rec, pid, uuid, ver, state, ek, dash(strings.Join(miss, ",")))
		}
		tw.Flush()
	}
	for _, r := range l.Records {
		if k := r.KioskCheck; k != nil {
			fmt.Fprintf(w, "seq %d: kiosk check: %s\n", r.Seq, kioskCheckLine(k))
		}
	}
	for _, fd := range l.Findings {
		fmt.Fprintf(w, "finding: %s\n", fd)
	}
}

// kioskCheckLine says what the agent's reachability check found.
func kioskCheckLine(k *ledger.KioskCheck) string {
	var b strings.Builder
	b.WriteString(k.Result)
	if k.Name != "" {
		fmt.Fprintf(&b, ", %s", k.Name)
		if k.DomainSource != "" {
			fmt.Fprintf(&b, " (domain from %s)", k.DomainSource)
		}
	}
	if k.Static != "" {
		fmt.Fprintf(&b, ", static address from %s", k.Static)
	}
	if k.Kiosk != "" {
		fmt.Fprintf(&b, " → %s", k.Kiosk)
	}
	if k.Address != "" {
		fmt.Fprintf(&b, "; lease %s", k.Address)
		if k.Interface != "" {
			fmt.Fprintf(&b, " on %s", k.Interface)
		}
	}
	if k.DNS != "" {
		fmt.Fprintf(&b, ", DNS %s", k.DNS)
	}
	if k.Error != "" {
		fmt.Fprintf(&b, "; %s", k.Error)
	}
	return b.String()
}

// readLedgerSource returns the ledger bytes from a ledger file, a mounted
// stick's directory or the first partition of a stick image, and a name
// for messages.
func readLedgerSource(name string) ([]byte, string, error) { return reconcile.ReadSource(name) }
