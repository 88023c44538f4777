package amtsim

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/provstick/provstick/initramfs/heci/amthi"
	"github.com/provstick/provstick/internal/tlspsk"
	"github.com/provstick/provstick/internal/wsman"
)

// AMT's network ports (spec §3, §4).
const (
	PortHTTP = 16992
	PortTLS  = 16993
)

// NetOptions configure a [NetServer].
type NetOptions struct {
	// Logger gets info lines for events (hello sent, commit, faults) and
	// debug lines per request; never secrets. nil discards.
	Logger *slog.Logger
	// KeyForm is how the PID/PPS become the TLS-PSK key; the same
	// UNCONFIRMED switch the kiosk has (specs/amt-psk.md §3 [U]).
	KeyForm tlspsk.KeyForm
	// NoIdentityHint stops the TLS-PSK server from sending the PID as a
	// PSK identity hint (both occur, spec §3).
	NoIdentityHint bool
	// PSKEncoding is how SetTLSPSK carries PID and PPS; the kiosk's
	// wsman.Options.PSKEncoding switch (spec §6 step 10 [U]).
	PSKEncoding wsman.PSKEncoding
	// Hello configures the hello sender; see [HelloOptions].
	Hello HelloOptions
	// GenerateKey makes the RSA key of GenerateKeyPair; nil →
	// rsa.GenerateKey with crypto/rand. Load tests may hand out
	// pre-made keys to save CPU.
	GenerateKey func(bits int) (*rsa.PrivateKey, error)
	// CommitDowntime is how long 16993 refuses connections after a
	// successful CommitChanges while AMT restarts its network stack
	// (about 5 s on real machines, spec §6 step 11); 0 → none.
	CommitDowntime time.Duration
	// Now is the host clock (tests); nil → time.Now.
	Now func() time.Time

	// noAuth serves WS-Man without Digest (the fuzz test).
	noAuth bool
}

// NetServer is the network side of one simulated machine: the hello
// sender, TLS-PSK (then, after commit, TLS) on 16993, plain HTTP on
// 16992, and WS-Management on /wsman with the provisioning state machine
// of specs/amt-psk.md §6. It shares its [Device] with the ME side.
type NetServer struct {
	dev  *Device
	opts NetOptions
	log  *slog.Logger
	ws   *wsman.Server
	hs   *http.Server
	psk  *tlspsk.Config

	hello *helloSender
	fault faults

	mu          sync.Mutex
	conns       map[net.Conn]connInfo // open connections
	downUntil   time.Time
	tlsCert     *tls.Certificate // after commit with TLS enabled
	tlsCertFrom int              // certificate handle tlsCert was built from
	removeHook  func()
	pki         pkiState // the PKI path, pki*.go
}

// NewNetServer returns the network side of dev. It fills in the realm
// (from the UUID) and host name when the device has none. Call Serve (or
// Start) to listen.
func NewNetServer(dev *Device, opts *NetOptions) *NetServer {
	s := &NetServer{dev: dev, conns: map[net.Conn]connInfo{}}
	if opts != nil {
		s.opts = *opts
	}
	s.log = s.opts.Logger
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.opts.Now == nil {
		s.opts.Now = time.Now
	}
	if s.opts.GenerateKey == nil {
		s.opts.GenerateKey = func(bits int) (*rsa.PrivateKey, error) { return rsa.GenerateKey(rand.Reader, bits) }
	}
	var st State
	dev.Update(func(d *State) {
		if d.Net.Realm == "" {
			d.Net.Realm = DefaultRealm(amthi.UUID(d.UUID))
		}
		if d.Net.HostName == "" {
			d.Net.HostName = "amtsim-" + d.UUID.String()[:8]
		}
		st = *d
	})
	s.ws = wsman.NewServer(wsman.ServerOptions{
		Realm:           st.Net.Realm,
		Credentials:     s.credentials,
		Unauthenticated: s.opts.noAuth,
		Logger:          s.log,
		ServerHeader:    "Intel(R) Active Management Technology " + st.AMTVersion,
		// An idle device keeps few nonces; the kiosk opens one session.
		MaxNonces:       8,
		MaxEnumerations: 4,
	})
	s.register()
	s.hs = &http.Server{
		Handler:           http.HandlerFunc(s.serveHTTP),
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ConnState:         s.connState,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	s.psk = &tlspsk.Config{
		GetKey: s.pskKey,
		Logger: s.log,
	}
	if !s.opts.NoIdentityHint && st.PID != "" {
		s.psk.Hint = tlspsk.Identity(st.PID)
	}
	s.hello = newHelloSender(s)
	s.removeHook = dev.OnReset(s.hello.restart)
	return s
}

// DefaultRealm is the realm the simulator gives a machine with none set:
// "Digest:" and the first 16 bytes of SHA-256 of the UUID in upper-case
// hex (real firmware picks its own; spec §4 only fixes the form).
func DefaultRealm(u amthi.UUID) string {
	sum := sha256.Sum256(u[:])
	return "Digest:" + strings.ToUpper(hex.EncodeToString(sum[:16]))
}

// Device is the simulated machine.
func (s *NetServer) Device() *Device { return s.dev }

// Realm is the current Digest realm.
func (s *NetServer) Realm() string { return s.ws.Realm() }

// credentials is the Digest lookup: the committed admin ACL entry, or
// "admin" with the MEBx password; users added by AddUserAclEntryEx too.
func (s *NetServer) credentials(_ context.Context, user, realm string) (wsman.HA1, bool) {
	st := s.dev.shallow()
	if realm != st.Net.Realm {
		return wsman.HA1{}, false
	}
	if st.Net.AdminSet {
		if user == st.Net.AdminUser {
			return st.Net.AdminHA1, true
		}
	} else if user == "admin" {
		return wsman.DigestHA1("admin", realm, wsman.Secret(st.MEBxPassword.Reveal())), true
	}
	for _, u := range st.Net.Users {
		if u.Username == user {
			return u.HA1, true
		}
	}
	return wsman.HA1{}, false
}

// pskKey is the TLS-PSK server's key lookup by the identity the client
// sent: the device's PID, keyed by its PPS in the configured KeyForm.
func (s *NetServer) pskKey(identity string) ([]byte, error) {
	st := s.dev.shallow()
	if st.PID == "" || st.PPS.IsZero() || identity != tlspsk.Identity(st.PID) {
		return nil, tlspsk.ErrUnknownIdentity
	}
	return s.opts.KeyForm.Key(st.PID, st.PPS.Reveal()), nil
}

// ---- listening ----

// ListenNet opens the two TCP listeners of a machine at host: httpPort
// (PortHTTP on a real machine) and tlsPort (PortTLS); 0 picks a free port.
func ListenNet(host string, httpPort, tlsPort int) (httpLn, tlsLn net.Listener, err error) {
	httpLn, err = net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(httpPort)))
	if err != nil {
		return nil, nil, fmt.Errorf("listening for AMT HTTP: %w", err)
	}
	tlsLn, err = net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(tlsPort)))
	if err != nil {
		httpLn.Close()
		return nil, nil, fmt.Errorf("listening for AMT TLS: %w", err)
	}
	return httpLn, tlsLn, nil
}

// Start serves plain HTTP on httpLn (16992) and TLS-PSK/TLS on tlsLn
// (16993), each may be nil, and starts the hello sender when the machine
// is in setup. It returns at once; everything stops when ctx ends or
// Close is called.
func (s *NetServer) Start(ctx context.Context, httpLn, tlsLn net.Listener) {
	if httpLn != nil {
		go func() { _ = s.hs.Serve(&plainListener{Listener: httpLn, s: s}) }()
	}
	if tlsLn != nil {
		go func() { _ = s.hs.Serve(&tlsListener{Listener: tlsLn, s: s}) }()
	}
	s.hello.start(ctx)
	context.AfterFunc(ctx, func() { _ = s.Close() })
}

// Serve is Start, then waits for ctx to end; it returns nil.
func (s *NetServer) Serve(ctx context.Context, httpLn, tlsLn net.Listener) error {
	s.Start(ctx, httpLn, tlsLn)
	<-ctx.Done()
	return nil
}

// Close stops the listeners, every connection and the hello sender.
func (s *NetServer) Close() error {
	s.hello.stop()
	s.removeHook()
	return s.hs.Close()
}

type connInfo struct{ psk, idle bool }

func (s *NetServer) connState(c net.Conn, cs http.ConnState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch cs {
	case http.StateNew:
		_, isPSK := c.(*tlspsk.Conn)
		s.conns[c] = connInfo{psk: isPSK}
	case http.StateActive, http.StateIdle:
		if ci, ok := s.conns[c]; ok {
			ci.idle = cs == http.StateIdle
			s.conns[c] = ci
		}
	case http.StateClosed, http.StateHijacked:
		delete(s.conns, c)
	}
}

// dropIdlePSKConns closes the idle TLS-PSK connections after a commit;
// the one carrying the commit closes after its reply (Connection: close).
func (s *NetServer) dropIdlePSKConns() {
	s.mu.Lock()
	var cs []net.Conn
	for c, ci := range s.conns {
		if ci.psk && ci.idle {
			cs = append(cs, c)
		}
	}
	s.mu.Unlock()
	for _, c := range cs {
		_ = c.Close()
	}
}

// plainListener is 16992: plain HTTP, refused once TLS is in effect
// unless non-secure connections are accepted.
type plainListener struct {
	net.Listener
	s *NetServer
}

func (l *plainListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		st := l.s.dev.shallow()
		if st.ProvisioningState == amthi.StatePost && st.Net.TLSActive.Enabled && !st.Net.TLSActive.AcceptNonSecureConnections {
			l.s.log.Debug("amtsim: plain HTTP refused: TLS is in effect", "remote", c.RemoteAddr())
			c.Close()
			continue
		}
		return c, nil
	}
}

// tlsListener is 16993: TLS-PSK while in setup, TLS with the
// kiosk-signed certificate over the device's own key once committed.
type tlsListener struct {
	net.Listener
	s *NetServer
}

func (l *tlsListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		tc, err := l.s.wrapTLS(c)
		if err != nil {
			l.s.log.Debug("amtsim: TLS connection refused", "remote", c.RemoteAddr(), "reason", err)
			c.Close()
			continue
		}
		return tc, nil
	}
}

var errNoTLS = errors.New("no TLS on 16993 in this state")

func (s *NetServer) wrapTLS(c net.Conn) (net.Conn, error) {
	s.mu.Lock()
	down := s.opts.Now().Before(s.downUntil)
	s.mu.Unlock()
	if down {
		return nil, errors.New("network stack restarting after commit")
	}
	st := s.dev.shallow()
	if pkiTLS(st) {
		return s.wrapPKI(c) // specs/pki.md §4
	}
	switch st.ProvisioningState {
	case amthi.StateIn:
		if st.PID == "" {
			return nil, errNoTLS
		}
		s.mu.Lock()
		cfg := s.psk
		if hint := tlspsk.Identity(st.PID); !s.opts.NoIdentityHint && hint != cfg.Hint {
			// The PID changed (a new setup.bin record or SetTLSPSK): a
			// new config; a Config must not change once used.
			c2 := *cfg
			c2.Hint = hint
			s.psk = &c2
			cfg = &c2
		}
		s.mu.Unlock()
		return tlspsk.Server(c, cfg), nil
	case amthi.StatePost:
		if !st.Net.TLSActive.Enabled {
			return nil, errNoTLS
		}
		cert, err := s.certificate(st)
		if err != nil {
			return nil, err
		}
		cfg := &tls.Config{
			Certificates: []tls.Certificate{*cert},
			// PSK-era firmware (AMT 6–10) speaks TLS 1.0–1.2; the
			// simulator's choice, not a measured list.
			MinVersion: tls.VersionTLS10,
			MaxVersion: tls.VersionTLS12,
		}
		if st.Net.TLSActive.MutualAuthentication {
			// The simulator asks for a client certificate but does not
			// check its chain (no trusted roots are modelled).
			cfg.ClientAuth = tls.RequireAnyClientCert
		}
		return tls.Server(c, cfg), nil
	}
	return nil, errNoTLS
}

// certificate returns the TLS certificate bound by the credential
// context, with its device key.
func (s *NetServer) certificate(st State) (*tls.Certificate, error) {
	if !st.Net.HasTLSCredential {
		return nil, errors.New("no TLS credential context")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tlsCert != nil && s.tlsCertFrom == st.Net.TLSCredential {
		return s.tlsCert, nil
	}
	for _, c := range st.Net.Certs {
		if c.Handle != st.Net.TLSCredential {
			continue
		}
		for _, k := range st.Net.Keys {
			if k.Handle == c.KeyHandle {
				s.tlsCert = &tls.Certificate{Certificate: [][]byte{c.DER}, PrivateKey: k.Key}
				s.tlsCertFrom = c.Handle
				return s.tlsCert, nil
			}
		}
	}
	return nil, errors.New("the bound certificate has no device key")
}

// reqState travels in a request's context so handlers can ask for the
// connection to close after the reply.
type reqState struct{ closeAfter bool }

type reqStateKey struct{}

func (s *NetServer) serveHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/wsman" {
		http.NotFound(w, r)
		return
	}
	if d := s.fault.slow(); d > 0 {
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
	}
	rs := &reqState{}
	r = r.WithContext(context.WithValue(r.Context(), reqStateKey{}, rs))
	s.ws.ServeHTTP(&closeWriter{ResponseWriter: w, rs: rs}, r)
}

// closeWriter adds Connection: close when a handler asked for it (after
// CommitChanges the TLS-PSK session ends).
type closeWriter struct {
	http.ResponseWriter
	rs *reqState
}

func (w *closeWriter) WriteHeader(code int) {
	if w.rs.closeAfter {
		w.Header().Set("Connection", "close")
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *closeWriter) Write(b []byte) (int, error) {
	if w.rs.closeAfter && w.Header().Get("Connection") == "" {
		w.Header().Set("Connection", "close")
	}
	return w.ResponseWriter.Write(b)
}

func closeAfterReply(ctx context.Context) {
	if rs, ok := ctx.Value(reqStateKey{}).(*reqState); ok {
		rs.closeAfter = true
	}
}

var _ io.Closer = (*NetServer)(nil)
