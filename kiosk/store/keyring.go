package store

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"os"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/chacha20poly1305"
)

// Key unlocks a store: a passphrase (stretched with argon2id) or a raw
// 32-byte key from a key file. Its String never shows the secret.
type Key struct {
	passphrase []byte
	raw        []byte
}

// Passphrase returns a Key for a passphrase. Trailing newlines are the
// caller's business (the CLI trims one from a passphrase file).
func Passphrase(p []byte) *Key { return &Key{passphrase: bytes.Clone(p)} }

// RawKey returns a Key for 32 raw bytes (what a key file holds).
func RawKey(b []byte) (*Key, error) {
	if len(b) != chacha20poly1305.KeySize {
		return nil, fmt.Errorf("key has %d bytes, want %d: %w", len(b), chacha20poly1305.KeySize, ErrInvalid)
	}
	return &Key{raw: bytes.Clone(b)}, nil
}

// ReadKeyFile reads a key file: 32 raw bytes, or those bytes as 64
// hexadecimal digits (surrounding white space ignored). Make one with
// "head -c 32 /dev/urandom > store.key".
func ReadKeyFile(name string) (*Key, error) {
	b, err := os.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("reading key file: %w", err)
	}
	if len(b) == chacha20poly1305.KeySize {
		return RawKey(b)
	}
	if t := bytes.TrimSpace(b); len(t) == 2*chacha20poly1305.KeySize {
		if raw, err := hex.DecodeString(string(t)); err == nil {
			return RawKey(raw)
		}
	}
	return nil, fmt.Errorf("key file %s: want 32 raw bytes or 64 hexadecimal digits: %w", name, ErrInvalid)
}

// String hides the secret.
func (k Key) String() string { return "REDACTED" }

// GoString hides the secret from %#v too.
func (k Key) GoString() string { return "store.Key(REDACTED)" }

// KDFParams are argon2id parameters (RFC 9106).
type KDFParams struct {
	Time    uint32 // passes
	Memory  uint32 // KiB
	Threads uint8
}

// DefaultKDF is RFC 9106's second recommended setting: t=3, 64 MiB, p=4.
var DefaultKDF = KDFParams{Time: 3, Memory: 64 * 1024, Threads: 4}

func (p KDFParams) validate() error {
	if p.Time < 1 || p.Memory < 8*uint32(p.Threads) || p.Threads < 1 || p.Memory > 4<<20 || p.Time > 100 {
		return fmt.Errorf("argon2id parameters t=%d m=%dKiB p=%d out of range: %w", p.Time, p.Memory, p.Threads, ErrInvalid)
	}
	return nil
}

// keyring is the stored key ring row.
type keyring struct {
	kdf     string // "argon2id" or "keyfile"
	salt    []byte
	params  KDFParams
	wrapped []byte
}

// keys holds the unwrapped data key.
type keys struct {
	data []byte
}

// Associated data binds each ciphertext to its purpose.
var (
	adDataKey = []byte("provstick store data key v1")
	adEntry   = []byte("provstick store entry v1\x00")
)

// kek derives the key-encryption key for k under the ring's parameters.
func (r *keyring) kek(k *Key) ([]byte, error) {
	switch r.kdf {
	case "argon2id":
		if k.passphrase == nil {
			return nil, fmt.Errorf("the store is locked with a passphrase, a key file was given: %w", ErrWrongKey)
		}
		if err := r.params.validate(); err != nil {
			return nil, fmt.Errorf("stored key ring: %w", err)
		}
		return argon2.IDKey(k.passphrase, r.salt, r.params.Time, r.params.Memory, r.params.Threads, chacha20poly1305.KeySize), nil
	case "keyfile":
		if k.raw == nil {
			return nil, fmt.Errorf("the store is locked with a key file, a passphrase was given: %w", ErrWrongKey)
		}
		return k.raw, nil
	}
	return nil, fmt.Errorf("stored key ring: unknown kdf %q: %w", r.kdf, ErrSchema)
}

// unlock unwraps the data key. The AEAD tag on the wrapped key is the
// verifier: a wrong key fails here, before anything is written.
func (r *keyring) unlock(k *Key) (*keys, error) {
	kek, err := r.kek(k)
	if err != nil {
		return nil, err
	}
	aead, err := chacha20poly1305.NewX(kek)
	if err != nil {
		return nil, fmt.Errorf("unwrapping the data key: %w", err)
	}
	if len(r.wrapped) < aead.NonceSize() {
		return nil, fmt.Errorf("stored key ring: wrapped key too short: %w", ErrSchema)
	}
	dk, err := aead.Open(nil, r.wrapped[:aead.NonceSize()], r.wrapped[aead.NonceSize():], adDataKey)
	if err != nil {
		return nil, ErrWrongKey
	}
	return &keys{data: dk}, nil
}

// newKeyring wraps dataKey under k with fresh salt and parameters p.
func newKeyring(k *Key, p KDFParams, dataKey []byte) (*keyring, error) {
	r := &keyring{kdf: "keyfile"}
	if k.passphrase != nil {
		r.kdf, r.params, r.salt = "argon2id", p, make([]byte, 16)
		if _, err := rand.Read(r.salt); err != nil {
			return nil, fmt.Errorf("reading random salt: %w", err)
		}
	}
	kek, err := r.kek(k)
	if err != nil {
		return nil, err
	}
	aead, err := chacha20poly1305.NewX(kek)
	if err != nil {
		return nil, fmt.Errorf("wrapping the data key: %w", err)
	}
	nonce := make([]byte, aead.NonceSize(), aead.NonceSize()+len(dataKey)+aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("reading random nonce: %w", err)
	}
	r.wrapped = aead.Seal(nonce, nonce, dataKey, adDataKey)
	return r, nil
}

const selectKeyring = "SELECT kdf, salt, kdf_time, kdf_memory, kdf_threads, wrapped_key FROM keyring WHERE id = 1"

func scanKeyring(row *sql.Row) (*keyring, error) {
	var r keyring
	var t, m, p int64
	if err := row.Scan(&r.kdf, &r.salt, &t, &m, &p, &r.wrapped); err != nil {
		return nil, err
	}
	if t < 0 || t > 1<<32-1 || m < 0 || m > 1<<32-1 || p < 0 || p > 255 {
		return nil, fmt.Errorf("stored key ring: argon2id parameters out of range: %w", ErrSchema)
	}
	r.params = KDFParams{Time: uint32(t), Memory: uint32(m), Threads: uint8(p)}
	return &r, nil
}

// readKeyring returns the key ring, or nil when the store has none yet
// (new database, or created by a keyless Open).
func (s *Store) readKeyring(ctx context.Context) (*keyring, error) {
	ok, err := s.d.tableExists(ctx, s.db, "keyring")
	if err != nil {
		return nil, fmt.Errorf("reading the key ring: %w", err)
	}
	if !ok {
		return nil, nil
	}
	r, err := scanKeyring(s.db.QueryRowContext(ctx, selectKeyring))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the key ring: %w", err)
	}
	return r, nil
}

// initKeyring creates the key ring with a fresh data key, unless another
// process did first, in which case k must unlock that one.
func (s *Store) initKeyring(ctx context.Context, k *Key) (*keys, error) {
	dk := make([]byte, chacha20poly1305.KeySize)
	if _, err := rand.Read(dk); err != nil {
		return nil, fmt.Errorf("reading random data key: %w", err)
	}
	var got *keys
	err := s.withTx(ctx, func(tx *sql.Tx, _ *sql.Conn) error {
		r, err := scanKeyring(tx.QueryRowContext(ctx, selectKeyring))
		switch {
		case err == nil:
			got, err = r.unlock(k)
			return err
		case !errors.Is(err, sql.ErrNoRows):
			return fmt.Errorf("reading the key ring: %w", err)
		}
		var n int
		if err := tx.QueryRowContext(ctx, "SELECT count(*) FROM entries").Scan(&n); err != nil {
			return fmt.Errorf("counting entries: %w", err)
		}
		if n > 0 {
			return fmt.Errorf("the store holds %d entries but no key ring: %w", n, ErrSchema)
		}
		r, err = newKeyring(k, s.kdf, dk)
		if err != nil {
			return err
		}
		t := now()
		if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO keyring (id, kdf, salt, kdf_time, kdf_memory, kdf_threads, wrapped_key, created_at, rotated_at)
			VALUES (1, ?, ?, ?, ?, ?, ?, ?, ?)`), r.kdf, r.salt, int64(r.params.Time), int64(r.params.Memory), int64(r.params.Threads), r.wrapped, t, t); err != nil {
			return fmt.Errorf("writing the key ring: %w", err)
		}
		got = &keys{data: dk}
		s.log.Info("store key ring created", "kdf", r.kdf)
		return nil
	})
	return got, err
}

// Rekey rewraps the data key under newKey in one transaction. The entries
// are sealed under the data key, which never leaves this process, so
// rewrapping is enough to retire the old passphrase or key file; the data
// key itself is not rotated (re-encrypting every entry would be needed
// only if the data key had leaked, and then the PPS values have leaked
// too and the entries should be voided instead).
func (s *Store) Rekey(ctx context.Context, newKey *Key) error {
	if s.keys == nil {
		return fmt.Errorf("rekeying: %w", ErrLocked)
	}
	r, err := newKeyring(newKey, s.kdf, s.keys.data)
	if err != nil {
		return fmt.Errorf("rekeying: %w", err)
	}
	return s.withTx(ctx, func(tx *sql.Tx, _ *sql.Conn) error {
		res, err := tx.ExecContext(ctx, s.q(`UPDATE keyring SET kdf = ?, salt = ?, kdf_time = ?, kdf_memory = ?, kdf_threads = ?, wrapped_key = ?, rotated_at = ? WHERE id = 1`),
			r.kdf, r.salt, int64(r.params.Time), int64(r.params.Memory), int64(r.params.Threads), r.wrapped, now())
		if err != nil {
			return fmt.Errorf("rekeying: %w", err)
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return fmt.Errorf("rekeying: key ring row missing: %w", ErrSchema)
		}
		s.log.Info("store rekeyed", "kdf", r.kdf)
		return nil
	})
}

func statFile(name string) (os.FileInfo, error) { return os.Stat(name) }
