package cli

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/provstick/provstick/kiosk/store"
	"github.com/provstick/provstick/setupbin"
)

type kioskAuditFlags struct {
	store  storeFlags
	format string
	pid    string
	since  string
	out    string
}

// newKioskAuditCmd is "provstick kiosk audit export".
func newKioskAuditCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "The audit log of provisioning actions",
	}
	var f kioskAuditFlags
	export := &cobra.Command{
		Use:   "export",
		Short: "Export the audit log as JSON lines or CSV",
		Long: `export writes the audit log: one record per provisioning action — each
step the kiosk ran on a machine, each run's outcome, each ledger import and
the entries it consumed — with when, which station, who ("kiosk" for the
provisioner, else the operator), what, which entry (PID) and which machine
(AMT UUID), and the outcome. Oldest first. No secret is ever in it. Needs no
passphrase.`,
		Example: `  provstick kiosk audit export --format csv -o audit.csv
  provstick kiosk audit export --pid 0000-037M`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var filter store.AuditFilter
			if f.pid != "" {
				p, err := setupbin.ParsePID(f.pid)
				if err != nil {
					return fmt.Errorf("flag --pid: %w", err)
				}
				filter.PID = p.String()
			}
			if f.since != "" {
				t, err := time.Parse(time.RFC3339, f.since)
				if err != nil {
					return fmt.Errorf("flag --since: %w", err)
				}
				filter.Since = t
			}
			if f.format != "json" && f.format != "csv" {
				return fmt.Errorf("flag --format: %q: want json or csv", f.format)
			}
			s, err := openStore(cmd.Context(), e, &f.store, false)
			if err != nil {
				return err
			}
			defer s.Close()
			write := func(w io.Writer) error {
				n, err := exportAudit(cmd, s, filter, f.format, w)
				if err == nil && f.out != "" {
					fmt.Fprintf(e.stdout, "exported %d audit records to %s\n", n, f.out)
				}
				return err
			}
			if f.out == "" {
				return write(e.stdout)
			}
			return writeFileAtomic(f.out, write)
		},
	}
	f.store.register(export)
	fl := export.Flags()
	fl.StringVar(&f.format, "format", "json", "json (one object a line) or csv")
	fl.StringVar(&f.pid, "pid", "", "only this entry's `PID`")
	fl.StringVar(&f.since, "since", "", "only records at or after this `time` (RFC 3339)")
	fl.StringVarP(&f.out, "output", "o", "", "write to this `file` (atomically) instead of standard output")
	cmd.AddCommand(export)
	return cmd
}

func exportAudit(cmd *cobra.Command, s *store.Store, filter store.AuditFilter, format string, w io.Writer) (int, error) {
	n := 0
	if format == "json" {
		enc := json.NewEncoder(w)
		err := s.AuditLog(cmd.Context(), filter, func(r store.AuditRecord) error { n++; return enc.Encode(r) })
		return n, err
	}
	cw := csv.NewWriter(w)
	if err := cw.Write([]string{"id", "at", "station", "actor", "action", "pid", "uuid", "outcome", "detail"}); err != nil {
		return 0, err
	}
	err := s.AuditLog(cmd.Context(), filter, func(r store.AuditRecord) error {
		n++
		return cw.Write([]string{strconv.FormatInt(r.ID, 10), r.At.Format(time.RFC3339Nano), r.Station, r.Actor, r.Action, r.PID, r.UUID, r.Outcome, r.Detail})
	})
	if err != nil {
		return n, err
	}
	cw.Flush()
	return n, cw.Error()
}
