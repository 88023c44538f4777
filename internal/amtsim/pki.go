package amtsim

import (
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"
	"math/big"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/provstick/provstick/initramfs/heci/amthi"
	"github.com/provstick/provstick/setupbin"
)

// The PKI path (specs/pki.md §4, §5): a machine whose setup.bin record
// added a root hash and a PKI DNS suffix (and no PID) accepts a TLS client
// on 16993 only with a provisioning chain it trusts, then admin setup with
// IPS_HostBasedSetupService.AdminSetup.

// oidProvisioning is Intel's provisioning EKU, 2.16.840.1.113741.1.2.3.
var oidProvisioning = asn1.ObjectIdentifier{2, 16, 840, 1, 113741, 1, 2, 3}

// ouClientSetup is the subject OU AMT accepts instead of the OID.
const ouClientSetup = "Intel(R) Client Setup Certificate"

// maxChain bounds a provisioning chain (AddNextCertInChain and TLS); the
// real limit is not documented, this is the simulator's.
const maxChain = 4

// PKIClass is why the machine refused a provisioning chain, in the order
// the checks run (specs/pki.md §4).
type PKIClass string

// Classes.
const (
	PKIChain         PKIClass = "chain"                // not a chain ending in a self-signed root
	PKIUntrustedRoot PKIClass = "untrusted-root"       // the root's hash is not trusted and active
	PKIExpired       PKIClass = "expired"              // a certificate outside its validity
	PKINoMark        PKIClass = "no-provisioning-mark" // no Intel OID in EKU, no client-setup OU
	PKIDomain        PKIClass = "domain-mismatch"      // the leaf is not under the PKI DNS suffix
	PKISignature     PKIClass = "bad-signature"        // AdminSetup's nonce signature does not verify
)

// PKIRejection is one refusal, as the simulator records it (the real
// machine writes an audit-log event; the classes are ours).
type PKIRejection struct {
	Class  PKIClass
	Detail string
	Time   time.Time
}

func (r *PKIRejection) Error() string {
	return fmt.Sprintf("amtsim: provisioning certificate refused: %s: %s", r.Class, r.Detail)
}

// CheckProvisioningChain applies the machine's rules to chain (leaf first,
// root last): well formed, root hash trusted and active, validity at now
// (the device clock), the leaf's provisioning mark, the leaf's domain
// under suffix. It returns nil when the chain is accepted.
func CheckProvisioningChain(chain []*x509.Certificate, hashes []CertHash, suffix string, now time.Time) *PKIRejection {
	rej := func(c PKIClass, f string, a ...any) *PKIRejection {
		return &PKIRejection{Class: c, Detail: fmt.Sprintf(f, a...), Time: now}
	}
	if len(chain) < 2 {
		return rej(PKIChain, "%d certificates: want the leaf and the root (the machine holds only hashes)", len(chain))
	}
	if len(chain) > maxChain {
		return rej(PKIChain, "%d certificates, at most %d", len(chain), maxChain)
	}
	for i := 0; i+1 < len(chain); i++ {
		if err := chain[i].CheckSignatureFrom(chain[i+1]); err != nil {
			return rej(PKIChain, "certificate %d (%s) is not signed by certificate %d", i, chain[i].Subject.CommonName, i+1)
		}
	}
	root := chain[len(chain)-1]
	if root.CheckSignature(root.SignatureAlgorithm, root.RawTBSCertificate, root.Signature) != nil {
		return rej(PKIChain, "the last certificate (%s) is not self-signed", root.Subject.CommonName)
	}
	if !trustedRoot(root.Raw, hashes) {
		sum := sha256.Sum256(root.Raw)
		return rej(PKIUntrustedRoot, "root %q (SHA-256 %x) is not among the machine's active trusted hashes", root.Subject.CommonName, sum[:])
	}
	for i, c := range chain {
		if now.Before(c.NotBefore) || now.After(c.NotAfter) {
			return rej(PKIExpired, "certificate %d (%s) valid %s to %s, device time %s", i, c.Subject.CommonName,
				c.NotBefore.UTC().Format(time.RFC3339), c.NotAfter.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
		}
	}
	leaf := chain[0]
	if !provisioningMark(leaf) {
		return rej(PKINoMark, "leaf %q has neither OID %s in its extended key usage nor OU %q", leaf.Subject.CommonName, oidProvisioning, ouClientSetup)
	}
	if suffix == "" {
		return rej(PKIDomain, "the machine has no PKI DNS suffix to match leaf %q against", leaf.Subject.CommonName)
	}
	if !underSuffix(leaf, suffix) {
		return rej(PKIDomain, "leaf %q is not under the PKI DNS suffix %q", leaf.Subject.CommonName, suffix)
	}
	return nil
}

func trustedRoot(der []byte, hashes []CertHash) bool {
	for _, h := range hashes {
		if !h.Active {
			continue
		}
		var sum []byte
		switch h.Algorithm {
		case amthi.HashSHA1:
			s := sha1.Sum(der)
			sum = s[:]
		case amthi.HashSHA256:
			s := sha256.Sum256(der)
			sum = s[:]
		case amthi.HashSHA384:
			s := sha512.Sum384(der)
			sum = s[:]
		default:
			continue
		}
		if subtle.ConstantTimeCompare(sum, h.Hash) == 1 {
			return true
		}
	}
	return false
}

func provisioningMark(c *x509.Certificate) bool {
	for _, u := range c.UnknownExtKeyUsage {
		if u.Equal(oidProvisioning) {
			return true
		}
	}
	return slices.Contains(c.Subject.OrganizationalUnit, ouClientSetup)
}

// underSuffix: the CN or a DNS SAN equals suffix or ends in "." + suffix,
// case-insensitively.
func underSuffix(c *x509.Certificate, suffix string) bool {
	suffix = strings.ToLower(strings.TrimSuffix(suffix, "."))
	for _, n := range append([]string{c.Subject.CommonName}, c.DNSNames...) {
		n = strings.ToLower(strings.TrimSuffix(n, "."))
		if n == suffix || strings.HasSuffix(n, "."+suffix) {
			return true
		}
	}
	return false
}

// pkiSuffix is the suffix the machine matches against: the PKI DNS suffix
// from setup.bin 2/3, else the DNS suffix (DHCP option 15).
func pkiSuffix(st State) string {
	if st.PKISuffix != "" {
		return st.PKISuffix
	}
	return st.DNSSuffix
}

// pkiState is the network side's PKI bookkeeping.
type pkiState struct {
	mu         sync.Mutex
	cert       *tls.Certificate // the device's self-signed TLS certificate
	nonce      []byte           // ConfigurationNonce, 20 bytes
	chain      []*x509.Certificate
	chainDone  bool
	rejections []PKIRejection
}

const maxRejections = 16

// PKIRejections returns the refusals recorded so far, oldest first (at
// most the last 16).
func (s *NetServer) PKIRejections() []PKIRejection {
	s.pki.mu.Lock()
	defer s.pki.mu.Unlock()
	return slices.Clone(s.pki.rejections)
}

func (s *NetServer) reject(r *PKIRejection) {
	s.pki.mu.Lock()
	if len(s.pki.rejections) == maxRejections {
		s.pki.rejections = slices.Delete(s.pki.rejections, 0, 1)
	}
	s.pki.rejections = append(s.pki.rejections, *r)
	s.pki.mu.Unlock()
	s.log.Info("amtsim: provisioning certificate refused", "class", string(r.Class), "detail", r.Detail)
}

// deviceNow is the device clock.
func (s *NetServer) deviceNow(st State) time.Time { return s.opts.Now().Add(st.Net.ClockOffset) }

// configNonce returns the current ConfigurationNonce, making one first.
func (s *NetServer) configNonce() []byte {
	s.pki.mu.Lock()
	defer s.pki.mu.Unlock()
	if s.pki.nonce == nil {
		s.pki.nonce = make([]byte, 20)
		_, _ = rand.Read(s.pki.nonce)
	}
	return slices.Clone(s.pki.nonce)
}

// newConfigNonce replaces the nonce (after every AdminSetup attempt).
func (s *NetServer) newConfigNonce() {
	s.pki.mu.Lock()
	s.pki.nonce = nil
	s.pki.mu.Unlock()
}

// PKICipherSuites are what the simulated PKI listener offers: ECDHE first,
// then the RSA key exchange suites AMT 6–10 firmware speaks (Go leaves
// these out of its defaults; naming them enables them for this listener).
var PKICipherSuites = []uint16{
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA,
	tls.TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA,
	tls.TLS_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_RSA_WITH_AES_128_CBC_SHA,
	tls.TLS_RSA_WITH_AES_256_CBC_SHA,
}

// wrapPKI is 16993 for a machine in PKI setup (or admin-set-up by PKI
// before TLS is configured): TLS 1.0–1.2 with the device's self-signed
// certificate, requiring a client chain the machine trusts. Go's TLS
// server answers every refusal with alert bad_certificate (42); the class
// is recorded (PKIRejections) and logged.
func (s *NetServer) wrapPKI(c net.Conn) (net.Conn, error) {
	cert, err := s.pkiCert()
	if err != nil {
		return nil, err
	}
	cfg := &tls.Config{
		Certificates: []tls.Certificate{*cert},
		MinVersion:   tls.VersionTLS10,
		MaxVersion:   tls.VersionTLS12,
		CipherSuites: PKICipherSuites,
		ClientAuth:   tls.RequireAnyClientCert,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) > maxChain {
				r := &PKIRejection{Class: PKIChain, Detail: fmt.Sprintf("%d certificates, at most %d", len(raw), maxChain), Time: s.opts.Now()}
				s.reject(r)
				return r
			}
			chain := make([]*x509.Certificate, 0, len(raw))
			for i, b := range raw {
				c, err := x509.ParseCertificate(b)
				if err != nil {
					r := &PKIRejection{Class: PKIChain, Detail: fmt.Sprintf("certificate %d does not parse", i), Time: s.opts.Now()}
					s.reject(r)
					return r
				}
				chain = append(chain, c)
			}
			st := s.dev.shallow()
			if r := CheckProvisioningChain(chain, st.Hashes, pkiSuffix(st), s.deviceNow(st)); r != nil {
				s.reject(r)
				return r
			}
			return nil
		},
	}
	return tls.Server(c, cfg), nil
}

// pkiCert returns the device's self-signed TLS certificate, made once.
func (s *NetServer) pkiCert() (*tls.Certificate, error) {
	s.pki.mu.Lock()
	defer s.pki.mu.Unlock()
	if s.pki.cert != nil {
		return s.pki.cert, nil
	}
	key, err := s.opts.GenerateKey(2048)
	if err != nil {
		return nil, fmt.Errorf("generating the device TLS key: %w", err)
	}
	st := s.dev.shallow()
	now := s.opts.Now()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "iAMT " + st.UUID.String()},
		NotBefore:    now.Add(-24 * time.Hour),
		NotAfter:     now.Add(20 * 365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("making the device TLS certificate: %w", err)
	}
	s.pki.cert = &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	return s.pki.cert, nil
}

// pkiTLS reports whether 16993 serves the PKI listener in state st: in
// setup without a PID and in PKI mode, or admin-set-up by PKI before TLS
// settings are committed.
func pkiTLS(st State) bool {
	if st.TLSMode != amthi.TLSModePKI {
		return false
	}
	switch st.ProvisioningState {
	case amthi.StateIn:
		return st.PID == ""
	case amthi.StatePost:
		return !st.Net.TLSActive.Enabled
	}
	return false
}

// PKISetupRecord is what the BIOS takes from a setupbin.PKI record: the
// new MEBx password, the suffix and the added hash (active when 2/7 = 1,
// which setupbin.PKI always writes).
func PKISetupRecord(p setupbin.PKI) SetupRecord {
	alg := map[int]amthi.HashAlgorithm{20: amthi.HashSHA1, 32: amthi.HashSHA256, 48: amthi.HashSHA384}[len(p.RootHash)]
	name := p.RootName
	if name == "" {
		name = setupbin.DefaultRootName
	}
	return SetupRecord{
		MEBxPassword: NewSecret(string(p.NewPassword)),
		DNSSuffix:    p.Suffix,
		Hashes:       []CertHash{{Name: name, Algorithm: alg, Hash: slices.Clone(p.RootHash), Active: true}},
	}
}

// PKIState is a factory-fresh machine with no default root hashes (the
// simulator carries no Intel list), for PKI tests: only what a setup.bin
// record adds is trusted.
func PKIState() State {
	st := DefaultState()
	st.Hashes = nil
	return st
}
