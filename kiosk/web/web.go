// Package web is the kiosk's web console and JSON API (issue 10, DESIGN.md
// §2): a dashboard of machines by state with live updates, machine search
// and per-machine timelines, sticks, pool counts, reconciliation
// discrepancies with a ledger upload, the effective settings (secrets
// redacted), an audit log export and Prometheus metrics.
//
// Everything is server-rendered with html/template; the stylesheet and the
// one script are embedded, so the console works in a browser on a network
// with no internet. The dashboard updates itself through Server-Sent Events
// (GET /events/dashboard): the server compares a fresh snapshot with the
// last one it sent every Options.LiveInterval and pushes it when it
// changed. The JSON API under /api/v1 returns what the pages show.
//
// Security:
//   - One local admin account. Its password is stored as an argon2id PHC
//     string (HashPassword) in the configuration; without one, New makes a
//     random password for this run only (Server.InitialPassword), which the
//     caller prints once.
//   - Sessions are random 256-bit ids in a __Host- cookie (HttpOnly,
//     Secure, SameSite=Strict) with an absolute expiry, kept in memory: a
//     restarted kiosk asks for the password again.
//   - Failed logins are limited per client address; argon2id verifications
//     run at most two at a time.
//   - Every state-changing request passes net/http's CrossOriginProtection
//     (Sec-Fetch-Site / Origin against Host) and carries the session's
//     synchronizer token (form field "csrf" or header X-CSRF-Token); the
//     login form uses a double-submit cookie. API clients holding the
//     bearer token need no CSRF token (no ambient credential).
//   - Content-Security-Policy without inline script or style, frame
//     denial, nosniff, no referrer to other origins, no caching of pages.
//   - HTTPS by default with a certificate signed by the kiosk CA
//     (ServerCertificate); plain HTTP only with Options.PlainHTTP.
//
// Secrets (PPS, passwords, keys) never reach a page, the API or a log: the
// store queries the console uses read no secret, and settings are redacted
// by name.
package web

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/provstick/provstick/kiosk/ca"
	"github.com/provstick/provstick/kiosk/store"
)

// Store is what the console reads; *store.Store implements it.
type Store interface {
	Status(ctx context.Context) (store.Status, error)
	WebTotals(ctx context.Context) (store.WebTotals, error)
	WebMachines(ctx context.Context, q store.WebMachineQuery) ([]store.WebMachine, error)
	WebTimeline(ctx context.Context, uuid string, helloLimit int) (store.Machine, []store.WebTimelineItem, error)
	WebSticks(ctx context.Context) ([]store.Stick, error)
	WebRecentEvents(ctx context.Context, limit int) ([]store.WebEvent, error)
	WebAuditEvents(ctx context.Context, q store.WebAuditQuery, fn func(store.WebEvent) error) error
}

var _ Store = (*store.Store)(nil)

// Counters are the kiosk's live counters, for the dashboard and /metrics.
// Fields the caller cannot fill stay zero.
type Counters struct {
	HellosReceived  uint64 `json:"hellos_received"`  // connections accepted by the hello listener
	HellosPSK       uint64 `json:"hellos_psk"`       // version-2 hellos parsed
	HellosPKI       uint64 `json:"hellos_pki"`       // version-3 hellos parsed
	HellosMalformed uint64 `json:"hellos_malformed"` // unreadable hellos
	HellosDropped   uint64 `json:"hellos_dropped"`   // hello log rows dropped (or jobs dropped, queue full)
	Workers         int    `json:"workers"`          // provisioning workers
	WorkersBusy     int    `json:"workers_busy"`     // workers provisioning a machine now
	// Results counts finished provisioning runs by outcome
	// ("provisioned", "failed", "unknown-pid", ...) since start.
	Results map[string]uint64 `json:"results,omitempty"`
}

// Options configure New.
type Options struct {
	// Store is read for every page; required.
	Store Store
	// Reconciler feeds the discrepancies page and takes ledger uploads;
	// nil → the page says reconciliation is not configured.
	Reconciler Reconciler
	// Counters, if set, is called for the dashboard and /metrics.
	Counters func() Counters
	// Settings is the effective configuration shown read-only (see
	// SettingsFrom, which redacts secrets).
	Settings []Setting

	// AdminUser is the account's name; "" → "admin".
	AdminUser string
	// AdminPasswordHash is an argon2id PHC string from HashPassword. ""
	// → a random password for this run (InitialPassword).
	AdminPasswordHash string
	// APITokenSHA256 is the hex SHA-256 of a bearer token accepted on
	// /api/v1 and /metrics ("" → sessions only). The token itself must be
	// random (32 bytes or more): a fast hash is enough for that.
	APITokenSHA256 string

	// CA signs the HTTPS certificate when Certificate is nil.
	CA *ca.CA
	// Hosts are the names and addresses the certificate is for; empty →
	// "localhost", "127.0.0.1", "::1" and the host name.
	Hosts []string
	// Certificate, if set, is served instead of one signed by CA.
	Certificate *tls.Certificate
	// PlainHTTP serves without TLS (tests, or behind a TLS proxy). The
	// session cookie stays Secure: browsers accept it on localhost only.
	PlainHTTP bool

	// SessionTTL is a session's absolute lifetime; 0 → 8 h.
	SessionTTL time.Duration
	// MaxLedgerBytes caps an uploaded ledger; 0 → 16 MiB.
	MaxLedgerBytes int64
	// LiveInterval is how often the live dashboard looks for changes;
	// 0 → 1 s.
	LiveInterval time.Duration
	// PublicMetrics serves /metrics without authentication.
	PublicMetrics bool
	// LoginFailures failed logins per address within LoginWindow lock the
	// address out until the window ends; 0 → 5 and 15 min.
	LoginFailures int
	LoginWindow   time.Duration

	// Logger: one line per login, logout and upload; nil discards.
	Logger *slog.Logger
	// Now; nil → time.Now.
	Now func() time.Time
}

// initialHashParams hash a generated password (tests lower them).
var initialHashParams = DefaultHashParams

// Server is the console. It is an http.Handler.
type Server struct {
	o        Options
	log      *slog.Logger
	hash     *phc
	initial  string // generated password, when no hash was configured
	apiToken []byte // SHA-256, nil when none
	sessions *sessions
	limiter  *loginLimiter
	verify   chan struct{} // argon2id verifications in flight
	pages    *pages
	handler  http.Handler
	metrics  http.Handler
	cert     *tls.Certificate
	certOnce sync.Once
	certErr  error

	dashMu sync.Mutex // the live streams' shared snapshot
	dash   Dashboard
	dashAt time.Time
}

// New checks the options and builds the console.
func New(o Options) (*Server, error) {
	if o.Store == nil {
		return nil, errors.New("web console: no store")
	}
	if o.AdminUser == "" {
		o.AdminUser = "admin"
	}
	if o.SessionTTL <= 0 {
		o.SessionTTL = 8 * time.Hour
	}
	if o.MaxLedgerBytes <= 0 {
		o.MaxLedgerBytes = 16 << 20
	}
	if o.LiveInterval <= 0 {
		o.LiveInterval = time.Second
	}
	if o.LoginFailures <= 0 {
		o.LoginFailures = 5
	}
	if o.LoginWindow <= 0 {
		o.LoginWindow = 15 * time.Minute
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	s := &Server{o: o, log: o.Logger, verify: make(chan struct{}, 2)}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if o.AdminPasswordHash == "" {
		pw, err := randomPassword(20)
		if err != nil {
			return nil, err
		}
		h, err := HashPasswordParams(pw, initialHashParams)
		if err != nil {
			return nil, err
		}
		s.initial, o.AdminPasswordHash = pw, h
	}
	h, err := parsePHC(o.AdminPasswordHash)
	if err != nil {
		return nil, fmt.Errorf("web console: admin password hash: %w", err)
	}
	s.hash = h
	if o.APITokenSHA256 != "" {
		b, err := hex.DecodeString(o.APITokenSHA256)
		if err != nil || len(b) != sha256.Size {
			return nil, errors.New("web console: API token hash: want 64 hexadecimal digits (SHA-256)")
		}
		s.apiToken = b
	}
	if !o.PlainHTTP && o.Certificate == nil && o.CA == nil {
		return nil, errors.New("web console: HTTPS needs the kiosk CA or a certificate (or PlainHTTP)")
	}
	s.sessions = newSessions(o.Now, o.SessionTTL)
	s.limiter = newLoginLimiter(o.Now, o.LoginFailures, o.LoginWindow)
	if s.pages, err = loadPages(); err != nil {
		return nil, err
	}
	s.metrics = newMetrics(s)
	s.handler = s.routes()
	return s, nil
}

// InitialPassword is the admin password New generated because no hash was
// configured ("" otherwise). It lasts as long as this Server: the caller
// prints it once, and a site puts HashPassword's output in its
// configuration instead.
func (s *Server) InitialPassword() string { return s.initial }

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.handler.ServeHTTP(w, r) }

// TLSConfig is the server's TLS configuration (TLS 1.2 or later, the
// certificate signed by the kiosk CA unless Options.Certificate is set).
func (s *Server) TLSConfig() (*tls.Config, error) {
	s.certOnce.Do(func() {
		if s.o.Certificate != nil {
			s.cert = s.o.Certificate
			return
		}
		hosts := s.o.Hosts
		if len(hosts) == 0 {
			hosts = DefaultHosts()
		}
		c, err := ServerCertificate(s.o.CA, hosts)
		if err != nil {
			s.certErr = err
			return
		}
		s.cert = &c
	})
	if s.certErr != nil {
		return nil, s.certErr
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{*s.cert}}, nil
}

// Serve serves the console on ln (HTTPS unless Options.PlainHTTP) until
// ctx ends, then shuts down gracefully (live streams are cut) and returns
// nil; otherwise it returns the server's error.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	if !s.o.PlainHTTP {
		cfg, err := s.TLSConfig()
		if err != nil {
			ln.Close()
			return err
		}
		ln = tls.NewListener(ln, cfg)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	hs := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       time.Minute,
		WriteTimeout:      2 * time.Minute, // live streams lift it
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		BaseContext:       func(net.Listener) context.Context { return ctx },
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	s.log.Info("web console serving", "addr", ln.Addr().String(), "https", !s.o.PlainHTTP)
	select {
	case err := <-errc:
		return fmt.Errorf("serving the web console: %w", err)
	case <-ctx.Done():
	}
	sctx, scancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer scancel()
	cancel() // ends the live streams, whose requests use ctx
	if err := hs.Shutdown(sctx); err != nil {
		hs.Close()
	}
	<-errc
	return nil
}

// tokenOK reports whether r carries the API bearer token.
func (s *Server) tokenOK(r *http.Request) bool {
	if s.apiToken == nil {
		return false
	}
	h := r.Header.Get("Authorization")
	tok, ok := strings.CutPrefix(h, "Bearer ")
	if !ok || tok == "" {
		return false
	}
	sum := sha256.Sum256([]byte(tok))
	return subtle.ConstantTimeCompare(sum[:], s.apiToken) == 1
}

// clientAddr is the request's peer address without the port.
func clientAddr(r *http.Request) string {
	h, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return h
}
