package amtsim

import (
	"bytes"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzWSManRequest feeds envelopes to the simulator's WS-Man handlers
// (Digest off). Seeds: MeshCentral-shaped requests kept in
// internal/wsman/testdata/requests (used in place), and each of them
// retargeted at every class and method the simulator serves. Whatever
// arrives, the simulator answers 200, 400 or 500 (a dropped connection
// only under fault injection, which is off here) and never panics.
func FuzzWSManRequest(f *testing.F) {
	files, err := filepath.Glob(filepath.Join("..", "wsman", "testdata", "requests", "*.xml"))
	if err != nil || len(files) == 0 {
		f.Fatalf("no seed requests: %v", err)
	}
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		for _, m := range []string{"SetTLSPSK", "CommitChanges", "SetAdminAclEntryEx", "GenerateKeyPair", "AddCertificate", "Unprovision"} {
			f.Add(bytes.ReplaceAll(b, []byte("SetMEBxPassword"), []byte(m)))
		}
	}
	// A fixed key: generating one under coverage instrumentation takes
	// seconds per worker.
	pemKey, err := os.ReadFile(filepath.Join("testdata", "fuzz-key.pem"))
	if err != nil {
		f.Fatal(err)
	}
	blk, _ := pem.Decode(pemKey)
	key, err := x509.ParsePKCS1PrivateKey(blk.Bytes)
	if err != nil {
		f.Fatal(err)
	}
	gen := func(int) (*rsa.PrivateKey, error) { return key, nil }
	n := NewNetServer(NewDevice(inSetup(f)), &NetOptions{noAuth: true, GenerateKey: gen, Hello: HelloOptions{Disabled: true}})
	defer n.Close()
	f.Fuzz(func(t *testing.T, b []byte) {
		w := httptest.NewRecorder()
		r := httptest.NewRequest(http.MethodPost, "/wsman", bytes.NewReader(b))
		n.serveHTTP(w, r)
		switch w.Code {
		case 200, 400, 500:
		default:
			t.Fatalf("status %d", w.Code)
		}
		if strings.Contains(w.Body.String(), testPPS) {
			t.Fatalf("the PPS reached a reply")
		}
	})
}
