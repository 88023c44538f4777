package tlspsk

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "regenerate testdata/openssl-master.txt from live OpenSSL handshakes")

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatalf("hex %q: %v", s, err)
	}
	return b
}

// readVectors returns the fields of each non-comment line of a testdata file.
func readVectors(t *testing.T, name string) [][]string {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out [][]string
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if line := sc.Text(); line != "" && !strings.HasPrefix(line, "#") {
			out = append(out, strings.Fields(line))
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(out) == 0 {
		t.Fatalf("testdata/%s holds no vectors", name)
	}
	return out
}

// TestPRFVectors checks both PRFs against OpenSSL's TLS1-PRF KDF
// (testdata/prf-vectors.txt, made by testdata/gen-prf-vectors.sh).
func TestPRFVectors(t *testing.T) {
	for _, v := range readVectors(t, "prf-vectors.txt") {
		if len(v) != 6 {
			t.Fatalf("vector %q: want 6 fields", v)
		}
		t.Run(v[0], func(t *testing.T) {
			n, err := strconv.Atoi(v[4])
			if err != nil {
				t.Fatal(err)
			}
			secret, seed, want := unhex(t, v[2]), unhex(t, v[3]), unhex(t, v[5])
			got := make([]byte, n)
			switch v[1] {
			case "MD5-SHA1":
				prf10(got, secret, "", seed)
			case "SHA256":
				prf12(got, secret, "", seed)
			default:
				t.Fatalf("digest %q", v[1])
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("got %x, want %x", got, want)
			}
		})
	}
}

// TestPremasterLayout checks RFC 4279 §2 as spec §3 spells it out for a
// 32-character PPS: 00 20 | 32 × 00 | 00 20 | PPS, 68 bytes.
func TestPremasterLayout(t *testing.T) {
	for _, tc := range []struct {
		name string
		key  []byte
		want string
	}{
		{"pps-ascii", KeyPPSASCII.Key(testPID, testPPS),
			"0020" + strings.Repeat("00", 32) + "0020" + "4e4b4c444735444352524e514539595a5a494a4c374c464c564a45443639584a"},
		{"pps-dashed", KeyPPSDashed.Key(testPID, testPPS),
			"0027" + strings.Repeat("00", 39) + "0027" + hex.EncodeToString([]byte("NKLD-G5DC-RRNQ-E9YZ-ZIJL-7LFL-VJED-69XJ"))},
		{"one byte", []byte{0xAB}, "0001" + "00" + "0001" + "ab"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := pskPremaster(tc.key); hex.EncodeToString(got) != tc.want {
				t.Fatalf("got %x, want %s", got, tc.want)
			}
		})
	}
	if n := len(pskPremaster(KeyPPSASCII.Key(testPID, testPPS))); n != 68 {
		t.Fatalf("premaster is %d bytes, want 68", n)
	}
}

// TestOpenSSLMasterVectors recomputes master secrets that OpenSSL derived
// in real handshakes with our client (testdata/openssl-master.txt: version,
// client random, server random, PSK, OpenSSL's master secret from its key
// log). -update redoes the handshakes and rewrites the file.
func TestOpenSSLMasterVectors(t *testing.T) {
	if *update {
		writeOpenSSLMasterVectors(t)
	}
	for _, v := range readVectors(t, "openssl-master.txt") {
		if len(v) != 5 {
			t.Fatalf("vector %q: want 5 fields", v)
		}
		t.Run(v[0], func(t *testing.T) {
			vers, err := strconv.ParseUint(v[0], 0, 16)
			if err != nil {
				t.Fatal(err)
			}
			got := masterSecret(uint16(vers), pskPremaster(unhex(t, v[3])), unhex(t, v[1]), unhex(t, v[2]))
			if want := unhex(t, v[4]); !bytes.Equal(got, want) {
				t.Fatalf("got %x, want %x", got, want)
			}
		})
	}
}

func writeOpenSSLMasterVectors(t *testing.T) {
	key := KeyPPSASCII.Key(testPID, testPPS)
	var b strings.Builder
	fmt.Fprintf(&b, "# version client_random server_random psk master(OpenSSL key log) — go test -run TestOpenSSLMasterVectors -update\n")
	for _, vers := range []uint16{VersionTLS10, VersionTLS11, VersionTLS12} {
		keylog := filepath.Join(t.TempDir(), "keylog")
		srv, addr := startSServer(t, sServerOpts{vers: vers, suite: TLS_PSK_WITH_AES_128_CBC_SHA, key: key, keylog: keylog, naccept: 1})
		var cap masterCapture
		cfg := clientConfig(t, testPID, testPPS, KeyPPSASCII)
		cfg.testHookMaster = cap.hook
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		nc, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c := Client(nc, cfg)
		if err := c.HandshakeContext(ctx); err != nil {
			t.Fatalf("handshake: %v\n%s", err, srv.stderr)
		}
		c.Close()
		cancel()
		if err := srv.wait(t, 10*time.Second); err != nil {
			t.Fatalf("s_server: %v\n%s", err, srv.stderr)
		}
		fmt.Fprintf(&b, "0x%04x %x %x %x %x\n", vers, cap.client, cap.server, key, keylogMaster(t, keylog, cap.client))
	}
	if err := os.WriteFile(filepath.Join("testdata", "openssl-master.txt"), []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}
