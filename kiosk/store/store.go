// Package store is the kiosk's pool: every PID/PPS pair provstick ever
// issued, the sticks they were written to, the machines that consumed them
// and an append-only event history of every state change (DESIGN.md §3,
// decisions 8 and 10; issue "kiosk/store").
//
// One API, two engines: Open takes a DSN that is a file path (SQLite through
// modernc.org/sqlite, no cgo; WAL, busy timeout, synchronous=FULL) or a
// postgres:// URL (PostgreSQL through pgx). The Store type holds all the
// logic — the state machine, events, counters and encryption — and talks to
// the database through database/sql plus a small unexported dialect for
// what differs (placeholders, row locking, bulk insert, migration lock).
// A concrete type over a dialect rather than an interface per engine keeps
// the invariants (one transaction per change, an event and the counters in
// the same transaction) written once, so the two engines cannot drift.
//
// Secrets (PPS, current and new MEBx passwords) are sealed with
// XChaCha20-Poly1305 under a random data key, with the entry's PID as
// associated data; the data key is wrapped by a key-encryption key derived
// from a passphrase with argon2id (parameters and salt stored in the
// database) or read from a key file. Opening with the wrong key fails with
// ErrWrongKey before anything is written.
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/user"
	"strings"
	"time"
)

// Sentinel errors; callers branch with errors.Is.
var (
	// ErrWrongKey: the passphrase or key file does not unlock this store.
	ErrWrongKey = errors.New("store: wrong passphrase or key file")
	// ErrLocked: the operation needs the secrets but the store was opened
	// without a key.
	ErrLocked = errors.New("store: opened without a passphrase or key file")
	// ErrNotFound: no such PID, stick or machine.
	ErrNotFound = errors.New("store: not found")
	// ErrIllegalTransition: the entry's state does not allow the change.
	ErrIllegalTransition = errors.New("store: illegal state transition")
	// ErrPoolExhausted: fewer free entries of the profile than asked for.
	ErrPoolExhausted = errors.New("store: not enough free entries")
	// ErrDuplicate: a PID or stick label that already exists.
	ErrDuplicate = errors.New("store: duplicate")
	// ErrInvalid: an argument breaks a rule (count, profile, label, ...).
	ErrInvalid = errors.New("store: invalid argument")
	// ErrSchema: the database holds a newer or unknown schema.
	ErrSchema = errors.New("store: unsupported database schema")
)

// Profiles are the firmware profiles an entry may be generated for
// (specs/setupbin.md §3, "Profiles"). The setupbin package will own the
// catalogue; until then the store validates against this list.
var Profiles = []string{"amt2-5", "amt6-10", "amt11+"}

// ValidProfile reports whether p is one of Profiles.
func ValidProfile(p string) bool {
	for _, q := range Profiles {
		if p == q {
			return true
		}
	}
	return false
}

// Options configure Open. The zero value opens a locked store (no secrets)
// that logs nothing.
type Options struct {
	// Key unlocks the secrets. Nil opens the store locked: counts, history
	// and voiding work, anything that reads or writes a secret returns
	// ErrLocked. A new store takes its key ring from the first keyed Open.
	Key *Key
	// KDF are the argon2id parameters for a new key ring (first keyed Open
	// of a new store, or Rekey). Zero means DefaultKDF.
	KDF KDFParams
	// Station names this machine in events (default: the host name).
	Station string
	// Actor names the user or component in events (default: the OS user).
	Actor string
	// Logger receives debug and info records; nil discards. Secrets never
	// reach it.
	Logger *slog.Logger
}

// Engine names a database engine.
type Engine string

// The engines.
const (
	SQLite   Engine = "sqlite"
	Postgres Engine = "postgres"
)

// EngineOf returns the engine a DSN selects: a postgres:// or
// postgresql:// URL is PostgreSQL, anything else a SQLite file path.
func EngineOf(dsn string) Engine {
	l := strings.ToLower(dsn)
	if strings.HasPrefix(l, "postgres://") || strings.HasPrefix(l, "postgresql://") {
		return Postgres
	}
	return SQLite
}

// Store is an open pool. It is safe for concurrent use.
type Store struct {
	db      *sql.DB
	d       dialect
	log     *slog.Logger
	station string
	actor   string
	keys    *keys // nil when locked
	kdf     KDFParams
}

// Open opens (creating when needed) the store at dsn, applies pending
// migrations in one transaction and, when opts.Key is set, unlocks the
// secrets. With a wrong key it returns ErrWrongKey and writes nothing.
func Open(ctx context.Context, dsn string, opts *Options) (*Store, error) {
	if opts == nil {
		opts = &Options{}
	}
	s := &Store{
		log:     opts.Logger,
		station: opts.Station,
		actor:   opts.Actor,
		kdf:     opts.KDF,
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.station == "" {
		s.station, _ = os.Hostname()
	}
	if s.actor == "" {
		if u, err := user.Current(); err == nil {
			s.actor = u.Username
		}
	}
	if s.kdf == (KDFParams{}) {
		s.kdf = DefaultKDF
	}
	if err := s.kdf.validate(); err != nil {
		return nil, err
	}
	d, db, err := openDB(ctx, dsn)
	if err != nil {
		return nil, err
	}
	s.d, s.db = d, db
	s.log.Debug("store opened", "engine", d.engine(), "location", redactDSN(dsn))
	if err := s.open(ctx, opts.Key); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

func (s *Store) open(ctx context.Context, key *Key) error {
	// The key is checked before any migration runs, so a wrong key writes
	// nothing. The key ring's shape is fixed by migration 1 and never
	// changes, so it can be read at any schema version.
	if key != nil {
		ring, err := s.readKeyring(ctx)
		if err != nil {
			return err
		}
		if ring != nil {
			k, err := ring.unlock(key)
			if err != nil {
				return err
			}
			s.keys = k
		}
	}
	if err := s.migrate(ctx); err != nil {
		return err
	}
	if key != nil && s.keys == nil {
		k, err := s.initKeyring(ctx, key)
		if err != nil {
			return err
		}
		s.keys = k
	}
	return nil
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// Engine returns the engine behind the store.
func (s *Store) Engine() Engine { return s.d.engine() }

// Unlocked reports whether the store was opened with a key.
func (s *Store) Unlocked() bool { return s.keys != nil }

func now() int64 { return time.Now().UnixMicro() }

func fromMicros(us int64) time.Time { return time.UnixMicro(us).UTC() }

// withTx runs fn in one transaction on one connection and commits; any
// error rolls back. On SQLite the transaction is BEGIN IMMEDIATE (it takes
// the write lock at once); on PostgreSQL it is READ COMMITTED and the
// statements lock what they change.
func (s *Store) withTx(ctx context.Context, fn func(tx *sql.Tx, conn *sql.Conn) error) error {
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("connecting to the store: %w", err)
	}
	defer conn.Close()
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("beginning a transaction: %w", err)
	}
	if err := fn(tx, conn); err != nil {
		tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("committing: %w", err)
	}
	return nil
}

// q rewrites a query written with ? placeholders for the engine.
func (s *Store) q(query string) string { return s.d.rebind(query) }
