package pki

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

func FuzzParseCertificates(f *testing.F) {
	files, err := filepath.Glob(filepath.Join("testdata", "*"))
	if err != nil {
		f.Fatal(err)
	}
	for _, name := range files {
		if filepath.Ext(name) == ".md" {
			continue
		}
		if b, err := os.ReadFile(name); err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		certs, err := ParseCertificates(b)
		if err != nil {
			return
		}
		ders := make([][]byte, len(certs))
		for i, c := range certs {
			ders[i] = c.Raw
		}
		again, err := ParseCertificates(pemCerts(ders...))
		if err != nil {
			t.Fatalf("re-reading what parsed: %v", err)
		}
		if len(again) != len(certs) {
			t.Fatalf("%d certificates, then %d", len(certs), len(again))
		}
		for i := range again {
			if !bytes.Equal(again[i].Raw, certs[i].Raw) {
				t.Fatalf("certificate %d differs after a round trip", i)
			}
		}
	})
}

func TestFixtureChain(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("testdata", "provisioning.pem"))
	if err != nil {
		t.Fatal(err)
	}
	certs, err := ParseCertificates(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(certs) != 2 || !HasProvisioningMark(certs[0]) || certs[0].Subject.CommonName != "provisionserver.site.example" || !certs[1].IsCA {
		t.Fatalf("fixture chain has the wrong shape")
	}
	if err := certs[0].CheckSignatureFrom(certs[1]); err != nil {
		t.Fatal(err)
	}
	g, _ := os.ReadFile(filepath.Join("testdata", "garbage.notacert"))
	if _, err := ParseCertificates(g); err == nil {
		t.Fatal("garbage parsed")
	}
}
