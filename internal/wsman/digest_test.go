package wsman

import (
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// recorder is a RoundTripper that remembers each request's Authorization
// header and each reply's status.
type recorder struct {
	base http.RoundTripper
	mu   sync.Mutex
	auth []string
	code []int
	www  []string
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := r.base.RoundTrip(req)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.auth = append(r.auth, req.Header.Get("Authorization"))
	if err == nil {
		r.code = append(r.code, resp.StatusCode)
		r.www = append(r.www, resp.Header.Get("WWW-Authenticate"))
	}
	return resp, err
}

func (r *recorder) reset() {
	r.mu.Lock()
	r.auth, r.code, r.www = nil, nil, nil
	r.mu.Unlock()
}

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// digestSetup starts the fake AMT with a controllable clock and returns a
// client whose transport records the exchange.
func digestSetup(t *testing.T, pw Secret) (*fakeAMT, *Client, *recorder, *fakeClock, *httptest.Server) {
	t.Helper()
	clock := &fakeClock{t: time.Unix(1700000000, 0)}
	f := newFakeAMT(t, nil, testPassword)
	f.srv.opts.Now = clock.now
	f.srv.digest.now = clock.now
	f.srv.digest.lifetime = time.Minute
	ts := f.start(t)
	rec := &recorder{base: http.DefaultTransport}
	c := newTestClient(t, ts.URL, pw, nil, func(o *Options) { o.HTTPClient = &http.Client{Transport: rec} })
	return f, c, rec, clock, ts
}

func authParam(h, key string) string { return parseAuthParams(strings.TrimPrefix(h, "Digest "))[key] }

func TestDigestNonceCount(t *testing.T) {
	_, c, rec, _, _ := digestSetup(t, testPassword)
	ctx := t.Context()
	for range 3 {
		if _, err := c.GetGeneralSettings(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// First request unauthenticated → 401, then three authenticated.
	if len(rec.auth) != 4 || rec.auth[0] != "" || rec.code[0] != 401 {
		t.Fatalf("exchange: auth %q codes %v", rec.auth, rec.code)
	}
	nonce := authParam(rec.auth[1], "nonce")
	cnonces := map[string]bool{}
	for i, a := range rec.auth[1:] {
		if got, want := authParam(a, "nc"), fmt.Sprintf("%08x", i+1); got != want {
			t.Errorf("request %d: nc = %s, want %s", i+1, got, want)
		}
		if authParam(a, "nonce") != nonce || authParam(a, "qop") != "auth" || authParam(a, "uri") != "/wsman" ||
			authParam(a, "realm") != testRealm || authParam(a, "username") != "admin" {
			t.Errorf("request %d: Authorization %q", i+1, a)
		}
		cnonces[authParam(a, "cnonce")] = true
		if rec.code[i+1] != 200 {
			t.Errorf("request %d: status %d", i+1, rec.code[i+1])
		}
	}
	if len(cnonces) != 3 {
		t.Errorf("cnonces not fresh per request: %v", cnonces)
	}
	if !strings.Contains(rec.www[0], `qop="auth"`) || !strings.Contains(rec.www[0], `realm="`+testRealm+`"`) {
		t.Errorf("challenge %q", rec.www[0])
	}
}

func TestDigestStaleNonce(t *testing.T) {
	_, c, rec, clock, _ := digestSetup(t, testPassword)
	ctx := t.Context()
	if _, err := c.GetGeneralSettings(ctx); err != nil {
		t.Fatal(err)
	}
	first := authParam(rec.auth[1], "nonce")
	rec.reset()
	clock.add(2 * time.Minute)
	if _, err := c.GetGeneralSettings(ctx); err != nil {
		t.Fatalf("after nonce expiry: %v", err)
	}
	if len(rec.code) != 2 || rec.code[0] != 401 || rec.code[1] != 200 {
		t.Fatalf("codes %v", rec.code)
	}
	if !strings.Contains(rec.www[0], `stale="true"`) {
		t.Errorf("expired nonce challenge lacks stale=true: %q", rec.www[0])
	}
	second := authParam(rec.auth[1], "nonce")
	if second == first || authParam(rec.auth[1], "nc") != "00000001" {
		t.Errorf("retry used nonce %q nc %s (first nonce %q)", second, authParam(rec.auth[1], "nc"), first)
	}
}

func TestDigestWrongPassword(t *testing.T) {
	f, c, rec, _, ts := digestSetup(t, "wrong password")
	ctx := t.Context()
	_, err := c.GetGeneralSettings(ctx)
	if !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("err = %v, want ErrUnauthorized", err)
	}
	if len(rec.code) != 2 || rec.code[1] != 401 || strings.Contains(rec.www[1], `stale="true"`) {
		t.Errorf("codes %v challenges %q", rec.code, rec.www)
	}
	// Unknown user.
	c2 := newTestClient(t, ts.URL, testPassword, nil, func(o *Options) { o.Username = "root" })
	if _, err := c2.GetGeneralSettings(ctx); !errors.Is(err, ErrUnauthorized) {
		t.Errorf("unknown user: %v", err)
	}
	// The device still works for the right password.
	c3 := newTestClient(t, ts.URL, testPassword, nil)
	if _, err := c3.GetGeneralSettings(ctx); err != nil {
		t.Errorf("right password after failures: %v", err)
	}
	_ = f
}

func TestDigestRealmChange(t *testing.T) {
	f, c, rec, _, _ := digestSetup(t, testPassword)
	ctx := t.Context()
	if _, err := c.GetGeneralSettings(ctx); err != nil {
		t.Fatal(err)
	}
	const newRealm = "Digest:FEDCBA9876543210FEDCBA9876543210"
	f.mu.Lock()
	f.realm = newRealm
	f.adminHA1 = DigestHA1("admin", newRealm, testPassword)
	f.mu.Unlock()
	f.srv.SetRealm(newRealm)
	rec.reset()
	g, err := c.GetGeneralSettings(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if g.DigestRealm != newRealm || c.Realm() != newRealm || rec.code[0] != 401 {
		t.Errorf("realm %q / %q, codes %v", g.DigestRealm, c.Realm(), rec.code)
	}
}

// rawPost sends one request with a hand-made Authorization header.
func rawPost(t *testing.T, url, auth string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, url+"/wsman", strings.NewReader("<x/>"))
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

func TestDigestServerChecks(t *testing.T) {
	_, _, _, _, ts := digestSetup(t, testPassword)
	resp := rawPost(t, ts.URL, "")
	if resp.StatusCode != 401 {
		t.Fatalf("no auth: %d", resp.StatusCode)
	}
	nonce := authParam(resp.Header.Get("WWW-Authenticate"), "nonce")
	ha1 := DigestHA1("admin", testRealm, testPassword)
	ha1hex := hex.EncodeToString(ha1[:])
	ha2 := md5hex("POST:/wsman")
	withQop := func(nc, cnonce string) string {
		r := md5hex(ha1hex + ":" + nonce + ":" + nc + ":" + cnonce + ":auth:" + ha2)
		return fmt.Sprintf(`Digest username="admin", realm="%s", nonce="%s", uri="/wsman", response="%s", qop=auth, nc=%s, cnonce="%s"`, testRealm, nonce, r, nc, cnonce)
	}
	rfc2069 := func() string {
		r := md5hex(ha1hex + ":" + nonce + ":" + ha2)
		return fmt.Sprintf(`Digest username="admin", realm="%s", nonce="%s", uri="/wsman", response="%s"`, testRealm, nonce, r)
	}
	tests := []struct {
		name string
		auth string
		want int
	}{
		{"valid nc 1", withQop("00000001", "abc"), 400}, // authenticated; body "<x/>" is no envelope → fault
		{"replayed nc 1", withQop("00000001", "abc"), 401},
		{"nc 3 skips 2", withQop("00000003", "abd"), 400},
		{"late nc 2 inside window", withQop("00000002", "abe"), 400},
		{"nc 2 again", withQop("00000002", "abe"), 401},
		{"missing qop (RFC 2069)", rfc2069(), 401},
		{"nc not 8 hex digits", strings.Replace(withQop("00000009", "x"), "nc=00000009", "nc=9", 1), 401},
		{"wrong uri", strings.Replace(withQop("0000000a", "x"), `uri="/wsman"`, `uri="/other"`, 1), 401},
		{"basic scheme", "Basic YWRtaW46cGFzcw==", 401},
		{"tampered response", strings.Replace(withQop("0000000b", "x"), `response="`, `response="0`, 1), 401},
		{"algorithm SHA-256", withQop("0000000c", "x") + ", algorithm=SHA-256", 401},
	}
	for _, tt := range tests {
		resp := rawPost(t, ts.URL, tt.auth)
		if resp.StatusCode != tt.want {
			t.Errorf("%s: status %d, want %d", tt.name, resp.StatusCode, tt.want)
		}
		if resp.StatusCode == 401 && authParam(resp.Header.Get("WWW-Authenticate"), "nonce") == "" {
			t.Errorf("%s: 401 without a fresh challenge", tt.name)
		}
	}
}

// TestDigestClientWithoutQop checks the client against a server that
// offers the RFC 2069 form (no qop): no nc or cnonce, response over
// HA1:nonce:HA2.
func TestDigestClientWithoutQop(t *testing.T) {
	const realm = "Digest:00000000000000000000000000000000"
	var mu sync.Mutex
	var seen []string
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a := r.Header.Get("Authorization")
		mu.Lock()
		seen = append(seen, a)
		mu.Unlock()
		p := parseAuthParams(strings.TrimPrefix(a, "Digest "))
		ha1 := md5.Sum([]byte("admin:" + realm + ":" + string(testPassword)))
		want := md5hex(hex.EncodeToString(ha1[:]) + ":n1:" + md5hex("POST:/wsman"))
		if a == "" || p["response"] != want || p["qop"] != "" || p["nc"] != "" {
			w.Header().Set("WWW-Authenticate", `Digest realm="`+realm+`", nonce="n1"`)
			w.WriteHeader(401)
			return
		}
		w.WriteHeader(204)
	}))
	defer ts.Close()
	dt := &DigestTransport{Username: "admin", Password: testPassword}
	hc := &http.Client{Transport: dt}
	for range 2 {
		resp, err := hc.Post(ts.URL+"/wsman", "text/plain", strings.NewReader("body"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 204 {
			t.Fatalf("status %d; headers sent %q", resp.StatusCode, seen)
		}
	}
	if len(seen) != 3 {
		t.Errorf("requests %q, want one challenge then two authenticated", seen)
	}
}

func TestDigestNoChallenge(t *testing.T) {
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("WWW-Authenticate", `Basic realm="x"`)
		w.WriteHeader(401)
	}))
	defer ts.Close()
	c := newTestClient(t, ts.URL, testPassword, nil)
	if _, err := c.GetGeneralSettings(t.Context()); !errors.Is(err, ErrUnauthorized) {
		t.Errorf("err = %v", err)
	}
}

func TestDigestConcurrent(t *testing.T) {
	_, c, rec, _, _ := digestSetup(t, testPassword)
	ctx := t.Context()
	var wg sync.WaitGroup
	errs := make(chan error, 80)
	for range 8 {
		wg.Go(func() {
			for range 10 {
				if _, err := c.GetGeneralSettings(ctx); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	seen := map[string]bool{}
	for _, a := range rec.auth {
		if a == "" {
			continue
		}
		k := authParam(a, "nonce") + "/" + authParam(a, "nc")
		if seen[k] {
			t.Errorf("nonce/nc %s used twice", k)
		}
		seen[k] = true
	}
}

func TestParseAuthParams(t *testing.T) {
	got := parseAuthParams(`realm="Digest:AB, CD", nonce="a\"b", qop="auth,auth-int", stale=TRUE, nc=00000001 ,opaque=""`)
	want := map[string]string{"realm": "Digest:AB, CD", "nonce": `a"b`, "qop": "auth,auth-int", "stale": "TRUE", "nc": "00000001", "opaque": ""}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("got %v, want %v", got, want)
	}
	ch, err := parseChallenge([]string{`Basic realm="x"`, `Digest realm="r", nonce="n", qop="auth-int, auth", stale=true`})
	if err != nil || ch.qop != "auth" || !ch.stale || ch.realm != "r" {
		t.Errorf("challenge %+v, %v", ch, err)
	}
	if _, err := parseChallenge([]string{`Digest realm="r", nonce="n", qop="auth-int"`}); err == nil {
		t.Errorf("auth-int-only challenge accepted")
	}
	if _, err := parseChallenge([]string{`Digest realm="r", nonce="n", algorithm=SHA-256`}); err == nil {
		t.Errorf("SHA-256 challenge accepted")
	}
}

func TestNonceWindow(t *testing.T) {
	var n nonceState
	steps := []struct {
		nc   uint32
		seen bool
	}{{1, false}, {1, true}, {3, false}, {2, false}, {2, true}, {100, false}, {36, true}, {37, false}, {37, true}, {30, true}, {101, false}}
	for _, s := range steps {
		if got := n.seen(s.nc); got != s.seen {
			t.Errorf("nc %d: seen = %v, want %v", s.nc, got, s.seen)
		}
	}
}
