package tlspsk

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

const (
	testPID = "0000037M"
	testPPS = "NKLDG5DCRRNQE9YZZIJL7LFLVJED69XJ" // Intel's documented example pair
)

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t testing.TB) (client, server net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := l.Accept()
		ch <- res{c, err}
	}()
	client, err = net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	r := <-ch
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Cleanup(func() { client.Close(); r.c.Close() })
	return client, r.c
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func clientConfig(t testing.TB, pid, pps string, form KeyForm) *Config {
	return &Config{
		Identity: func(hint string) (string, []byte, error) { return pid, form.Key(pid, pps), nil },
		Logger:   testLogger(t),
	}
}

func serverConfig(t testing.TB, pid, pps string, form KeyForm) *Config {
	return &Config{
		GetKey: func(id string) ([]byte, error) {
			if id != pid {
				return nil, ErrUnknownIdentity
			}
			return form.Key(pid, pps), nil
		},
		Logger: testLogger(t),
	}
}

// handshakePair runs both handshakes concurrently and returns their errors.
func handshakePair(t testing.TB, ccfg, scfg *Config) (*Conn, *Conn, error, error) {
	t.Helper()
	cc, sc := tcpPair(t)
	client, server := Client(cc, ccfg), Server(sc, scfg)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	serr := make(chan error, 1)
	go func() { serr <- server.HandshakeContext(ctx) }()
	cerr := client.HandshakeContext(ctx)
	return client, server, cerr, <-serr
}

func TestOursToOurs(t *testing.T) {
	for _, tc := range []struct {
		name    string
		vers    uint16
		suite   uint16
		hint    string
		form    KeyForm
		rc4     bool
		wantErr bool
	}{
		{name: "tls10-aes128", vers: VersionTLS10, suite: TLS_PSK_WITH_AES_128_CBC_SHA},
		{name: "tls10-aes256-hint", vers: VersionTLS10, suite: TLS_PSK_WITH_AES_256_CBC_SHA, hint: testPID},
		{name: "tls11-aes128-hint", vers: VersionTLS11, suite: TLS_PSK_WITH_AES_128_CBC_SHA, hint: testPID},
		{name: "tls11-aes256", vers: VersionTLS11, suite: TLS_PSK_WITH_AES_256_CBC_SHA},
		{name: "tls12-aes128", vers: VersionTLS12, suite: TLS_PSK_WITH_AES_128_CBC_SHA},
		{name: "tls12-aes256-dashed", vers: VersionTLS12, suite: TLS_PSK_WITH_AES_256_CBC_SHA, form: KeyPPSDashed},
		{name: "tls12-aes128-sha256-hint", vers: VersionTLS12, suite: TLS_PSK_WITH_AES_128_CBC_SHA256, hint: testPID},
		{name: "tls10-rc4", vers: VersionTLS10, suite: TLS_PSK_WITH_RC4_128_SHA, rc4: true},
		{name: "tls12-rc4-hint", vers: VersionTLS12, suite: TLS_PSK_WITH_RC4_128_SHA, rc4: true, hint: "x"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ccfg := clientConfig(t, testPID, testPPS, tc.form)
			ccfg.MaxVersion = tc.vers
			ccfg.AllowRC4 = tc.rc4
			scfg := serverConfig(t, testPID, testPPS, tc.form)
			scfg.CipherSuites = []uint16{tc.suite}
			scfg.AllowRC4 = tc.rc4
			scfg.Hint = tc.hint
			var gotHint string
			ccfg.Identity = func(hint string) (string, []byte, error) {
				gotHint = hint
				return testPID, tc.form.Key(testPID, testPPS), nil
			}
			client, server, cerr, serr := handshakePair(t, ccfg, scfg)
			if cerr != nil || serr != nil {
				t.Fatalf("handshake: client %v, server %v", cerr, serr)
			}
			if gotHint != tc.hint {
				t.Errorf("client saw hint %q, want %q", gotHint, tc.hint)
			}
			for _, c := range []*Conn{client, server} {
				st := c.ConnectionState()
				if st.Version != tc.vers || st.CipherSuite != tc.suite || !st.HandshakeComplete || st.Identity != testPID || st.Hint != tc.hint {
					t.Errorf("state %+v, want %s %s identity %q hint %q", st, VersionName(tc.vers), CipherSuiteName(tc.suite), testPID, tc.hint)
				}
			}
			exchange(t, client, server)
		})
	}
}

// exchange sends 0, 1, 16 KiB and 1 MiB both ways and checks close_notify.
func exchange(t *testing.T, client, server *Conn) {
	t.Helper()
	for _, n := range []int{0, 1, 16 << 10, 1 << 20} {
		for _, dir := range []struct {
			name string
			w, r *Conn
		}{{"client->server", client, server}, {"server->client", server, client}} {
			data := make([]byte, n)
			rand.Read(data)
			werr := make(chan error, 1)
			go func() {
				_, err := dir.w.Write(data)
				werr <- err
			}()
			got := make([]byte, n)
			if _, err := io.ReadFull(dir.r, got); err != nil {
				t.Fatalf("%s %d bytes: read: %v", dir.name, n, err)
			}
			if err := <-werr; err != nil {
				t.Fatalf("%s %d bytes: write: %v", dir.name, n, err)
			}
			if !bytes.Equal(got, data) {
				t.Fatalf("%s %d bytes: data differ", dir.name, n)
			}
		}
	}
	if err := client.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if n, err := server.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("server read after close_notify: %d, %v; want 0, EOF", n, err)
	}
	if err := server.Close(); err != nil {
		t.Fatal(err)
	}
	if n, err := client.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("client read after close_notify: %d, %v; want 0, EOF", n, err)
	}
	client.Close()
}

func TestOursNegative(t *testing.T) {
	t.Run("wrong key", func(t *testing.T) {
		_, _, cerr, serr := handshakePair(t, clientConfig(t, testPID, "AAAAG5DCRRNQE9YZZIJL7LFLVJED69XJ", KeyPPSASCII), serverConfig(t, testPID, testPPS, KeyPPSASCII))
		if !errors.Is(cerr, ErrBadKey) || !errors.Is(serr, ErrBadKey) {
			t.Fatalf("client %v, server %v; want ErrBadKey on both", cerr, serr)
		}
	})
	t.Run("wrong key form", func(t *testing.T) {
		_, _, cerr, serr := handshakePair(t, clientConfig(t, testPID, testPPS, KeyPPSDashed), serverConfig(t, testPID, testPPS, KeyPPSASCII))
		if !errors.Is(cerr, ErrBadKey) || !errors.Is(serr, ErrBadKey) {
			t.Fatalf("client %v, server %v; want ErrBadKey on both", cerr, serr)
		}
	})
	t.Run("unknown identity", func(t *testing.T) {
		_, _, cerr, serr := handshakePair(t, clientConfig(t, "ZZZZ999Z", testPPS, KeyPPSASCII), serverConfig(t, testPID, testPPS, KeyPPSASCII))
		if !errors.Is(cerr, ErrUnknownIdentity) || !errors.Is(serr, ErrUnknownIdentity) {
			t.Fatalf("client %v, server %v; want ErrUnknownIdentity on both", cerr, serr)
		}
		var ae *AlertError
		if !errors.As(cerr, &ae) || !ae.Remote || ae.Description != 115 {
			t.Fatalf("client error %v: want remote alert 115", cerr)
		}
	})
	t.Run("version", func(t *testing.T) {
		ccfg := clientConfig(t, testPID, testPPS, KeyPPSASCII)
		ccfg.MaxVersion = VersionTLS10
		scfg := serverConfig(t, testPID, testPPS, KeyPPSASCII)
		scfg.MinVersion = VersionTLS12
		_, _, cerr, serr := handshakePair(t, ccfg, scfg)
		if !errors.Is(cerr, ErrVersion) || !errors.Is(serr, ErrVersion) {
			t.Fatalf("client %v, server %v; want ErrVersion on both", cerr, serr)
		}
	})
	t.Run("client refuses low version", func(t *testing.T) {
		ccfg := clientConfig(t, testPID, testPPS, KeyPPSASCII)
		ccfg.MinVersion = VersionTLS12
		scfg := serverConfig(t, testPID, testPPS, KeyPPSASCII)
		scfg.MaxVersion = VersionTLS11
		_, _, cerr, serr := handshakePair(t, ccfg, scfg)
		if !errors.Is(cerr, ErrVersion) || !errors.Is(serr, ErrVersion) {
			t.Fatalf("client %v, server %v; want ErrVersion on both", cerr, serr)
		}
	})
	t.Run("no common suite", func(t *testing.T) {
		ccfg := clientConfig(t, testPID, testPPS, KeyPPSASCII)
		ccfg.CipherSuites = []uint16{TLS_PSK_WITH_AES_256_CBC_SHA}
		scfg := serverConfig(t, testPID, testPPS, KeyPPSASCII)
		scfg.CipherSuites = []uint16{TLS_PSK_WITH_AES_128_CBC_SHA}
		_, _, cerr, serr := handshakePair(t, ccfg, scfg)
		if cerr == nil || !errors.Is(serr, ErrNoCipherSuite) {
			t.Fatalf("client %v, server %v; want an error and ErrNoCipherSuite", cerr, serr)
		}
	})
	t.Run("RC4 not allowed", func(t *testing.T) {
		ccfg := clientConfig(t, testPID, testPPS, KeyPPSASCII)
		ccfg.CipherSuites = []uint16{TLS_PSK_WITH_RC4_128_SHA} // without AllowRC4
		if _, _, cerr, _ := handshakePair(t, ccfg, serverConfig(t, testPID, testPPS, KeyPPSASCII)); !errors.Is(cerr, ErrNoCipherSuite) {
			t.Fatalf("client %v, want ErrNoCipherSuite", cerr)
		}
	})
	t.Run("key never in errors", func(t *testing.T) {
		_, _, cerr, serr := handshakePair(t, clientConfig(t, testPID, "AAAAG5DCRRNQE9YZZIJL7LFLVJED69XJ", KeyPPSASCII), serverConfig(t, testPID, testPPS, KeyPPSASCII))
		for _, err := range []error{cerr, serr} {
			if bytes.Contains([]byte(err.Error()), []byte("G5DC")) {
				t.Fatalf("error %q contains key material", err)
			}
		}
	})
}

// TestPeerClosesMidHandshake: a peer that reads the first flight and hangs
// up gives ErrHandshakeClosed, on both sides.
func TestPeerClosesMidHandshake(t *testing.T) {
	for _, client := range []bool{true, false} {
		name := "server hangs up"
		if !client {
			name = "client hangs up"
		}
		t.Run(name, func(t *testing.T) {
			a, b := tcpPair(t)
			go func() {
				if !client {
					// Send half a ClientHello, then hang up.
					hello := (&clientHello{Version: VersionTLS12, Random: make([]byte, 32), CipherSuites: []uint16{0x008C}, Compression: []uint8{0}}).marshal()
					b.Write(append([]byte{22, 3, 1, 0, byte(len(hello))}, hello[:10]...))
				} else {
					b.Read(make([]byte, 1024))
				}
				b.Close()
			}()
			var c *Conn
			if client {
				c = Client(a, clientConfig(t, testPID, testPPS, KeyPPSASCII))
			} else {
				c = Server(a, serverConfig(t, testPID, testPPS, KeyPPSASCII))
			}
			err := c.HandshakeContext(t.Context())
			if !errors.Is(err, ErrHandshakeClosed) {
				t.Fatalf("got %v, want ErrHandshakeClosed", err)
			}
			if _, err2 := c.Write([]byte("x")); !errors.Is(err2, ErrHandshakeClosed) {
				t.Fatalf("write after failed handshake: %v", err2)
			}
		})
	}
}

func TestHandshakeContextCancel(t *testing.T) {
	a, _ := tcpPair(t) // the peer never answers
	c := Client(a, clientConfig(t, testPID, testPPS, KeyPPSASCII))
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	if err := c.HandshakeContext(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want DeadlineExceeded", err)
	}
}

func TestReadDeadlineRetry(t *testing.T) {
	client, server, cerr, serr := handshakePair(t, clientConfig(t, testPID, testPPS, KeyPPSASCII), serverConfig(t, testPID, testPPS, KeyPPSASCII))
	if cerr != nil || serr != nil {
		t.Fatal(cerr, serr)
	}
	client.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	var ne net.Error
	if _, err := client.Read(make([]byte, 10)); !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("got %v, want a timeout", err)
	}
	client.SetReadDeadline(time.Time{})
	go server.Write([]byte("later"))
	b := make([]byte, 5)
	if _, err := io.ReadFull(client, b); err != nil || string(b) != "later" {
		t.Fatalf("after timeout: %q, %v", b, err)
	}
}

// TestRenegotiationRefused: a HelloRequest (server→client) and a second
// ClientHello (client→server) after the handshake get a no_renegotiation
// warning, and the connection carries on.
func TestRenegotiationRefused(t *testing.T) {
	client, server, cerr, serr := handshakePair(t, clientConfig(t, testPID, testPPS, KeyPPSASCII), serverConfig(t, testPID, testPPS, KeyPPSASCII))
	if cerr != nil || serr != nil {
		t.Fatal(cerr, serr)
	}
	inject := func(c *Conn, msg []byte) {
		c.outMu.Lock()
		defer c.outMu.Unlock()
		if err := c.writeRecordsLocked(recordHandshake, msg); err != nil {
			t.Fatal(err)
		}
		if err := c.flushLocked(); err != nil {
			t.Fatal(err)
		}
	}
	inject(server, appendHandshake(nil, typeHelloRequest, nil))
	go server.Write([]byte("data"))
	b := make([]byte, 4)
	if _, err := io.ReadFull(client, b); err != nil || string(b) != "data" {
		t.Fatalf("client after HelloRequest: %q, %v", b, err)
	}
	hello := (&clientHello{Version: VersionTLS12, Random: make([]byte, 32), CipherSuites: []uint16{0x008C}, Compression: []uint8{0}}).marshal()
	inject(client, hello)
	go client.Write([]byte("more"))
	if _, err := io.ReadFull(server, b); err != nil || string(b) != "more" {
		t.Fatalf("server after ClientHello: %q, %v", b, err)
	}
	// Each side received the other's no_renegotiation warning without failing.
	go server.Write([]byte("ok"))
	if _, err := io.ReadFull(client, b[:2]); err != nil {
		t.Fatal(err)
	}
}

func TestKeyForm(t *testing.T) {
	for _, tc := range []struct {
		form KeyForm
		pps  string
		want string
	}{
		{KeyPPSASCII, "NKLD-G5DC-RRNQ-E9YZ-ZIJL-7LFL-VJED-69XJ", "NKLDG5DCRRNQE9YZZIJL7LFLVJED69XJ"},
		{KeyPPSASCII, testPPS, "NKLDG5DCRRNQE9YZZIJL7LFLVJED69XJ"},
		{KeyPPSDashed, testPPS, "NKLD-G5DC-RRNQ-E9YZ-ZIJL-7LFL-VJED-69XJ"},
		{KeyPPSDashed, "NKLD-G5DC-RRNQ-E9YZ-ZIJL-7LFL-VJED-69XJ", "NKLD-G5DC-RRNQ-E9YZ-ZIJL-7LFL-VJED-69XJ"},
	} {
		if got := string(tc.form.Key(testPID, tc.pps)); got != tc.want {
			t.Errorf("%v.Key(%q) = %q, want %q", tc.form, tc.pps, got, tc.want)
		}
		f, err := ParseKeyForm(tc.form.String())
		if err != nil || f != tc.form {
			t.Errorf("ParseKeyForm(%q) = %v, %v", tc.form.String(), f, err)
		}
	}
	if _, err := ParseKeyForm("pps-base64"); err == nil {
		t.Error("ParseKeyForm accepted an unknown form")
	}
	if got := Identity("0000-037M"); got != testPID {
		t.Errorf("Identity = %q", got)
	}
}

func TestListenAndDialer(t *testing.T) {
	l, err := Listen("tcp", "127.0.0.1:0", serverConfig(t, testPID, testPPS, KeyPPSASCII))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		io.Copy(c, c)
	}()
	d := &Dialer{Config: clientConfig(t, testPID, testPPS, KeyPPSASCII)}
	c, err := d.DialContext(t.Context(), "tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("echo"))
	b := make([]byte, 4)
	if _, err := io.ReadFull(c, b); err != nil || string(b) != "echo" {
		t.Fatalf("%q %v", b, err)
	}
}

// TestHTTPTransport is how the WS-Man client uses the package:
// http.Transport.DialTLSContext with a Dialer, against an HTTP server on
// Listen (the simulator's side).
func TestHTTPTransport(t *testing.T) {
	scfg := serverConfig(t, testPID, testPPS, KeyPPSASCII)
	scfg.Hint = testPID
	l, err := Listen("tcp", "127.0.0.1:0", scfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Write(bytes.ToUpper(body))
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })

	ccfg := &Config{Identity: func(hint string) (string, []byte, error) {
		if hint != testPID {
			return "", nil, errors.New("unexpected hint")
		}
		return hint, KeyPPSASCII.Key(hint, testPPS), nil
	}}
	client := &http.Client{Transport: &http.Transport{DialTLSContext: (&Dialer{Config: ccfg}).DialContext}}
	defer client.CloseIdleConnections()
	for i := range 3 { // the second and third reuse the connection
		resp, err := client.Post("https://"+l.Addr().String()+"/wsman", "application/soap+xml", strings.NewReader("envelope"))
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != "ENVELOPE" {
			t.Fatalf("request %d: %d %q", i, resp.StatusCode, b)
		}
	}
}
