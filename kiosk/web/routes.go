package web

import (
	"bytes"
	"context"
	"crypto/subtle"
	"embed"
	"errors"
	"html/template"
	"io/fs"
	"net/http"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unicode"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

var (
	errNotFound   = errors.New("not found")
	errBadRequest = errors.New("bad request")
)

const (
	sessionCookie = "__Host-provstick_session"
	loginCookie   = "__Host-provstick_login"
	csrfField     = "csrf"
	csrfHeader    = "X-CSRF-Token"
)

// csp allows only this origin's script and style: no inline code at all.
const csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
	"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

type pages struct {
	t map[string]*template.Template
}

var templateFuncs = template.FuncMap{
	"tm": func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return t.UTC().Format("2006-01-02 15:04:05 UTC")
	},
	"tmp": func(t *time.Time) string {
		if t == nil {
			return ""
		}
		return t.UTC().Format("2006-01-02 15:04:05 UTC")
	},
	"change": func(from, to string) string {
		switch {
		case from == "" && to == "":
			return ""
		case from == to:
			return "note (" + to + ")"
		case from == "":
			return "new → " + to
		}
		return from + " → " + to
	},
	"join":    strings.Join,
	"lowmark": func(n int) int { return (n*10 + 99) / 100 },
}

func loadPages() (*pages, error) {
	names, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		return nil, err
	}
	p := &pages{t: map[string]*template.Template{}}
	for _, n := range names {
		base := strings.TrimSuffix(filepath.Base(n), ".html")
		if base == "layout" {
			continue
		}
		t, err := template.New(base).Funcs(templateFuncs).ParseFS(templateFS, "templates/layout.html", n)
		if err != nil {
			return nil, err
		}
		p.t[base] = t
	}
	return p, nil
}

type pageData struct {
	Title string
	Nav   string
	User  string
	CSRF  string
	Body  any
}

// render executes a page into a buffer first, so a template error becomes
// a clean 500 rather than half a page.
func (s *Server) render(w http.ResponseWriter, status int, page string, d pageData) {
	var b bytes.Buffer
	if err := s.pages.t[page].ExecuteTemplate(&b, "layout", d); err != nil {
		s.log.Error("rendering a page", "page", page, "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	w.Write(b.Bytes())
}

// authed is a request's identity.
type authed struct {
	user  string
	sid   string // "" for the API token
	csrf  string
	token bool
}

type ctxKey struct{}

func who(r *http.Request) authed {
	a, _ := r.Context().Value(ctxKey{}).(authed)
	return a
}

// identify finds the session or API token of a request.
func (s *Server) identify(r *http.Request, allowToken bool) (authed, bool) {
	if allowToken && s.tokenOK(r) {
		return authed{user: "api-token", token: true}, true
	}
	c, err := r.Cookie(sessionCookie)
	if err != nil || c.Value == "" || len(c.Value) > 64 {
		return authed{}, false
	}
	ss, ok := s.sessions.get(c.Value)
	if !ok {
		return authed{}, false
	}
	return authed{user: ss.user, sid: c.Value, csrf: ss.csrf}, true
}

type handlerKind int

const (
	kindPage   handlerKind = iota // HTML; unauthenticated → redirect to /login
	kindAPI                       // JSON; token or session; unauthenticated → 401
	kindStream                    // live stream; session; unauthenticated → 401 (EventSource gives up)
)

// guard wraps h with authentication and, for unsafe methods, the
// synchronizer-token check.
func (s *Server) guard(kind handlerKind, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		a, ok := s.identify(r, kind == kindAPI)
		if !ok {
			if kind == kindAPI {
				w.Header().Set("WWW-Authenticate", `Bearer realm="provstick kiosk"`)
				writeJSONError(w, http.StatusUnauthorized, "authentication required")
				return
			}
			if kind == kindStream || (r.Method != http.MethodGet && r.Method != http.MethodHead) {
				http.Error(w, "authentication required", http.StatusUnauthorized)
				return
			}
			http.Redirect(w, r, "/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
			return
		}
		if !safeMethod(r.Method) && !a.token {
			tok := r.Header.Get(csrfHeader)
			if tok == "" {
				tok = r.PostFormValue(csrfField)
			}
			if tok == "" || subtle.ConstantTimeCompare([]byte(tok), []byte(a.csrf)) != 1 {
				s.log.Warn("request refused: missing or wrong CSRF token", "path", r.URL.Path, "client", clientAddr(r))
				if kind == kindAPI {
					writeJSONError(w, http.StatusForbidden, "missing or wrong CSRF token")
					return
				}
				http.Error(w, "missing or wrong CSRF token", http.StatusForbidden)
				return
			}
		}
		h(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, a)))
	}
}

func safeMethod(m string) bool {
	return m == http.MethodGet || m == http.MethodHead || m == http.MethodOptions
}

// securityHeaders sets the headers every response carries.
func (s *Server) securityHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", csp)
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Referrer-Policy", "same-origin")
		hd.Set("Cross-Origin-Opener-Policy", "same-origin")
		hd.Set("Cross-Origin-Resource-Policy", "same-origin")
		hd.Set("Permissions-Policy", "camera=(), microphone=(), geolocation=(), usb=()")
		if !strings.HasPrefix(r.URL.Path, "/static/") {
			hd.Set("Cache-Control", "no-store")
		}
		if r.TLS != nil {
			hd.Set("Strict-Transport-Security", "max-age=31536000")
		}
		h.ServeHTTP(w, r)
	})
}

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	static, _ := fs.Sub(staticFS, "static")
	mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))
	mux.HandleFunc("GET /login", s.loginPage)
	mux.HandleFunc("POST /login", s.login)
	mux.HandleFunc("POST /logout", s.guard(kindPage, s.logout))

	mux.HandleFunc("GET /{$}", s.guard(kindPage, s.dashboardPage))
	mux.HandleFunc("GET /events/dashboard", s.guard(kindStream, s.live))
	mux.HandleFunc("GET /machines", s.guard(kindPage, s.machinesPage))
	mux.HandleFunc("GET /machines/{uuid}", s.guard(kindPage, s.machinePage))
	mux.HandleFunc("GET /sticks", s.guard(kindPage, s.sticksPage))
	mux.HandleFunc("GET /pool", s.guard(kindPage, s.poolPage))
	mux.HandleFunc("GET /discrepancies", s.guard(kindPage, s.discrepanciesPage))
	mux.HandleFunc("GET /discrepancies/{id}", s.guard(kindPage, s.discrepancyPage))
	mux.Handle("POST /discrepancies/import", s.limitBody(s.guard(kindPage, s.importPage)))
	mux.HandleFunc("GET /settings", s.guard(kindPage, s.settingsPage))
	mux.HandleFunc("GET /audit", s.guard(kindPage, s.auditPage))
	mux.HandleFunc("GET /audit/export", s.guard(kindPage, s.auditExport))

	s.apiRoutes(mux)
	if s.o.PublicMetrics {
		mux.Handle("GET /metrics", s.metrics)
	} else {
		mux.HandleFunc("GET /metrics", s.guard(kindAPI, s.metrics.ServeHTTP))
	}

	cop := http.NewCrossOriginProtection()
	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.log.Warn("request refused: cross-origin", "path", r.URL.Path, "client", clientAddr(r), "origin", truncate(r.Header.Get("Origin"), 100))
		http.Error(w, "cross-origin request refused", http.StatusForbidden)
	}))
	return s.securityHeaders(cop.Handler(mux))
}

// limitBody caps a ledger upload (plus room for the multipart framing).
func (s *Server) limitBody(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, s.o.MaxLedgerBytes+64<<10)
		h.ServeHTTP(w, r)
	})
}

func (s *Server) page(w http.ResponseWriter, r *http.Request, status int, name, title string, body any) {
	a := who(r)
	s.render(w, status, name, pageData{Title: title, Nav: name, User: a.user, CSRF: a.csrf, Body: body})
}

// fail renders an error page: not found, bad request or (logged) internal.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, errNotFound):
		s.page(w, r, http.StatusNotFound, "error", "Not found", err.Error())
	case errors.Is(err, errBadRequest):
		s.page(w, r, http.StatusBadRequest, "error", "Bad request", err.Error())
	default:
		s.log.Error("web console request", "path", r.URL.Path, "err", err)
		s.page(w, r, http.StatusInternalServerError, "error", "Error", "The kiosk could not read its store; see its log.")
	}
}

type loginBody struct {
	Next  string
	User  string
	Error string
}

// safeNext keeps a post-login redirect on this site.
func safeNext(n string) string {
	if !strings.HasPrefix(n, "/") || strings.HasPrefix(n, "//") || strings.HasPrefix(n, "/\\") || len(n) > 1000 {
		return "/"
	}
	for _, r := range n {
		if unicode.IsControl(r) {
			return "/"
		}
	}
	return n
}

func (s *Server) loginPage(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.identify(r, false); ok {
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return
	}
	s.showLogin(w, r, http.StatusOK, loginBody{Next: safeNext(r.URL.Query().Get("next"))})
}

// showLogin renders the form with a fresh double-submit token.
func (s *Server) showLogin(w http.ResponseWriter, r *http.Request, status int, b loginBody) {
	tok := randomToken()
	http.SetCookie(w, &http.Cookie{Name: loginCookie, Value: tok, Path: "/", MaxAge: 3600, HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode})
	s.render(w, status, "login", pageData{Title: "Log in", Nav: "login", CSRF: tok, Body: b})
}

func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
	addr := clientAddr(r)
	if wait := s.limiter.blocked(addr); wait > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int(wait.Seconds())+1))
		s.log.Warn("login refused: too many failures", "client", addr)
		s.showLogin(w, r, http.StatusTooManyRequests, loginBody{Next: "/", Error: "Too many failed logins from this address; try again later."})
		return
	}
	c, err := r.Cookie(loginCookie)
	form := r.PostFormValue(csrfField)
	if err != nil || c.Value == "" || form == "" || subtle.ConstantTimeCompare([]byte(c.Value), []byte(form)) != 1 {
		s.log.Warn("login refused: missing or wrong CSRF token", "client", addr)
		s.showLogin(w, r, http.StatusForbidden, loginBody{Next: "/", Error: "The login form expired; please try again."})
		return
	}
	user, pw := r.PostFormValue("user"), r.PostFormValue("password")
	next := safeNext(r.PostFormValue("next"))
	select {
	case s.verify <- struct{}{}:
	case <-r.Context().Done():
		return
	}
	okPW := s.hash.verify(pw)
	<-s.verify
	okUser := subtle.ConstantTimeCompare([]byte(user), []byte(s.o.AdminUser)) == 1
	if !okPW || !okUser {
		s.limiter.fail(addr)
		s.log.Warn("login failed", "client", addr, "user", truncate(user, 64))
		s.showLogin(w, r, http.StatusUnauthorized, loginBody{Next: next, User: truncate(user, 64), Error: "Wrong user name or password."})
		return
	}
	s.limiter.succeed(addr)
	// A previous session of this browser ends: a fresh id at every login.
	if old, err := r.Cookie(sessionCookie); err == nil {
		s.sessions.delete(old.Value)
	}
	sid, _ := s.sessions.create(s.o.AdminUser)
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: sid, Path: "/", Expires: s.o.Now().Add(s.o.SessionTTL),
		MaxAge: int(s.o.SessionTTL.Seconds()), HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode})
	http.SetCookie(w, &http.Cookie{Name: loginCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode})
	s.log.Info("login", "client", addr, "user", s.o.AdminUser)
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (s *Server) logout(w http.ResponseWriter, r *http.Request) {
	a := who(r)
	s.sessions.delete(a.sid)
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode})
	s.log.Info("logout", "client", clientAddr(r), "user", a.user)
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}

func (s *Server) dashboardPage(w http.ResponseWriter, r *http.Request) {
	d, err := s.dashboard(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.page(w, r, http.StatusOK, "dashboard", "Dashboard", struct {
		Dashboard
		At string
	}{d, d.At.Format("2006-01-02 15:04:05 UTC")})
}

func (s *Server) machinesPage(w http.ResponseWriter, r *http.Request) {
	ml, err := s.machineList(r.Context(), r.URL.Query().Get("q"), r.URL.Query().Get("state"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.page(w, r, http.StatusOK, "machines", "Machines", ml)
}

func (s *Server) machinePage(w http.ResponseWriter, r *http.Request) {
	d, err := s.machineDetail(r.Context(), r.PathValue("uuid"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.render(w, http.StatusOK, "machine", pageData{Title: "Machine " + d.Machine.UUID, Nav: "machines", User: who(r).user, CSRF: who(r).csrf, Body: d})
}

func (s *Server) sticksPage(w http.ResponseWriter, r *http.Request) {
	st, err := s.sticks(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.page(w, r, http.StatusOK, "sticks", "Sticks", st)
}

func (s *Server) poolPage(w http.ResponseWriter, r *http.Request) {
	p, err := s.pool(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.page(w, r, http.StatusOK, "pool", "Pool", p)
}

func (s *Server) discrepanciesPage(w http.ResponseWriter, r *http.Request) {
	dl, err := s.discrepancies(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	a := who(r)
	s.sessions.update(a.sid, func(ss *session) {
		dl.Flash, dl.FlashErr = ss.flash, ss.flashErr
		ss.flash, ss.flashErr = nil, ""
	})
	s.page(w, r, http.StatusOK, "discrepancies", "Discrepancies", dl)
}

func (s *Server) discrepancyPage(w http.ResponseWriter, r *http.Request) {
	d, err := s.discrepancy(r.Context(), r.PathValue("id"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.render(w, http.StatusOK, "discrepancy", pageData{Title: "Discrepancy: " + d.Kind, Nav: "discrepancies", User: who(r).user, CSRF: who(r).csrf, Body: d})
}

// importPage takes a ledger upload, then shows the result on the
// discrepancies page (post/redirect/get, the result kept in the session).
func (s *Server) importPage(w http.ResponseWriter, r *http.Request) {
	res, err := s.importLedger(r)
	a := who(r)
	s.sessions.update(a.sid, func(ss *session) {
		if err != nil {
			ss.flash, ss.flashErr = nil, err.Error()
		} else {
			ss.flash, ss.flashErr = &res, ""
		}
	})
	http.Redirect(w, r, "/discrepancies", http.StatusSeeOther)
}

func (s *Server) settingsPage(w http.ResponseWriter, r *http.Request) {
	s.page(w, r, http.StatusOK, "settings", "Settings", s.settings())
}

func (s *Server) settings() []Setting {
	out := make([]Setting, 0, len(s.o.Settings))
	for _, st := range s.o.Settings {
		// Settings made by hand rather than NewSetting are redacted too.
		n := NewSetting(st.Key, st.Value)
		if st.Redacted && !n.Redacted {
			n = st
			if !strings.Contains(st.Value, Redacted) {
				n.Value = Redacted
			}
		}
		out = append(out, n)
	}
	return out
}

func (s *Server) auditPage(w http.ResponseWriter, r *http.Request) {
	evs, err := s.o.Store.WebRecentEvents(r.Context(), 100)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := make([]Event, 0, len(evs))
	for _, ev := range evs {
		out = append(out, eventView(ev))
	}
	s.page(w, r, http.StatusOK, "audit", "Audit log", out)
}
