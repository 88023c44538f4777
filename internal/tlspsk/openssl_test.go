package tlspsk

// Interop with OpenSSL (spec §3): our client against `openssl s_server
// -nocert -psk …` and our server against `openssl s_client -psk …`, on
// 127.0.0.1 only. openssl is installed by scripts/install-deps.sh; these
// tests fail, not skip, without it.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

var opensslVersionFlag = map[uint16]string{VersionTLS10: "-tls1", VersionTLS11: "-tls1_1", VersionTLS12: "-tls1_2"}

var opensslSuiteName = map[uint16]string{
	TLS_PSK_WITH_AES_128_CBC_SHA:    "PSK-AES128-CBC-SHA",
	TLS_PSK_WITH_AES_256_CBC_SHA:    "PSK-AES256-CBC-SHA",
	TLS_PSK_WITH_AES_128_CBC_SHA256: "PSK-AES128-CBC-SHA256",
}

// opensslCipher is the -cipher argument; OpenSSL 3 needs security level 0
// for TLS 1.0 and 1.1.
func opensslCipher(id uint16) string { return opensslSuiteName[id] + ":@SECLEVEL=0" }

// syncBuffer collects a process's stderr for error messages.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type opensslProc struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stdout io.Reader
	stderr *syncBuffer
	done   chan struct{}
	err    error // valid after done is closed
}

// startOpenSSL runs openssl with args, killing it when the test ends.
func startOpenSSL(t testing.TB, args ...string) *opensslProc {
	t.Helper()
	path, err := exec.LookPath("openssl")
	if err != nil {
		t.Fatalf("openssl is needed for the interop tests (scripts/install-deps.sh installs it): %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	cmd := exec.CommandContext(ctx, path, args...)
	p := &opensslProc{cmd: cmd, stderr: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stderr = p.stderr
	if p.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.stdout = bufio.NewReaderSize(stdout, 64<<10)
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting openssl %s: %v", strings.Join(args, " "), err)
	}
	go func() {
		// Drain stdout only after the test stops reading it: Wait closes
		// the pipe, so the reading side must be done first.
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		cancel()
		p.stdin.Close()
		<-p.done
	})
	return p
}

// wait waits for the process to exit, at most d.
func (p *opensslProc) wait(t testing.TB, d time.Duration) error {
	t.Helper()
	select {
	case <-p.done:
		return p.err
	case <-time.After(d):
		t.Fatalf("openssl did not exit within %v; stderr:\n%s", d, p.stderr)
		return nil
	}
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// waitListening waits until a socket listens on 127.0.0.1:port and reports
// whether one does; false means the process exited first. It reads
// /proc/net/tcp rather than connecting, because s_server -brief exits after
// a connection that fails its handshake, and it prints no "ACCEPT" line in
// -brief mode (whose clean stdout we need for the data checks).
func waitListening(t testing.TB, p *opensslProc, port int) bool {
	t.Helper()
	want := fmt.Sprintf("0100007F:%04X", port)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		b, err := os.ReadFile("/proc/net/tcp")
		if err != nil {
			t.Fatalf("reading /proc/net/tcp to see whether s_server listens: %v", err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) > 3 && f[1] == want && f[3] == "0A" { // 0A = LISTEN
				return true
			}
		}
		select {
		case <-p.done:
			return false
		case <-time.After(10 * time.Millisecond):
		}
	}
	t.Fatalf("s_server does not listen on port %d after 10s; stderr:\n%s", port, p.stderr)
	return false
}

func pskHex(key []byte) string { return hex.EncodeToString(key) }

type sServerOpts struct {
	vers    uint16
	suite   uint16
	hint    string
	key     []byte
	keylog  string
	naccept int // 0: serve until killed
}

// startSServer starts openssl s_server and returns it and its address.
func startSServer(t testing.TB, o sServerOpts) (*opensslProc, string) {
	t.Helper()
	port := freePort(t)
	args := []string{"s_server", "-accept", "127.0.0.1:" + strconv.Itoa(port), "-nocert", // args[2] is the address

		"-psk", pskHex(o.key), "-cipher", opensslCipher(o.suite), opensslVersionFlag[o.vers], "-brief"}
	if o.hint != "" {
		args = append(args, "-psk_hint", o.hint)
	}
	if o.keylog != "" {
		args = append(args, "-keylogfile", o.keylog)
	}
	if o.naccept > 0 {
		args = append(args, "-naccept", strconv.Itoa(o.naccept))
	}
	// The port was free a moment ago; another process may have taken it
	// since, in which case s_server exits and we try another.
	for attempt := 1; ; attempt++ {
		p := startOpenSSL(t, args...)
		if waitListening(t, p, port) {
			return p, "127.0.0.1:" + strconv.Itoa(port)
		}
		if attempt == 3 {
			t.Fatalf("s_server exited before listening: %v\n%s", p.err, p.stderr)
		}
		port = freePort(t)
		args[2] = "127.0.0.1:" + strconv.Itoa(port)
	}
}

type sClientOpts struct {
	vers     uint16
	suite    uint16
	identity string
	key      []byte
	keylog   string
}

func startSClient(t testing.TB, addr string, o sClientOpts) *opensslProc {
	t.Helper()
	args := []string{"s_client", "-connect", addr, "-psk", pskHex(o.key), "-psk_identity", o.identity,
		"-cipher", opensslCipher(o.suite), opensslVersionFlag[o.vers], "-brief", "-no_ign_eof", "-nocommands"}
	if o.keylog != "" {
		args = append(args, "-keylogfile", o.keylog)
	}
	return startOpenSSL(t, args...)
}

// keylogMaster returns the master secret OpenSSL logged for clientRandom.
func keylogMaster(t testing.TB, path string, clientRandom []byte) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading OpenSSL's key log: %v", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 3 && f[0] == "CLIENT_RANDOM" && strings.EqualFold(f[1], hex.EncodeToString(clientRandom)) {
			m, err := hex.DecodeString(f[2])
			if err != nil {
				t.Fatalf("key log line %q: %v", line, err)
			}
			return m
		}
	}
	t.Fatalf("no CLIENT_RANDOM %x in OpenSSL's key log:\n%s", clientRandom, b)
	return nil
}

type masterCapture struct {
	mu                 sync.Mutex
	client, server, ms []byte
}

func (m *masterCapture) hook(cr, sr, ms []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.client, m.server, m.ms = bytes.Clone(cr), bytes.Clone(sr), bytes.Clone(ms)
}

var interopSizes = []int{0, 1, 16 << 10, 1 << 20}

type interopCase struct {
	name  string
	vers  uint16
	suite uint16
	hint  string
}

func interopMatrix() []interopCase {
	var cases []interopCase
	for _, v := range []uint16{VersionTLS10, VersionTLS11, VersionTLS12} {
		ss := []uint16{TLS_PSK_WITH_AES_128_CBC_SHA, TLS_PSK_WITH_AES_256_CBC_SHA}
		if v == VersionTLS12 {
			ss = append(ss, TLS_PSK_WITH_AES_128_CBC_SHA256)
		}
		for _, s := range ss {
			for _, hint := range []string{"", testPID} {
				name := fmt.Sprintf("%s/%s/hint=%t", opensslVersionFlag[v][1:], opensslSuiteName[s], hint != "")
				cases = append(cases, interopCase{name, v, s, hint})
			}
		}
	}
	return cases
}

// TestClientAgainstOpenSSL: our client ↔ openssl s_server.
func TestClientAgainstOpenSSL(t *testing.T) {
	key := KeyPPSASCII.Key(testPID, testPPS)
	for _, tc := range interopMatrix() {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			keylog := filepath.Join(t.TempDir(), "keylog")
			srv, addr := startSServer(t, sServerOpts{vers: tc.vers, suite: tc.suite, hint: tc.hint, key: key, keylog: keylog, naccept: 1})
			var cap masterCapture
			cfg := clientConfig(t, testPID, testPPS, KeyPPSASCII)
			cfg.testHookMaster = cap.hook
			var sawHint string
			cfg.Identity = func(hint string) (string, []byte, error) {
				sawHint = hint
				return testPID, key, nil
			}
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			defer cancel()
			nc, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			c := Client(nc, cfg)
			defer c.Close()
			c.SetDeadline(time.Now().Add(30 * time.Second))
			if err := c.HandshakeContext(ctx); err != nil {
				t.Fatalf("handshake: %v\ns_server stderr:\n%s", err, srv.stderr)
			}
			st := c.ConnectionState()
			if st.Version != tc.vers || st.CipherSuite != tc.suite || st.Hint != tc.hint || sawHint != tc.hint {
				t.Fatalf("state %+v (callback saw hint %q), want %s %s hint %q", st, sawHint, VersionName(tc.vers), CipherSuiteName(tc.suite), tc.hint)
			}
			for _, n := range interopSizes {
				data := make([]byte, n)
				rand.Read(data)
				// our client → s_server's stdout
				if _, err := c.Write(data); err != nil {
					t.Fatalf("writing %d bytes: %v", n, err)
				}
				got := make([]byte, n)
				if _, err := io.ReadFull(srv.stdout, got); err != nil || !bytes.Equal(got, data) {
					t.Fatalf("s_server stdout after %d bytes: equal=%t, %v\n%s", n, bytes.Equal(got, data), err, srv.stderr)
				}
				// s_server's stdin → our client
				werr := make(chan error, 1)
				go func() { _, err := srv.stdin.Write(data); werr <- err }()
				if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, data) {
					t.Fatalf("reading %d bytes from s_server: equal=%t, %v\n%s", n, bytes.Equal(got, data), err, srv.stderr)
				}
				if err := <-werr; err != nil {
					t.Fatal(err)
				}
			}
			if err := c.Close(); err != nil {
				t.Fatalf("close: %v", err)
			}
			if err := srv.wait(t, 10*time.Second); err != nil {
				t.Fatalf("s_server: %v\n%s", err, srv.stderr)
			}
			cap.mu.Lock()
			defer cap.mu.Unlock()
			if want := keylogMaster(t, keylog, cap.client); !bytes.Equal(cap.ms, want) {
				t.Fatalf("master secret %x, OpenSSL's %x", cap.ms, want)
			}
		})
	}
}

// TestServerAgainstOpenSSL: openssl s_client ↔ our server.
func TestServerAgainstOpenSSL(t *testing.T) {
	key := KeyPPSASCII.Key(testPID, testPPS)
	for _, tc := range interopMatrix() {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var cap masterCapture
			cfg := serverConfig(t, testPID, testPPS, KeyPPSASCII)
			cfg.Hint = tc.hint
			cfg.MinVersion, cfg.MaxVersion = tc.vers, tc.vers
			cfg.CipherSuites = []uint16{tc.suite}
			cfg.testHookMaster = cap.hook
			l, err := Listen("tcp", "127.0.0.1:0", cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			keylog := filepath.Join(t.TempDir(), "keylog")
			cli := startSClient(t, l.Addr().String(), sClientOpts{vers: tc.vers, suite: tc.suite, identity: testPID, key: key, keylog: keylog})
			nc, err := l.Accept()
			if err != nil {
				t.Fatal(err)
			}
			c := nc.(*Conn)
			defer c.Close()
			c.SetDeadline(time.Now().Add(30 * time.Second))
			if err := c.HandshakeContext(t.Context()); err != nil {
				t.Fatalf("handshake: %v\ns_client stderr:\n%s", err, cli.stderr)
			}
			st := c.ConnectionState()
			if st.Version != tc.vers || st.CipherSuite != tc.suite || st.Hint != tc.hint || st.Identity != testPID {
				t.Fatalf("state %+v, want %s %s hint %q identity %q", st, VersionName(tc.vers), CipherSuiteName(tc.suite), tc.hint, testPID)
			}
			for _, n := range interopSizes {
				data := make([]byte, n)
				rand.Read(data)
				werr := make(chan error, 1)
				go func() { _, err := cli.stdin.Write(data); werr <- err }()
				got := make([]byte, n)
				if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, data) {
					t.Fatalf("reading %d bytes from s_client: equal=%t, %v\n%s", n, bytes.Equal(got, data), err, cli.stderr)
				}
				if err := <-werr; err != nil {
					t.Fatal(err)
				}
				if _, err := c.Write(data); err != nil {
					t.Fatalf("writing %d bytes: %v", n, err)
				}
				if _, err := io.ReadFull(cli.stdout, got); err != nil || !bytes.Equal(got, data) {
					t.Fatalf("s_client stdout after %d bytes: equal=%t, %v\n%s", n, bytes.Equal(got, data), err, cli.stderr)
				}
			}
			// s_client sends close_notify at the end of its input.
			cli.stdin.Close()
			if n, err := c.Read(make([]byte, 1)); n != 0 || err != io.EOF {
				t.Fatalf("read after s_client closed: %d, %v; want EOF", n, err)
			}
			if err := cli.wait(t, 10*time.Second); err != nil {
				t.Fatalf("s_client: %v\n%s", err, cli.stderr)
			}
			cap.mu.Lock()
			defer cap.mu.Unlock()
			if want := keylogMaster(t, keylog, cap.client); !bytes.Equal(cap.ms, want) {
				t.Fatalf("master secret %x, OpenSSL's %x", cap.ms, want)
			}
		})
	}
}

func TestClientAgainstOpenSSLNegative(t *testing.T) {
	key := KeyPPSASCII.Key(testPID, testPPS)
	for _, tc := range []struct {
		name    string
		server  sServerOpts
		client  func(*Config)
		want    error
		wantOut string // in s_server's stderr
	}{
		{name: "wrong key", server: sServerOpts{vers: VersionTLS10, suite: TLS_PSK_WITH_AES_128_CBC_SHA, key: []byte("another PPS, not the one we use!")},
			want: ErrBadKey, wantOut: "bad record mac"},
		{name: "wrong key form", server: sServerOpts{vers: VersionTLS12, suite: TLS_PSK_WITH_AES_256_CBC_SHA, key: KeyPPSDashed.Key(testPID, testPPS), hint: testPID},
			want: ErrBadKey, wantOut: "bad record mac"},
		{name: "server refuses our version", server: sServerOpts{vers: VersionTLS12, suite: TLS_PSK_WITH_AES_128_CBC_SHA, key: key},
			client: func(c *Config) { c.MaxVersion = VersionTLS10 }, want: ErrVersion, wantOut: "unsupported protocol"},
		{name: "we refuse the server's version", server: sServerOpts{vers: VersionTLS10, suite: TLS_PSK_WITH_AES_128_CBC_SHA, key: key},
			client: func(c *Config) { c.MinVersion = VersionTLS12 }, want: ErrVersion, wantOut: "protocol version"},
		{name: "no common suite", server: sServerOpts{vers: VersionTLS12, suite: TLS_PSK_WITH_AES_256_CBC_SHA, key: key},
			client: func(c *Config) { c.CipherSuites = []uint16{TLS_PSK_WITH_AES_128_CBC_SHA} }, want: &AlertError{Description: uint8(alertHandshakeFailure), Remote: true}, wantOut: "no shared cipher"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.server.naccept = 1
			srv, addr := startSServer(t, tc.server)
			cfg := clientConfig(t, testPID, testPPS, KeyPPSASCII)
			if tc.client != nil {
				tc.client(cfg)
			}
			d := &Dialer{Config: cfg}
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			defer cancel()
			_, err := d.DialContext(ctx, "tcp", addr)
			if ae, ok := tc.want.(*AlertError); ok {
				var got *AlertError
				if !errors.As(err, &got) || *got != *ae {
					t.Fatalf("got %v, want %v", err, ae)
				}
			} else if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			srv.wait(t, 10*time.Second)
			if !strings.Contains(srv.stderr.String(), tc.wantOut) {
				t.Errorf("s_server stderr lacks %q:\n%s", tc.wantOut, srv.stderr)
			}
		})
	}
}

func TestServerAgainstOpenSSLNegative(t *testing.T) {
	key := KeyPPSASCII.Key(testPID, testPPS)
	for _, tc := range []struct {
		name    string
		client  sClientOpts
		server  func(*Config)
		want    error
		wantOut string // in s_client's stderr
	}{
		{name: "wrong key", client: sClientOpts{vers: VersionTLS10, suite: TLS_PSK_WITH_AES_128_CBC_SHA, identity: testPID, key: []byte("another PPS, not the one we use!")},
			want: ErrBadKey, wantOut: "bad record mac"},
		{name: "unknown identity", client: sClientOpts{vers: VersionTLS10, suite: TLS_PSK_WITH_AES_128_CBC_SHA, identity: "ZZZZ999Z", key: key},
			want: ErrUnknownIdentity, wantOut: "unknown psk identity"},
		{name: "unknown identity tls12 hint", client: sClientOpts{vers: VersionTLS12, suite: TLS_PSK_WITH_AES_256_CBC_SHA, identity: "ZZZZ999Z", key: key},
			server: func(c *Config) { c.Hint = testPID }, want: ErrUnknownIdentity, wantOut: "unknown psk identity"},
		{name: "client version too new", client: sClientOpts{vers: VersionTLS12, suite: TLS_PSK_WITH_AES_128_CBC_SHA, identity: testPID, key: key},
			server: func(c *Config) { c.MaxVersion = VersionTLS10 }, want: ErrVersion, wantOut: "version"},
		{name: "client version too old", client: sClientOpts{vers: VersionTLS10, suite: TLS_PSK_WITH_AES_128_CBC_SHA, identity: testPID, key: key},
			server: func(c *Config) { c.MinVersion = VersionTLS12 }, want: ErrVersion, wantOut: "protocol version"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := serverConfig(t, testPID, testPPS, KeyPPSASCII)
			if tc.server != nil {
				tc.server(cfg)
			}
			l, err := Listen("tcp", "127.0.0.1:0", cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			cli := startSClient(t, l.Addr().String(), tc.client)
			nc, err := l.Accept()
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			c := nc.(*Conn)
			c.SetDeadline(time.Now().Add(20 * time.Second))
			if err := c.HandshakeContext(t.Context()); !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v\ns_client stderr:\n%s", err, tc.want, cli.stderr)
			}
			cli.stdin.Close()
			if err := cli.wait(t, 10*time.Second); err == nil {
				t.Errorf("s_client exited 0 after a failed handshake")
			}
			if !strings.Contains(cli.stderr.String(), tc.wantOut) {
				t.Errorf("s_client stderr lacks %q:\n%s", tc.wantOut, cli.stderr)
			}
		})
	}
}

// TestOpenSSLPeerDiesMidHandshake: the peer process is killed while we wait
// for its next flight.
func TestOpenSSLPeerDiesMidHandshake(t *testing.T) {
	key := KeyPPSASCII.Key(testPID, testPPS)
	t.Run("s_server", func(t *testing.T) {
		srv, addr := startSServer(t, sServerOpts{vers: VersionTLS10, suite: TLS_PSK_WITH_AES_128_CBC_SHA, key: key, naccept: 1})
		cfg := clientConfig(t, testPID, testPPS, KeyPPSASCII)
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		// The key callback runs after the server's first flight; kill the
		// server there, so that it dies in the middle of the handshake.
		cfg.Identity = func(string) (string, []byte, error) {
			srv.cmd.Process.Kill()
			<-srv.done
			return testPID, key, nil
		}
		c := Client(nc, cfg)
		defer c.Close()
		c.SetDeadline(time.Now().Add(20 * time.Second))
		err = c.Handshake()
		if !errors.Is(err, ErrHandshakeClosed) && !isReset(err) {
			t.Fatalf("got %v, want ErrHandshakeClosed or a reset", err)
		}
	})
	t.Run("s_client", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		cli := startSClient(t, l.Addr().String(), sClientOpts{vers: VersionTLS12, suite: TLS_PSK_WITH_AES_128_CBC_SHA, identity: testPID, key: key})
		nc, err := l.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		// Once the ClientHello has begun to arrive, kill s_client: it dies
		// waiting for our ServerHello.
		first := make([]byte, recordHeaderLen)
		nc.SetDeadline(time.Now().Add(20 * time.Second))
		if _, err := io.ReadFull(nc, first); err != nil {
			t.Fatal(err)
		}
		cli.cmd.Process.Kill()
		<-cli.done
		c := Server(&prefixConn{Conn: nc, prefix: first}, serverConfig(t, testPID, testPPS, KeyPPSASCII))
		err = c.Handshake()
		if !errors.Is(err, ErrHandshakeClosed) && !isReset(err) {
			t.Fatalf("got %v, want ErrHandshakeClosed or a reset", err)
		}
	})
}

// prefixConn returns prefix before reading from Conn.
type prefixConn struct {
	net.Conn
	prefix []byte
}

func (p *prefixConn) Read(b []byte) (int, error) {
	if len(p.prefix) > 0 {
		n := copy(b, p.prefix)
		p.prefix = p.prefix[n:]
		return n, nil
	}
	return p.Conn.Read(b)
}

func isReset(err error) bool {
	return err != nil && (strings.Contains(err.Error(), "connection reset") || strings.Contains(err.Error(), "broken pipe"))
}
