package store

// What the kiosk keeps while it provisions (issue 10): the entry looked up
// by PID, the resumable per-machine progress, notes in an entry's history,
// the hello log and the kiosk CA. Tables from migration 0002_kiosk.

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

// Associated data of the kiosk's sealed values.
var (
	adProgress = []byte("provstick store provisioning v1\x00")
	adCA       = []byte("provstick store kiosk ca v1")
)

// Lookup is an entry with the machine that consumed it.
type Lookup struct {
	Entry
	Machine string // AMT UUID of the machine that consumed it; "" if none yet
}

// EntryOf returns the decrypted entry with the given PID and the UUID of
// the machine it is linked to. Unknown PID: ErrNotFound; no key: ErrLocked.
func (s *Store) EntryOf(ctx context.Context, pid setupbin.PID) (Lookup, error) {
	if s.keys == nil {
		return Lookup{}, fmt.Errorf("reading entry %s: %w", pid, ErrLocked)
	}
	var l Lookup
	var state, label string
	var record int64
	var blob []byte
	err := s.db.QueryRowContext(ctx, s.q(`SELECT e.state, e.profile, e.secrets, COALESCE(st.label, ''), COALESCE(e.record, 0), COALESCE(m.uuid, '')
		FROM entries e
		LEFT JOIN sticks st ON st.id = e.stick_id
		LEFT JOIN machines m ON m.id = e.machine_id
		WHERE e.pid = ?`), pid.String()).Scan(&state, &l.Profile, &blob, &label, &record, &l.Machine)
	if errors.Is(err, sql.ErrNoRows) {
		return Lookup{}, fmt.Errorf("entry %s: %w", pid, ErrNotFound)
	}
	if err != nil {
		return Lookup{}, fmt.Errorf("reading entry %s: %w", pid, err)
	}
	l.PID, l.State, l.Stick, l.Record = pid, State(state), label, int(record)
	if err := s.keys.openEntry(&l.Entry, blob); err != nil {
		return Lookup{}, err
	}
	return l, nil
}

// Note writes an event to the entry's history without changing its state
// (From and To are both the current state): a provisioning step's outcome,
// a folded hello, a refusal. Unknown PID: ErrNotFound.
func (s *Store) Note(ctx context.Context, pid setupbin.PID, reason string) error {
	return s.withTx(ctx, func(tx *sql.Tx, _ *sql.Conn) error {
		return s.note(ctx, tx, pid, reason)
	})
}

func (s *Store) note(ctx context.Context, tx *sql.Tx, pid setupbin.PID, reason string) error {
	var st string
	var stickID, record, machineID sql.NullInt64
	err := tx.QueryRowContext(ctx, s.q("SELECT state, stick_id, record, machine_id FROM entries WHERE pid = ?"), pid.String()).
		Scan(&st, &stickID, &record, &machineID)
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("entry %s: %w", pid, ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("reading entry %s: %w", pid, err)
	}
	return s.writeEvent(ctx, tx, event{pid: pid, from: State(st), to: State(st), reason: reason, stickID: stickID, record: record, machine: machineID})
}

// UpdateMachine records what the kiosk learnt about a machine (firmware
// version, control mode, provisioning state); empty fields are left alone.
func (s *Store) UpdateMachine(ctx context.Context, m Machine) error {
	return s.withTx(ctx, func(tx *sql.Tx, _ *sql.Conn) error {
		_, err := s.upsertMachine(ctx, tx, &m)
		return err
	})
}

// Progress is where the provisioning of one entry's machine stands.
type Progress struct {
	Step      int    // last confirmed step (specs/amt-psk.md §6 numbering); 0 = none
	Public    []byte // what the steps learnt, no secrets (the caller's format)
	Secret    []byte // what must stay secret (sealed at rest), nil for none
	Attempts  int    // provisioning runs started for this entry
	UpdatedAt time.Time
}

// LoadProgress returns the entry's provisioning progress; ErrNotFound when
// none was saved.
func (s *Store) LoadProgress(ctx context.Context, pid setupbin.PID) (Progress, error) {
	if s.keys == nil {
		return Progress{}, fmt.Errorf("reading the progress of %s: %w", pid, ErrLocked)
	}
	var p Progress
	var sealed []byte
	var at int64
	err := s.db.QueryRowContext(ctx, s.q("SELECT step, public, secret, attempts, updated_at FROM provisioning WHERE pid = ?"), pid.String()).
		Scan(&p.Step, &p.Public, &sealed, &p.Attempts, &at)
	if errors.Is(err, sql.ErrNoRows) {
		return Progress{}, fmt.Errorf("progress of %s: %w", pid, ErrNotFound)
	}
	if err != nil {
		return Progress{}, fmt.Errorf("reading the progress of %s: %w", pid, err)
	}
	p.UpdatedAt = fromMicros(at)
	if sealed != nil {
		pt, err := s.keys.open(sealed, append(slices.Clip(adProgress), pid[:]...))
		if err != nil {
			return Progress{}, fmt.Errorf("progress of %s: %w", pid, err)
		}
		p.Secret = pt
	}
	return p, nil
}

// SaveProgress stores the entry's progress and, when note is not empty,
// writes it to the entry's history, in one transaction. Attempts is
// stored as given.
func (s *Store) SaveProgress(ctx context.Context, pid setupbin.PID, p Progress, note string) error {
	if s.keys == nil {
		return fmt.Errorf("saving the progress of %s: %w", pid, ErrLocked)
	}
	var sealed []byte
	if p.Secret != nil {
		var err error
		if sealed, err = s.keys.seal(p.Secret, append(slices.Clip(adProgress), pid[:]...)); err != nil {
			return fmt.Errorf("sealing the progress of %s: %w", pid, err)
		}
	}
	return s.withTx(ctx, func(tx *sql.Tx, _ *sql.Conn) error {
		_, err := tx.ExecContext(ctx, s.q(`INSERT INTO provisioning (pid, step, public, secret, attempts, updated_at) VALUES (?, ?, ?, ?, ?, ?)
			ON CONFLICT (pid) DO UPDATE SET step = excluded.step, public = excluded.public, secret = excluded.secret,
				attempts = excluded.attempts, updated_at = excluded.updated_at`),
			pid.String(), p.Step, nonNil(p.Public), sealed, p.Attempts, now())
		if err != nil {
			return fmt.Errorf("saving the progress of %s: %w", pid, err)
		}
		if note != "" {
			return s.note(ctx, tx, pid, note)
		}
		return nil
	})
}

func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

// InProgress lists the entries in state hello-seen with saved progress:
// machines whose provisioning was under way when the kiosk stopped.
func (s *Store) InProgress(ctx context.Context) ([]setupbin.PID, error) {
	rows, err := s.db.QueryContext(ctx, s.q(`SELECT p.pid FROM provisioning p JOIN entries e ON e.pid = p.pid WHERE e.state = ? ORDER BY p.updated_at`), string(StateHelloSeen))
	if err != nil {
		return nil, fmt.Errorf("listing provisioning in progress: %w", err)
	}
	defer rows.Close()
	var pids []setupbin.PID
	for rows.Next() {
		var p string
		if err := rows.Scan(&p); err != nil {
			return nil, fmt.Errorf("listing provisioning in progress: %w", err)
		}
		pid, err := setupbin.ParsePID(p)
		if err != nil {
			return nil, fmt.Errorf("listing provisioning in progress: PID %q: %w", p, err)
		}
		pids = append(pids, pid)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing provisioning in progress: %w", err)
	}
	return pids, nil
}

// HelloRecord is one hello as the kiosk's listener saw it.
type HelloRecord struct {
	At      time.Time
	Peer    string // the TCP peer, ip:port
	UUID    string // text form; "" for a malformed hello
	PID     string // "" for a PKI or malformed hello
	Version int
	Retry   int
	Outcome string // "queued", "folded", "unknown-pid", "malformed: ...", ...
}

var helloCols = []string{"at", "peer", "uuid", "pid", "version", "retry", "outcome"}

// RecordHellos appends hellos to the hello log in one transaction.
func (s *Store) RecordHellos(ctx context.Context, hs []HelloRecord) error {
	if len(hs) == 0 {
		return nil
	}
	rows := make([][]any, len(hs))
	for i, h := range hs {
		rows[i] = []any{h.At.UnixMicro(), h.Peer, h.UUID, h.PID, int64(h.Version), int64(h.Retry), h.Outcome}
	}
	return s.withTx(ctx, func(tx *sql.Tx, conn *sql.Conn) error {
		return s.d.bulkInsert(ctx, conn, tx, "hellos", helloCols, rows)
	})
}

// Hellos returns the logged hellos of a PID ("" for those without one),
// oldest first, at most limit of them (the newest; limit ≤ 0 → 1000).
func (s *Store) Hellos(ctx context.Context, pid string, limit int) ([]HelloRecord, error) {
	if limit <= 0 {
		limit = 1000
	}
	rows, err := s.db.QueryContext(ctx, s.q(`SELECT at, peer, uuid, pid, version, retry, outcome FROM hellos WHERE pid = ? ORDER BY id DESC LIMIT ?`), strings.ToUpper(pid), limit)
	if err != nil {
		return nil, fmt.Errorf("reading the hellos of %q: %w", pid, err)
	}
	defer rows.Close()
	var hs []HelloRecord
	for rows.Next() {
		var h HelloRecord
		var at, v, r int64
		if err := rows.Scan(&at, &h.Peer, &h.UUID, &h.PID, &v, &r, &h.Outcome); err != nil {
			return nil, fmt.Errorf("reading the hellos of %q: %w", pid, err)
		}
		h.At, h.Version, h.Retry = fromMicros(at), int(v), int(r)
		hs = append(hs, h)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading the hellos of %q: %w", pid, err)
	}
	slices.Reverse(hs)
	return hs, nil
}

// CountHellos returns how many hellos the log holds.
func (s *Store) CountHellos(ctx context.Context) (int, error) {
	var n int
	if err := s.db.QueryRowContext(ctx, "SELECT COUNT(*) FROM hellos").Scan(&n); err != nil {
		return 0, fmt.Errorf("counting hellos: %w", err)
	}
	return n, nil
}

// LoadCA returns the kiosk CA's certificate (DER) and private key (PKCS #8
// DER, decrypted); ErrNotFound when none was saved.
func (s *Store) LoadCA(ctx context.Context) (cert, key []byte, err error) {
	if s.keys == nil {
		return nil, nil, fmt.Errorf("reading the kiosk CA: %w", ErrLocked)
	}
	var sealed []byte
	err = s.db.QueryRowContext(ctx, "SELECT cert, sealed_key FROM kiosk_ca WHERE id = 1").Scan(&cert, &sealed)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil, fmt.Errorf("kiosk CA: %w", ErrNotFound)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("reading the kiosk CA: %w", err)
	}
	key, err = s.keys.open(sealed, adCA)
	if err != nil {
		return nil, nil, fmt.Errorf("kiosk CA key: %w", err)
	}
	return cert, key, nil
}

// SaveCA stores the kiosk CA unless one exists already (two kiosks sharing
// a PostgreSQL store may race to create it); either way it returns the
// stored one, so every kiosk ends with the same CA.
func (s *Store) SaveCA(ctx context.Context, cert, key []byte) (storedCert, storedKey []byte, err error) {
	if s.keys == nil {
		return nil, nil, fmt.Errorf("saving the kiosk CA: %w", ErrLocked)
	}
	sealed, err := s.keys.seal(key, adCA)
	if err != nil {
		return nil, nil, fmt.Errorf("sealing the kiosk CA key: %w", err)
	}
	_, err = s.db.ExecContext(ctx, s.q("INSERT INTO kiosk_ca (id, cert, sealed_key, created_at) VALUES (1, ?, ?, ?) ON CONFLICT (id) DO NOTHING"), cert, sealed, now())
	if err != nil {
		return nil, nil, fmt.Errorf("saving the kiosk CA: %w", err)
	}
	return s.LoadCA(ctx)
}

// seal encrypts pt under the data key: version 1, a 24-byte nonce, then
// XChaCha20-Poly1305 with ad bound in.
func (k *keys) seal(pt, ad []byte) ([]byte, error) {
	aead, err := chacha20poly1305.NewX(k.data)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 1+aead.NonceSize(), 1+aead.NonceSize()+len(pt)+aead.Overhead())
	out[0] = 1
	if _, err := rand.Read(out[1:]); err != nil {
		return nil, fmt.Errorf("reading random nonce: %w", err)
	}
	return aead.Seal(out, out[1:], pt, ad), nil
}

// open is seal's inverse.
func (k *keys) open(blob, ad []byte) ([]byte, error) {
	aead, err := chacha20poly1305.NewX(k.data)
	if err != nil {
		return nil, err
	}
	if len(blob) < 1+aead.NonceSize() || blob[0] != 1 {
		return nil, fmt.Errorf("sealed value has an unknown format: %w", ErrSchema)
	}
	pt, err := aead.Open(nil, blob[1:1+aead.NonceSize()], blob[1+aead.NonceSize():], ad)
	if err != nil {
		return nil, fmt.Errorf("sealed value fails authentication (tampered or moved): %w", ErrSchema)
	}
	return pt, nil
}

// KeepConnections keeps up to n idle database connections open (the
// database/sql default is 2): a kiosk with n provisioning workers on
// PostgreSQL otherwise opens and closes a server connection for most
// transactions. No effect on the number of connections allowed.
func (s *Store) KeepConnections(n int) {
	if n > 2 {
		s.db.SetMaxIdleConns(n)
	}
}
