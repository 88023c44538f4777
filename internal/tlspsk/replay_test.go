package tlspsk

// Transcript replay (STYLE.md, like crypto/tls's handshake tests): a live
// handshake with OpenSSL is recorded once — the bytes OpenSSL sent us
// (*.peer) and the bytes we sent (*.ours) — with our side drawing its
// randoms and IVs from a fixed seed. Replaying the *.peer bytes into a fresh
// Conn with the same seed must reproduce *.ours byte for byte, and OpenSSL's
// Finished must still verify. `go test -run TestReplay -update` re-records.

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

type replayCase struct {
	name   string
	client bool // our side is the client, the peer s_server
	vers   uint16
	suite  uint16
	hint   string
}

var replayCases = []replayCase{
	{"client-openssl-tls10-aes128-hint", true, VersionTLS10, TLS_PSK_WITH_AES_128_CBC_SHA, testPID},
	{"client-openssl-tls12-aes256", true, VersionTLS12, TLS_PSK_WITH_AES_256_CBC_SHA, ""},
	{"server-openssl-tls11-aes128-hint", false, VersionTLS11, TLS_PSK_WITH_AES_128_CBC_SHA, testPID},
	{"server-openssl-tls12-aes128sha256", false, VersionTLS12, TLS_PSK_WITH_AES_128_CBC_SHA256, ""},
}

// seededRand is the deterministic randomness of recordings and replays.
func seededRand() io.Reader {
	return rand.NewChaCha8([32]byte{'p', 'r', 'o', 'v', 's', 't', 'i', 'c', 'k'})
}

// recConn records what passes through a net.Conn.
type recConn struct {
	net.Conn
	in, out bytes.Buffer
}

func (r *recConn) Read(b []byte) (int, error) {
	n, err := r.Conn.Read(b)
	r.in.Write(b[:n])
	return n, err
}

func (r *recConn) Write(b []byte) (int, error) {
	r.out.Write(b)
	return r.Conn.Write(b)
}

// replayConn reads a recorded stream and collects what is written.
type replayConn struct {
	r   *bytes.Reader
	out bytes.Buffer
}

func (c *replayConn) Read(b []byte) (int, error)         { return c.r.Read(b) }
func (c *replayConn) Write(b []byte) (int, error)        { return c.out.Write(b) }
func (c *replayConn) Close() error                       { return nil }
func (c *replayConn) LocalAddr() net.Addr                { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }
func (c *replayConn) RemoteAddr() net.Addr               { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }
func (c *replayConn) SetDeadline(t time.Time) error      { return nil }
func (c *replayConn) SetReadDeadline(t time.Time) error  { return nil }
func (c *replayConn) SetWriteDeadline(t time.Time) error { return nil }

func (rc replayCase) config(t testing.TB) *Config {
	var cfg *Config
	if rc.client {
		cfg = clientConfig(t, testPID, testPPS, KeyPPSASCII)
	} else {
		cfg = serverConfig(t, testPID, testPPS, KeyPPSASCII)
		cfg.Hint = rc.hint
	}
	cfg.MinVersion, cfg.MaxVersion = rc.vers, rc.vers
	cfg.CipherSuites = []uint16{rc.suite}
	cfg.Rand = seededRand()
	return cfg
}

// script is the conversation: the client says "ping\n", the server "pong\n",
// then the client sends close_notify.
func (rc replayCase) script(c *Conn) error {
	if err := c.Handshake(); err != nil {
		return err
	}
	st := c.ConnectionState()
	if st.Version != rc.vers || st.CipherSuite != rc.suite || st.Hint != rc.hint || st.Identity != testPID {
		return errors.New("unexpected connection state")
	}
	b := make([]byte, 5)
	if rc.client {
		if _, err := c.Write([]byte("ping\n")); err != nil {
			return err
		}
		if _, err := io.ReadFull(c, b); err != nil || string(b) != "pong\n" {
			return errors.Join(errors.New("want pong"), err)
		}
		return c.Close()
	}
	if _, err := io.ReadFull(c, b); err != nil || string(b) != "ping\n" {
		return errors.Join(errors.New("want ping"), err)
	}
	if _, err := c.Write([]byte("pong\n")); err != nil {
		return err
	}
	if n, err := c.Read(b); n != 0 || err != io.EOF {
		return errors.Join(errors.New("want EOF"), err)
	}
	return c.Close()
}

func TestReplay(t *testing.T) {
	for _, rc := range replayCases {
		t.Run(rc.name, func(t *testing.T) {
			base := filepath.Join("testdata", "replay", rc.name)
			if *update {
				record(t, rc, base)
			}
			peer, err := os.ReadFile(base + ".peer")
			if err != nil {
				t.Fatal(err)
			}
			ours, err := os.ReadFile(base + ".ours")
			if err != nil {
				t.Fatal(err)
			}
			rcn := &replayConn{r: bytes.NewReader(peer)}
			var c *Conn
			if rc.client {
				c = Client(rcn, rc.config(t))
			} else {
				c = Server(rcn, rc.config(t))
			}
			if err := rc.script(c); err != nil {
				t.Fatalf("replay: %v", err)
			}
			if !bytes.Equal(rcn.out.Bytes(), ours) {
				t.Fatalf("replay wrote\n%x\nrecording has\n%x", rcn.out.Bytes(), ours)
			}
		})
	}
}

func record(t *testing.T, rc replayCase, base string) {
	key := KeyPPSASCII.Key(testPID, testPPS)
	var rec *recConn
	var peer *opensslProc
	if rc.client {
		srv, addr := startSServer(t, sServerOpts{vers: rc.vers, suite: rc.suite, hint: rc.hint, key: key, naccept: 1})
		peer = srv
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		rec = &recConn{Conn: nc}
		go func() { // s_server prints "ping", we make it answer "pong"
			b := make([]byte, 5)
			io.ReadFull(srv.stdout, b)
			srv.stdin.Write([]byte("pong\n"))
		}()
		if err := rc.script(Client(rec, rc.config(t))); err != nil {
			t.Fatalf("recording: %v\n%s", err, srv.stderr)
		}
	} else {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		cli := startSClient(t, l.Addr().String(), sClientOpts{vers: rc.vers, suite: rc.suite, identity: testPID, key: key})
		peer = cli
		nc, err := l.Accept()
		if err != nil {
			t.Fatal(err)
		}
		rec = &recConn{Conn: nc}
		go func() {
			cli.stdin.Write([]byte("ping\n"))
			b := make([]byte, 5)
			io.ReadFull(cli.stdout, b)
			cli.stdin.Close()
		}()
		if err := rc.script(Server(rec, rc.config(t))); err != nil {
			t.Fatalf("recording: %v\n%s", err, cli.stderr)
		}
	}
	if err := peer.wait(t, 10*time.Second); err != nil {
		t.Fatalf("openssl: %v\n%s", err, peer.stderr)
	}
	if err := os.MkdirAll(filepath.Dir(base), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(base+".peer", rec.in.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(base+".ours", rec.out.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestReplayTampered: a flipped bit in application data after the
// handshake is bad_record_mac, and not ErrBadKey (that is only for
// Finished).
func TestReplayTampered(t *testing.T) {
	rc := replayCases[0]
	peer, err := os.ReadFile(filepath.Join("testdata", "replay", rc.name+".peer"))
	if err != nil {
		t.Fatal(err)
	}
	peer[len(peer)-1] ^= 1 // last byte of the last record, "pong\n"
	c := Client(&replayConn{r: bytes.NewReader(peer)}, rc.config(t))
	if err := c.Handshake(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("ping\n")); err != nil {
		t.Fatal(err)
	}
	_, err = io.ReadFull(c, make([]byte, 5))
	var ae *AlertError
	if !errors.As(err, &ae) || ae.Description != uint8(alertBadRecordMAC) || ae.Remote || errors.Is(err, ErrBadKey) {
		t.Fatalf("got %v, want a local bad_record_mac alert that is not ErrBadKey", err)
	}
}

// records splits a recorded stream into (type, fragment) pairs.
func records(t *testing.T, b []byte) (types []uint8, frags [][]byte) {
	t.Helper()
	for len(b) > 0 {
		if len(b) < recordHeaderLen {
			t.Fatalf("%d stray bytes", len(b))
		}
		n := int(b[3])<<8 | int(b[4])
		types, frags = append(types, b[0]), append(frags, b[recordHeaderLen:recordHeaderLen+n])
		b = b[recordHeaderLen+n:]
	}
	return types, frags
}

// TestClientWireShape checks, on the recorded sessions, what old firmware
// is said to need: the ClientHello in a TLS 1.0 record with no extensions
// and only the renegotiation SCSV beside the PSK suites; and the 1/n-1
// split of TLS 1.0 CBC writes ("ping\n" goes out as 1 + 4 bytes).
func TestClientWireShape(t *testing.T) {
	for _, rc := range replayCases[:2] {
		t.Run(rc.name, func(t *testing.T) {
			ours, err := os.ReadFile(filepath.Join("testdata", "replay", rc.name+".ours"))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.HasPrefix(ours, []byte{recordHandshake, 3, 1}) {
				t.Fatalf("ClientHello record header % x, want 16 03 01", ours[:3])
			}
			hello, err := parseClientHello(plaintextMessages(ours)[0][handshakeHeaderLen:])
			if err != nil {
				t.Fatal(err)
			}
			if hello.Extensions != nil || hello.Version != rc.vers || len(hello.SessionID) != 0 ||
				!bytes.Equal(hello.Compression, []byte{0}) || hello.CipherSuites[len(hello.CipherSuites)-1] != scsvRenegotiation {
				t.Fatalf("ClientHello %+v", hello)
			}
			types, frags := records(t, ours)
			var app []int
			for i, typ := range types {
				if typ == recordApplicationData {
					app = append(app, len(frags[i]))
				}
			}
			want := []int{16 + 32} // TLS 1.2: explicit IV + one padded block pair
			if rc.vers == VersionTLS10 {
				want = []int{32, 32} // 1 byte + MAC + padding, then 4 bytes + MAC + padding
			}
			if len(app) != len(want) || app[0] != want[0] {
				t.Fatalf("application data records of %v bytes, want %v", app, want)
			}
		})
	}
}
