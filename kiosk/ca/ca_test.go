package ca

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"path/filepath"
	"testing"

	"github.com/provstick/provstick/kiosk/store"
)

type memStorage struct{ cert, key []byte }

var errNone = errors.New("none")

func (m *memStorage) LoadCA(context.Context) ([]byte, []byte, error) {
	if m.cert == nil {
		return nil, nil, errNone
	}
	return m.cert, m.key, nil
}

func (m *memStorage) SaveCA(_ context.Context, c, k []byte) ([]byte, []byte, error) {
	if m.cert == nil {
		m.cert, m.key = c, k
	}
	return m.cert, m.key, nil
}

func TestCreateSignVerify(t *testing.T) {
	ctx := t.Context()
	st := &memStorage{}
	c, err := Open(ctx, st, Options{NotFound: errNone})
	if err != nil {
		t.Fatal(err)
	}
	c2, err := Open(ctx, st, Options{NotFound: errNone})
	if err != nil {
		t.Fatal(err)
	}
	if !c.Certificate().Equal(c2.Certificate()) {
		t.Fatal("second Open made a new CA")
	}
	if !c.Certificate().IsCA || c.Certificate().PublicKeyAlgorithm != x509.RSA {
		t.Errorf("root %v", c.Certificate().PublicKeyAlgorithm)
	}
	dk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	const uuid = "939b524b-13d4-1d18-e487-1c697a6b7a2b"
	der, err := c2.Sign(&dk.PublicKey, Device{UUID: uuid, Hosts: []string{"amt-1.lab.example"}})
	if err != nil {
		t.Fatal(err)
	}
	cert, err := c.Verify(der, uuid)
	if err != nil {
		t.Fatal(err)
	}
	if len(cert.URIs) != 1 || cert.URIs[0].String() != "urn:uuid:"+uuid || cert.DNSNames[0] != "amt-1.lab.example" {
		t.Errorf("SANs %v %v", cert.URIs, cert.DNSNames)
	}
	if _, err := c.Verify(der, "00000000-0000-0000-0000-000000000000"); err == nil {
		t.Error("Verify accepted another UUID")
	}
	other, _ := Open(ctx, &memStorage{}, Options{NotFound: errNone})
	if _, err := other.Verify(der, uuid); err == nil {
		t.Error("another CA verified the certificate")
	}
	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	if _, err := c.Sign(&small.PublicKey, Device{UUID: uuid}); err == nil {
		t.Error("signed a 1024-bit key")
	}
	st.key = st.key[:10]
	if _, err := Open(ctx, st, Options{NotFound: errNone}); err == nil {
		t.Error("opened a truncated key")
	}
}

// TestInStore: the CA created through the store is found again after a
// reopen, and its key is not stored in clear.
func TestInStore(t *testing.T) {
	ctx := t.Context()
	dsn := filepath.Join(t.TempDir(), "pool.db")
	open := func() *store.Store {
		s, err := store.Open(ctx, dsn, &store.Options{Key: store.Passphrase([]byte("pw")), KDF: store.KDFParams{Time: 1, Memory: 1024, Threads: 1}})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	s := open()
	c, err := Open(ctx, s, Options{NotFound: store.ErrNotFound})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = open()
	defer s.Close()
	c2, err := Open(ctx, s, Options{NotFound: store.ErrNotFound})
	if err != nil {
		t.Fatal(err)
	}
	if !c.Certificate().Equal(c2.Certificate()) {
		t.Error("reopened store gave another CA")
	}
}
