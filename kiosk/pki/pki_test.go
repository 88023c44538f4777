package pki

import (
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestInitLoad(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "site")
	pass := []byte("correct horse")
	s, err := Init(dir, pass, Options{Suffix: "Site.Example.", WorkFactor: 10})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := s.FQDN(), "provisionserver.site.example"; got != want {
		t.Errorf("FQDN %q, want %q", got, want)
	}
	if !HasProvisioningMark(s.Leaf) {
		t.Error("leaf has no provisioning OID")
	}
	if err := s.Leaf.CheckSignatureFrom(s.Root); err != nil {
		t.Errorf("leaf not signed by root: %v", err)
	}
	for _, f := range []string{FileRootKey, FileProvisioningKey} {
		fi, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", f, fi.Mode().Perm())
		}
		b, _ := os.ReadFile(filepath.Join(dir, f))
		if len(b) < 20 || string(b[:20]) != "age-encryption.org/v" {
			t.Errorf("%s is not an age file", f)
		}
	}
	if _, err := Init(dir, pass, Options{Suffix: "x.example", WorkFactor: 10}); !errors.Is(err, ErrExists) {
		t.Errorf("second Init: %v, want ErrExists", err)
	}
	if _, err := Load(dir, []byte("wrong")); !errors.Is(err, ErrPassphrase) {
		t.Errorf("Load with a wrong passphrase: %v, want ErrPassphrase", err)
	}
	l, err := Load(dir, pass)
	if err != nil {
		t.Fatal(err)
	}
	if l.RootHash() != s.RootHash() || l.RootHash() != sha256.Sum256(s.Root.Raw) {
		t.Error("loaded root hash differs")
	}
	cn, mc := []byte("configuration-nonce-"), []byte("mc-nonce-20-bytes!!!")
	sig, err := l.SignNonces(nil, cn, mc)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(append(append([]byte(nil), cn...), mc...))
	if err := rsa.VerifyPKCS1v15(l.Leaf.PublicKey.(*rsa.PublicKey), crypto.SHA256, sum[:], sig); err != nil {
		t.Errorf("signature: %v", err)
	}
	if _, err := l.Issue(Options{Suffix: "site.example"}); err == nil {
		t.Error("Issue without the root key succeeded")
	}
	r, err := LoadRoot(dir, pass)
	if err != nil {
		t.Fatal(err)
	}
	n, err := r.Issue(Options{Suffix: "site.example", Usage: UsageNone, LeafValidity: -time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if HasProvisioningMark(n.Leaf) || !n.Leaf.NotAfter.Before(time.Now()) {
		t.Error("Issue ignored Usage or LeafValidity")
	}
	if _, err := LoadPublic(t.TempDir()); !errors.Is(err, ErrNotFound) {
		t.Errorf("LoadPublic of an empty dir: %v", err)
	}
}

func TestValidSuffix(t *testing.T) {
	for _, tc := range []struct {
		s  string
		ok bool
	}{{"site.example", true}, {"a", true}, {"", false}, {"a..b", false}, {"-a.b", false}, {"a_b.c", false}} {
		if err := ValidSuffix(tc.s); (err == nil) != tc.ok {
			t.Errorf("ValidSuffix(%q) = %v, want ok=%v", tc.s, err, tc.ok)
		}
	}
	if _, err := Generate(Options{Suffix: "bad suffix"}); !errors.Is(err, ErrInvalid) {
		t.Errorf("Generate with a bad suffix: %v", err)
	}
}

func TestOUUsage(t *testing.T) {
	s, err := Generate(Options{Suffix: "site.example", Usage: UsageOU})
	if err != nil {
		t.Fatal(err)
	}
	if !HasProvisioningMark(s.Leaf) || len(s.Leaf.UnknownExtKeyUsage) != 0 {
		t.Error("OU-only leaf: mark missing or OID present")
	}
}
