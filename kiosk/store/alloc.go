package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/provstick/provstick/setupbin"
)

// MaxRecords bounds the records of one stick (setup.bin counts records in
// 16 bits, specs/setupbin.md §2).
const MaxRecords = 65535

// StickSpec says what stick AllocateStick draws entries for.
type StickSpec struct {
	Label   string // unique name of the stick, e.g. "line3-0042"
	Recipe  string // image recipe the stick is built from
	Count   int    // records on the stick
	Profile string // firmware profile of the entries
}

// Stick is a stick as the store knows it.
type Stick struct {
	Label      string
	Recipe     string
	Profile    string
	Records    int // records 1..Records
	Unconsumed int // records allocated and not yet known consumed or voided
	CreatedAt  time.Time
	Station    string // the station that allocated it
	// Set by MarkStick as the stick goes through the builder and back.
	BuiltAt, WrittenAt, LedgerImportedAt time.Time
	ImageHash                            string
}

// StickMark records what happened to a stick; zero fields are left alone.
type StickMark struct {
	BuiltAt          time.Time
	WrittenAt        time.Time
	ImageHash        string // e.g. "sha256:..." of the image written
	LedgerImportedAt time.Time
}

// MarkStick records build, write and ledger-import times and the image
// hash of a stick.
func (s *Store) MarkStick(ctx context.Context, label string, m StickMark) error {
	micros := func(t time.Time) any {
		if t.IsZero() {
			return nil
		}
		return t.UnixMicro()
	}
	var hash any
	if m.ImageHash != "" {
		hash = m.ImageHash
	}
	res, err := s.db.ExecContext(ctx, s.q(`UPDATE sticks SET built_at = COALESCE(?, built_at), written_at = COALESCE(?, written_at),
		image_hash = COALESCE(?, image_hash), ledger_imported_at = COALESCE(?, ledger_imported_at) WHERE label = ?`),
		micros(m.BuiltAt), micros(m.WrittenAt), hash, micros(m.LedgerImportedAt), label)
	if err != nil {
		return fmt.Errorf("marking stick %q: %w", label, err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return fmt.Errorf("stick %q: %w", label, ErrNotFound)
	}
	return nil
}

// ExhaustedError says the pool had fewer free entries of the profile than a
// stick needs. It matches ErrPoolExhausted with errors.Is. On PostgreSQL,
// entries another station is drawing at that moment are not counted as
// free (they are skipped, not waited for), so a retry may succeed if that
// station's transaction fails.
type ExhaustedError struct {
	Profile    string
	Want, Free int
}

func (e *ExhaustedError) Error() string {
	return fmt.Sprintf("store: pool has %d free %s entries available, the stick needs %d", e.Free, e.Profile, e.Want)
}

// Is makes errors.Is(err, ErrPoolExhausted) true.
func (e *ExhaustedError) Is(target error) bool { return target == ErrPoolExhausted }

// AllocateStick draws spec.Count free entries of spec.Profile for a new
// stick in one transaction and returns the stick and the decrypted entries
// in record order (record 1 first). Two stations never draw the same
// entry: on PostgreSQL the free rows are locked with FOR UPDATE SKIP
// LOCKED (rows another station is drawing are skipped, rows it has drawn
// no longer match state = 'free'); on SQLite the transaction is BEGIN
// IMMEDIATE and holds the database's write lock. Either way the UPDATE
// re-checks state = 'free' and the transaction fails unless every row
// changed.
func (s *Store) AllocateStick(ctx context.Context, spec StickSpec) (Stick, []Entry, error) {
	if s.keys == nil {
		return Stick{}, nil, fmt.Errorf("allocating stick %q: %w", spec.Label, ErrLocked)
	}
	spec.Label = strings.TrimSpace(spec.Label)
	if spec.Label == "" || len(spec.Label) > 200 {
		return Stick{}, nil, fmt.Errorf("allocating a stick: label %q: want 1..200 characters: %w", spec.Label, ErrInvalid)
	}
	if spec.Count < 1 || spec.Count > MaxRecords {
		return Stick{}, nil, fmt.Errorf("allocating stick %q: count %d out of range 1..%d: %w", spec.Label, spec.Count, MaxRecords, ErrInvalid)
	}
	if !ValidProfile(spec.Profile) {
		return Stick{}, nil, fmt.Errorf("allocating stick %q: profile %q: want one of %s: %w", spec.Label, spec.Profile, strings.Join(Profiles, ", "), ErrInvalid)
	}
	st := Stick{Label: spec.Label, Recipe: spec.Recipe, Profile: spec.Profile, Records: spec.Count, Unconsumed: spec.Count, Station: s.station}
	var entries []Entry
	err := s.withTx(ctx, func(tx *sql.Tx, _ *sql.Conn) error {
		entries = entries[:0]
		ids := make([]int64, 0, spec.Count)
		rows, err := tx.QueryContext(ctx, s.q("SELECT id, pid, secrets FROM entries WHERE state = 'free' AND profile = ? ORDER BY id LIMIT ?"+s.d.skipLocked()), spec.Profile, spec.Count)
		if err != nil {
			return fmt.Errorf("drawing free entries: %w", err)
		}
		for rows.Next() {
			var id int64
			var pid string
			var blob []byte
			if err := rows.Scan(&id, &pid, &blob); err != nil {
				rows.Close()
				return fmt.Errorf("drawing free entries: %w", err)
			}
			e := Entry{Profile: spec.Profile, State: StateAllocated, Stick: spec.Label, Record: len(entries) + 1}
			p, err := setupbin.ParsePID(pid)
			if err != nil {
				rows.Close()
				return fmt.Errorf("drawing free entries: stored %w", err)
			}
			e.PID = p
			if err := s.keys.openEntry(&e, blob); err != nil {
				rows.Close()
				return err
			}
			ids = append(ids, id)
			entries = append(entries, e)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("drawing free entries: %w", err)
		}
		if len(entries) < spec.Count {
			return &ExhaustedError{Profile: spec.Profile, Want: spec.Count, Free: len(entries)}
		}
		t := now()
		st.CreatedAt = fromMicros(t)
		var stickID int64
		err = tx.QueryRowContext(ctx, s.q(`INSERT INTO sticks (label, recipe, profile, record_count, unconsumed, created_at, station)
			VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id`), spec.Label, spec.Recipe, spec.Profile, spec.Count, spec.Count, t, s.station).Scan(&stickID)
		if err != nil {
			if s.d.isUnique(err) {
				return fmt.Errorf("stick %q already exists: %w", spec.Label, ErrDuplicate)
			}
			return fmt.Errorf("recording the stick: %w", err)
		}
		if err := s.markAllocated(ctx, tx, stickID, ids, t); err != nil {
			return err
		}
		// The events come from the rows just changed, server side.
		res, err := tx.ExecContext(ctx, s.q(`INSERT INTO events (pid, at, from_state, to_state, station, actor, reason, stick_id, record)
			SELECT pid, ?, 'free', 'allocated', ?, ?, '', stick_id, record FROM entries WHERE stick_id = ? ORDER BY record`),
			t, s.station, s.actor, stickID)
		if err != nil {
			return fmt.Errorf("writing events: %w", err)
		}
		if n, _ := res.RowsAffected(); n != int64(len(entries)) {
			return fmt.Errorf("writing events: %d for %d entries", n, len(entries))
		}
		return s.bumpCounts(ctx, tx, countDelta{spec.Profile, StateFree, -spec.Count}, countDelta{spec.Profile, StateAllocated, spec.Count})
	})
	if err != nil {
		var ee *ExhaustedError
		if errors.As(err, &ee) {
			return Stick{}, nil, err
		}
		return Stick{}, nil, fmt.Errorf("allocating stick %q: %w", spec.Label, err)
	}
	s.log.Debug("stick allocated", "label", spec.Label, "records", spec.Count, "profile", spec.Profile)
	return st, entries, nil
}

// markAllocated moves the drawn entries (ids in record order) to the
// stick, re-checking that each is still free. PostgreSQL does it in one
// statement over arrays (one round trip); SQLite over a JSON array.
func (s *Store) markAllocated(ctx context.Context, tx *sql.Tx, stickID int64, ids []int64, t int64) error {
	if s.d.engine() == Postgres {
		recs := make([]int64, len(ids))
		for i := range recs {
			recs[i] = int64(i + 1)
		}
		res, err := tx.ExecContext(ctx, `UPDATE entries e SET state = 'allocated', stick_id = $1, record = v.rec, updated_at = $2
			FROM unnest($3::bigint[], $4::bigint[]) AS v(id, rec) WHERE e.id = v.id AND e.state = 'free'`, stickID, t, ids, recs)
		if err != nil {
			return fmt.Errorf("allocating entries: %w", err)
		}
		if n, _ := res.RowsAffected(); n != int64(len(ids)) {
			return fmt.Errorf("allocating entries: %d of %d drawn by another station: %w", int64(len(ids))-n, len(ids), ErrIllegalTransition)
		}
		return nil
	}
	// SQLite: the ids as a JSON array, json_each's key is the 0-based
	// position, so one statement assigns records 1..N.
	var js strings.Builder
	js.WriteByte('[')
	for i, id := range ids {
		if i > 0 {
			js.WriteByte(',')
		}
		js.WriteString(strconv.FormatInt(id, 10))
	}
	js.WriteByte(']')
	res, err := tx.ExecContext(ctx, `UPDATE entries SET state = 'allocated', stick_id = ?, record = j.key + 1, updated_at = ?
		FROM json_each(?) AS j WHERE entries.id = j.value AND entries.state = 'free'`, stickID, t, js.String())
	if err != nil {
		return fmt.Errorf("allocating entries: %w", err)
	}
	if n, _ := res.RowsAffected(); n != int64(len(ids)) {
		return fmt.Errorf("allocating entries: %d of %d drawn by another station: %w", int64(len(ids))-n, len(ids), ErrIllegalTransition)
	}
	return nil
}

// Stick returns the stick with the given label.
func (s *Store) Stick(ctx context.Context, label string) (Stick, error) {
	var st Stick
	var t int64
	var built, written, ledger sql.NullInt64
	var hash sql.NullString
	err := s.db.QueryRowContext(ctx, s.q(`SELECT label, recipe, profile, record_count, unconsumed, created_at, station,
			built_at, written_at, image_hash, ledger_imported_at FROM sticks WHERE label = ?`), label).
		Scan(&st.Label, &st.Recipe, &st.Profile, &st.Records, &st.Unconsumed, &t, &st.Station, &built, &written, &hash, &ledger)
	if errors.Is(err, sql.ErrNoRows) {
		return Stick{}, fmt.Errorf("stick %q: %w", label, ErrNotFound)
	}
	if err != nil {
		return Stick{}, fmt.Errorf("reading stick %q: %w", label, err)
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
	return st, nil
}
