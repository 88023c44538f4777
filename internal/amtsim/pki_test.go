package amtsim

import (
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/provstick/provstick/initramfs/heci/amthi"
	"github.com/provstick/provstick/internal/wsman"
	"github.com/provstick/provstick/kiosk/pki"
	"github.com/provstick/provstick/setupbin"
)

const pkiTestMEBx = "Pki-MEBx-Passw0rd!"

// pkiSite is made once: RSA key generation is the slow part.
var pkiSiteCache struct {
	site, other *pki.Site
}

func pkiSites(t testing.TB) (site, other *pki.Site) {
	t.Helper()
	if pkiSiteCache.site == nil {
		var err error
		if pkiSiteCache.site, err = pki.Generate(pki.Options{Suffix: "site.example"}); err != nil {
			t.Fatal(err)
		}
		if pkiSiteCache.other, err = pki.Generate(pki.Options{Suffix: "site.example"}); err != nil {
			t.Fatal(err)
		}
	}
	return pkiSiteCache.site, pkiSiteCache.other
}

// pkiDevice is a machine that consumed a PKI record for site.
func pkiDevice(t testing.TB, site *pki.Site, suffix string) State {
	t.Helper()
	d := NewDevice(PKIState())
	h := site.RootHash()
	if err := d.ApplySetupRecord(PKISetupRecord(setupbin.PKI{NewPassword: pkiTestMEBx, RootHash: h[:], Suffix: suffix})); err != nil {
		t.Fatal(err)
	}
	return d.State()
}

// pkiClient is the kiosk side: a TLS client presenting the chain.
func (n *simNet) pkiClient(t testing.TB, cert tls.Certificate, password string) (*wsman.Client, *http.Transport) {
	t.Helper()
	tr := &http.Transport{TLSClientConfig: &tls.Config{
		Certificates: []tls.Certificate{cert}, InsecureSkipVerify: true, // the device's certificate is self-signed
		MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS12, CipherSuites: PKICipherSuites,
	}, MaxIdleConnsPerHost: 1}
	t.Cleanup(tr.CloseIdleConnections)
	c, err := wsman.NewClient(wsman.Options{Endpoint: "https://" + n.tlsAddr + "/wsman", Password: wsman.Secret(password),
		HTTPClient: &http.Client{Transport: tr, Timeout: 30 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	return c, tr
}

func TestPKIAdminSetup(t *testing.T) {
	site, _ := pkiSites(t)
	st := pkiDevice(t, site, "site.example")
	if st.TLSMode != amthi.TLSModePKI || st.ProvisioningState != amthi.StateIn {
		t.Fatalf("after the record: mode %v state %v", st.TLSMode, st.ProvisioningState)
	}
	n := startNet(t, st, nil)
	c, tr := n.pkiClient(t, site.TLSCertificate(), pkiTestMEBx)
	ctx := t.Context()
	var svc hostBasedSetupService
	if err := c.Get(ctx, URIHostBasedSetupService, nil, &svc); err != nil {
		t.Fatal(err)
	}
	if len(svc.ConfigurationNonce) != 20 || svc.CurrentControlMode != 0 {
		t.Fatalf("service %+v", svc)
	}
	for i, der := range site.Chain() {
		in := addNextCertInChainInput{NextCertificate: der, IsLeafCertificate: i == 0, IsRootCertificate: i == len(site.Chain())-1}
		if err := c.Invoke(ctx, URIHostBasedSetupService, "AddNextCertInChain", nil, in, nil); err != nil {
			t.Fatalf("AddNextCertInChain %d: %v", i, err)
		}
	}
	mc := make([]byte, 20)
	_, _ = rand.Read(mc)
	ha1 := wsman.DigestHA1("admin", n.srv.Realm(), "New-Admin-Pw1!")
	in := adminSetupInput{NetAdminPassEncryptionType: 2, NetworkAdminPassword: wsman.Secret(hex.EncodeToString(ha1[:])), McNonce: mc, SigningAlgorithm: 2}
	// A signature over the wrong nonce is refused.
	bad, _ := site.SignNonces(nil, make([]byte, 20), mc)
	in.DigitalSignature = bad
	err := c.Invoke(ctx, URIHostBasedSetupService, "AdminSetup", nil, in, nil)
	if me, ok := errors.AsType[*wsman.MethodError](err); !ok || me.Status != HBSAuthFailed {
		t.Fatalf("AdminSetup with a bad signature: %v", err)
	}
	if r := n.srv.PKIRejections(); len(r) != 1 || r[0].Class != PKISignature {
		t.Fatalf("rejections %+v", r)
	}
	// The nonce changed after the attempt.
	if err := c.Get(ctx, URIHostBasedSetupService, nil, &svc); err != nil {
		t.Fatal(err)
	}
	in.DigitalSignature, _ = site.SignNonces(nil, svc.ConfigurationNonce, mc)
	if err := c.Invoke(ctx, URIHostBasedSetupService, "AdminSetup", nil, in, nil); err != nil {
		t.Fatalf("AdminSetup: %v", err)
	}
	got := n.srv.Device().State()
	if got.ProvisioningState != amthi.StatePost || got.ControlMode != amthi.ControlAdmin || !got.Net.AdminSet || got.Net.AdminHA1 != ha1 {
		t.Fatalf("after AdminSetup: state %v mode %v admin %v", got.ProvisioningState, got.ControlMode, got.Net.AdminSet)
	}
	if got.Net.Audit == nil || got.Net.Audit.TLSMode != 1 || got.Net.Audit.ProvServerFQDN != "provisionserver.site.example" {
		t.Fatalf("audit %+v", got.Net.Audit)
	}
	// The same connection goes on with the new admin password.
	c2, err := wsman.NewClient(wsman.Options{Endpoint: "https://" + n.tlsAddr + "/wsman", Password: "New-Admin-Pw1!", HTTPClient: &http.Client{Transport: tr}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c2.GetGeneralSettings(ctx); err != nil {
		t.Fatalf("after AdminSetup with the new password: %v", err)
	}
}

func TestPKIRejections(t *testing.T) {
	site, other := pkiSites(t)
	root, err := pki.Generate(pki.Options{Suffix: "site.example"})
	if err != nil {
		t.Fatal(err)
	}
	expired, err := root.Issue(pki.Options{Suffix: "site.example", LeafValidity: -time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	noMark, err := root.Issue(pki.Options{Suffix: "site.example", Usage: pki.UsageNone})
	if err != nil {
		t.Fatal(err)
	}
	ouOnly, err := root.Issue(pki.Options{Suffix: "site.example", Usage: pki.UsageOU})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		trusted *pki.Site // the root the machine trusts
		suffix  string
		present tls.Certificate
		want    PKIClass // "" → accepted
	}{
		{"accepted", site, "site.example", site.TLSCertificate(), ""},
		{"OU instead of OID", root, "site.example", ouOnly.TLSCertificate(), ""},
		{"suffix case-insensitive", site, "SITE.Example", site.TLSCertificate(), ""},
		{"wrong root", site, "site.example", other.TLSCertificate(), PKIUntrustedRoot},
		{"wrong suffix", site, "other.example", site.TLSCertificate(), PKIDomain},
		{"suffix is not a label boundary", site, "e.example", site.TLSCertificate(), PKIDomain},
		{"expired", root, "site.example", expired.TLSCertificate(), PKIExpired},
		{"missing OID", root, "site.example", noMark.TLSCertificate(), PKINoMark},
		{"leaf only", site, "site.example", tls.Certificate{Certificate: site.Chain()[:1], PrivateKey: site.Signer()}, PKIChain},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := startNet(t, pkiDevice(t, tc.trusted, tc.suffix), nil)
			c, _ := n.pkiClient(t, tc.present, pkiTestMEBx)
			_, err := c.GetGeneralSettings(t.Context())
			rej := n.srv.PKIRejections()
			if tc.want == "" {
				if err != nil || len(rej) != 0 {
					t.Fatalf("refused: %v %+v", err, rej)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), "bad certificate") {
				t.Errorf("client error %v, want a TLS bad_certificate alert", err)
			}
			if len(rej) != 1 || rej[0].Class != tc.want {
				t.Fatalf("rejections %+v, want one %s", rej, tc.want)
			}
			t.Logf("%s: %s", rej[0].Class, rej[0].Detail)
		})
	}
}

// A PSK machine is untouched by the PKI path: no client certificate asked.
func TestPKINotForPSK(t *testing.T) {
	if pkiTLS(inSetupPSK()) {
		t.Fatal("a PSK machine in setup serves the PKI listener")
	}
}

func inSetupPSK() State {
	st := DefaultState()
	st.ProvisioningState, st.TLSMode, st.PID = amthi.StateIn, amthi.TLSModePSK, "ABCD0123"
	return st
}
