package wsman

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Secret is a password or key string. String, GoString and LogValue print
// REDACTED so a stray %v or slog attribute cannot leak it.
type Secret string

func (Secret) String() string       { return "REDACTED" }
func (Secret) GoString() string     { return "wsman.Secret(REDACTED)" }
func (Secret) LogValue() slog.Value { return slog.StringValue("REDACTED") }
func (s Secret) Reveal() string     { return string(s) }

// HA1 is MD5(username ":" realm ":" password), the value AMT stores for a
// Digest user and the raw bytes behind SetAdminAclEntryEx's DigestPassword.
type HA1 [16]byte

// DigestHA1 computes the HA1 of RFC 2617 §3.2.2.2 for algorithm MD5.
func DigestHA1(username, realm string, password Secret) HA1 {
	return md5.Sum([]byte(username + ":" + realm + ":" + string(password)))
}

func (HA1) String() string       { return "REDACTED" }
func (HA1) LogValue() slog.Value { return slog.StringValue("REDACTED") }

func md5hex(s string) string {
	h := md5.Sum([]byte(s))
	return hex.EncodeToString(h[:])
}

// ---- client ----

// DigestTransport adds HTTP Digest authentication (RFC 2617, MD5, qop=auth,
// or the RFC 2069 form when the server offers no qop) to Base. After the
// first challenge it authenticates every request up front, counting nc per
// nonce; on a 401 it retries once when the server marks the nonce stale or
// sends a new nonce. It is safe for concurrent use.
type DigestTransport struct {
	Base     http.RoundTripper // nil → http.DefaultTransport
	Username string
	Password Secret

	mu sync.Mutex
	ch *challenge
}

type challenge struct {
	realm, nonce, opaque, algorithm string
	qop                             string // "auth" or "" (RFC 2069)
	stale                           bool
	nc                              atomic.Uint32
}

// Realm returns the realm of the last challenge seen, or "".
func (t *DigestTransport) Realm() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.ch == nil {
		return ""
	}
	return t.ch.realm
}

// RoundTrip implements http.RoundTripper.
func (t *DigestTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	base := t.Base
	if base == nil {
		base = http.DefaultTransport
	}
	getBody := req.GetBody
	if req.Body != nil && getBody != nil {
		defer req.Body.Close() // RoundTrip owns the caller's body; we send copies
	}
	if req.Body != nil && req.Body != http.NoBody && getBody == nil {
		b, err := io.ReadAll(req.Body)
		req.Body.Close()
		if err != nil {
			return nil, fmt.Errorf("reading request body for digest replay: %w", err)
		}
		getBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
	}
	send := func(ch *challenge) (*http.Response, error) {
		r := req.Clone(req.Context())
		if getBody != nil {
			body, err := getBody()
			if err != nil {
				return nil, fmt.Errorf("replaying request body: %w", err)
			}
			r.Body = body
		}
		if ch != nil {
			auth, err := t.authorization(ch, r.Method, r.URL.RequestURI())
			if err != nil {
				return nil, err
			}
			r.Header.Set("Authorization", auth)
		}
		return base.RoundTrip(r)
	}

	t.mu.Lock()
	ch := t.ch
	t.mu.Unlock()
	resp, err := send(ch)
	if err != nil || resp.StatusCode != http.StatusUnauthorized {
		return resp, err
	}
	next, perr := parseChallenge(resp.Header.Values("WWW-Authenticate"))
	if perr != nil {
		return resp, nil // not a digest challenge: the caller sees the 401
	}
	if ch != nil && !next.stale && next.nonce == ch.nonce {
		return resp, nil // our credentials were refused
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	t.mu.Lock()
	t.ch = next
	t.mu.Unlock()
	return send(next)
}

func (t *DigestTransport) authorization(ch *challenge, method, uri string) (string, error) {
	if strings.ContainsAny(t.Username, "\"\\\r\n") {
		return "", errors.New("wsman: digest user name holds a quote, backslash or line break")
	}
	ha1 := DigestHA1(t.Username, ch.realm, t.Password)
	ha1hex := hex.EncodeToString(ha1[:])
	ha2hex := md5hex(method + ":" + uri)
	var b strings.Builder
	fmt.Fprintf(&b, `Digest username="%s", realm="%s", nonce="%s", uri="%s"`,
		t.Username, quoteEscape(ch.realm), quoteEscape(ch.nonce), quoteEscape(uri))
	if ch.qop == "" {
		fmt.Fprintf(&b, `, response="%s"`, md5hex(ha1hex+":"+ch.nonce+":"+ha2hex))
	} else {
		nc := fmt.Sprintf("%08x", ch.nc.Add(1))
		cnonce := randomHex(16)
		resp := md5hex(ha1hex + ":" + ch.nonce + ":" + nc + ":" + cnonce + ":" + ch.qop + ":" + ha2hex)
		fmt.Fprintf(&b, `, response="%s", qop=%s, nc=%s, cnonce="%s"`, resp, ch.qop, nc, cnonce)
	}
	if ch.algorithm != "" {
		b.WriteString(", algorithm=" + ch.algorithm)
	}
	if ch.opaque != "" {
		fmt.Fprintf(&b, `, opaque="%s"`, quoteEscape(ch.opaque))
	}
	return b.String(), nil
}

func quoteEscape(s string) string {
	if !strings.ContainsAny(s, "\"\\\r\n") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '"', '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case '\r', '\n':
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// errNoDigest means no usable Digest challenge was offered.
var errNoDigest = errors.New("wsman: no usable Digest challenge")

func parseChallenge(headers []string) (*challenge, error) {
	for _, h := range headers {
		scheme, rest, _ := strings.Cut(strings.TrimSpace(h), " ")
		if !strings.EqualFold(scheme, "Digest") {
			continue
		}
		p := parseAuthParams(rest)
		ch := &challenge{realm: p["realm"], nonce: p["nonce"], opaque: p["opaque"], algorithm: p["algorithm"]}
		if ch.nonce == "" {
			continue
		}
		if a := ch.algorithm; a != "" && !strings.EqualFold(a, "MD5") {
			continue
		}
		ch.stale = strings.EqualFold(p["stale"], "true")
		if q, ok := p["qop"]; ok {
			for _, x := range strings.Split(q, ",") {
				if strings.TrimSpace(x) == "auth" {
					ch.qop = "auth"
				}
			}
			if ch.qop == "" {
				continue // auth-int only: not supported
			}
		}
		return ch, nil
	}
	return nil, errNoDigest
}

// parseAuthParams reads a comma-separated list of key=value or
// key="quoted value" pairs (RFC 2617 §1.2). Keys are lower-cased.
func parseAuthParams(s string) map[string]string {
	m := make(map[string]string)
	for len(s) > 0 {
		s = strings.TrimLeft(s, " \t,")
		eq := strings.IndexByte(s, '=')
		if eq < 0 {
			break
		}
		key := strings.ToLower(strings.TrimSpace(s[:eq]))
		s = strings.TrimLeft(s[eq+1:], " \t")
		var val string
		if strings.HasPrefix(s, `"`) {
			var b strings.Builder
			i := 1
			for ; i < len(s); i++ {
				c := s[i]
				if c == '\\' && i+1 < len(s) {
					i++
					b.WriteByte(s[i])
					continue
				}
				if c == '"' {
					break
				}
				b.WriteByte(c)
			}
			val = b.String()
			if i < len(s) {
				i++
			}
			s = s[i:]
		} else {
			end := strings.IndexByte(s, ',')
			if end < 0 {
				end = len(s)
			}
			val = strings.TrimSpace(s[:end])
			s = s[end:]
		}
		if _, dup := m[key]; !dup {
			m[key] = val
		}
	}
	return m
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// ---- server ----

// CredentialFunc returns the stored HA1 for a user in a realm, or false when
// there is no such user. AMT keeps exactly this value per ACL entry.
type CredentialFunc func(ctx context.Context, username, realm string) (HA1, bool)

// digestVerifier issues nonces and checks Authorization headers.
type digestVerifier struct {
	lifetime time.Duration
	max      int
	now      func() time.Time

	mu     sync.Mutex
	nonces map[string]*nonceState
	order  []string // issue order, for eviction
}

type nonceState struct {
	issued time.Time
	top    uint32 // highest nc seen
	window uint64 // bit i set: nc top-i seen
}

// seen records nc and reports whether it had been used before (or is too
// far behind the highest to tell).
func (n *nonceState) seen(nc uint32) bool {
	switch {
	case nc > n.top:
		shift := nc - n.top
		if shift >= 64 {
			n.window = 0
		} else {
			n.window <<= shift
		}
		n.window |= 1
		n.top = nc
		return false
	case n.top-nc >= 64:
		return true
	default:
		bit := uint64(1) << (n.top - nc)
		if n.window&bit != 0 {
			return true
		}
		n.window |= bit
		return false
	}
}

func (d *digestVerifier) newNonce() string {
	nonce := randomHex(16)
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.nonces == nil {
		d.nonces = make(map[string]*nonceState)
	}
	for len(d.order) >= d.max {
		delete(d.nonces, d.order[0])
		d.order = d.order[1:]
	}
	d.nonces[nonce] = &nonceState{issued: d.now()}
	d.order = append(d.order, nonce)
	return nonce
}

// challengeHeader renders a WWW-Authenticate value with a fresh nonce. The
// nonce is hex so that simple parsers that split on '=' (MeshCentral's)
// read it whole.
func (d *digestVerifier) challengeHeader(realm string, stale bool) string {
	return fmt.Sprintf(`Digest realm="%s", nonce="%s", stale="%t", qop="auth"`, quoteEscape(realm), d.newNonce(), stale)
}

// authResult says why a request was (not) authenticated.
type authResult int

const (
	authOK authResult = iota
	authMissing
	authMalformed
	authBadCredentials
	authStale
	authReplay
)

func (r authResult) String() string {
	return [...]string{"ok", "no credentials", "malformed credentials", "wrong credentials", "stale nonce", "nonce count reused"}[r]
}

func (d *digestVerifier) verify(r *http.Request, realm string, creds CredentialFunc) (string, authResult) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return "", authMissing
	}
	scheme, rest, _ := strings.Cut(h, " ")
	if !strings.EqualFold(scheme, "Digest") {
		return "", authMalformed
	}
	p := parseAuthParams(rest)
	user, nonce, uri, response := p["username"], p["nonce"], p["uri"], p["response"]
	if user == "" || nonce == "" || response == "" || p["realm"] != realm {
		return user, authMalformed
	}
	if a := p["algorithm"]; a != "" && !strings.EqualFold(a, "MD5") {
		return user, authMalformed
	}
	if uri != r.URL.RequestURI() && uri != r.URL.Path {
		return user, authMalformed
	}
	// We offer qop=auth only; a response without qop (RFC 2069) is refused.
	if p["qop"] != "auth" || p["cnonce"] == "" {
		return user, authMalformed
	}
	ncv, err := strconv.ParseUint(p["nc"], 16, 32)
	if err != nil || len(p["nc"]) != 8 || ncv == 0 {
		return user, authMalformed
	}
	ha1, ok := creds(r.Context(), user, realm)
	if !ok {
		return user, authBadCredentials
	}
	ha1hex := hex.EncodeToString(ha1[:])
	want := md5hex(ha1hex + ":" + nonce + ":" + p["nc"] + ":" + p["cnonce"] + ":auth:" + md5hex(r.Method+":"+uri))
	if subtle.ConstantTimeCompare([]byte(want), []byte(strings.ToLower(response))) != 1 {
		return user, authBadCredentials
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	st, ok := d.nonces[nonce]
	if !ok || d.now().Sub(st.issued) > d.lifetime {
		return user, authStale
	}
	if st.seen(uint32(ncv)) {
		return user, authReplay
	}
	return user, authOK
}
