package tlspsk

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// plaintextMessages returns the handshake messages a recorded stream
// carries before its first ChangeCipherSpec.
func plaintextMessages(stream []byte) [][]byte {
	var hs []byte
	for len(stream) >= recordHeaderLen {
		n := int(binary.BigEndian.Uint16(stream[3:5]))
		if stream[0] != recordHandshake || len(stream) < recordHeaderLen+n {
			break
		}
		hs = append(hs, stream[recordHeaderLen:recordHeaderLen+n]...)
		stream = stream[recordHeaderLen+n:]
	}
	var msgs [][]byte
	for len(hs) >= handshakeHeaderLen {
		n := int(hs[1])<<16 | int(hs[2])<<8 | int(hs[3])
		if len(hs) < handshakeHeaderLen+n {
			break
		}
		msgs = append(msgs, hs[:handshakeHeaderLen+n])
		hs = hs[handshakeHeaderLen+n:]
	}
	return msgs
}

func replayFiles(t testing.TB, suffix string) map[string][]byte {
	m, err := filepath.Glob(filepath.Join("testdata", "replay", "*"+suffix))
	if err != nil || len(m) == 0 {
		t.Fatalf("no testdata/replay/*%s: %v", suffix, err)
	}
	out := map[string][]byte{}
	for _, p := range m {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		out[filepath.Base(p)] = b
	}
	return out
}

// FuzzHandshakeMessages parses each handshake message type; what parses
// must encode back to the same bytes and parse to the same struct.
func FuzzHandshakeMessages(f *testing.F) {
	for _, suffix := range []string{".peer", ".ours"} {
		for _, b := range replayFiles(f, suffix) {
			for _, m := range plaintextMessages(b) {
				f.Add(m)
			}
		}
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		if len(msg) < handshakeHeaderLen {
			return
		}
		typ, body := msg[0], msg[handshakeHeaderLen:]
		var parsed any
		var enc []byte
		var reparse func([]byte) (any, error)
		switch typ {
		case typeClientHello:
			m, err := parseClientHello(body)
			if err != nil {
				return
			}
			parsed, enc = m, m.marshal()
			reparse = func(b []byte) (any, error) { return parseClientHello(b) }
		case typeServerHello:
			m, err := parseServerHello(body)
			if err != nil {
				return
			}
			parsed, enc = m, m.marshal()
			reparse = func(b []byte) (any, error) { return parseServerHello(b) }
		case typeServerKeyExchange, typeClientKeyExchange:
			m, err := parsePSKMessage(typ, body)
			if err != nil {
				return
			}
			parsed, enc = m, m.marshal()
			reparse = func(b []byte) (any, error) { return parsePSKMessage(typ, b) }
		case typeFinished:
			if _, err := parseFinished(body); err != nil {
				return
			}
			return
		default:
			return
		}
		if !bytes.Equal(enc[handshakeHeaderLen:], body) {
			t.Fatalf("re-encoding differs:\n got %x\nwant %x", enc[handshakeHeaderLen:], body)
		}
		again, err := reparse(enc[handshakeHeaderLen:])
		if err != nil {
			t.Fatalf("re-parse: %v", err)
		}
		if !reflect.DeepEqual(parsed, again) {
			t.Fatalf("re-parse differs: %+v vs %+v", parsed, again)
		}
	})
}

// fuzzConn runs our side of a replay case over the given peer bytes,
// reading application data until the stream ends. It must not panic, and
// it cannot loop: every step consumes input.
func fuzzConn(t *testing.T, client bool, data []byte) {
	var cases []replayCase
	for _, rc := range replayCases {
		if rc.client == client {
			cases = append(cases, rc)
		}
	}
	if len(data) == 0 {
		return
	}
	rc := cases[int(data[0])%len(cases)]
	cfg := rc.config(t)
	cfg.Logger = nil
	cfg.MinVersion, cfg.MaxVersion = 0, 0
	cfg.CipherSuites = []uint16{rc.suite, TLS_PSK_WITH_AES_128_CBC_SHA, TLS_PSK_WITH_AES_256_CBC_SHA, TLS_PSK_WITH_AES_128_CBC_SHA256, TLS_PSK_WITH_RC4_128_SHA}
	cfg.AllowRC4 = true
	if client {
		// Keep what the recording offered so that seeds get deep.
		cfg.MinVersion, cfg.MaxVersion = rc.vers, rc.vers
		cfg.CipherSuites = []uint16{rc.suite}
	}
	conn := &replayConn{r: bytes.NewReader(data[1:])}
	var c *Conn
	if client {
		c = Client(conn, cfg)
	} else {
		c = Server(conn, cfg)
	}
	if err := c.Handshake(); err != nil {
		return
	}
	buf := make([]byte, 4096)
	for {
		if _, err := c.Read(buf); err != nil {
			break
		}
	}
	c.Write([]byte("x"))
	c.Close()
}

func seedPeer(f *testing.F, client bool) {
	for _, rc := range replayCases {
		if rc.client != client {
			continue
		}
		b, err := os.ReadFile(filepath.Join("testdata", "replay", rc.name+".peer"))
		if err != nil {
			f.Fatal(err)
		}
		// The first byte picks the replay case among those of this side.
		for i := range 2 {
			f.Add(append([]byte{byte(i)}, b...))
		}
	}
}

// FuzzServerHandshake feeds arbitrary client bytes to our server.
func FuzzServerHandshake(f *testing.F) {
	seedPeer(f, false)
	f.Fuzz(func(t *testing.T, data []byte) { fuzzConn(t, false, data) })
}

// FuzzClientHandshake feeds arbitrary server bytes to our client.
func FuzzClientHandshake(f *testing.F) {
	seedPeer(f, true)
	f.Fuzz(func(t *testing.T, data []byte) { fuzzConn(t, true, data) })
}

// FuzzRecord opens arbitrary fragments under each suite and version, and
// checks that what we seal opens to the same payload.
func FuzzRecord(f *testing.F) {
	for _, b := range replayFiles(f, ".ours") {
		// Record fragments from our own recordings, after the header.
		for len(b) >= recordHeaderLen {
			n := int(binary.BigEndian.Uint16(b[3:5]))
			if len(b) < recordHeaderLen+n {
				break
			}
			f.Add(byte(len(b)), b[0], b[recordHeaderLen:recordHeaderLen+n])
			b = b[recordHeaderLen+n:]
		}
	}
	versions := []uint16{VersionTLS10, VersionTLS11, VersionTLS12}
	f.Fuzz(func(t *testing.T, sel, typ byte, frag []byte) {
		s := suites[int(sel)%len(suites)]
		vers := versions[int(sel/8)%len(versions)]
		if s.minVersion > vers {
			vers = s.minVersion
		}
		mk := func(encrypt bool) *halfConn {
			macKey, key := bytes.Repeat([]byte{1}, s.macLen), bytes.Repeat([]byte{2}, s.keyLen)
			var iv []byte
			if vers == VersionTLS10 {
				iv = bytes.Repeat([]byte{3}, s.blockLen)
			}
			cs, err := newCipherState(vers, s, macKey, key, iv, encrypt)
			if err != nil {
				t.Fatal(err)
			}
			return &halfConn{version: vers, cs: cs}
		}
		in := mk(false)
		in.open(typ, bytes.Clone(frag)) // must not panic

		payload := frag[:min(len(frag), maxPlaintext)]
		out, in2 := mk(true), mk(false)
		rec, err := out.seal(nil, typ, payload, seededRand())
		if err != nil {
			t.Fatal(err)
		}
		if got := int(binary.BigEndian.Uint16(rec[3:5])); got != len(rec)-recordHeaderLen || got > maxCiphertext {
			t.Fatalf("record length %d for %d bytes", got, len(rec)-recordHeaderLen)
		}
		got, a := in2.open(typ, rec[recordHeaderLen:])
		if a != 0 || !bytes.Equal(got, payload) {
			t.Fatalf("seal/open %s %s: alert %v, equal %t", VersionName(vers), s.name, a, bytes.Equal(got, payload))
		}
	})
}
