// Package ca is the kiosk's own certificate authority: a root created on the
// kiosk's first run that signs the TLS certificate of every machine it
// provisions (../../../shared/specs/amt-psk.md §6 step 4). The device key is
// RSA 2048, generated on the device; only its public half is signed here.
//
// Choices:
//   - The root key is RSA 2048 with SHA-256 signatures, not ECDSA: AMT 6–10
//     firmware predates ECDSA support in AMT's TLS stack, and the chain it
//     presents must be one its own code can handle (not confirmed on
//     hardware; RSA is the conservative choice).
//   - The root's private key lives in the kiosk store, sealed with the
//     store's data key (Storage). The store already holds every other
//     secret under that key, a passphrase rotation (Rekey) covers it, and a
//     second kiosk sharing a PostgreSQL store signs with the same root, so
//     one trust anchor covers a whole site. An age-encrypted file would be a
//     second secret to back up and rotate.
//   - A device certificate's subject CN is the machine UUID (the key the
//     machine has everywhere: hello, WS-Man, HECI); host names may be unset
//     or repeated on an isolated line. The UUID is also a urn:uuid URI SAN,
//     and host names and addresses, when known, are DNS and IP SANs.
package ca

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/url"
	"time"
)

// Storage keeps the CA; *store.Store implements it.
type Storage interface {
	// LoadCA returns the certificate (DER) and the PKCS #8 private key
	// (DER), or an error wrapping NotFound when none exists.
	LoadCA(ctx context.Context) (cert, key []byte, err error)
	// SaveCA stores them unless a CA exists, and returns the stored one.
	SaveCA(ctx context.Context, cert, key []byte) (storedCert, storedKey []byte, err error)
}

// Options configure Open.
type Options struct {
	// NotFound is the error Storage wraps when no CA exists (store.ErrNotFound).
	NotFound error
	// Name is the root's subject CN; "" → "provstick kiosk CA".
	Name string
	// Validity of a new root; 0 → 20 years. Device certificates get
	// DeviceValidity; 0 → 10 years (AMT has no renewal path offline).
	Validity, DeviceValidity time.Duration
	// Rand; nil → crypto/rand.
	Rand io.Reader
	// Now; nil → time.Now.
	Now func() time.Time
}

// CA signs device certificates.
type CA struct {
	cert *x509.Certificate
	key  crypto.Signer
	o    Options
}

// Open loads the CA from st, creating it on first use.
func Open(ctx context.Context, st Storage, o Options) (*CA, error) {
	if o.Name == "" {
		o.Name = "provstick kiosk CA"
	}
	if o.Validity <= 0 {
		o.Validity = 20 * 365 * 24 * time.Hour
	}
	if o.DeviceValidity <= 0 {
		o.DeviceValidity = 10 * 365 * 24 * time.Hour
	}
	if o.Rand == nil {
		o.Rand = rand.Reader
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	certDER, keyDER, err := st.LoadCA(ctx)
	if o.NotFound != nil && errors.Is(err, o.NotFound) {
		certDER, keyDER, err = create(o)
		if err != nil {
			return nil, err
		}
		certDER, keyDER, err = st.SaveCA(ctx, certDER, keyDER)
	}
	if err != nil {
		return nil, fmt.Errorf("loading the kiosk CA: %w", err)
	}
	return parse(certDER, keyDER, o)
}

// create makes a new root.
func create(o Options) (cert, key []byte, err error) {
	k, err := rsa.GenerateKey(o.Rand, 2048)
	if err != nil {
		return nil, nil, fmt.Errorf("generating the kiosk CA key: %w", err)
	}
	now := o.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(o.Rand),
		Subject:               pkix.Name{CommonName: o.Name, Organization: []string{"provstick"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(o.Validity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	cert, err = x509.CreateCertificate(o.Rand, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		return nil, nil, fmt.Errorf("making the kiosk CA certificate: %w", err)
	}
	key, err = x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, nil, fmt.Errorf("encoding the kiosk CA key: %w", err)
	}
	return cert, key, nil
}

func parse(certDER, keyDER []byte, o Options) (*CA, error) {
	cert, err := x509.ParseCertificate(certDER)
	if err != nil {
		return nil, fmt.Errorf("parsing the stored kiosk CA certificate: %w", err)
	}
	k, err := x509.ParsePKCS8PrivateKey(keyDER)
	if err != nil {
		return nil, errors.New("parsing the stored kiosk CA key: not a PKCS #8 key") // no key bytes in the error
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("stored kiosk CA key: %T cannot sign", k)
	}
	if pub, ok := cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(signer.Public()) {
		return nil, errors.New("stored kiosk CA: key does not match the certificate")
	}
	return &CA{cert: cert, key: signer, o: o}, nil
}

// Certificate returns the root certificate.
func (c *CA) Certificate() *x509.Certificate { return c.cert }

// Pool returns a pool holding the root, for crypto/tls.
func (c *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(c.cert)
	return p
}

// Fingerprint is the SHA-256 of the root certificate, the hash AMT's PKI
// path would trust (spec §7).
func (c *CA) Fingerprint() [32]byte { return sha256.Sum256(c.cert.Raw) }

// Device names what a device certificate is for.
type Device struct {
	UUID  string   // canonical text form; the subject CN
	Hosts []string // DNS names (host name, FQDN), optional
	IPs   []net.IP // addresses, optional
}

// Sign issues a TLS server certificate for a device's public key (RSA, as
// AMT generates) and returns it in DER.
func (c *CA) Sign(pub crypto.PublicKey, d Device) ([]byte, error) {
	rk, ok := pub.(*rsa.PublicKey)
	if !ok || rk.N.BitLen() < 2048 {
		return nil, fmt.Errorf("signing the certificate of %s: want an RSA key of at least 2048 bits, got %T", d.UUID, pub)
	}
	if d.UUID == "" {
		return nil, errors.New("signing a device certificate: no UUID")
	}
	now := c.o.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(c.o.Rand),
		Subject:      pkix.Name{CommonName: d.UUID, Organization: []string{"provstick"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(c.o.DeviceValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		URIs:         []*url.URL{{Scheme: "urn", Opaque: "uuid:" + d.UUID}},
		DNSNames:     d.Hosts,
		IPAddresses:  d.IPs,
	}
	der, err := x509.CreateCertificate(c.o.Rand, tmpl, c.cert, rk, c.key)
	if err != nil {
		return nil, fmt.Errorf("signing the certificate of %s: %w", d.UUID, err)
	}
	return der, nil
}

// Verify checks that der chains to this CA for TLS server use and names the
// device UUID (CN and urn:uuid SAN).
func (c *CA) Verify(der []byte, uuid string) (*x509.Certificate, error) {
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parsing the device certificate: %w", err)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: c.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, CurrentTime: c.o.Now()}); err != nil {
		return nil, fmt.Errorf("device certificate of %s: %w", uuid, err)
	}
	if cert.Subject.CommonName != uuid {
		return nil, fmt.Errorf("device certificate names %q, want %s", cert.Subject.CommonName, uuid)
	}
	return cert, nil
}

// serial is a random positive 127-bit serial number.
func serial(r io.Reader) *big.Int {
	n, err := rand.Int(r, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil || n.Sign() == 0 {
		return big.NewInt(time.Now().UnixNano())
	}
	return n
}
