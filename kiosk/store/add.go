package store

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/provstick/provstick/setupbin"
)

// MaxAdd bounds the entries one Generate or Import call adds; the work is
// done in chunks, so memory stays small whatever the count.
const MaxAdd = 1_000_000

// addChunk is how many entries are sealed and inserted at a time.
const addChunk = 10_000

// GenerateSpec says what Generate makes.
type GenerateSpec struct {
	Count   int
	Profile string
	// CurrentPassword is the MEBx password the machines have now; ""
	// means setupbin.DefaultMEBxPassword ("admin").
	CurrentPassword setupbin.Password
	// NewPassword is one password for every entry; "" means a random
	// password per entry of NewPasswordLength characters (default 16).
	NewPassword       setupbin.Password
	NewPasswordLength int
	// Rand is the randomness (nil: crypto/rand).
	Rand io.Reader
}

// DuplicateError names a PID that appears twice: at two lines of an import
// (OtherLine > 0) or already in the pool (OtherLine == 0). It matches
// ErrDuplicate with errors.Is.
type DuplicateError struct {
	PID       setupbin.PID
	Line      int
	OtherLine int
}

func (e *DuplicateError) Error() string {
	if e.OtherLine > 0 {
		return fmt.Sprintf("store: line %d: PID %s duplicates line %d", e.Line, e.PID.Display(), e.OtherLine)
	}
	if e.Line > 0 {
		return fmt.Sprintf("store: line %d: PID %s is already in the pool", e.Line, e.PID.Display())
	}
	return fmt.Sprintf("store: PID %s is already in the pool", e.PID.Display())
}

// Is makes errors.Is(err, ErrDuplicate) true.
func (e *DuplicateError) Is(target error) bool { return target == ErrDuplicate }

func checkPasswords(cur, nw setupbin.Password) error {
	if err := setupbin.ValidateCurrentPassword(cur); err != nil {
		return err
	}
	if nw != "" {
		if err := setupbin.ValidateMEBxPassword(nw); err != nil {
			return err
		}
	}
	return nil
}

// Generate adds spec.Count fresh free entries in one transaction and
// returns their PIDs. PIDs are unique across the pool forever: a random PID
// that already exists is drawn again.
func (s *Store) Generate(ctx context.Context, spec GenerateSpec) ([]setupbin.PID, error) {
	if s.keys == nil {
		return nil, fmt.Errorf("generating entries: %w", ErrLocked)
	}
	if spec.Count < 1 || spec.Count > MaxAdd {
		return nil, fmt.Errorf("generating entries: count %d out of range 1..%d: %w", spec.Count, MaxAdd, ErrInvalid)
	}
	if !ValidProfile(spec.Profile) {
		return nil, fmt.Errorf("generating entries: profile %q: want one of %s: %w", spec.Profile, strings.Join(Profiles, ", "), ErrInvalid)
	}
	if spec.CurrentPassword == "" {
		spec.CurrentPassword = setupbin.DefaultMEBxPassword
	}
	if spec.NewPasswordLength == 0 {
		spec.NewPasswordLength = 16
	}
	if err := checkPasswords(spec.CurrentPassword, spec.NewPassword); err != nil {
		return nil, fmt.Errorf("generating entries: %w", err)
	}
	if spec.Rand == nil {
		// setupbin draws passwords a byte at a time; buffering the system
		// CSPRNG saves a call per byte (a third of the time for 100,000).
		spec.Rand = bufio.NewReaderSize(rand.Reader, 4096)
	}
	var pids []setupbin.PID
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		pids, err = s.generate(ctx, spec)
		// A concurrent station may insert one of our fresh PIDs between
		// our check and our insert; draw again.
		if err == nil || !s.d.isUnique(err) {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("generating entries: %w", err)
	}
	s.afterBulk(ctx, len(pids))
	s.log.Debug("entries generated", "count", len(pids), "profile", spec.Profile)
	return pids, nil
}

func (s *Store) generate(ctx context.Context, spec GenerateSpec) ([]setupbin.PID, error) {
	seen := make(map[setupbin.PID]bool, min(spec.Count, addChunk))
	pids := make([]setupbin.PID, 0, min(spec.Count, addChunk))
	err := s.withTx(ctx, func(tx *sql.Tx, conn *sql.Conn) error {
		for done := 0; done < spec.Count; {
			n := min(addChunk, spec.Count-done)
			chunk := make([]Entry, 0, n)
			for len(chunk) < n {
				for len(chunk) < n {
					pid, err := setupbin.GeneratePID(spec.Rand)
					if err != nil {
						return err
					}
					if seen[pid] {
						continue
					}
					seen[pid] = true
					chunk = append(chunk, Entry{PID: pid})
				}
				taken, err := s.existing(ctx, tx, chunk)
				if err != nil {
					return err
				}
				if len(taken) > 0 {
					chunk = slicesDeleteFunc(chunk, func(e Entry) bool { return taken[e.PID] })
				}
			}
			for i := range chunk {
				e := &chunk[i]
				var err error
				if e.PPS, err = setupbin.GeneratePPS(spec.Rand); err != nil {
					return err
				}
				e.Profile, e.CurrentPassword, e.NewPassword = spec.Profile, spec.CurrentPassword, spec.NewPassword
				if e.NewPassword == "" {
					if e.NewPassword, err = setupbin.GenerateMEBxPassword(spec.Rand, spec.NewPasswordLength); err != nil {
						return err
					}
				}
			}
			// Inserting in PID order keeps the pid indexes' page writes
			// local (the PIDs are random either way).
			slices.SortFunc(chunk, func(a, b Entry) int { return bytes.Compare(a.PID[:], b.PID[:]) })
			if err := s.insertFree(ctx, tx, conn, chunk, "generated"); err != nil {
				return err
			}
			for _, e := range chunk {
				pids = append(pids, e.PID)
			}
			done += n
		}
		return s.bumpCounts(ctx, tx, countDelta{spec.Profile, StateFree, spec.Count})
	})
	return pids, err
}

func slicesDeleteFunc(es []Entry, del func(Entry) bool) []Entry {
	out := es[:0]
	for _, e := range es {
		if !del(e) {
			out = append(out, e)
		}
	}
	return out
}

// existing returns which of the entries' PIDs are already in the pool:
// on PostgreSQL one query per chunk over an array, on SQLite (in process,
// no round trips) IN lists of 500.
func (s *Store) existing(ctx context.Context, tx *sql.Tx, es []Entry) (map[setupbin.PID]bool, error) {
	batch := 500
	if s.d.engine() == Postgres {
		batch = len(es)
	}
	var taken map[setupbin.PID]bool
	for start := 0; start < len(es); start += batch {
		end := min(start+batch, len(es))
		pids := make([]string, 0, end-start)
		for _, e := range es[start:end] {
			pids = append(pids, e.PID.String())
		}
		var rows *sql.Rows
		var err error
		if s.d.engine() == Postgres {
			rows, err = tx.QueryContext(ctx, "SELECT pid FROM entries WHERE pid = ANY($1::text[])", pids)
		} else {
			args := make([]any, len(pids))
			for i, p := range pids {
				args[i] = p
			}
			rows, err = tx.QueryContext(ctx, "SELECT pid FROM entries WHERE pid IN (?"+strings.Repeat(", ?", len(pids)-1)+")", args...)
		}
		if err != nil {
			return nil, fmt.Errorf("checking PIDs against the pool: %w", err)
		}
		for rows.Next() {
			var p string
			if err := rows.Scan(&p); err != nil {
				rows.Close()
				return nil, fmt.Errorf("checking PIDs against the pool: %w", err)
			}
			var pid setupbin.PID
			copy(pid[:], p)
			if taken == nil {
				taken = map[setupbin.PID]bool{}
			}
			taken[pid] = true
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("checking PIDs against the pool: %w", err)
		}
	}
	return taken, nil
}

var entryCols = []string{"pid", "profile", "state", "secrets", "reason", "created_at", "updated_at"}

// insertFree seals and inserts free entries with their creation events.
func (s *Store) insertFree(ctx context.Context, tx *sql.Tx, conn *sql.Conn, es []Entry, reason string) error {
	t := now()
	rows := make([][]any, len(es))
	for i := range es {
		blob, err := s.keys.sealEntry(&es[i])
		if err != nil {
			return fmt.Errorf("sealing entry %s: %w", es[i].PID, err)
		}
		rows[i] = []any{es[i].PID.String(), es[i].Profile, string(StateFree), blob, "", t, t}
	}
	if s.d.engine() == SQLite {
		// The write lock is ours (BEGIN IMMEDIATE), so the new rows are
		// exactly those above the current maximum id: their events are
		// one INSERT ... SELECT, without binding ten values per row.
		var maxID int64
		if err := tx.QueryRowContext(ctx, "SELECT COALESCE(max(id), 0) FROM entries").Scan(&maxID); err != nil {
			return fmt.Errorf("inserting entries: %w", err)
		}
		if err := s.d.bulkInsert(ctx, conn, tx, "entries", entryCols, rows); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `INSERT INTO events (pid, at, from_state, to_state, station, actor, reason)
			SELECT pid, ?, '', 'free', ?, ?, ? FROM entries WHERE id > ? ORDER BY id`, t, s.station, s.actor, reason, maxID)
		if err != nil {
			return fmt.Errorf("writing events: %w", err)
		}
		if n, _ := res.RowsAffected(); n != int64(len(es)) {
			return fmt.Errorf("writing events: %d for %d new entries", n, len(es))
		}
		return nil
	}
	evs := make([][]any, len(es))
	for i := range es {
		evs[i] = s.eventRow(event{pid: es[i].PID, from: StateNew, to: StateFree, reason: reason}, t)
	}
	if err := s.d.bulkInsert(ctx, conn, tx, "entries", entryCols, rows); err != nil {
		return err
	}
	return s.d.bulkInsert(ctx, conn, tx, "events", eventCols, evs)
}

// ImportEntry is one entry read from an import file.
type ImportEntry struct {
	Line            int // where it came from, for errors
	PID             setupbin.PID
	PPS             setupbin.PPS
	NewPassword     setupbin.Password // "" → ImportSpec's choice
	CurrentPassword setupbin.Password // "" → ImportSpec's choice
	Profile         string            // "" → ImportSpec's Profile
}

// ImportSpec says how imported entries are completed.
type ImportSpec struct {
	// Profile for entries without one.
	Profile string
	// CurrentPassword for entries without one; "" means "admin".
	CurrentPassword setupbin.Password
	// NewPassword for entries without one; "" means a random password of
	// NewPasswordLength (default 16) per entry.
	NewPassword       setupbin.Password
	NewPasswordLength int
	// Source names the file in the events ("imported from <Source>").
	Source string
	Rand   io.Reader
}

// Import adds entries read from a file, all or nothing: a PID that
// repeats within es or is already in the pool is a *DuplicateError naming
// its line, and nothing is imported.
func (s *Store) Import(ctx context.Context, es []ImportEntry, spec ImportSpec) error {
	if s.keys == nil {
		return fmt.Errorf("importing entries: %w", ErrLocked)
	}
	if len(es) == 0 || len(es) > MaxAdd {
		return fmt.Errorf("importing entries: %d entries, want 1..%d: %w", len(es), MaxAdd, ErrInvalid)
	}
	if spec.CurrentPassword == "" {
		spec.CurrentPassword = setupbin.DefaultMEBxPassword
	}
	if spec.NewPasswordLength == 0 {
		spec.NewPasswordLength = 16
	}
	if err := checkPasswords(spec.CurrentPassword, spec.NewPassword); err != nil {
		return fmt.Errorf("importing entries: %w", err)
	}
	if spec.Rand == nil {
		spec.Rand = bufio.NewReaderSize(rand.Reader, 4096)
	}
	lines := make(map[setupbin.PID]int, min(len(es), addChunk))
	perProfile := map[string]int{}
	for _, ie := range es {
		p := cmpOr(ie.Profile, spec.Profile)
		if !ValidProfile(p) {
			return fmt.Errorf("importing entries: line %d: profile %q: want one of %s: %w", ie.Line, p, strings.Join(Profiles, ", "), ErrInvalid)
		}
		perProfile[p]++
		if !ie.PID.Valid() || !ie.PPS.Valid() {
			return fmt.Errorf("importing entries: line %d: PID or PPS invalid: %w", ie.Line, ErrInvalid)
		}
		if err := checkPasswords(cmpOr(ie.CurrentPassword, spec.CurrentPassword), ie.NewPassword); err != nil {
			return fmt.Errorf("importing entries: line %d: %w", ie.Line, err)
		}
		if l, ok := lines[ie.PID]; ok {
			return &DuplicateError{PID: ie.PID, Line: ie.Line, OtherLine: l}
		}
		lines[ie.PID] = ie.Line
	}
	reason := "imported"
	if spec.Source != "" {
		reason = "imported from " + spec.Source
	}
	err := s.withTx(ctx, func(tx *sql.Tx, conn *sql.Conn) error {
		for start := 0; start < len(es); start += addChunk {
			part := es[start:min(start+addChunk, len(es))]
			chunk := make([]Entry, len(part))
			for i, ie := range part {
				chunk[i] = Entry{PID: ie.PID, PPS: ie.PPS, Profile: cmpOr(ie.Profile, spec.Profile),
					CurrentPassword: cmpOr(ie.CurrentPassword, spec.CurrentPassword),
					NewPassword:     cmpOr(ie.NewPassword, spec.NewPassword)}
				if chunk[i].NewPassword == "" {
					var err error
					if chunk[i].NewPassword, err = setupbin.GenerateMEBxPassword(spec.Rand, spec.NewPasswordLength); err != nil {
						return err
					}
				}
			}
			taken, err := s.existing(ctx, tx, chunk)
			if err != nil {
				return err
			}
			for _, ie := range part {
				if taken[ie.PID] {
					return &DuplicateError{PID: ie.PID, Line: ie.Line}
				}
			}
			if err := s.insertFree(ctx, tx, conn, chunk, reason); err != nil {
				return err
			}
		}
		var ds []countDelta
		for p, n := range perProfile {
			ds = append(ds, countDelta{p, StateFree, n})
		}
		return s.bumpCounts(ctx, tx, ds...)
	})
	if err != nil {
		var de *DuplicateError
		if errors.As(err, &de) {
			return err
		}
		if s.d.isUnique(err) {
			return fmt.Errorf("importing entries: a PID was added by another station meanwhile: %w", ErrDuplicate)
		}
		return fmt.Errorf("importing entries: %w", err)
	}
	s.afterBulk(ctx, len(es))
	s.log.Debug("entries imported", "count", len(es))
	return nil
}

func cmpOr[T ~string](a, b T) T {
	if a != "" {
		return a
	}
	return b
}

// afterBulk lets the engine catch up after n entries were added. Its
// failure only costs speed, so it is logged, not returned.
func (s *Store) afterBulk(ctx context.Context, n int) {
	if n < 1000 {
		return
	}
	if err := s.d.afterBulk(ctx, s.db); err != nil {
		s.log.Warn("refreshing statistics after a bulk insert", "err", err)
	}
}
