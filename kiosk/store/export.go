package store

import (
	"context"
	"encoding/csv"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/provstick/provstick/setupbin"
)

// ExportHeader is the first line Export writes. ParseImport reads the same
// layout back (free entries only).
var ExportHeader = []string{"pid", "pps", "current_password", "new_password", "profile", "state", "stick", "record"}

// Export writes the entries in the given states (all when states is empty)
// as CSV with ExportHeader, PIDs and PPS in display form, oldest first, and
// returns how many it wrote. The output holds the secrets in clear: the
// caller encrypts it (the CLI uses age) unless the user asked otherwise.
func (s *Store) Export(ctx context.Context, w io.Writer, states ...State) (int, error) {
	if s.keys == nil {
		return 0, fmt.Errorf("exporting entries: %w", ErrLocked)
	}
	query := `SELECT e.pid, e.secrets, e.profile, e.state, COALESCE(st.label, ''), COALESCE(e.record, 0)
		FROM entries e LEFT JOIN sticks st ON st.id = e.stick_id`
	var args []any
	if len(states) > 0 {
		query += " WHERE e.state IN (?" + strings.Repeat(", ?", len(states)-1) + ")"
		for _, st := range states {
			args = append(args, string(st))
		}
	}
	query += " ORDER BY e.id"
	rows, err := s.db.QueryContext(ctx, s.q(query), args...)
	if err != nil {
		return 0, fmt.Errorf("exporting entries: %w", err)
	}
	defer rows.Close()
	cw := csv.NewWriter(w)
	if err := cw.Write(ExportHeader); err != nil {
		return 0, fmt.Errorf("exporting entries: %w", err)
	}
	n := 0
	for rows.Next() {
		var pid, state string
		var blob []byte
		var e Entry
		var rec int64
		if err := rows.Scan(&pid, &blob, &e.Profile, &state, &e.Stick, &rec); err != nil {
			return n, fmt.Errorf("exporting entries: %w", err)
		}
		p, err := setupbin.ParsePID(pid)
		if err != nil {
			return n, fmt.Errorf("exporting entries: stored %w", err)
		}
		e.PID = p
		if err := s.keys.openEntry(&e, blob); err != nil {
			return n, fmt.Errorf("exporting entries: %w", err)
		}
		r := ""
		if rec > 0 {
			r = strconv.FormatInt(rec, 10)
		}
		if err := cw.Write([]string{e.PID.Display(), e.PPS.RevealDisplay(), e.CurrentPassword.Reveal(), e.NewPassword.Reveal(), e.Profile, state, e.Stick, r}); err != nil {
			return n, fmt.Errorf("exporting entries: %w", err)
		}
		n++
	}
	if err := rows.Err(); err != nil {
		return n, fmt.Errorf("exporting entries: %w", err)
	}
	cw.Flush()
	if err := cw.Error(); err != nil {
		return n, fmt.Errorf("exporting entries: %w", err)
	}
	s.log.Debug("entries exported", "count", n)
	return n, nil
}
