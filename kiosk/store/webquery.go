package store

// Read-only queries for the kiosk's web console (kiosk/web): machine lists
// and search, a machine's timeline, sticks, recent events and the audit
// export. Nothing here writes, and nothing here reads a secret: these
// methods work on a locked store too. Method and type names carry a Web
// prefix so that they cannot collide with the store's own API as it grows.

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"
	"time"
)

// MaxWebRows bounds the rows one web query returns.
const MaxWebRows = 1000

// WebMachine is one machine with the entry it holds, as the console lists
// it. A machine that consumed two entries (a copied stick, a re-run) is
// listed once per entry.
type WebMachine struct {
	UUID              string
	DMISerial         string
	DMIModel          string
	DMIVendor         string
	AMTVersion        string
	ControlMode       string
	ProvisioningState string // what AMT reported: "pre", "in", "post"
	PID               string // 8 characters, no dash; "" when none
	State             State  // the entry's state; "" when no entry
	Reason            string // the entry's last reason (failure class, void reason)
	Stick             string
	Record            int
	UpdatedAt         time.Time // the entry's (else the machine's) last change
}

// WebMachineQuery filters WebMachines.
type WebMachineQuery struct {
	// Search matches a part of the UUID, the DMI serial or the PID (with or
	// without its dash), case-insensitively; "" matches every machine.
	Search string
	// State keeps machines whose entry is in this state; "" keeps all.
	State State
	// Limit bounds the rows (0 or more than MaxWebRows → MaxWebRows).
	Limit int
}

// likeEscape makes s a LIKE pattern matching s anywhere (escape '\').
func likeEscape(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)
	return "%" + r.Replace(s) + "%"
}

// WebMachines lists machines, most recently changed first.
func (s *Store) WebMachines(ctx context.Context, q WebMachineQuery) ([]WebMachine, error) {
	if q.Limit <= 0 || q.Limit > MaxWebRows {
		q.Limit = MaxWebRows
	}
	search := strings.ToLower(strings.TrimSpace(q.Search))
	pidSearch := strings.ToUpper(strings.ReplaceAll(search, "-", ""))
	query := `SELECT m.uuid, m.dmi_serial, m.dmi_model, m.dmi_vendor, m.amt_version, m.control_mode, m.provisioning_state,
			COALESCE(e.pid, ''), COALESCE(e.state, ''), COALESCE(e.reason, ''), COALESCE(st.label, ''), COALESCE(e.record, 0),
			COALESCE(e.updated_at, m.updated_at)
		FROM machines m
		LEFT JOIN entries e ON e.machine_id = m.id
		LEFT JOIN sticks st ON st.id = e.stick_id
		WHERE 1 = 1`
	var args []any
	if search != "" {
		query += ` AND (m.uuid LIKE ? ESCAPE '\' OR lower(m.dmi_serial) LIKE ? ESCAPE '\'`
		args = append(args, likeEscape(search), likeEscape(search))
		if pidSearch != "" {
			query += ` OR e.pid LIKE ? ESCAPE '\'`
			args = append(args, likeEscape(pidSearch))
		}
		query += ")"
	}
	if q.State != "" {
		query += " AND e.state = ?"
		args = append(args, string(q.State))
	}
	query += " ORDER BY COALESCE(e.updated_at, m.updated_at) DESC, m.id DESC LIMIT ?"
	args = append(args, q.Limit)
	rows, err := s.db.QueryContext(ctx, s.q(query), args...)
	if err != nil {
		return nil, fmt.Errorf("listing machines: %w", err)
	}
	defer rows.Close()
	var out []WebMachine
	for rows.Next() {
		var m WebMachine
		var state string
		var rec, at int64
		if err := rows.Scan(&m.UUID, &m.DMISerial, &m.DMIModel, &m.DMIVendor, &m.AMTVersion, &m.ControlMode, &m.ProvisioningState,
			&m.PID, &state, &m.Reason, &m.Stick, &rec, &at); err != nil {
			return nil, fmt.Errorf("listing machines: %w", err)
		}
		m.State, m.Record, m.UpdatedAt = State(state), int(rec), fromMicros(at)
		out = append(out, m)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing machines: %w", err)
	}
	return out, nil
}

// WebEvent is one row of the events table (an entry's state change or a
// note), with the stick and machine named.
type WebEvent struct {
	ID       int64
	At       time.Time
	PID      string
	From, To State
	Station  string
	Actor    string
	Reason   string
	Stick    string
	Record   int
	Machine  string // AMT UUID, when the event names one
}

const webEventSelect = `SELECT ev.id, ev.at, ev.pid, ev.from_state, ev.to_state, ev.station, ev.actor, ev.reason,
		COALESCE(st.label, ''), COALESCE(ev.record, 0), COALESCE(m.uuid, '')
	FROM events ev
	LEFT JOIN sticks st ON st.id = ev.stick_id
	LEFT JOIN machines m ON m.id = ev.machine_id`

func scanWebEvent(rows *sql.Rows) (WebEvent, error) {
	var ev WebEvent
	var at, rec int64
	var from, to string
	if err := rows.Scan(&ev.ID, &at, &ev.PID, &from, &to, &ev.Station, &ev.Actor, &ev.Reason, &ev.Stick, &rec, &ev.Machine); err != nil {
		return WebEvent{}, err
	}
	ev.At, ev.From, ev.To, ev.Record = fromMicros(at), State(from), State(to), int(rec)
	return ev, nil
}

// WebRecentEvents returns the newest events, newest first (limit 0 or
// more than MaxWebRows → MaxWebRows).
func (s *Store) WebRecentEvents(ctx context.Context, limit int) ([]WebEvent, error) {
	if limit <= 0 || limit > MaxWebRows {
		limit = MaxWebRows
	}
	rows, err := s.db.QueryContext(ctx, s.q(webEventSelect+" ORDER BY ev.id DESC LIMIT ?"), limit)
	if err != nil {
		return nil, fmt.Errorf("reading recent events: %w", err)
	}
	defer rows.Close()
	var out []WebEvent
	for rows.Next() {
		ev, err := scanWebEvent(rows)
		if err != nil {
			return nil, fmt.Errorf("reading recent events: %w", err)
		}
		out = append(out, ev)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading recent events: %w", err)
	}
	return out, nil
}

// WebAuditQuery selects events for an export.
type WebAuditQuery struct {
	AfterID      int64     // only events with a larger id (paging)
	Since, Until time.Time // zero: unbounded
	Limit        int       // 0: no limit
}

// WebAuditEvents calls fn with each selected event, oldest first, without
// holding them all in memory; an error from fn stops the walk and is
// returned as it is.
func (s *Store) WebAuditEvents(ctx context.Context, q WebAuditQuery, fn func(WebEvent) error) error {
	query := webEventSelect + " WHERE ev.id > ?"
	args := []any{q.AfterID}
	if !q.Since.IsZero() {
		query += " AND ev.at >= ?"
		args = append(args, q.Since.UnixMicro())
	}
	if !q.Until.IsZero() {
		query += " AND ev.at < ?"
		args = append(args, q.Until.UnixMicro())
	}
	query += " ORDER BY ev.id"
	if q.Limit > 0 {
		query += " LIMIT ?"
		args = append(args, q.Limit)
	}
	rows, err := s.db.QueryContext(ctx, s.q(query), args...)
	if err != nil {
		return fmt.Errorf("reading the audit log: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		ev, err := scanWebEvent(rows)
		if err != nil {
			return fmt.Errorf("reading the audit log: %w", err)
		}
		if err := fn(ev); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("reading the audit log: %w", err)
	}
	return nil
}

// WebTimelineItem is one line of a machine's timeline: an event of one of
// its entries (Hello false) or a hello it sent (Hello true; Reason holds
// the outcome, From/To are empty).
type WebTimelineItem struct {
	WebEvent
	Hello bool
	Peer  string // for hellos
	Retry int    // for hellos
}

// WebTimeline returns the machine, every entry it holds, and the history
// of those entries merged with the hellos that named their PIDs (the
// newest limit hellos; 0 → 200), oldest first. Unknown UUID: ErrNotFound.
func (s *Store) WebTimeline(ctx context.Context, uuid string, helloLimit int) (Machine, []WebTimelineItem, error) {
	m, err := s.Machine(ctx, uuid)
	if err != nil {
		return Machine{}, nil, err
	}
	if helloLimit <= 0 || helloLimit > MaxWebRows {
		helloLimit = 200
	}
	rows, err := s.db.QueryContext(ctx, s.q(`SELECT e.pid FROM entries e JOIN machines m ON m.id = e.machine_id WHERE m.uuid = ? ORDER BY e.id`), m.UUID)
	if err != nil {
		return Machine{}, nil, fmt.Errorf("reading the entries of machine %s: %w", m.UUID, err)
	}
	var pids []string
	for rows.Next() {
		var p string
		if err := rows.Scan(&p); err != nil {
			rows.Close()
			return Machine{}, nil, fmt.Errorf("reading the entries of machine %s: %w", m.UUID, err)
		}
		pids = append(pids, p)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return Machine{}, nil, fmt.Errorf("reading the entries of machine %s: %w", m.UUID, err)
	}
	var items []WebTimelineItem
	for _, pid := range pids {
		rows, err := s.db.QueryContext(ctx, s.q(webEventSelect+" WHERE ev.pid = ? ORDER BY ev.id LIMIT ?"), pid, MaxWebRows)
		if err != nil {
			return Machine{}, nil, fmt.Errorf("reading the history of %s: %w", pid, err)
		}
		for rows.Next() {
			ev, err := scanWebEvent(rows)
			if err != nil {
				rows.Close()
				return Machine{}, nil, fmt.Errorf("reading the history of %s: %w", pid, err)
			}
			items = append(items, WebTimelineItem{WebEvent: ev})
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return Machine{}, nil, fmt.Errorf("reading the history of %s: %w", pid, err)
		}
		hs, err := s.Hellos(ctx, pid, helloLimit)
		if err != nil {
			return Machine{}, nil, err
		}
		for _, h := range hs {
			items = append(items, WebTimelineItem{WebEvent: WebEvent{At: h.At, PID: h.PID, Reason: h.Outcome, Machine: h.UUID},
				Hello: true, Peer: h.Peer, Retry: h.Retry})
		}
	}
	slices.SortStableFunc(items, func(a, b WebTimelineItem) int { return a.At.Compare(b.At) })
	return m, items, nil
}

// WebSticks lists every stick, newest first (at most MaxWebRows).
func (s *Store) WebSticks(ctx context.Context) ([]Stick, error) {
	rows, err := s.db.QueryContext(ctx, s.q(`SELECT label, recipe, profile, record_count, unconsumed, created_at, station,
			built_at, written_at, image_hash, ledger_imported_at FROM sticks ORDER BY id DESC LIMIT ?`), MaxWebRows)
	if err != nil {
		return nil, fmt.Errorf("listing sticks: %w", err)
	}
	defer rows.Close()
	var out []Stick
	for rows.Next() {
		var st Stick
		var t int64
		var built, written, ledger sql.NullInt64
		var hash sql.NullString
		if err := rows.Scan(&st.Label, &st.Recipe, &st.Profile, &st.Records, &st.Unconsumed, &t, &st.Station, &built, &written, &hash, &ledger); err != nil {
			return nil, fmt.Errorf("listing sticks: %w", err)
		}
		st.CreatedAt, st.ImageHash = fromMicros(t), hash.String
		for _, f := range []struct {
			n   sql.NullInt64
			dst *time.Time
		}{{built, &st.BuiltAt}, {written, &st.WrittenAt}, {ledger, &st.LedgerImportedAt}} {
			if f.n.Valid {
				*f.dst = fromMicros(f.n.Int64)
			}
		}
		out = append(out, st)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing sticks: %w", err)
	}
	return out, nil
}

// WebTotals are the console's headline counters.
type WebTotals struct {
	Machines int64 // machines known
	Sticks   int64 // sticks allocated
	Hellos   int64 // hello log rows (the highest row id: the log is append-only)
	Events   int64 // event rows (likewise)
}

// WebTotals reads the headline counters. Hellos and Events come from the
// tables' highest id rather than a count, so they cost the same on a log
// of any length.
func (s *Store) WebTotals(ctx context.Context) (WebTotals, error) {
	var t WebTotals
	err := s.db.QueryRowContext(ctx, `SELECT
		(SELECT COUNT(*) FROM machines),
		(SELECT COUNT(*) FROM sticks),
		(SELECT COALESCE(MAX(id), 0) FROM hellos),
		(SELECT COALESCE(MAX(id), 0) FROM events)`).Scan(&t.Machines, &t.Sticks, &t.Hellos, &t.Events)
	if err != nil {
		return WebTotals{}, fmt.Errorf("reading totals: %w", err)
	}
	return t, nil
}
