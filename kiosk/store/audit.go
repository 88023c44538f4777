package store

// The audit log (issue 10): a structured record of every provisioning
// action — who (the kiosk or an operator), what, on which machine — kept in
// table audit (migration 0003) and exported by the CLI.

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// AuditRecord is one action.
type AuditRecord struct {
	ID      int64     `json:"id"`
	At      time.Time `json:"at"`
	Station string    `json:"station"`
	Actor   string    `json:"actor"`   // "kiosk" for the provisioner, else the operator
	Action  string    `json:"action"`  // e.g. "provision.step 3 TLS key", "ledger.import"
	PID     string    `json:"pid"`     // the entry, "" if none
	UUID    string    `json:"uuid"`    // the machine, "" if none
	Outcome string    `json:"outcome"` // "ok", "failed: ...", ...
	Detail  string    `json:"detail"`
}

var auditCols = []string{"at", "station", "actor", "action", "pid", "uuid", "outcome", "detail"}

// Audit appends records in one transaction. A zero At is now; an empty
// Station or Actor is the store's.
func (s *Store) Audit(ctx context.Context, rs ...AuditRecord) error {
	if len(rs) == 0 {
		return nil
	}
	rows := make([][]any, len(rs))
	t := now()
	for i, r := range rs {
		at := t
		if !r.At.IsZero() {
			at = r.At.UnixMicro()
		}
		rows[i] = []any{at, cmpOr(r.Station, s.station), cmpOr(r.Actor, s.actor), r.Action, r.PID, r.UUID, r.Outcome, r.Detail}
	}
	err := s.withTx(ctx, func(tx *sql.Tx, conn *sql.Conn) error {
		return s.d.bulkInsert(ctx, conn, tx, "audit", auditCols, rows)
	})
	if err != nil {
		return fmt.Errorf("writing the audit log: %w", err)
	}
	return nil
}

// AuditFilter selects audit records; zero fields select everything.
type AuditFilter struct {
	PID     string
	UUID    string
	Since   time.Time
	AfterID int64
}

// AuditLog calls fn for each selected record, oldest first.
func (s *Store) AuditLog(ctx context.Context, f AuditFilter, fn func(AuditRecord) error) error {
	q := "SELECT id, at, station, actor, action, pid, uuid, outcome, detail FROM audit WHERE id > ?"
	args := []any{f.AfterID}
	if f.PID != "" {
		q += " AND pid = ?"
		args = append(args, f.PID)
	}
	if f.UUID != "" {
		q += " AND uuid = ?"
		args = append(args, f.UUID)
	}
	if !f.Since.IsZero() {
		q += " AND at >= ?"
		args = append(args, f.Since.UnixMicro())
	}
	rows, err := s.db.QueryContext(ctx, s.q(q+" ORDER BY id"), args...)
	if err != nil {
		return fmt.Errorf("reading the audit log: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var r AuditRecord
		var at int64
		if err := rows.Scan(&r.ID, &at, &r.Station, &r.Actor, &r.Action, &r.PID, &r.UUID, &r.Outcome, &r.Detail); err != nil {
			return fmt.Errorf("reading the audit log: %w", err)
		}
		r.At = fromMicros(at)
		if err := fn(r); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("reading the audit log: %w", err)
	}
	return nil
}
