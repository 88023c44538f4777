package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/provstick/provstick/setupbin"
)

// Next PID/PPS (specs/amt-psk.md §6 step 10): while a machine is being
// provisioned, the kiosk may hand it a second entry with SetTLSPSK so that
// after a partial unprovision it says hello with that PID and is
// provisioned again by PSK. The entry never goes onto a USB stick, so the
// store records it with the machinery it has: a one-record stick of recipe
// NextPSKRecipe, labelled NextPSKLabel(source PID), holding the entry, and
// the entry consumed by the machine at once — the events free → allocated
// → consumed are written in the same transaction as the draw. A later
// hello from that PID finds a consumed entry linked to the same machine,
// which is the normal path (consumed → hello-seen → provisioned). The
// label is unique, so asking again for the same source PID returns the same
// entry: a kiosk that resumes never draws a second one, and no entry is
// given to two machines.

// NextPSKRecipe is the recipe of the stick rows GiveNextPSK creates.
const NextPSKRecipe = "next-psk"

// NextPSKLabel is the label of the stick row that holds the next PID/PPS
// given while the entry from was provisioned.
func NextPSKLabel(from setupbin.PID) string { return NextPSKRecipe + "/" + from.String() }

// NextPSKSpec says for whom GiveNextPSK draws.
type NextPSKSpec struct {
	From    setupbin.PID // the entry being provisioned
	Machine string       // its machine's AMT UUID
	// Password is what the machine's admin (and MEBx) password will be
	// once the run commits; it becomes the entry's current and new
	// password, since a partial unprovision keeps the admin ACL and the
	// kiosk logs in with it when the machine says hello with the new PID.
	Password setupbin.Password
}

// GiveNextPSK returns the entry given to spec.Machine as the next PID/PPS
// of spec.From: the one given before if there is one, else a free entry of
// the same profile drawn now (SKIP LOCKED on PostgreSQL, the write lock
// on SQLite, as AllocateStick) and recorded as consumed by the machine, in
// one transaction. given is true when it was drawn now. An entry given
// before to another machine is ErrIllegalTransition; no free entry is an
// *ExhaustedError.
func (s *Store) GiveNextPSK(ctx context.Context, spec NextPSKSpec) (e Entry, given bool, err error) {
	e, given, err = s.giveNextPSK(ctx, spec)
	if errors.Is(err, ErrDuplicate) {
		// Another station drew for the same source at the same moment
		// (PostgreSQL); its row is committed now, so this finds it.
		e, given, err = s.giveNextPSK(ctx, spec)
	}
	return e, given, err
}

func (s *Store) giveNextPSK(ctx context.Context, spec NextPSKSpec) (e Entry, given bool, err error) {
	if s.keys == nil {
		return Entry{}, false, fmt.Errorf("drawing the next PID/PPS for %s: %w", spec.From, ErrLocked)
	}
	if !spec.From.Valid() {
		return Entry{}, false, fmt.Errorf("drawing the next PID/PPS: invalid PID %q: %w", spec.From.String(), ErrInvalid)
	}
	if spec.Password == "" {
		return Entry{}, false, fmt.Errorf("drawing the next PID/PPS for %s: no password: %w", spec.From, ErrInvalid)
	}
	uuid := strings.ToLower(strings.TrimSpace(spec.Machine))
	label := NextPSKLabel(spec.From)
	err = s.withTx(ctx, func(tx *sql.Tx, _ *sql.Conn) error {
		given = false
		// Given before?
		var pid, state, owner, profile string
		var blob []byte
		err := tx.QueryRowContext(ctx, s.q(`SELECT e.pid, e.state, e.profile, e.secrets, COALESCE(m.uuid, '') FROM sticks st
			JOIN entries e ON e.stick_id = st.id LEFT JOIN machines m ON m.id = e.machine_id WHERE st.label = ?`), label).
			Scan(&pid, &state, &profile, &blob, &owner)
		switch {
		case err == nil:
			if owner != uuid {
				return fmt.Errorf("the next PID/PPS of %s (%s) was given to machine %q, not %s: %w", spec.From, pid, owner, uuid, ErrIllegalTransition)
			}
			p, err := setupbin.ParsePID(pid)
			if err != nil {
				return fmt.Errorf("stored %w", err)
			}
			e = Entry{PID: p, Profile: profile, State: State(state), Stick: label, Record: 1}
			return s.keys.openEntry(&e, blob)
		case !errors.Is(err, sql.ErrNoRows):
			return fmt.Errorf("looking for the next PID/PPS of %s: %w", spec.From, err)
		}
		if err := tx.QueryRowContext(ctx, s.q("SELECT profile FROM entries WHERE pid = ?"), spec.From.String()).Scan(&profile); err != nil {
			if errors.Is(err, sql.ErrNoRows) {
				return fmt.Errorf("entry %s: %w", spec.From, ErrNotFound)
			}
			return fmt.Errorf("reading entry %s: %w", spec.From, err)
		}
		// The stick row first: a second station giving for the same source
		// at the same moment waits here on the unique label (PostgreSQL)
		// and then fails with ErrDuplicate, rather than drawing an entry
		// of its own; if no entry is free the row goes with the rollback.
		t := now()
		var stickID int64
		err = tx.QueryRowContext(ctx, s.q(`INSERT INTO sticks (label, recipe, profile, record_count, unconsumed, created_at, station)
			VALUES (?, ?, ?, 1, 0, ?, ?) RETURNING id`), label, NextPSKRecipe, profile, t, s.station).Scan(&stickID)
		if err != nil {
			if s.d.isUnique(err) {
				return fmt.Errorf("stick %q already exists: %w", label, ErrDuplicate)
			}
			return fmt.Errorf("recording the next PID/PPS of %s: %w", spec.From, err)
		}
		var id int64
		err = tx.QueryRowContext(ctx, s.q("SELECT id, pid, secrets FROM entries WHERE state = 'free' AND profile = ? ORDER BY id LIMIT 1"+s.d.skipLocked()), profile).
			Scan(&id, &pid, &blob)
		if errors.Is(err, sql.ErrNoRows) {
			return &ExhaustedError{Profile: profile, Want: 1}
		}
		if err != nil {
			return fmt.Errorf("drawing a free entry: %w", err)
		}
		p, err := setupbin.ParsePID(pid)
		if err != nil {
			return fmt.Errorf("drawing a free entry: stored %w", err)
		}
		e = Entry{PID: p, Profile: profile, State: StateConsumed, Stick: label, Record: 1}
		if err := s.keys.openEntry(&e, blob); err != nil {
			return err
		}
		e.CurrentPassword, e.NewPassword = spec.Password, spec.Password
		sealed, err := s.keys.sealEntry(&e)
		if err != nil {
			return fmt.Errorf("sealing entry %s: %w", e.PID, err)
		}
		machineID, err := s.upsertMachine(ctx, tx, &Machine{UUID: uuid})
		if err != nil {
			return err
		}
		reason := fmt.Sprintf("given to machine %s by SetTLSPSK while provisioning %s (next PID/PPS, step 10)", uuid, spec.From)
		res, err := tx.ExecContext(ctx, s.q(`UPDATE entries SET state = 'consumed', stick_id = ?, record = 1, machine_id = ?, reason = ?, secrets = ?, updated_at = ?
			WHERE id = ? AND state = 'free'`), stickID, machineID, reason, sealed, t, id)
		if err != nil {
			return fmt.Errorf("recording the next PID/PPS of %s: %w", spec.From, err)
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return fmt.Errorf("entry %s drawn by another station: %w", e.PID, ErrIllegalTransition)
		}
		sid := sql.NullInt64{Int64: stickID, Valid: true}
		rec := sql.NullInt64{Int64: 1, Valid: true}
		if err := s.writeEvent(ctx, tx, event{pid: e.PID, from: StateFree, to: StateAllocated, stickID: sid, record: rec,
			reason: "drawn as the next PID/PPS of " + spec.From.String()}); err != nil {
			return err
		}
		if err := s.writeEvent(ctx, tx, event{pid: e.PID, from: StateAllocated, to: StateConsumed, stickID: sid, record: rec,
			machine: sql.NullInt64{Int64: machineID, Valid: true}, reason: reason}); err != nil {
			return err
		}
		if err := s.note(ctx, tx, spec.From, "step 10: next PID/PPS "+e.PID.String()+" given to this machine (recorded before SetTLSPSK)"); err != nil {
			return err
		}
		given = true
		return s.bumpCounts(ctx, tx, countDelta{profile, StateFree, -1}, countDelta{profile, StateConsumed, 1})
	})
	if err != nil {
		var ee *ExhaustedError
		if errors.As(err, &ee) {
			return Entry{}, false, err
		}
		return Entry{}, false, fmt.Errorf("drawing the next PID/PPS for %s: %w", spec.From, err)
	}
	if given {
		s.log.Debug("next PID/PPS given", "from", spec.From, "pid", e.PID, "machine", uuid)
	}
	return e, given, nil
}
