package store

// What reconciliation (kiosk/reconcile) keeps: the ledgers imported from
// returning sticks, their records, the discrepancies found, and the
// queries the discrepancy report runs. Tables from migration 0003.

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/provstick/provstick/setupbin"
)

// LedgerImport is one reading of a stick's ledger.
type LedgerImport struct {
	ID          int64
	At          time.Time
	Source      string // file, image or upload name
	Stick       string // label the ledger names ("" if none)
	Known       bool   // this pool has the stick
	Digest      string // "sha256:..." of the bytes read
	Lines       int
	Records     int // valid records
	Damaged     int // lines skipped (torn tail included)
	TornTail    bool
	MaxSeq      uint64
	MaxConsumed int64 // highest consumed counter of the records (-1 for none)
	Station     string
	Actor       string
}

// LedgerRecord is one valid ledger line, as kept for reconciliation.
type LedgerRecord struct {
	Stick      string
	Seq        uint64
	Sum        string // the line's checksum ("sha256:...")
	Case       string // ledger.Case
	Record     int    // 1-based record attributed (0: none)
	PID        string // canonical form (no dash), "" if none
	UUID       string // AMT UUID the agent read, "" if none
	Consumed   int64  // setup.bin's consumed counter
	At         time.Time
	ImportedAt time.Time
}

// SaveLedgerImport records one ledger import and its records in one
// transaction: records already kept (same stick, seq and checksum) are
// skipped, so importing the same ledger twice adds no record. When the
// stick is this pool's, its ledger-import time is set. It returns the
// import's id and how many records were new.
func (s *Store) SaveLedgerImport(ctx context.Context, imp LedgerImport, recs []LedgerRecord) (int64, int, error) {
	t := now()
	if !imp.At.IsZero() {
		t = imp.At.UnixMicro()
	}
	var id int64
	added := 0
	err := s.withTx(ctx, func(tx *sql.Tx, _ *sql.Conn) error {
		err := tx.QueryRowContext(ctx, s.q(`INSERT INTO ledger_imports (at, source, stick, known, digest, lines, records, damaged, torn_tail, max_seq, max_consumed, station, actor)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id`),
			t, imp.Source, imp.Stick, boolInt(imp.Known), imp.Digest, imp.Lines, imp.Records, imp.Damaged, boolInt(imp.TornTail),
			int64(min(imp.MaxSeq, 1<<62)), imp.MaxConsumed, s.station, s.actor).Scan(&id)
		if err != nil {
			return fmt.Errorf("recording the ledger import: %w", err)
		}
		for _, r := range recs {
			res, err := tx.ExecContext(ctx, s.q(`INSERT INTO ledger_records (stick, seq, sum, kase, record, pid, uuid, consumed, at, imported_at)
				VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (stick, seq, sum) DO NOTHING`),
				r.Stick, int64(min(r.Seq, 1<<62)), r.Sum, r.Case, r.Record, r.PID, strings.ToLower(r.UUID), r.Consumed, r.At.UnixMicro(), t)
			if err != nil {
				return fmt.Errorf("recording ledger record %d of stick %q: %w", r.Seq, r.Stick, err)
			}
			if n, _ := res.RowsAffected(); n == 1 {
				added++
			}
		}
		if imp.Known {
			if _, err := tx.ExecContext(ctx, s.q("UPDATE sticks SET ledger_imported_at = ? WHERE label = ?"), t, imp.Stick); err != nil {
				return fmt.Errorf("marking stick %q: %w", imp.Stick, err)
			}
		}
		return nil
	})
	if err != nil {
		return 0, 0, err
	}
	return id, added, nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// LedgerImports returns the imports of a stick's ledger ("" for every
// stick), newest first, at most limit (≤ 0 → 1000).
func (s *Store) LedgerImports(ctx context.Context, stick string, limit int) ([]LedgerImport, error) {
	if limit <= 0 {
		limit = 1000
	}
	q := `SELECT id, at, source, stick, known, digest, lines, records, damaged, torn_tail, max_seq, max_consumed, station, actor FROM ledger_imports`
	args := []any{}
	if stick != "" {
		q += " WHERE stick = ?"
		args = append(args, stick)
	}
	q += " ORDER BY id DESC LIMIT ?"
	args = append(args, limit)
	rows, err := s.db.QueryContext(ctx, s.q(q), args...)
	if err != nil {
		return nil, fmt.Errorf("reading ledger imports: %w", err)
	}
	defer rows.Close()
	var out []LedgerImport
	for rows.Next() {
		var li LedgerImport
		var at, known, torn, maxSeq int64
		if err := rows.Scan(&li.ID, &at, &li.Source, &li.Stick, &known, &li.Digest, &li.Lines, &li.Records, &li.Damaged, &torn, &maxSeq, &li.MaxConsumed, &li.Station, &li.Actor); err != nil {
			return nil, fmt.Errorf("reading ledger imports: %w", err)
		}
		li.At, li.Known, li.TornTail, li.MaxSeq = fromMicros(at), known != 0, torn != 0, uint64(maxSeq)
		out = append(out, li)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading ledger imports: %w", err)
	}
	return out, nil
}

// LedgerRecords returns the kept ledger records of a stick ("" for every
// stick), by stick and seq.
func (s *Store) LedgerRecords(ctx context.Context, stick string) ([]LedgerRecord, error) {
	q := `SELECT stick, seq, sum, kase, record, pid, uuid, consumed, at, imported_at FROM ledger_records`
	var args []any
	if stick != "" {
		q += " WHERE stick = ?"
		args = append(args, stick)
	}
	q += " ORDER BY stick, seq, imported_at"
	rows, err := s.db.QueryContext(ctx, s.q(q), args...)
	if err != nil {
		return nil, fmt.Errorf("reading ledger records: %w", err)
	}
	defer rows.Close()
	var out []LedgerRecord
	for rows.Next() {
		var r LedgerRecord
		var seq, at, imp int64
		if err := rows.Scan(&r.Stick, &seq, &r.Sum, &r.Case, &r.Record, &r.PID, &r.UUID, &r.Consumed, &at, &imp); err != nil {
			return nil, fmt.Errorf("reading ledger records: %w", err)
		}
		r.Seq, r.At, r.ImportedAt = uint64(seq), fromMicros(at), fromMicros(imp)
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading ledger records: %w", err)
	}
	return out, nil
}

// EntryInfo is an entry without its secrets, with its stick and machine.
type EntryInfo struct {
	PID       string // canonical form, no dash
	Profile   string
	State     State
	Stick     string // label, "" while free
	Record    int
	Machine   string // AMT UUID, "" if none
	Reason    string // of the last change
	UpdatedAt time.Time
}

const entryInfoSelect = `SELECT e.pid, e.profile, e.state, COALESCE(st.label, ''), COALESCE(e.record, 0), COALESCE(m.uuid, ''), e.reason, e.updated_at
	FROM entries e LEFT JOIN sticks st ON st.id = e.stick_id LEFT JOIN machines m ON m.id = e.machine_id`

func scanEntryInfos(rows *sql.Rows) ([]EntryInfo, error) {
	defer rows.Close()
	var out []EntryInfo
	for rows.Next() {
		var e EntryInfo
		var state string
		var at int64
		if err := rows.Scan(&e.PID, &e.Profile, &state, &e.Stick, &e.Record, &e.Machine, &e.Reason, &at); err != nil {
			return nil, err
		}
		e.State, e.UpdatedAt = State(state), fromMicros(at)
		out = append(out, e)
	}
	return out, rows.Err()
}

// StickEntries returns the entries of a stick in record order (no
// secrets). Unknown stick: ErrNotFound.
func (s *Store) StickEntries(ctx context.Context, label string) ([]EntryInfo, error) {
	var id int64
	err := s.db.QueryRowContext(ctx, s.q("SELECT id FROM sticks WHERE label = ?"), label).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("stick %q: %w", label, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("reading stick %q: %w", label, err)
	}
	rows, err := s.db.QueryContext(ctx, s.q(entryInfoSelect+" WHERE e.stick_id = ? ORDER BY e.record"), id)
	if err != nil {
		return nil, fmt.Errorf("reading the entries of stick %q: %w", label, err)
	}
	out, err := scanEntryInfos(rows)
	if err != nil {
		return nil, fmt.Errorf("reading the entries of stick %q: %w", label, err)
	}
	return out, nil
}

// EntriesInStates returns the entries (no secrets) in any of the states,
// by PID.
func (s *Store) EntriesInStates(ctx context.Context, states ...State) ([]EntryInfo, error) {
	if len(states) == 0 {
		return nil, nil
	}
	args := make([]any, len(states))
	for i, st := range states {
		args[i] = string(st)
	}
	q := entryInfoSelect + " WHERE e.state IN (?" + strings.Repeat(", ?", len(states)-1) + ") ORDER BY e.pid"
	rows, err := s.db.QueryContext(ctx, s.q(q), args...)
	if err != nil {
		return nil, fmt.Errorf("listing entries: %w", err)
	}
	out, err := scanEntryInfos(rows)
	if err != nil {
		return nil, fmt.Errorf("listing entries: %w", err)
	}
	return out, nil
}

// HelloSummary is what the hello log holds about one (PID, UUID) pair.
type HelloSummary struct {
	PID, UUID   string
	Count       int
	First, Last time.Time
}

// HelloSummaries returns one row per (PID, UUID) of the PSK hellos in the
// log, by PID then UUID.
func (s *Store) HelloSummaries(ctx context.Context) ([]HelloSummary, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT h.pid, h.uuid, COUNT(*), MIN(h.at), MAX(h.at) FROM hellos h WHERE h.pid <> '' GROUP BY h.pid, h.uuid ORDER BY h.pid, h.uuid`)
	if err != nil {
		return nil, fmt.Errorf("summarising hellos: %w", err)
	}
	defer rows.Close()
	var out []HelloSummary
	for rows.Next() {
		var h HelloSummary
		var first, last int64
		if err := rows.Scan(&h.PID, &h.UUID, &h.Count, &first, &last); err != nil {
			return nil, fmt.Errorf("summarising hellos: %w", err)
		}
		h.First, h.Last = fromMicros(first), fromMicros(last)
		out = append(out, h)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("summarising hellos: %w", err)
	}
	return out, nil
}

// StoredDiscrepancy is a discrepancy kept by a ledger import.
type StoredDiscrepancy struct {
	ID       int64
	Kind     string
	Severity string
	Subject  string
	Detail   string
	Advice   string
	At       time.Time
}

// AddDiscrepancy keeps d unless the same kind, subject and detail are kept
// already; it reports whether it was new.
func (s *Store) AddDiscrepancy(ctx context.Context, d StoredDiscrepancy) (bool, error) {
	t := now()
	if !d.At.IsZero() {
		t = d.At.UnixMicro()
	}
	res, err := s.db.ExecContext(ctx, s.q(`INSERT INTO discrepancies (kind, severity, subject, detail, advice, at) VALUES (?, ?, ?, ?, ?, ?)
		ON CONFLICT (kind, subject, detail) DO NOTHING`), d.Kind, d.Severity, d.Subject, d.Detail, d.Advice, t)
	if err != nil {
		return false, fmt.Errorf("recording a discrepancy: %w", err)
	}
	n, _ := res.RowsAffected()
	return n == 1, nil
}

// StoredDiscrepancies returns the kept discrepancies, oldest first.
func (s *Store) StoredDiscrepancies(ctx context.Context) ([]StoredDiscrepancy, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id, kind, severity, subject, detail, advice, at FROM discrepancies ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("reading discrepancies: %w", err)
	}
	defer rows.Close()
	var out []StoredDiscrepancy
	for rows.Next() {
		var d StoredDiscrepancy
		var at int64
		if err := rows.Scan(&d.ID, &d.Kind, &d.Severity, &d.Subject, &d.Detail, &d.Advice, &at); err != nil {
			return nil, fmt.Errorf("reading discrepancies: %w", err)
		}
		d.At = fromMicros(at)
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading discrepancies: %w", err)
	}
	return out, nil
}

// ResolveDiscrepancy deletes a kept discrepancy (the operator dealt with
// it). Unknown id: ErrNotFound.
func (s *Store) ResolveDiscrepancy(ctx context.Context, id int64) error {
	res, err := s.db.ExecContext(ctx, s.q("DELETE FROM discrepancies WHERE id = ?"), id)
	if err != nil {
		return fmt.Errorf("resolving discrepancy %d: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return fmt.Errorf("discrepancy %d: %w", id, ErrNotFound)
	}
	return nil
}

// MarkStickLost records that a stick is lost (or, with lost false, found
// again). Its allocated entries stay allocated until voided.
func (s *Store) MarkStickLost(ctx context.Context, label string, lost bool) error {
	var at any
	if lost {
		at = now()
	}
	res, err := s.db.ExecContext(ctx, s.q("UPDATE sticks SET lost_at = ? WHERE label = ?"), at, label)
	if err != nil {
		return fmt.Errorf("marking stick %q lost: %w", label, err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return fmt.Errorf("stick %q: %w", label, ErrNotFound)
	}
	return nil
}

// LostStick is a stick declared lost with how many entries are still
// allocated to it.
type LostStick struct {
	Label     string
	LostAt    time.Time
	Allocated int
}

// LostSticks lists the sticks declared lost, by label.
func (s *Store) LostSticks(ctx context.Context) ([]LostStick, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT st.label, st.lost_at, (SELECT COUNT(*) FROM entries e WHERE e.stick_id = st.id AND e.state = 'allocated')
		FROM sticks st WHERE st.lost_at IS NOT NULL ORDER BY st.label`)
	if err != nil {
		return nil, fmt.Errorf("listing lost sticks: %w", err)
	}
	defer rows.Close()
	var out []LostStick
	for rows.Next() {
		var l LostStick
		var at int64
		if err := rows.Scan(&l.Label, &at, &l.Allocated); err != nil {
			return nil, fmt.Errorf("listing lost sticks: %w", err)
		}
		l.LostAt = fromMicros(at)
		out = append(out, l)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing lost sticks: %w", err)
	}
	return out, nil
}

// UnknownHelloPIDs returns the PIDs of logged hellos that no entry of this
// pool has, with the UUIDs that sent them.
func (s *Store) UnknownHelloPIDs(ctx context.Context) ([]HelloSummary, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT h.pid, h.uuid, COUNT(*), MIN(h.at), MAX(h.at) FROM hellos h
		WHERE h.pid <> '' AND NOT EXISTS (SELECT 1 FROM entries e WHERE e.pid = h.pid)
		GROUP BY h.pid, h.uuid ORDER BY h.pid, h.uuid`)
	if err != nil {
		return nil, fmt.Errorf("listing hellos with unknown PIDs: %w", err)
	}
	defer rows.Close()
	var out []HelloSummary
	for rows.Next() {
		var h HelloSummary
		var first, last int64
		if err := rows.Scan(&h.PID, &h.UUID, &h.Count, &first, &last); err != nil {
			return nil, fmt.Errorf("listing hellos with unknown PIDs: %w", err)
		}
		h.First, h.Last = fromMicros(first), fromMicros(last)
		out = append(out, h)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing hellos with unknown PIDs: %w", err)
	}
	return out, nil
}

// VoidStick voids every entry still allocated to a stick (one transaction
// per entry, each with its event) and returns how many it voided.
func (s *Store) VoidStick(ctx context.Context, label, reason string) (int, error) {
	es, err := s.StickEntries(ctx, label)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range es {
		if e.State != StateAllocated {
			continue
		}
		pid, err := setupbin.ParsePID(e.PID)
		if err != nil {
			return n, fmt.Errorf("voiding stick %q: stored %w", label, err)
		}
		if err := s.Void(ctx, pid, reason); err != nil {
			if errors.Is(err, ErrIllegalTransition) {
				continue // consumed meanwhile
			}
			return n, err
		}
		n++
	}
	return n, nil
}
