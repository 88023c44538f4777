package store

import (
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/provstick/provstick/setupbin"
	"golang.org/x/crypto/chacha20poly1305"
)

// State is where an entry is in its life.
type State string

// The states. free → allocated(stick, record) → consumed(machine) →
// hello-seen → provisioned; failed from consumed or hello-seen (and back to
// hello-seen when the machine says hello again); void from any state but
// void, with a reason.
const (
	StateNew         State = "" // before the entry existed (events only)
	StateFree        State = "free"
	StateAllocated   State = "allocated"
	StateConsumed    State = "consumed"
	StateHelloSeen   State = "hello-seen"
	StateProvisioned State = "provisioned"
	StateFailed      State = "failed"
	StateVoid        State = "void"
)

// States lists every state in life order.
var States = []State{StateFree, StateAllocated, StateConsumed, StateHelloSeen, StateProvisioned, StateFailed, StateVoid}

// legal maps each state to the states it may change to. free → allocated
// happens only through AllocateStick.
var legal = map[State][]State{
	StateNew:         {StateFree},
	StateFree:        {StateAllocated, StateVoid},
	StateAllocated:   {StateConsumed, StateVoid},
	StateConsumed:    {StateHelloSeen, StateFailed, StateVoid},
	StateHelloSeen:   {StateProvisioned, StateFailed, StateVoid},
	StateFailed:      {StateHelloSeen, StateVoid},
	StateProvisioned: {StateVoid},
	StateVoid:        nil,
}

// CanChange reports whether an entry in state from may change to to.
func CanChange(from, to State) bool { return slices.Contains(legal[from], to) }

// TransitionError says which entry could not change state. It matches
// ErrIllegalTransition with errors.Is.
type TransitionError struct {
	PID      setupbin.PID
	From, To State
}

func (e *TransitionError) Error() string {
	return fmt.Sprintf("store: entry %s: illegal transition %s → %s", e.PID, e.From, e.To)
}

// Is makes errors.Is(err, ErrIllegalTransition) true.
func (e *TransitionError) Is(target error) bool { return target == ErrIllegalTransition }

// Entry is one PID/PPS pair with its passwords. PPS and passwords are
// secret types: printing an Entry shows REDACTED for them.
type Entry struct {
	PID             setupbin.PID
	PPS             setupbin.PPS
	CurrentPassword setupbin.Password // what the machine has now, normally "admin"
	NewPassword     setupbin.Password // what the record sets
	Profile         string
	State           State
	Stick           string // label; "" while free
	Record          int    // 1-based record number on the stick; 0 while free
}

// sealEntry encrypts the secrets of e: version 1, a 24-byte nonce, then
// XChaCha20-Poly1305 over PPS (32) | len | current | len | new, with the
// PID as associated data so a sealed blob cannot be moved to another entry.
func (k *keys) sealEntry(e *Entry) ([]byte, error) {
	aead, err := chacha20poly1305.NewX(k.data)
	if err != nil {
		return nil, err
	}
	pt := make([]byte, 0, 32+2+len(e.CurrentPassword)+len(e.NewPassword))
	pt = append(pt, e.PPS[:]...)
	pt = append(pt, byte(len(e.CurrentPassword)))
	pt = append(pt, e.CurrentPassword.Reveal()...)
	pt = append(pt, byte(len(e.NewPassword)))
	pt = append(pt, e.NewPassword.Reveal()...)
	out := make([]byte, 1+aead.NonceSize(), 1+aead.NonceSize()+len(pt)+aead.Overhead())
	out[0] = 1
	if _, err := rand.Read(out[1:]); err != nil {
		return nil, fmt.Errorf("reading random nonce: %w", err)
	}
	ad := append(slices.Clip(adEntry), e.PID[:]...)
	out = aead.Seal(out, out[1:], pt, ad)
	clear(pt)
	return out, nil
}

// openEntry decrypts what sealEntry wrote into e (PID already set).
func (k *keys) openEntry(e *Entry, blob []byte) error {
	aead, err := chacha20poly1305.NewX(k.data)
	if err != nil {
		return err
	}
	if len(blob) < 1+aead.NonceSize() || blob[0] != 1 {
		return fmt.Errorf("entry %s: sealed secrets have an unknown format: %w", e.PID, ErrSchema)
	}
	ad := append(slices.Clip(adEntry), e.PID[:]...)
	pt, err := aead.Open(nil, blob[1:1+aead.NonceSize()], blob[1+aead.NonceSize():], ad)
	if err != nil {
		return fmt.Errorf("entry %s: sealed secrets fail authentication (tampered or moved): %w", e.PID, ErrSchema)
	}
	defer clear(pt)
	bad := fmt.Errorf("entry %s: sealed secrets malformed: %w", e.PID, ErrSchema)
	if len(pt) < 33 {
		return bad
	}
	copy(e.PPS[:], pt[:32])
	rest := pt[32:]
	n := int(rest[0])
	if len(rest) < 1+n+1 {
		return bad
	}
	e.CurrentPassword = setupbin.Password(rest[1 : 1+n])
	rest = rest[1+n:]
	m := int(rest[0])
	if len(rest) != 1+m {
		return bad
	}
	e.NewPassword = setupbin.Password(rest[1:])
	return nil
}

// Event is one state change of an entry, as History returns it.
type Event struct {
	At       time.Time
	From, To State
	Station  string
	Actor    string
	Reason   string
	Stick    string // label, when the entry was on a stick
	Record   int
	Machine  string // AMT UUID, when a machine was involved
}

// event is a row about to be written.
type event struct {
	pid      setupbin.PID
	from, to State
	reason   string
	stickID  sql.NullInt64
	record   sql.NullInt64
	machine  sql.NullInt64
}

var eventCols = []string{"pid", "at", "from_state", "to_state", "station", "actor", "reason", "stick_id", "record", "machine_id"}

func (s *Store) eventRow(ev event, at int64) []any {
	return []any{ev.pid.String(), at, string(ev.from), string(ev.to), s.station, s.actor, ev.reason, nullable(ev.stickID), nullable(ev.record), nullable(ev.machine)}
}

func nullable(n sql.NullInt64) any {
	if !n.Valid {
		return nil
	}
	return n.Int64
}

func (s *Store) writeEvent(ctx context.Context, tx *sql.Tx, ev event) error {
	_, err := tx.ExecContext(ctx, s.q("INSERT INTO events ("+strings.Join(eventCols, ", ")+") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"), s.eventRow(ev, now())...)
	if err != nil {
		return fmt.Errorf("writing the event for %s: %w", ev.pid, err)
	}
	return nil
}

// countDelta changes a maintained counter.
type countDelta struct {
	profile string
	state   State
	n       int
}

// bumpCounts applies counter changes in a fixed (profile, state) order so
// that concurrent transactions lock the counter rows in the same order.
func (s *Store) bumpCounts(ctx context.Context, tx *sql.Tx, ds ...countDelta) error {
	slices.SortFunc(ds, func(a, b countDelta) int {
		if c := strings.Compare(a.profile, b.profile); c != 0 {
			return c
		}
		return strings.Compare(string(a.state), string(b.state))
	})
	for _, d := range ds {
		if d.n == 0 {
			continue
		}
		_, err := tx.ExecContext(ctx, s.q(`INSERT INTO pool_counts (profile, state, n) VALUES (?, ?, ?)
			ON CONFLICT (profile, state) DO UPDATE SET n = pool_counts.n + excluded.n`), d.profile, string(d.state), d.n)
		if err != nil {
			return fmt.Errorf("updating the %s/%s count: %w", d.profile, d.state, err)
		}
	}
	return nil
}

// Change carries what a state change records besides the new state.
type Change struct {
	Reason  string   // why (required for void)
	Machine *Machine // the machine, for consumed (required there)
}

// Consume records that machine m consumed the entry's record:
// allocated → consumed. The machine is created or updated by its UUID.
func (s *Store) Consume(ctx context.Context, pid setupbin.PID, m Machine, reason string) error {
	return s.Transition(ctx, pid, StateConsumed, Change{Reason: reason, Machine: &m})
}

// HelloSeen records a hello from the entry's machine: consumed or
// failed → hello-seen.
func (s *Store) HelloSeen(ctx context.Context, pid setupbin.PID) error {
	return s.Transition(ctx, pid, StateHelloSeen, Change{})
}

// Provisioned records that provisioning finished: hello-seen → provisioned.
func (s *Store) Provisioned(ctx context.Context, pid setupbin.PID) error {
	return s.Transition(ctx, pid, StateProvisioned, Change{})
}

// Fail records that provisioning failed, with a reason.
func (s *Store) Fail(ctx context.Context, pid setupbin.PID, reason string) error {
	return s.Transition(ctx, pid, StateFailed, Change{Reason: reason})
}

// Void retires an entry for good, with a reason.
func (s *Store) Void(ctx context.Context, pid setupbin.PID, reason string) error {
	return s.Transition(ctx, pid, StateVoid, Change{Reason: reason})
}

// Transition changes an entry's state in one transaction that also writes
// the event and updates the counters. An illegal change is a
// *TransitionError; an unknown PID is ErrNotFound.
func (s *Store) Transition(ctx context.Context, pid setupbin.PID, to State, c Change) error {
	if !pid.Valid() {
		return fmt.Errorf("changing entry %q: invalid PID: %w", pid.String(), ErrInvalid)
	}
	if to == StateAllocated {
		return fmt.Errorf("changing entry %s: entries are allocated only with AllocateStick: %w", pid, ErrInvalid)
	}
	if to == StateVoid && strings.TrimSpace(c.Reason) == "" {
		return fmt.Errorf("voiding entry %s: a reason is required: %w", pid, ErrInvalid)
	}
	if to == StateConsumed && (c.Machine == nil || c.Machine.UUID == "") {
		return fmt.Errorf("consuming entry %s: the machine's UUID is required: %w", pid, ErrInvalid)
	}
	return s.withTx(ctx, func(tx *sql.Tx, _ *sql.Conn) error {
		var from, profile string
		var stickID, record, machineID sql.NullInt64
		err := tx.QueryRowContext(ctx, s.q("SELECT state, profile, stick_id, record, machine_id FROM entries WHERE pid = ?"+s.d.forUpdate()), pid.String()).
			Scan(&from, &profile, &stickID, &record, &machineID)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("entry %s: %w", pid, ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("reading entry %s: %w", pid, err)
		}
		if !CanChange(State(from), to) {
			return &TransitionError{PID: pid, From: State(from), To: to}
		}
		if c.Machine != nil && to == StateConsumed {
			id, err := s.upsertMachine(ctx, tx, c.Machine)
			if err != nil {
				return err
			}
			machineID = sql.NullInt64{Int64: id, Valid: true}
		}
		res, err := tx.ExecContext(ctx, s.q("UPDATE entries SET state = ?, machine_id = ?, reason = ?, updated_at = ? WHERE pid = ? AND state = ?"),
			string(to), nullable(machineID), c.Reason, now(), pid.String(), from)
		if err != nil {
			return fmt.Errorf("changing entry %s: %w", pid, err)
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return fmt.Errorf("changing entry %s: changed under us: %w", pid, ErrIllegalTransition)
		}
		if State(from) == StateAllocated && stickID.Valid {
			if _, err := tx.ExecContext(ctx, s.q("UPDATE sticks SET unconsumed = unconsumed - 1 WHERE id = ?"), stickID.Int64); err != nil {
				return fmt.Errorf("counting the stick of %s: %w", pid, err)
			}
		}
		if err := s.bumpCounts(ctx, tx, countDelta{profile, State(from), -1}, countDelta{profile, to, 1}); err != nil {
			return err
		}
		if err := s.writeEvent(ctx, tx, event{pid: pid, from: State(from), to: to, reason: c.Reason, stickID: stickID, record: record, machine: machineID}); err != nil {
			return err
		}
		s.log.Debug("entry changed", "pid", pid, "from", from, "to", to)
		return nil
	})
}

// State returns the entry's current state.
func (s *Store) State(ctx context.Context, pid setupbin.PID) (State, error) {
	var st string
	err := s.db.QueryRowContext(ctx, s.q("SELECT state FROM entries WHERE pid = ?"), pid.String()).Scan(&st)
	if errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("entry %s: %w", pid, ErrNotFound)
	}
	if err != nil {
		return "", fmt.Errorf("reading entry %s: %w", pid, err)
	}
	return State(st), nil
}

// History returns every event of an entry, oldest first.
func (s *Store) History(ctx context.Context, pid setupbin.PID) ([]Event, error) {
	if _, err := s.State(ctx, pid); err != nil {
		return nil, err
	}
	rows, err := s.db.QueryContext(ctx, s.q(`SELECT ev.at, ev.from_state, ev.to_state, ev.station, ev.actor, ev.reason,
			COALESCE(st.label, ''), COALESCE(ev.record, 0), COALESCE(m.uuid, '')
		FROM events ev
		LEFT JOIN sticks st ON st.id = ev.stick_id
		LEFT JOIN machines m ON m.id = ev.machine_id
		WHERE ev.pid = ? ORDER BY ev.id`), pid.String())
	if err != nil {
		return nil, fmt.Errorf("reading the history of %s: %w", pid, err)
	}
	defer rows.Close()
	var evs []Event
	for rows.Next() {
		var ev Event
		var at, rec int64
		var from, to string
		if err := rows.Scan(&at, &from, &to, &ev.Station, &ev.Actor, &ev.Reason, &ev.Stick, &rec, &ev.Machine); err != nil {
			return nil, fmt.Errorf("reading the history of %s: %w", pid, err)
		}
		ev.At, ev.From, ev.To, ev.Record = fromMicros(at), State(from), State(to), int(rec)
		evs = append(evs, ev)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading the history of %s: %w", pid, err)
	}
	return evs, nil
}
