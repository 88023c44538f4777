package tlspsk

// Benchmarks behind scripts/bench-tlspsk.sh, which runs them next to
// OpenSSL in the same run and prints the ratios.

import (
	"bytes"
	"io"
	"net"
	"testing"
)

func benchClientConfig(vers uint16) *Config {
	key := KeyPPSASCII.Key(testPID, testPPS)
	return &Config{
		MinVersion: vers, MaxVersion: vers,
		CipherSuites: []uint16{TLS_PSK_WITH_AES_128_CBC_SHA},
		Identity:     func(string) (string, []byte, error) { return testPID, key, nil },
	}
}

func benchServerConfig(vers uint16) *Config {
	key := KeyPPSASCII.Key(testPID, testPPS)
	return &Config{
		MinVersion: vers, MaxVersion: vers,
		CipherSuites: []uint16{TLS_PSK_WITH_AES_128_CBC_SHA},
		GetKey:       func(string) ([]byte, error) { return key, nil },
	}
}

// serveOurs runs our server on loopback: handshake, read until close, close.
func serveOurs(b *testing.B, cfg *Config) string {
	l, err := Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(io.Discard, c)
			}()
		}
	}()
	return l.Addr().String()
}

// handshakeLoop does b.N sequential connections: dial, handshake, close.
func handshakeLoop(b *testing.B, addr string, cfg *Config) {
	b.ReportAllocs()
	for b.Loop() {
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		c := Client(nc, cfg)
		if err := c.Handshake(); err != nil {
			b.Fatal(err)
		}
		c.Close()
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "handshakes/s")
}

// BenchmarkHandshake: our client against our server and against
// openssl s_server, one connection after another (s_server is single
// threaded, so ours is measured the same way).
func BenchmarkHandshake(b *testing.B) {
	for _, vers := range []uint16{VersionTLS10, VersionTLS12} {
		name := opensslVersionFlag[vers][1:]
		b.Run(name+"/ours-server", func(b *testing.B) {
			handshakeLoop(b, serveOurs(b, benchServerConfig(vers)), benchClientConfig(vers))
		})
		b.Run(name+"/openssl-server", func(b *testing.B) {
			_, addr := startSServer(b, sServerOpts{vers: vers, suite: TLS_PSK_WITH_AES_128_CBC_SHA, key: KeyPPSASCII.Key(testPID, testPPS)})
			handshakeLoop(b, addr, benchClientConfig(vers))
		})
	}
}

const throughputChunk = 256 << 10

// BenchmarkThroughput: bulk data over one TLS 1.2 AES-128-CBC-SHA
// connection, our client to our server on loopback. Besides MB/s (wall
// clock) it reports MB/cpu-s: bytes per second of CPU time spent by both
// ends together, which scripts/bench-tlspsk.sh compares with the same
// figure for openssl s_client → s_server.
func BenchmarkThroughput(b *testing.B) {
	addr := serveOurs(b, benchServerConfig(VersionTLS12))
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	c := Client(nc, benchClientConfig(VersionTLS12))
	defer c.Close()
	if err := c.Handshake(); err != nil {
		b.Fatal(err)
	}
	buf := bytes.Repeat([]byte{0x5A}, throughputChunk)
	b.SetBytes(throughputChunk)
	b.ReportAllocs()
	cpu0 := cpuTime()
	for b.Loop() {
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	if cpu := (cpuTime() - cpu0).Seconds(); cpu > 0 {
		b.ReportMetric(float64(b.N)*throughputChunk/1e6/cpu, "MB/cpu-s")
	}
}

// BenchmarkRecordSeal is the crypto alone: one 16 KiB record, TLS 1.2
// AES-128-CBC + HMAC-SHA1 (compare `openssl speed -evp
// aes-128-cbc-hmac-sha1 -bytes 16384`).
func BenchmarkRecordSeal(b *testing.B) {
	s := suiteByID(TLS_PSK_WITH_AES_128_CBC_SHA)
	cs, err := newCipherState(VersionTLS12, s, make([]byte, s.macLen), make([]byte, s.keyLen), nil, true)
	if err != nil {
		b.Fatal(err)
	}
	hc := &halfConn{version: VersionTLS12, cs: cs}
	payload := make([]byte, maxPlaintext)
	dst := make([]byte, 0, recordHeaderLen+maxCiphertext)
	rnd := seededRand()
	b.SetBytes(maxPlaintext)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := hc.seal(dst, recordApplicationData, payload, rnd); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRecordOpen is the receiving side of BenchmarkRecordSeal.
func BenchmarkRecordOpen(b *testing.B) {
	s := suiteByID(TLS_PSK_WITH_AES_128_CBC_SHA)
	mk := func(enc bool) *halfConn {
		cs, err := newCipherState(VersionTLS12, s, make([]byte, s.macLen), make([]byte, s.keyLen), nil, enc)
		if err != nil {
			b.Fatal(err)
		}
		return &halfConn{version: VersionTLS12, cs: cs}
	}
	out, in := mk(true), mk(false)
	rec, err := out.seal(nil, recordApplicationData, make([]byte, maxPlaintext), seededRand())
	if err != nil {
		b.Fatal(err)
	}
	frag := make([]byte, len(rec)-recordHeaderLen)
	b.SetBytes(maxPlaintext)
	b.ReportAllocs()
	for b.Loop() {
		copy(frag, rec[recordHeaderLen:])
		in.seq = 0
		if _, a := in.open(recordApplicationData, frag); a != 0 {
			b.Fatal(a)
		}
	}
}
