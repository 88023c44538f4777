// Package pki is the site's own provisioning PKI for Intel AMT's PKI
// ("remote configuration") path (../../specs/pki.md): an offline root whose
// SHA-256 hash the stick writes into setup.bin (2/8, enabled by 2/7), and a
// provisioning certificate issued under it that AMT accepts from the kiosk:
// the Intel provisioning OID 2.16.840.1.113741.1.2.3 in extended key usage
// (or the OU "Intel(R) Client Setup Certificate"), its subject CN a host
// name under the PKI DNS suffix (setup.bin 2/3).
//
// Keys at rest: a site directory holds four files,
//
//	root.pem              the root certificate
//	root-key.age          the root's PKCS #8 key, age-encrypted with a passphrase
//	provisioning.pem      the provisioning chain: leaf, then root
//	provisioning-key.age  the leaf's PKCS #8 key, age-encrypted with the same passphrase
//
// age (scrypt passphrase recipients) rather than the kiosk store's sealing:
// the root is meant to stay offline (the directory can live on removable
// media and only the chain and the provisioning key need to reach the
// kiosk), and the files can be created before any store exists. The kiosk
// loads only the provisioning key ([Load]); the root key is needed again
// only to issue a new provisioning certificate ([Reissue]).
//
// Keys are RSA 2048 with SHA-256 signatures: AMT signs and checks with RSA,
// and the nonce signature of AdminSetup (SigningAlgorithm 2) is RSA-SHA256.
package pki

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"time"

	"filippo.io/age"
	"github.com/provstick/provstick/internal/atomicfile"
)

// OIDProvisioning is Intel's AMT provisioning extended key usage,
// 2.16.840.1.113741.1.2.3.
var OIDProvisioning = asn1.ObjectIdentifier{2, 16, 840, 1, 113741, 1, 2, 3}

// OUClientSetup is the subject OU AMT accepts instead of the OID.
const OUClientSetup = "Intel(R) Client Setup Certificate"

// File names in a site directory.
const (
	FileRoot            = "root.pem"
	FileRootKey         = "root-key.age"
	FileProvisioning    = "provisioning.pem"
	FileProvisioningKey = "provisioning-key.age"
)

// Errors callers branch on.
var (
	// ErrExists: Init found a site already in the directory.
	ErrExists = errors.New("pki: a site PKI already exists")
	// ErrNotFound: Load found no site in the directory.
	ErrNotFound = errors.New("pki: no site PKI")
	// ErrPassphrase: the passphrase does not open the key.
	ErrPassphrase = errors.New("pki: wrong passphrase")
	// ErrInvalid: a file or an option is malformed.
	ErrInvalid = errors.New("pki: invalid")
)

// Usage is how the provisioning certificate is marked for AMT.
type Usage int

// Usages. UsageOID is the default; UsageNone exists for negative tests.
const (
	UsageOID  Usage = iota // EKU serverAuth + the Intel OID
	UsageOU                // subject OU "Intel(R) Client Setup Certificate"
	UsageBoth              // both
	UsageNone              // neither (AMT refuses it)
)

// Options configure Generate and Init.
type Options struct {
	// Suffix is the PKI DNS suffix (setup.bin 2/3), e.g. "site.example".
	// Required.
	Suffix string
	// Host is the kiosk's host name under Suffix; "" → "provisionserver".
	// The leaf's CN and DNS SAN are Host + "." + Suffix.
	Host string
	// RootName is the root's CN; "" → "provstick site root".
	RootName string
	// Organization in both subjects; "" → "provstick".
	Organization string
	// RootValidity; 0 → 20 years. LeafValidity; 0 → 5 years; negative
	// makes a leaf that expired that long ago (negative tests).
	RootValidity, LeafValidity time.Duration
	// Usage marks the leaf (default UsageOID).
	Usage Usage
	// WorkFactor is log2 of age's scrypt cost for the key files; 0 → 18
	// (age's default). Tests use 10.
	WorkFactor int
	// Rand; nil → crypto/rand. Now; nil → time.Now.
	Rand io.Reader
	Now  func() time.Time
}

func (o *Options) fill() error {
	o.Suffix = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(o.Suffix)), ".")
	if err := ValidSuffix(o.Suffix); err != nil {
		return err
	}
	if o.Host == "" {
		o.Host = "provisionserver"
	}
	if strings.ContainsAny(o.Host, ". ") {
		return fmt.Errorf("host name %q: want one DNS label: %w", o.Host, ErrInvalid)
	}
	if o.RootName == "" {
		o.RootName = "provstick site root"
	}
	if o.Organization == "" {
		o.Organization = "provstick"
	}
	if o.RootValidity <= 0 {
		o.RootValidity = 20 * 365 * 24 * time.Hour
	}
	if o.LeafValidity == 0 {
		o.LeafValidity = 5 * 365 * 24 * time.Hour
	}
	if o.WorkFactor == 0 {
		o.WorkFactor = 18
	}
	if o.WorkFactor < 10 || o.WorkFactor > 22 {
		return fmt.Errorf("scrypt work factor %d: want 10 to 22: %w", o.WorkFactor, ErrInvalid)
	}
	if o.Rand == nil {
		o.Rand = rand.Reader
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return nil
}

// ValidSuffix checks a PKI DNS suffix: 1–255 characters, dot-separated
// labels of letters, digits and hyphens (setup.bin 2/3 holds ≤ 255 ASCII).
func ValidSuffix(s string) error {
	if s == "" || len(s) > 255 {
		return fmt.Errorf("PKI DNS suffix %q: want 1 to 255 characters: %w", s, ErrInvalid)
	}
	for _, l := range strings.Split(s, ".") {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return fmt.Errorf("PKI DNS suffix %q: label %q is not a DNS label: %w", s, l, ErrInvalid)
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return fmt.Errorf("PKI DNS suffix %q: character %q: %w", s, c, ErrInvalid)
			}
		}
	}
	return nil
}

// Site is a loaded site PKI: the chain and the provisioning key (the root
// key only when just generated).
type Site struct {
	Root *x509.Certificate
	Leaf *x509.Certificate
	key  *rsa.PrivateKey // the provisioning (leaf) key
	// rootKey is set by Generate and Reissue only; Load never reads it.
	rootKey *rsa.PrivateKey
}

// RootHash is the SHA-256 of the root certificate's DER: what setup.bin
// 2/8 adds to the machine's trusted hashes and what the machine compares.
func (s *Site) RootHash() [32]byte { return sha256.Sum256(s.Root.Raw) }

// RootHashHex is RootHash in lower-case hex.
func (s *Site) RootHashHex() string { h := s.RootHash(); return hex.EncodeToString(h[:]) }

// FQDN is the provisioning certificate's subject CN: the host under the suffix.
func (s *Site) FQDN() string { return s.Leaf.Subject.CommonName }

// Chain is the provisioning chain in DER, leaf first, root last: the order
// the TLS handshake and AddNextCertInChain send it in.
func (s *Site) Chain() [][]byte { return [][]byte{s.Leaf.Raw, s.Root.Raw} }

// TLSCertificate is the chain with the provisioning key, for a TLS client.
func (s *Site) TLSCertificate() tls.Certificate {
	return tls.Certificate{Certificate: s.Chain(), PrivateKey: s.key, Leaf: s.Leaf}
}

// Signer is the provisioning key (nil interface when not loaded).
func (s *Site) Signer() crypto.Signer {
	if s.key == nil {
		return nil
	}
	return s.key
}

// SignNonces signs ConfigurationNonce || McNonce with the provisioning key,
// RSA PKCS #1 v1.5 over SHA-256 (AdminSetup SigningAlgorithm 2, specs/pki.md §5).
func (s *Site) SignNonces(r io.Reader, configNonce, mcNonce []byte) ([]byte, error) {
	if r == nil {
		r = rand.Reader
	}
	sum := sha256.Sum256(append(append([]byte(nil), configNonce...), mcNonce...))
	sig, err := rsa.SignPKCS1v15(r, s.key, crypto.SHA256, sum[:])
	if err != nil {
		return nil, fmt.Errorf("signing the setup nonces: %w", err)
	}
	return sig, nil
}

// Generate makes a new root and provisioning certificate in memory.
func Generate(o Options) (*Site, error) {
	if err := o.fill(); err != nil {
		return nil, err
	}
	rk, err := rsa.GenerateKey(o.Rand, 2048)
	if err != nil {
		return nil, fmt.Errorf("generating the root key: %w", err)
	}
	now := o.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(o.Rand),
		Subject:               pkix.Name{CommonName: o.RootName, Organization: []string{o.Organization}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(o.RootValidity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLen:            1,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(o.Rand, tmpl, tmpl, &rk.PublicKey, rk)
	if err != nil {
		return nil, fmt.Errorf("making the root certificate: %w", err)
	}
	root, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parsing the new root: %w", err)
	}
	s := &Site{Root: root, rootKey: rk}
	if err := s.issue(o); err != nil {
		return nil, err
	}
	return s, nil
}

// Issue makes a new provisioning certificate (and key) under the same root
// and returns a new Site; the receiver must hold the root key (from
// Generate or LoadRoot). Tests use it for expired or unmarked leaves.
func (s *Site) Issue(o Options) (*Site, error) {
	if s.rootKey == nil {
		return nil, fmt.Errorf("issuing a provisioning certificate: the root key is not loaded: %w", ErrInvalid)
	}
	if err := o.fill(); err != nil {
		return nil, err
	}
	n := &Site{Root: s.Root, rootKey: s.rootKey}
	if err := n.issue(o); err != nil {
		return nil, err
	}
	return n, nil
}

func (s *Site) issue(o Options) error {
	k, err := rsa.GenerateKey(o.Rand, 2048)
	if err != nil {
		return fmt.Errorf("generating the provisioning key: %w", err)
	}
	fqdn := o.Host + "." + o.Suffix
	now := o.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(o.Rand),
		Subject:      pkix.Name{CommonName: fqdn, Organization: []string{o.Organization}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(o.LeafValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		DNSNames:     []string{fqdn},
	}
	if o.LeafValidity < 0 {
		tmpl.NotBefore, tmpl.NotAfter = now.Add(2*o.LeafValidity), now.Add(o.LeafValidity)
	}
	switch o.Usage {
	case UsageOID, UsageBoth:
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
		tmpl.UnknownExtKeyUsage = []asn1.ObjectIdentifier{OIDProvisioning}
	default:
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	}
	if o.Usage == UsageOU || o.Usage == UsageBoth {
		tmpl.Subject.OrganizationalUnit = []string{OUClientSetup}
	}
	der, err := x509.CreateCertificate(o.Rand, tmpl, s.Root, &k.PublicKey, s.rootKey)
	if err != nil {
		return fmt.Errorf("making the provisioning certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return fmt.Errorf("parsing the new provisioning certificate: %w", err)
	}
	s.Leaf, s.key = leaf, k
	return nil
}

// HasProvisioningMark reports whether a certificate carries the Intel OID
// in its extended key usage or the client-setup OU in its subject.
func HasProvisioningMark(c *x509.Certificate) bool {
	for _, u := range c.UnknownExtKeyUsage {
		if u.Equal(OIDProvisioning) {
			return true
		}
	}
	for _, ou := range c.Subject.OrganizationalUnit {
		if ou == OUClientSetup {
			return true
		}
	}
	return false
}

// Init creates a new site in dir (made if missing, mode 0700) sealed with
// passphrase. It refuses a directory that already holds a site.
func Init(dir string, passphrase []byte, o Options) (*Site, error) {
	if len(passphrase) == 0 {
		return nil, fmt.Errorf("creating the site PKI: empty passphrase: %w", ErrInvalid)
	}
	for _, f := range []string{FileRoot, FileRootKey, FileProvisioning, FileProvisioningKey} {
		if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
			return nil, fmt.Errorf("creating the site PKI in %s: %s exists: %w", dir, f, ErrExists)
		}
	}
	s, err := Generate(o)
	if err != nil {
		return nil, err
	}
	_ = o.fill() // the work factor, as Generate saw it
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating the site PKI directory: %w", err)
	}
	rootKey, err := seal(s.rootKey, passphrase, o.WorkFactor)
	if err != nil {
		return nil, err
	}
	leafKey, err := seal(s.key, passphrase, o.WorkFactor)
	if err != nil {
		return nil, err
	}
	files := []struct {
		name string
		data []byte
		perm os.FileMode
	}{
		{FileRootKey, rootKey, 0o600},
		{FileProvisioningKey, leafKey, 0o600},
		{FileRoot, pemCerts(s.Root.Raw), 0o644},
		{FileProvisioning, pemCerts(s.Chain()...), 0o644},
	}
	for _, f := range files {
		if err := atomicfile.WriteFile(filepath.Join(dir, f.name), f.data, f.perm, true); err != nil {
			return nil, fmt.Errorf("writing %s: %w", f.name, err)
		}
	}
	return s, nil
}

// Load reads a site's chain and opens the provisioning key with passphrase.
func Load(dir string, passphrase []byte) (*Site, error) {
	s, err := LoadPublic(dir)
	if err != nil {
		return nil, err
	}
	k, err := openKey(filepath.Join(dir, FileProvisioningKey), passphrase)
	if err != nil {
		return nil, err
	}
	if !k.PublicKey.Equal(s.Leaf.PublicKey) {
		return nil, fmt.Errorf("%s does not match the provisioning certificate: %w", FileProvisioningKey, ErrInvalid)
	}
	s.key = k
	return s, nil
}

// LoadRoot is Load plus the root key (to issue a new provisioning
// certificate with Issue).
func LoadRoot(dir string, passphrase []byte) (*Site, error) {
	s, err := Load(dir, passphrase)
	if err != nil {
		return nil, err
	}
	k, err := openKey(filepath.Join(dir, FileRootKey), passphrase)
	if err != nil {
		return nil, err
	}
	if !k.PublicKey.Equal(s.Root.PublicKey) {
		return nil, fmt.Errorf("%s does not match the root certificate: %w", FileRootKey, ErrInvalid)
	}
	s.rootKey = k
	return s, nil
}

// LoadPublic reads the certificates only (no passphrase): enough to show
// the root hash and the chain.
func LoadPublic(dir string) (*Site, error) {
	chainPEM, err := os.ReadFile(filepath.Join(dir, FileProvisioning))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("reading the site PKI in %s: %w (run 'provstick kiosk ca init')", dir, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("reading the site PKI: %w", err)
	}
	certs, err := ParseCertificates(chainPEM)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", FileProvisioning, err)
	}
	if len(certs) < 2 {
		return nil, fmt.Errorf("%s: %d certificates, want the leaf and the root: %w", FileProvisioning, len(certs), ErrInvalid)
	}
	s := &Site{Leaf: certs[0], Root: certs[len(certs)-1]}
	if err := s.Leaf.CheckSignatureFrom(s.Root); err != nil {
		return nil, fmt.Errorf("%s: the leaf is not signed by the root: %w", FileProvisioning, ErrInvalid)
	}
	return s, nil
}

// ParseCertificates reads every CERTIFICATE block of a PEM file.
func ParseCertificates(b []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parsing certificate %d: %w", len(out)+1, err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no PEM certificate: %w", ErrInvalid)
	}
	return out, nil
}

func pemCerts(ders ...[]byte) []byte {
	var b bytes.Buffer
	for _, d := range ders {
		_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: d})
	}
	return b.Bytes()
}

// seal encrypts a key's PKCS #8 DER to an age scrypt recipient.
func seal(k *rsa.PrivateKey, passphrase []byte, workFactor int) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, fmt.Errorf("encoding a key: %w", err)
	}
	r, err := age.NewScryptRecipient(string(passphrase))
	if err != nil {
		return nil, fmt.Errorf("sealing a key: %w", err)
	}
	r.SetWorkFactor(workFactor)
	var out bytes.Buffer
	w, err := age.Encrypt(&out, r)
	if err != nil {
		return nil, fmt.Errorf("sealing a key: %w", err)
	}
	if _, err := w.Write(der); err != nil {
		return nil, fmt.Errorf("sealing a key: %w", err)
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("sealing a key: %w", err)
	}
	return out.Bytes(), nil
}

// openKey decrypts a sealed key file. Errors never carry key bytes.
func openKey(name string, passphrase []byte) (*rsa.PrivateKey, error) {
	b, err := os.ReadFile(name)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("reading %s: %w", filepath.Base(name), ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", filepath.Base(name), err)
	}
	id, err := age.NewScryptIdentity(string(passphrase))
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", filepath.Base(name), err)
	}
	id.SetMaxWorkFactor(22)
	r, err := age.Decrypt(bytes.NewReader(b), id)
	if err != nil {
		if _, ok := errors.AsType[*age.NoIdentityMatchError](err); ok {
			return nil, fmt.Errorf("opening %s: %w", filepath.Base(name), ErrPassphrase)
		}
		return nil, fmt.Errorf("opening %s: %w: %w", filepath.Base(name), ErrInvalid, err)
	}
	der, err := io.ReadAll(io.LimitReader(r, 64<<10))
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w: %w", filepath.Base(name), ErrInvalid, err)
	}
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("opening %s: not a PKCS #8 key: %w", filepath.Base(name), ErrInvalid)
	}
	rk, ok := k.(*rsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("opening %s: key is %T, want RSA: %w", filepath.Base(name), k, ErrInvalid)
	}
	return rk, nil
}

// serial is a random positive 127-bit serial number.
func serial(r io.Reader) *big.Int {
	n, err := rand.Int(r, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil || n.Sign() == 0 {
		return big.NewInt(time.Now().UnixNano())
	}
	return n
}
