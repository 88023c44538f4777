package web

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/provstick/provstick/kiosk/ca"
	"github.com/provstick/provstick/kiosk/store"
)

var (
	testKDF  = store.KDFParams{Time: 1, Memory: 1024, Threads: 1}
	testHash = HashParams{Time: 1, Memory: 64, Threads: 1}
)

const (
	testPassword = "correct horse battery staple"
	testToken    = "test-api-token-0123456789abcdef0123456789abcdef"
	testUUID0    = "939b524b-13d4-1d18-e487-1c697a6b0001"
	testUUID1    = "939b524b-13d4-1d18-e487-1c697a6b0002"
)

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// fakeReconciler keeps discrepancies in memory; ImportLedger turns each
// line "PID UUID" of the upload into an "unknown-pid" finding, and a line
// "garbage" into an error.
type fakeReconciler struct {
	mu sync.Mutex
	ds []Discrepancy
}

func (f *fakeReconciler) Discrepancies(context.Context) ([]Discrepancy, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Discrepancy(nil), f.ds...), nil
}

func (f *fakeReconciler) ImportLedger(_ context.Context, name string, r io.Reader) (ImportResult, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return ImportResult{}, err
	}
	res := ImportResult{Stick: "stick-from-" + name}
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if line == "garbage" {
			return ImportResult{}, fmt.Errorf("line %d: not a ledger record", i+1)
		}
		pid, uuid, _ := strings.Cut(line, " ")
		res.Records++
		res.New++
		res.Discrepancies++
		f.ds = append(f.ds, Discrepancy{Kind: "unknown-pid", Severity: "warning", Summary: "hello from PID " + pid + " that no ledger names",
			Detail: "seen in " + name, Advice: "return the stick and import its ledger", PID: pid, UUIDs: []string{uuid}, At: time.Now()})
	}
	return res, nil
}

// fixture is a store with a stick of four records, two machines (one
// provisioned, one failed) and a console over it.
type fixture struct {
	t       *testing.T
	s       *store.Store
	entries []store.Entry
	srv     *Server
	rec     *fakeReconciler
	ca      *ca.CA
}

func newFixture(t *testing.T, mod func(*Options)) *fixture {
	t.Helper()
	ctx := t.Context()
	s, err := store.Open(ctx, filepath.Join(t.TempDir(), "pool.db"), &store.Options{Key: store.Passphrase([]byte("pw")), KDF: testKDF, Station: "kiosk-a", Actor: "kiosk"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if _, err := s.Generate(ctx, store.GenerateSpec{Count: 4, Profile: "amt6-10"}); err != nil {
		t.Fatal(err)
	}
	_, es, err := s.AllocateStick(ctx, store.StickSpec{Label: "line-1", Recipe: "default", Count: 4, Profile: "amt6-10"})
	if err != nil {
		t.Fatal(err)
	}
	for i, u := range []string{testUUID0, testUUID1} {
		if err := s.Consume(ctx, es[i].PID, store.Machine{UUID: u, DMISerial: fmt.Sprintf("SN-%d", i), DMIModel: "OptiPlex 9020"}, "ledger import"); err != nil {
			t.Fatal(err)
		}
		if err := s.HelloSeen(ctx, es[i].PID); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Provisioned(ctx, es[0].PID); err != nil {
		t.Fatal(err)
	}
	if err := s.Fail(ctx, es[1].PID, "device unreachable"); err != nil {
		t.Fatal(err)
	}
	if err := s.RecordHellos(ctx, []store.HelloRecord{{At: time.Now(), Peer: "127.0.0.1:40000", UUID: testUUID0, PID: es[0].PID.String(), Version: 2, Outcome: "queued"}}); err != nil {
		t.Fatal(err)
	}
	c, err := ca.Open(ctx, s, ca.Options{NotFound: store.ErrNotFound})
	if err != nil {
		t.Fatal(err)
	}
	hash, err := HashPasswordParams(testPassword, testHash)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(testToken))
	rec := &fakeReconciler{}
	o := Options{
		Store: s, Reconciler: rec, AdminPasswordHash: hash, APITokenSHA256: hex.EncodeToString(sum[:]),
		PlainHTTP: true, CA: c, Logger: testLogger(t), LiveInterval: 50 * time.Millisecond,
		Counters: func() Counters {
			return Counters{HellosReceived: 7, HellosPSK: 5, HellosMalformed: 2, Workers: 16, WorkersBusy: 1, Results: map[string]uint64{"provisioned": 1}}
		},
		Settings: []Setting{NewSetting("store.dsn", "postgres://kiosk:dbsecret@127.0.0.1/pool"), NewSetting("kiosk.master_secret", "mastersecret-xyz"),
			NewSetting("web.admin_password_hash", hash), NewSetting("kiosk.hello_listen", ":9971")},
	}
	if mod != nil {
		mod(&o)
	}
	srv, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{t: t, s: s, entries: es, srv: srv, rec: rec, ca: c}
}

// client is a browser-like session against the handler: it keeps cookies
// by hand (the handler test has no TLS, and the cookies are Secure).
type client struct {
	t       *testing.T
	h       http.Handler
	cookies map[string]string
	csrf    string
}

func (f *fixture) client() *client {
	return &client{t: f.t, h: f.srv, cookies: map[string]string{}}
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func (c *client) do(req *http.Request) *httptest.ResponseRecorder {
	c.t.Helper()
	for k, v := range c.cookies {
		req.AddCookie(&http.Cookie{Name: k, Value: v})
	}
	if req.RemoteAddr == "" || req.RemoteAddr == "192.0.2.1:1234" {
		req.RemoteAddr = "127.0.0.1:5555"
	}
	w := httptest.NewRecorder()
	c.h.ServeHTTP(w, req)
	for _, ck := range w.Result().Cookies() {
		if ck.MaxAge < 0 {
			delete(c.cookies, ck.Name)
		} else {
			c.cookies[ck.Name] = ck.Value
		}
	}
	if m := csrfRE.FindStringSubmatch(w.Body.String()); m != nil {
		c.csrf = m[1]
	}
	return w
}

func (c *client) get(path string) *httptest.ResponseRecorder {
	return c.do(httptest.NewRequest("GET", path, nil))
}

func (c *client) postForm(path string, v url.Values) *httptest.ResponseRecorder {
	req := httptest.NewRequest("POST", path, strings.NewReader(v.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return c.do(req)
}

func (c *client) login(user, pw string) *httptest.ResponseRecorder {
	c.t.Helper()
	if w := c.get("/login"); w.Code != 200 {
		c.t.Fatalf("GET /login: %d", w.Code)
	}
	return c.postForm("/login", url.Values{"csrf": {c.csrf}, "user": {user}, "password": {pw}, "next": {"/machines"}})
}

func (f *fixture) loggedIn() *client {
	c := f.client()
	if w := c.login("admin", testPassword); w.Code != http.StatusSeeOther {
		f.t.Fatalf("login: %d %s", w.Code, w.Body)
	}
	if w := c.get("/"); w.Code != 200 {
		f.t.Fatalf("dashboard after login: %d", w.Code)
	}
	return c
}

func TestLoginLogout(t *testing.T) {
	f := newFixture(t, nil)
	c := f.client()
	w := c.get("/machines?q=x")
	if w.Code != http.StatusSeeOther || w.Header().Get("Location") != "/login?next="+url.QueryEscape("/machines?q=x") {
		t.Fatalf("anonymous GET: %d → %q", w.Code, w.Header().Get("Location"))
	}
	if w := c.login("admin", "wrong"); w.Code != http.StatusUnauthorized || !strings.Contains(w.Body.String(), "Wrong user name or password") {
		t.Fatalf("wrong password: %d", w.Code)
	}
	if w := c.login("root", testPassword); w.Code != http.StatusUnauthorized {
		t.Fatalf("wrong user: %d", w.Code)
	}
	w = c.login("admin", testPassword)
	if w.Code != http.StatusSeeOther || w.Header().Get("Location") != "/machines" {
		t.Fatalf("login: %d → %q", w.Code, w.Header().Get("Location"))
	}
	var sess *http.Cookie
	for _, ck := range w.Result().Cookies() {
		if ck.Name == sessionCookie {
			sess = ck
		}
	}
	if sess == nil || !sess.HttpOnly || !sess.Secure || sess.SameSite != http.SameSiteStrictMode || sess.Path != "/" || sess.Domain != "" || len(sess.Value) < 40 || sess.MaxAge <= 0 {
		t.Fatalf("session cookie: %+v", sess)
	}
	if w := c.get("/machines"); w.Code != 200 || !strings.Contains(w.Body.String(), testUUID0) {
		t.Fatalf("machines after login: %d", w.Code)
	}
	// Logout needs the token.
	if w := c.postForm("/logout", nil); w.Code != http.StatusForbidden {
		t.Fatalf("logout without CSRF token: %d", w.Code)
	}
	old := c.cookies[sessionCookie]
	if w := c.postForm("/logout", url.Values{"csrf": {c.csrf}}); w.Code != http.StatusSeeOther {
		t.Fatalf("logout: %d", w.Code)
	}
	c.cookies[sessionCookie] = old // a stolen copy of the cookie is dead too
	if w := c.get("/"); w.Code != http.StatusSeeOther {
		t.Fatalf("after logout: %d", w.Code)
	}
	// The next parameter cannot leave the site.
	for _, n := range []string{"//evil.example/", "https://evil.example/", "/\\evil.example", "/ok\nx"} {
		if got := safeNext(n); got != "/" {
			t.Errorf("safeNext(%q) = %q", n, got)
		}
	}
}

func TestSessionExpiry(t *testing.T) {
	var mu sync.Mutex
	now := time.Now()
	f := newFixture(t, func(o *Options) {
		o.SessionTTL = time.Hour
		o.Now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	})
	c := f.loggedIn()
	mu.Lock()
	now = now.Add(time.Hour + time.Second)
	mu.Unlock()
	if w := c.get("/"); w.Code != http.StatusSeeOther {
		t.Fatalf("expired session: %d", w.Code)
	}
}

func TestLoginCSRF(t *testing.T) {
	f := newFixture(t, nil)
	c := f.client()
	c.get("/login")
	v := url.Values{"user": {"admin"}, "password": {testPassword}}
	if w := c.postForm("/login", v); w.Code != http.StatusForbidden {
		t.Errorf("login without token: %d", w.Code)
	}
	v.Set("csrf", "forged")
	if w := c.postForm("/login", v); w.Code != http.StatusForbidden {
		t.Errorf("login with a token not matching the cookie: %d", w.Code)
	}
	// A cross-site form post is refused before anything else.
	c.get("/login")
	v.Set("csrf", c.csrf)
	req := httptest.NewRequest("POST", "/login", strings.NewReader(v.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	req.Header.Set("Origin", "https://evil.example")
	if w := c.do(req); w.Code != http.StatusForbidden {
		t.Errorf("cross-site login: %d", w.Code)
	}
}

func TestLoginRateLimit(t *testing.T) {
	f := newFixture(t, func(o *Options) { o.LoginFailures = 3 })
	c := f.client()
	for i := range 3 {
		if w := c.login("admin", "nope"); w.Code != http.StatusUnauthorized {
			t.Fatalf("failure %d: %d", i, w.Code)
		}
	}
	w := c.login("admin", testPassword)
	if w.Code != http.StatusTooManyRequests || w.Header().Get("Retry-After") == "" {
		t.Fatalf("after 3 failures: %d, Retry-After %q", w.Code, w.Header().Get("Retry-After"))
	}
	// Another address is not affected.
	c2 := f.client()
	c2.get("/login")
	req := httptest.NewRequest("POST", "/login", strings.NewReader(url.Values{"csrf": {c2.csrf}, "user": {"admin"}, "password": {testPassword}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.RemoteAddr = "127.0.0.2:5555"
	if w := c2.do(req); w.Code != http.StatusSeeOther {
		t.Fatalf("other address: %d", w.Code)
	}
}

func multipartBody(t *testing.T, fields map[string]string, name string, content []byte) (*bytes.Buffer, string) {
	var b bytes.Buffer
	mw := multipart.NewWriter(&b)
	for k, v := range fields {
		mw.WriteField(k, v)
	}
	fw, err := mw.CreateFormFile("ledger", name)
	if err != nil {
		t.Fatal(err)
	}
	fw.Write(content)
	mw.Close()
	return &b, mw.FormDataContentType()
}

func TestCSRFOnStateChanges(t *testing.T) {
	f := newFixture(t, nil)
	c := f.loggedIn()
	ledger := []byte("ABCD1234 " + testUUID1 + "\n")

	post := func(path string, fields map[string]string, hdr map[string]string) int {
		body, ct := multipartBody(t, fields, "ledger.jsonl", ledger)
		req := httptest.NewRequest("POST", path, body)
		req.Header.Set("Content-Type", ct)
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		return c.do(req).Code
	}
	for _, tc := range []struct {
		name   string
		path   string
		fields map[string]string
		hdr    map[string]string
		want   int
	}{
		{"page, no token", "/discrepancies/import", nil, nil, http.StatusForbidden},
		{"page, wrong token", "/discrepancies/import", map[string]string{"csrf": "x" + c.csrf}, nil, http.StatusForbidden},
		{"page, cross-site", "/discrepancies/import", map[string]string{"csrf": c.csrf}, map[string]string{"Sec-Fetch-Site": "cross-site"}, http.StatusForbidden},
		{"page, other origin", "/discrepancies/import", map[string]string{"csrf": c.csrf}, map[string]string{"Origin": "http://evil.example"}, http.StatusForbidden},
		{"api session, no token", "/api/v1/ledgers", nil, nil, http.StatusForbidden},
		{"api session, header token", "/api/v1/ledgers", nil, map[string]string{csrfHeader: c.csrf}, http.StatusOK},
		{"page, same origin", "/discrepancies/import", map[string]string{"csrf": c.csrf}, map[string]string{"Origin": "http://example.com", "Sec-Fetch-Site": "same-origin"}, http.StatusSeeOther},
	} {
		if got := post(tc.path, tc.fields, tc.hdr); got != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, got, tc.want)
		}
	}
	if ds, _ := f.rec.Discrepancies(t.Context()); len(ds) != 2 {
		t.Errorf("%d imports reached the reconciler, want 2", len(ds))
	}
	// A bearer token needs no CSRF token, and no cookie.
	body, ct := multipartBody(t, nil, "l.jsonl", ledger)
	req := httptest.NewRequest("POST", "/api/v1/ledgers", body)
	req.Header.Set("Content-Type", ct)
	req.Header.Set("Authorization", "Bearer "+testToken)
	w := httptest.NewRecorder()
	f.srv.ServeHTTP(w, req)
	if w.Code != http.StatusOK {
		t.Errorf("API token upload: %d %s", w.Code, w.Body)
	}
	// A GET never changes anything, so it needs no token.
	if w := c.get("/discrepancies"); w.Code != 200 {
		t.Errorf("GET: %d", w.Code)
	}
}

func TestLedgerUpload(t *testing.T) {
	f := newFixture(t, func(o *Options) { o.MaxLedgerBytes = 1024 })
	c := f.loggedIn()
	upload := func(content []byte) *httptest.ResponseRecorder {
		body, ct := multipartBody(t, map[string]string{"csrf": c.csrf}, `..\..\evil/ledger<b>.jsonl`, content)
		req := httptest.NewRequest("POST", "/discrepancies/import", body)
		req.Header.Set("Content-Type", ct)
		return c.do(req)
	}
	if w := upload([]byte("ABCD1234 " + testUUID1 + "\n")); w.Code != http.StatusSeeOther || w.Header().Get("Location") != "/discrepancies" {
		t.Fatalf("upload: %d → %q", w.Code, w.Header().Get("Location"))
	}
	page := c.get("/discrepancies").Body.String()
	if !strings.Contains(page, `id="import-result"`) || !strings.Contains(page, "ledger&lt;b&gt;.jsonl") || strings.Contains(page, "<b>") {
		t.Errorf("result not shown (or name not escaped):\n%s", page)
	}
	if strings.Contains(c.get("/discrepancies").Body.String(), `id="import-result"`) {
		t.Error("the result is shown twice")
	}
	ds, _ := f.rec.Discrepancies(t.Context())
	id := withIDs(ds)[0].ID
	if w := c.get("/discrepancies/" + id); w.Code != 200 || !strings.Contains(w.Body.String(), "return the stick") || !strings.Contains(w.Body.String(), "/machines/"+testUUID1) {
		t.Errorf("discrepancy page: %d\n%s", w.Code, w.Body)
	}
	if w := c.get("/discrepancies/nope"); w.Code != 404 {
		t.Errorf("unknown discrepancy: %d", w.Code)
	}
	for _, tc := range []struct {
		name, content, want string
	}{
		{"oversize", strings.Repeat("x", 2000), "larger than 1 KiB"},
		{"malformed", "garbage\n", "not a ledger record"},
		{"empty", "", "is empty"},
	} {
		if w := upload([]byte(tc.content)); w.Code != http.StatusSeeOther {
			t.Errorf("%s: %d", tc.name, w.Code)
		}
		if p := c.get("/discrepancies").Body.String(); !strings.Contains(p, `id="import-error"`) || !strings.Contains(p, tc.want) {
			t.Errorf("%s: error not shown", tc.name)
		}
	}
	// Over the transport cap: the body reader stops.
	big := bytes.Repeat([]byte("y"), 200<<10)
	body, ct := multipartBody(t, nil, "big", big)
	req := httptest.NewRequest("POST", "/api/v1/ledgers", body)
	req.Header.Set("Content-Type", ct)
	req.Header.Set("Authorization", "Bearer "+testToken)
	w := httptest.NewRecorder()
	f.srv.ServeHTTP(w, req)
	if w.Code != http.StatusBadRequest && w.Code != http.StatusRequestEntityTooLarge {
		t.Errorf("huge upload: %d %s", w.Code, w.Body)
	}
}

func apiGet(t *testing.T, h http.Handler, path string, v any) int {
	t.Helper()
	req := httptest.NewRequest("GET", path, nil)
	req.Header.Set("Authorization", "Bearer "+testToken)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	if v != nil && w.Code == 200 {
		if ct := w.Header().Get("Content-Type"); ct != "application/json" {
			t.Errorf("%s: Content-Type %q", path, ct)
		}
		if err := json.Unmarshal(w.Body.Bytes(), v); err != nil {
			t.Fatalf("%s: %v\n%s", path, err, w.Body)
		}
	}
	return w.Code
}

func TestAPIShapes(t *testing.T) {
	f := newFixture(t, nil)
	h := f.srv
	pid0 := f.entries[0].PID.Display()

	var d struct {
		States []struct {
			State string `json:"state"`
			N     int64  `json:"n"`
		} `json:"states"`
		Machines      int64            `json:"machines"`
		Hellos        int64            `json:"hellos"`
		Discrepancies int              `json:"discrepancies"`
		Counters      map[string]any   `json:"counters"`
		Recent        []map[string]any `json:"recent"`
	}
	if c := apiGet(t, h, "/api/v1/dashboard", &d); c != 200 {
		t.Fatalf("dashboard: %d", c)
	}
	got := map[string]int64{}
	for _, s := range d.States {
		got[s.State] = s.N
	}
	if len(d.States) != len(store.States) || got["provisioned"] != 1 || got["failed"] != 1 || got["allocated"] != 2 || d.Machines != 2 || d.Hellos != 1 || d.Discrepancies != 0 {
		t.Errorf("dashboard: %+v", d)
	}
	if d.Counters["workers_busy"] != float64(1) || len(d.Recent) == 0 || d.Recent[0]["to"] != "failed" {
		t.Errorf("dashboard counters/recent: %+v %+v", d.Counters, d.Recent)
	}

	var ml struct {
		Machines []map[string]any `json:"machines"`
	}
	for _, tc := range []struct {
		q    string
		want int
	}{{"", 2}, {"?q=" + pid0, 1}, {"?q=sn-1", 1}, {"?q=0002", 1}, {"?state=provisioned", 1}, {"?q=zzz", 0}} {
		if c := apiGet(t, h, "/api/v1/machines"+tc.q, &ml); c != 200 || len(ml.Machines) != tc.want {
			t.Errorf("machines%s: %d, %d rows, want %d", tc.q, c, len(ml.Machines), tc.want)
		}
	}
	if c := apiGet(t, h, "/api/v1/machines?state=bogus", nil); c != 400 {
		t.Errorf("bad state: %d", c)
	}
	apiGet(t, h, "/api/v1/machines?q="+pid0, &ml)
	for _, k := range []string{"uuid", "serial", "model", "pid", "state", "reason", "stick", "record", "updated_at"} {
		if _, ok := ml.Machines[0][k]; !ok {
			t.Errorf("machine row lacks %q: %v", k, ml.Machines[0])
		}
	}
	if ml.Machines[0]["pid"] != pid0 || ml.Machines[0]["state"] != "provisioned" {
		t.Errorf("machine row: %v", ml.Machines[0])
	}

	var md MachineDetail
	if c := apiGet(t, h, "/api/v1/machines/"+testUUID0, &md); c != 200 {
		t.Fatalf("machine: %d", c)
	}
	var steps []string
	for _, ev := range md.Timeline {
		if ev.Hello {
			steps = append(steps, "hello")
		} else {
			steps = append(steps, ev.To)
		}
	}
	if md.Machine.UUID != testUUID0 || md.Machine.Serial != "SN-0" || strings.Join(steps, ",") != "free,allocated,consumed,hello-seen,provisioned,hello" {
		t.Errorf("machine detail: %+v steps %v", md.Machine, steps)
	}
	if c := apiGet(t, h, "/api/v1/machines/00000000-0000-0000-0000-000000000000", nil); c != 404 {
		t.Errorf("unknown machine: %d", c)
	}

	var sticks []Stick
	if c := apiGet(t, h, "/api/v1/sticks", &sticks); c != 200 || len(sticks) != 1 || sticks[0].Label != "line-1" || sticks[0].Records != 4 || sticks[0].Left != 2 || sticks[0].LedgerImportedAt != nil {
		t.Errorf("sticks: %d %+v", c, sticks)
	}
	var pool Pool
	if c := apiGet(t, h, "/api/v1/pool", &pool); c != 200 || len(pool.Totals) != len(store.States) || len(pool.Counts) != 3 {
		t.Errorf("pool: %d %+v", c, pool)
	}
	f.rec.ImportLedger(t.Context(), "x", strings.NewReader("PID00001 "+testUUID1))
	var dl struct {
		Enabled       bool          `json:"enabled"`
		Discrepancies []Discrepancy `json:"discrepancies"`
	}
	if c := apiGet(t, h, "/api/v1/discrepancies", &dl); c != 200 || !dl.Enabled || len(dl.Discrepancies) != 1 || dl.Discrepancies[0].ID == "" {
		t.Fatalf("discrepancies: %d %+v", c, dl)
	}
	var one Discrepancy
	if c := apiGet(t, h, "/api/v1/discrepancies/"+dl.Discrepancies[0].ID, &one); c != 200 || one.Kind != "unknown-pid" {
		t.Errorf("discrepancy: %d %+v", c, one)
	}
	var settings []Setting
	if c := apiGet(t, h, "/api/v1/settings", &settings); c != 200 || len(settings) != 4 {
		t.Errorf("settings: %d %+v", c, settings)
	}
	var audit []Event
	if c := apiGet(t, h, "/api/v1/audit", &audit); c != 200 || len(audit) != 4+4+2+2+2 {
		t.Errorf("audit: %d, %d events", c, len(audit))
	}
	if c := apiGet(t, h, "/api/v1/audit?after="+fmt.Sprint(audit[11].ID), &audit); c != 200 || len(audit) != 2 {
		t.Errorf("audit after: %d, %d events", c, len(audit))
	}
	for _, p := range []string{"/api/v1/audit?format=xml", "/api/v1/audit?after=-1", "/api/v1/audit?since=yesterday"} {
		if c := apiGet(t, h, p, nil); c != 400 {
			t.Errorf("%s: %d, want 400", p, c)
		}
	}
	if c := apiGet(t, h, "/api/v1/nothing", nil); c != 404 {
		t.Errorf("unknown endpoint: %d", c)
	}
	// Without credentials, or with a wrong token: 401 in JSON.
	for _, auth := range []string{"", "Bearer wrong", "Basic YWRtaW46eA=="} {
		req := httptest.NewRequest("GET", "/api/v1/dashboard", nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code != 401 || !strings.Contains(w.Body.String(), `"error"`) {
			t.Errorf("auth %q: %d %s", auth, w.Code, w.Body)
		}
	}
	// A session works for the API as well.
	c := f.loggedIn()
	if w := c.get("/api/v1/pool"); w.Code != 200 {
		t.Errorf("API with a session: %d", w.Code)
	}
}

func TestAuditCSV(t *testing.T) {
	f := newFixture(t, nil)
	if err := f.s.Note(t.Context(), f.entries[2].PID, "=HYPERLINK(\"http://evil\")"); err != nil {
		t.Fatal(err)
	}
	c := f.loggedIn()
	w := c.get("/audit/export?format=csv")
	if w.Code != 200 || !strings.HasPrefix(w.Header().Get("Content-Type"), "text/csv") || !strings.Contains(w.Header().Get("Content-Disposition"), "attachment") {
		t.Fatalf("csv: %d %v", w.Code, w.Header())
	}
	lines := strings.Split(strings.TrimSpace(w.Body.String()), "\n")
	if lines[0] != strings.Join(auditHeader, ",") || len(lines) != 1+15 {
		t.Errorf("csv: %d lines, header %q", len(lines), lines[0])
	}
	if !strings.Contains(lines[len(lines)-1], `"'=HYPERLINK(""http://evil"")"`) {
		t.Errorf("formula not defused: %q", lines[len(lines)-1])
	}
	if !strings.Contains(c.get("/audit").Body.String(), "HYPERLINK") {
		t.Error("audit page lacks the latest event")
	}
}

// TestNoSecrets walks every page and endpoint and looks for any secret
// the store holds or the console knows.
func TestNoSecrets(t *testing.T) {
	f := newFixture(t, nil)
	ctx := t.Context()
	var secrets []string
	for _, e := range f.entries {
		l, err := f.s.EntryOf(ctx, e.PID)
		if err != nil {
			t.Fatal(err)
		}
		secrets = append(secrets, l.PPS.RevealDisplay(), strings.ReplaceAll(l.PPS.RevealDisplay(), "-", ""), l.NewPassword.Reveal())
	}
	secrets = append(secrets, testPassword, testToken, "dbsecret", "mastersecret-xyz", f.srv.hash.String(), hex.EncodeToString(f.srv.apiToken))
	f.rec.ImportLedger(ctx, "x", strings.NewReader("PID00001 "+testUUID1))
	ds, _ := f.rec.Discrepancies(ctx)
	c := f.loggedIn()
	paths := []string{"/", "/machines", "/machines/" + testUUID0, "/machines/" + testUUID1, "/sticks", "/pool", "/discrepancies",
		"/discrepancies/" + withIDs(ds)[0].ID, "/settings", "/audit", "/audit/export?format=csv", "/audit/export?format=json",
		"/api/v1/dashboard", "/api/v1/machines", "/api/v1/machines/" + testUUID0, "/api/v1/sticks", "/api/v1/pool",
		"/api/v1/discrepancies", "/api/v1/settings", "/api/v1/audit", "/metrics", "/login"}
	for _, p := range paths {
		w := c.get(p)
		if w.Code != 200 && !(p == "/login" && w.Code == http.StatusSeeOther) {
			t.Errorf("%s: %d", p, w.Code)
		}
		body := w.Body.String()
		for _, s := range secrets {
			if len(s) >= 6 && strings.Contains(body, s) {
				t.Errorf("%s shows a secret (%d characters)", p, len(s))
			}
		}
	}
	page := c.get("/settings").Body.String()
	if !strings.Contains(page, "postgres://kiosk:REDACTED@127.0.0.1/pool") || !strings.Contains(page, ":9971") {
		t.Errorf("settings page:\n%s", page)
	}
}

func TestSecurityHeaders(t *testing.T) {
	f := newFixture(t, nil)
	c := f.loggedIn()
	inline := regexp.MustCompile(`(?i)<script(\s[^>]*)?>\s*[^<\s]|<script>|\son[a-z]+\s*=|\sstyle\s*=|javascript:`)
	for _, p := range []string{"/login", "/", "/machines", "/machines/" + testUUID0, "/sticks", "/pool", "/discrepancies", "/settings", "/audit", "/nope"} {
		cc := c
		if p == "/login" {
			cc = f.client()
		}
		w := cc.get(p)
		h := w.Header()
		if csp := h.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe-inline") || !strings.Contains(csp, "frame-ancestors 'none'") {
			t.Errorf("%s: CSP %q", p, csp)
		}
		for k, v := range map[string]string{"X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store", "Referrer-Policy": "same-origin"} {
			if h.Get(k) != v {
				t.Errorf("%s: %s %q, want %q", p, k, h.Get(k), v)
			}
		}
		if m := inline.FindString(w.Body.String()); m != "" {
			t.Errorf("%s: inline script or style: %q", p, m)
		}
	}
	for _, p := range []string{"/static/style.css", "/static/app.js"} {
		if w := c.get(p); w.Code != 200 || w.Body.Len() < 100 {
			t.Errorf("%s: %d", p, w.Code)
		}
	}
	if w := c.get("/static/../web.go"); w.Code == 200 && strings.Contains(w.Body.String(), "package web") {
		t.Error("static handler serves source")
	}
}

func TestMetrics(t *testing.T) {
	f := newFixture(t, nil)
	req := httptest.NewRequest("GET", "/metrics", nil)
	w := httptest.NewRecorder()
	f.srv.ServeHTTP(w, req)
	if w.Code != 401 {
		t.Errorf("metrics without auth: %d", w.Code)
	}
	req.Header.Set("Authorization", "Bearer "+testToken)
	w = httptest.NewRecorder()
	f.srv.ServeHTTP(w, req)
	body := w.Body.String()
	for _, want := range []string{`provstick_kiosk_entries{state="provisioned"} 1`, `provstick_kiosk_entries{state="failed"} 1`,
		`provstick_kiosk_hellos_total{result="malformed"} 2`, `provstick_kiosk_hellos_total{result="received"} 7`,
		`provstick_kiosk_workers_busy 1`, `provstick_kiosk_provisioning_runs_total{outcome="provisioned"} 1`,
		`provstick_kiosk_store_up 1`, "provstick_kiosk_store_query_seconds", "go_goroutines"} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	pub := newFixture(t, func(o *Options) { o.PublicMetrics = true })
	w = httptest.NewRecorder()
	pub.srv.ServeHTTP(w, httptest.NewRequest("GET", "/metrics", nil))
	if w.Code != 200 {
		t.Errorf("public metrics: %d", w.Code)
	}
}

// TestLive reads the dashboard stream and sees a state change arrive.
func TestLive(t *testing.T) {
	f := newFixture(t, nil)
	c := f.loggedIn()
	if w := f.client().get("/events/dashboard"); w.Code != http.StatusUnauthorized {
		t.Errorf("anonymous stream: %d", w.Code)
	}
	srv := httptest.NewServer(f.srv)
	defer srv.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/events/dashboard", nil)
	req.AddCookie(&http.Cookie{Name: sessionCookie, Value: c.cookies[sessionCookie]})
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("stream: %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	sc := bufio.NewScanner(resp.Body)
	next := func() Dashboard {
		t.Helper()
		for sc.Scan() {
			if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				var d Dashboard
				if err := json.Unmarshal([]byte(data), &d); err != nil {
					t.Fatal(err)
				}
				return d
			}
		}
		t.Fatalf("stream ended: %v", sc.Err())
		return Dashboard{}
	}
	count := func(d Dashboard, st string) int64 {
		for _, s := range d.States {
			if s.State == st {
				return s.N
			}
		}
		return -1
	}
	if d := next(); count(d, "provisioned") != 1 {
		t.Fatalf("first event: %+v", d.States)
	}
	if err := f.s.Consume(ctx, f.entries[2].PID, store.Machine{UUID: "939b524b-13d4-1d18-e487-1c697a6b0003"}, "ledger"); err != nil {
		t.Fatal(err)
	}
	if d := next(); count(d, "consumed") != 1 || d.Machines != 3 {
		t.Fatalf("after a change: %+v", d)
	}
}

// TestHTTPS serves the console over TLS with a certificate from the kiosk
// CA, and a client that trusts only that CA logs in.
func TestHTTPS(t *testing.T) {
	f := newFixture(t, func(o *Options) {
		o.PlainHTTP = false
		o.Hosts = []string{"kiosk.test", "127.0.0.1"}
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- f.srv.Serve(ctx, ln) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	cl := &http.Client{
		Transport:     &http.Transport{TLSClientConfig: &tls.Config{RootCAs: f.ca.Pool()}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Timeout:       20 * time.Second,
	}
	base := "https://" + ln.Addr().String()
	resp, err := cl.Get(base + "/login")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Strict-Transport-Security") == "" {
		t.Fatalf("GET /login over TLS: %d %v", resp.StatusCode, resp.Header)
	}
	leaf := resp.TLS.PeerCertificates[0]
	if err := leaf.VerifyHostname("127.0.0.1"); err != nil {
		t.Error(err)
	}
	if err := leaf.VerifyHostname("kiosk.test"); err != nil {
		t.Error(err)
	}
	// A client that does not trust the kiosk CA is refused.
	if _, err := (&http.Client{Timeout: 10 * time.Second}).Get(base + "/login"); err == nil {
		t.Error("a client without the kiosk CA connected")
	}
	// Plain HTTP to the TLS port gets no page.
	if resp, err := http.Get("http://" + ln.Addr().String() + "/login"); err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if strings.Contains(string(b), "<form") {
			t.Error("plain HTTP served a page")
		}
	}
	if _, err := New(Options{Store: f.s, AdminPasswordHash: f.srv.hash.String()}); err == nil {
		t.Error("New without CA, certificate or PlainHTTP: no error")
	}
}

func TestInitialPassword(t *testing.T) {
	saved := initialHashParams
	initialHashParams = testHash
	t.Cleanup(func() { initialHashParams = saved })
	f := newFixture(t, func(o *Options) { o.AdminPasswordHash = "" })
	pw := f.srv.InitialPassword()
	if len(pw) != 20 {
		t.Fatalf("initial password: %d characters", len(pw))
	}
	c := f.client()
	if w := c.login("admin", pw); w.Code != http.StatusSeeOther {
		t.Fatalf("login with the initial password: %d", w.Code)
	}
	if g := newFixture(t, nil); g.srv.InitialPassword() != "" {
		t.Error("InitialPassword set although a hash was configured")
	}
	if _, err := New(Options{Store: f.s, PlainHTTP: true, AdminPasswordHash: "$argon2id$v=19$m=1,t=1,p=1$xx$yy"}); !errors.Is(err, ErrHashFormat) {
		t.Errorf("bad hash: %v", err)
	}
	if _, err := New(Options{Store: f.s, PlainHTTP: true, AdminPasswordHash: f.srv.hash.String(), APITokenSHA256: "abc"}); err == nil {
		t.Error("bad token hash: no error")
	}
}
