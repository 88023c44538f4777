package web

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/argon2"
)

// ErrHashFormat: a password hash is not an argon2id PHC string this
// package accepts.
var ErrHashFormat = errors.New("web: malformed argon2id password hash")

// HashParams are argon2id's cost parameters.
type HashParams struct {
	Time    uint32 // passes
	Memory  uint32 // KiB
	Threads uint8
}

// DefaultHashParams: 64 MiB, 3 passes, 2 lanes (about 100 ms on a laptop).
var DefaultHashParams = HashParams{Time: 3, Memory: 64 * 1024, Threads: 2}

// Bounds on parameters read from a hash string, so that a configuration
// cannot make a login allocate without limit.
const (
	maxHashMemory  = 1 << 20 // KiB (1 GiB)
	maxHashTime    = 64
	minSaltLen     = 8
	maxSaltLen     = 64
	minKeyLen      = 16
	maxKeyLen      = 64
	saltLen        = 16
	keyLen         = 32
	maxPasswordLen = 1024
)

// phc is a parsed "$argon2id$v=19$m=...,t=...,p=...$salt$hash" string.
type phc struct {
	p    HashParams
	salt []byte
	key  []byte
}

func (h *phc) String() string {
	b64 := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, h.p.Memory, h.p.Time, h.p.Threads,
		b64.EncodeToString(h.salt), b64.EncodeToString(h.key))
}

// HashPassword hashes a password with argon2id and DefaultHashParams and
// returns the PHC string to put in the configuration.
func HashPassword(password string) (string, error) {
	return HashPasswordParams(password, DefaultHashParams)
}

// HashPasswordParams is HashPassword with chosen costs.
func HashPasswordParams(password string, p HashParams) (string, error) {
	if password == "" || len(password) > maxPasswordLen {
		return "", fmt.Errorf("hashing a password: want 1 to %d bytes", maxPasswordLen)
	}
	if p.Time < 1 || p.Time > maxHashTime || p.Memory < 8*uint32(max(p.Threads, 1)) || p.Memory > maxHashMemory || p.Threads < 1 {
		return "", fmt.Errorf("hashing a password: parameters t=%d m=%d p=%d out of range", p.Time, p.Memory, p.Threads)
	}
	salt := make([]byte, saltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("hashing a password: reading a salt: %w", err)
	}
	h := &phc{p: p, salt: salt, key: argon2.IDKey([]byte(password), salt, p.Time, p.Memory, p.Threads, keyLen)}
	return h.String(), nil
}

// parsePHC reads an argon2id PHC string. Errors name the field, never the
// salt or hash bytes.
func parsePHC(s string) (*phc, error) {
	parts := strings.Split(s, "$")
	if len(parts) != 6 || parts[0] != "" {
		return nil, fmt.Errorf("%w: want $argon2id$v=19$m=,t=,p=$salt$hash", ErrHashFormat)
	}
	if parts[1] != "argon2id" {
		return nil, fmt.Errorf("%w: algorithm %q, want argon2id", ErrHashFormat, truncate(parts[1], 20))
	}
	if parts[2] != "v="+strconv.Itoa(argon2.Version) {
		return nil, fmt.Errorf("%w: version field %q, want v=%d", ErrHashFormat, truncate(parts[2], 20), argon2.Version)
	}
	h := &phc{}
	seen := map[string]bool{}
	for kv := range strings.SplitSeq(parts[3], ",") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || seen[k] {
			return nil, fmt.Errorf("%w: parameters %q", ErrHashFormat, truncate(parts[3], 40))
		}
		seen[k] = true
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("%w: parameter %s=%q", ErrHashFormat, truncate(k, 8), truncate(v, 12))
		}
		switch k {
		case "m":
			h.p.Memory = uint32(n)
		case "t":
			h.p.Time = uint32(n)
		case "p":
			if n > 255 {
				return nil, fmt.Errorf("%w: p=%d out of range 1..255", ErrHashFormat, n)
			}
			h.p.Threads = uint8(n)
		default:
			return nil, fmt.Errorf("%w: unknown parameter %q", ErrHashFormat, truncate(k, 8))
		}
	}
	if !seen["m"] || !seen["t"] || !seen["p"] {
		return nil, fmt.Errorf("%w: want m, t and p", ErrHashFormat)
	}
	if h.p.Time < 1 || h.p.Time > maxHashTime {
		return nil, fmt.Errorf("%w: t=%d out of range 1..%d", ErrHashFormat, h.p.Time, maxHashTime)
	}
	if h.p.Threads < 1 {
		return nil, fmt.Errorf("%w: p=0", ErrHashFormat)
	}
	if h.p.Memory < 8*uint32(h.p.Threads) || h.p.Memory > maxHashMemory {
		return nil, fmt.Errorf("%w: m=%d out of range %d..%d", ErrHashFormat, h.p.Memory, 8*uint32(h.p.Threads), maxHashMemory)
	}
	var err error
	if h.salt, err = base64.RawStdEncoding.Strict().DecodeString(parts[4]); err != nil || len(h.salt) < minSaltLen || len(h.salt) > maxSaltLen {
		return nil, fmt.Errorf("%w: salt: want %d to %d bytes of unpadded base64", ErrHashFormat, minSaltLen, maxSaltLen)
	}
	if h.key, err = base64.RawStdEncoding.Strict().DecodeString(parts[5]); err != nil || len(h.key) < minKeyLen || len(h.key) > maxKeyLen {
		return nil, fmt.Errorf("%w: hash: want %d to %d bytes of unpadded base64", ErrHashFormat, minKeyLen, maxKeyLen)
	}
	return h, nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// verify reports whether password matches, in time independent of where
// the bytes differ.
func (h *phc) verify(password string) bool {
	if len(password) > maxPasswordLen {
		return false
	}
	k := argon2.IDKey([]byte(password), h.salt, h.p.Time, h.p.Memory, h.p.Threads, uint32(len(h.key)))
	return subtle.ConstantTimeCompare(k, h.key) == 1
}

// VerifyPassword reports whether password matches a PHC string from
// HashPassword; a malformed hash is an error wrapping ErrHashFormat.
func VerifyPassword(hash, password string) (bool, error) {
	h, err := parsePHC(hash)
	if err != nil {
		return false, err
	}
	return h.verify(password), nil
}

// randomPassword draws n characters from an alphabet without look-alikes.
func randomPassword(n int) (string, error) {
	const alphabet = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
	b := make([]byte, n)
	for i := range b {
		var r [1]byte
		for {
			if _, err := rand.Read(r[:]); err != nil {
				return "", fmt.Errorf("generating a password: %w", err)
			}
			if int(r[0]) < 256-256%len(alphabet) {
				break
			}
		}
		b[i] = alphabet[int(r[0])%len(alphabet)]
	}
	return string(b), nil
}

// randomToken is 32 random bytes, base64url.
func randomToken() string {
	b := make([]byte, 32)
	rand.Read(b) // never fails (crypto/rand)
	return base64.RawURLEncoding.EncodeToString(b)
}

// session is a logged-in browser.
type session struct {
	user     string
	csrf     string
	expires  time.Time
	flash    *ImportResult // shown once after a ledger upload
	flashErr string
}

// maxSessions bounds the sessions kept; the oldest are dropped first.
const maxSessions = 1024

type sessions struct {
	mu  sync.Mutex
	m   map[string]*session
	now func() time.Time
	ttl time.Duration
}

func newSessions(now func() time.Time, ttl time.Duration) *sessions {
	return &sessions{m: map[string]*session{}, now: now, ttl: ttl}
}

func (ss *sessions) create(user string) (string, *session) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	t := ss.now()
	if len(ss.m) >= maxSessions {
		var oldest string
		var ot time.Time
		for id, s := range ss.m {
			if !s.expires.After(t) {
				delete(ss.m, id)
				continue
			}
			if oldest == "" || s.expires.Before(ot) {
				oldest, ot = id, s.expires
			}
		}
		if len(ss.m) >= maxSessions {
			delete(ss.m, oldest)
		}
	}
	id := randomToken()
	s := &session{user: user, csrf: randomToken(), expires: t.Add(ss.ttl)}
	ss.m[id] = s
	return id, s
}

// get returns a copy of the live session with id.
func (ss *sessions) get(id string) (session, bool) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	s, ok := ss.m[id]
	if !ok {
		return session{}, false
	}
	if !s.expires.After(ss.now()) {
		delete(ss.m, id)
		return session{}, false
	}
	return *s, true
}

// update runs f on the live session with id.
func (ss *sessions) update(id string, f func(*session)) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if s, ok := ss.m[id]; ok {
		f(s)
	}
}

func (ss *sessions) delete(id string) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	delete(ss.m, id)
}

// loginLimiter counts failed logins per client address.
type loginLimiter struct {
	mu     sync.Mutex
	m      map[string]*failures
	now    func() time.Time
	limit  int
	window time.Duration
}

type failures struct {
	n     int
	start time.Time
}

// maxLimited bounds the addresses tracked; when full, expired windows are
// dropped and, if none, new addresses share one bucket.
const maxLimited = 4096

func newLoginLimiter(now func() time.Time, limit int, window time.Duration) *loginLimiter {
	return &loginLimiter{m: map[string]*failures{}, now: now, limit: limit, window: window}
}

func (l *loginLimiter) key(addr string) string {
	if _, ok := l.m[addr]; ok || len(l.m) < maxLimited {
		return addr
	}
	t := l.now()
	for a, f := range l.m {
		if t.Sub(f.start) >= l.window {
			delete(l.m, a)
		}
	}
	if len(l.m) < maxLimited {
		return addr
	}
	return "overflow"
}

// blocked returns how long addr must wait, 0 if it may try.
func (l *loginLimiter) blocked(addr string) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	k := l.key(addr)
	f, ok := l.m[k]
	if !ok {
		return 0
	}
	left := l.window - l.now().Sub(f.start)
	if left <= 0 {
		delete(l.m, k)
		return 0
	}
	if f.n >= l.limit {
		return left
	}
	return 0
}

func (l *loginLimiter) fail(addr string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	k := l.key(addr)
	t := l.now()
	f, ok := l.m[k]
	if !ok || t.Sub(f.start) >= l.window {
		f = &failures{start: t}
		l.m[k] = f
	}
	f.n++
}

func (l *loginLimiter) succeed(addr string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.m, addr)
}
