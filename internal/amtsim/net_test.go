package amtsim

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/provstick/provstick/initramfs/heci"
	"github.com/provstick/provstick/initramfs/heci/amthi"
	"github.com/provstick/provstick/internal/tlspsk"
	"github.com/provstick/provstick/internal/wsman"
	"github.com/provstick/provstick/setupbin"
)

const (
	testPID  = "ABCD0123"
	testPPS  = "0123-4567-89AB-CDEF-0123-4567-89AB-CDEF"
	testMEBx = "Mebx-Pass-1!"
)

// inSetup is a machine that consumed a setup.bin record: in setup, PSK.
func inSetup(t testing.TB) State {
	t.Helper()
	d := NewDevice(DefaultState())
	d.Update(func(st *State) { st.AMTVersion = "9.5.30" })
	if err := d.ApplySetupRecord(SetupRecord{PID: testPID, PPS: NewSecret(testPPS), MEBxPassword: NewSecret(testMEBx), DNSSuffix: "lab.example"}); err != nil {
		t.Fatal(err)
	}
	return d.State()
}

var (
	sharedKeyOnce sync.Once
	sharedKey     *rsa.PrivateKey
)

// fastKey hands out one pre-made key (GenerateKeyPair's real generator
// runs in TestProvisionSequence).
func fastKey(int) (*rsa.PrivateKey, error) {
	sharedKeyOnce.Do(func() {
		var err error
		if sharedKey, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
	})
	return sharedKey, nil
}

type simNet struct {
	srv       *NetServer
	httpAddr  string
	tlsAddr   string
	logs      *syncBuf
	cancelCtx context.CancelFunc
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func startNet(t testing.TB, st State, mod func(*NetOptions)) *simNet {
	t.Helper()
	logs := &syncBuf{}
	o := NetOptions{
		Logger:      slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo})),
		GenerateKey: fastKey,
		Hello:       HelloOptions{Disabled: true},
	}
	if mod != nil {
		mod(&o)
	}
	srv := NewNetServer(NewDevice(st), &o)
	hl, tl, err := ListenNet("127.0.0.1", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	srv.Start(ctx, hl, tl)
	t.Cleanup(func() {
		cancel()
		srv.Close()
		if t.Failed() {
			t.Logf("simulator log:\n%s", logs.String())
		}
	})
	return &simNet{srv: srv, httpAddr: hl.Addr().String(), tlsAddr: tl.Addr().String(), logs: logs, cancelCtx: cancel}
}

// pskClient is the kiosk's path: our wsman client over TLS-PSK.
func (n *simNet) pskClient(t testing.TB, pps, password string, form tlspsk.KeyForm, enc wsman.PSKEncoding) *wsman.Client {
	t.Helper()
	d := &tlspsk.Dialer{Config: &tlspsk.Config{
		MaxVersion: tlspsk.VersionTLS10,
		Identity: func(string) (string, []byte, error) {
			return testPID, form.Key(testPID, pps), nil
		},
	}}
	tr := &http.Transport{DialTLSContext: d.DialContext}
	t.Cleanup(tr.CloseIdleConnections)
	c, err := wsman.NewClient(wsman.Options{Endpoint: "https://" + n.tlsAddr + "/wsman", Password: wsman.Secret(password),
		HTTPClient: &http.Client{Transport: tr, Timeout: 30 * time.Second}, PSKEncoding: enc})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (n *simNet) httpClient(t testing.TB, user, password string) *wsman.Client {
	t.Helper()
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	c, err := wsman.NewClient(wsman.Options{Endpoint: "http://" + n.httpAddr + "/wsman", Username: user, Password: wsman.Secret(password),
		HTTPClient: &http.Client{Transport: tr, Timeout: 30 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// kioskCA is a stand-in for the kiosk's CA.
type kioskCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newKioskCA(t testing.TB) *kioskCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "provstick test kiosk CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &kioskCA{cert: cert, key: key}
}

func (ca *kioskCA) sign(t testing.TB, pub *rsa.PublicKey, host string) []byte {
	t.Helper()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: host},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), DNSNames: []string{host},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// devicePublicKey reads the public half of a device key pair (step 4's
// input).
func devicePublicKey(ctx context.Context, t testing.TB, c *wsman.Client, ref *wsman.EndpointReference) *rsa.PublicKey {
	t.Helper()
	var kp struct {
		DERKey wsman.Base64 `xml:"DERKey"`
	}
	if err := c.Get(ctx, wsman.URIPublicPrivateKeyPair, ref.Selectors, &kp); err != nil {
		t.Fatalf("Get AMT_PublicPrivateKeyPair: %v", err)
	}
	pub, err := x509.ParsePKCS1PublicKey(kp.DERKey)
	if err != nil {
		t.Fatalf("DERKey: %v", err)
	}
	return pub
}

// provision runs spec §6 steps 1–11 (and 12) with our client, as the
// kiosk will. It returns the CA the device certificate chains to.
func provision(ctx context.Context, t testing.TB, c *wsman.Client, newAdmin, newMEBx string, next bool) *kioskCA {
	t.Helper()
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	// 1.
	g, err := c.GetGeneralSettings(ctx)
	must("Get AMT_GeneralSettings", err)
	if !strings.HasPrefix(g.DigestRealm, "Digest:") || len(g.DigestRealm) != 39 || strings.ToUpper(g.DigestRealm[7:]) != g.DigestRealm[7:] {
		t.Errorf("realm %q", g.DigestRealm)
	}
	sc, err := c.GetSetupAndConfigurationService(ctx)
	must("Get AMT_SetupAndConfigurationService", err)
	if sc.ProvisioningState != wsman.StateIn {
		t.Fatalf("ProvisioningState %v, want in", sc.ProvisioningState)
	}
	v, err := c.AMTVersion(ctx)
	must("AMT version", err)
	if v != "9.5.30" {
		t.Errorf("AMT version %q", v)
	}
	// 2.
	tm1 := time.Now()
	ta0, err := c.GetLowAccuracyTimeSynch(ctx)
	must("GetLowAccuracyTimeSynch", err)
	must("SetHighAccuracyTimeSynch", c.SetHighAccuracyTimeSynch(ctx, ta0, tm1, time.Now()))
	// 3. and 4.
	kref, err := c.GenerateKeyPair(ctx, 2048)
	must("GenerateKeyPair", err)
	pub := devicePublicKey(ctx, t, c, kref)
	ca := newKioskCA(t)
	cref, err := c.AddCertificate(ctx, ca.sign(t, pub, "amt.lab.example"))
	must("AddCertificate", err)
	// 5. and 6.
	_, err = c.CreateTLSCredentialContext(ctx, cref)
	must("Create AMT_TLSCredentialContext", err)
	ts, err := c.GetTLSSettingData(ctx, wsman.TLSSettingsNetwork)
	must("Get AMT_TLSSettingData", err)
	ts.Enabled = true
	_, err = c.PutTLSSettingData(ctx, ts)
	must("Put AMT_TLSSettingData", err)
	// 7., 9., 10.
	must("SetAdminAclEntryEx", c.SetAdminAclEntryEx(ctx, "admin", g.DigestRealm, wsman.Secret(newAdmin)))
	must("SetMEBxPassword", c.SetMEBxPassword(ctx, wsman.Secret(newMEBx)))
	if next {
		pid, _ := setupbin.GeneratePID(bytes.NewReader(bytes.Repeat([]byte{7}, 64)))
		pps, _ := setupbin.GeneratePPS(bytes.NewReader(bytes.Repeat([]byte{9}, 256)))
		must("SetTLSPSK", c.SetTLSPSK(ctx, pid.String(), wsman.Secret(pps.Reveal())))
	}
	// 11.
	must("CommitChanges", c.CommitChanges(ctx))
	return ca
}

// TestProvisionSequence is the whole of spec §6 over TLS-PSK with our
// client, the device's real key generator, then TLS with the kiosk-signed
// certificate over the device's own key, the new admin password, and the
// machine reporting post over HECI too.
func TestProvisionSequence(t *testing.T) {
	for _, tc := range []struct {
		name string
		form tlspsk.KeyForm
		enc  wsman.PSKEncoding
		hint bool
	}{
		{"ascii-text-hint", tlspsk.KeyPPSASCII, wsman.PSKText, true},
		{"dashed-base64-nohint", tlspsk.KeyPPSDashed, wsman.PSKBase64, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := startNet(t, inSetup(t), func(o *NetOptions) {
				o.KeyForm, o.PSKEncoding, o.NoIdentityHint = tc.form, tc.enc, !tc.hint
				if tc.form == tlspsk.KeyPPSASCII {
					o.GenerateKey = nil // the real generator once
				}
			})
			ctx := t.Context()
			c := n.pskClient(t, testPPS, testMEBx, tc.form, tc.enc)
			const newAdmin = "Admin-Pass-2!"
			ca := provision(ctx, t, c, newAdmin, "Mebx-Pass-3!", true)

			st := n.srv.Device().State()
			if st.ProvisioningState != amthi.StatePost || st.ControlMode != amthi.ControlAdmin {
				t.Errorf("state %v/%v after commit", st.ProvisioningState, st.ControlMode)
			}
			if !st.MEBxPassword.Equal("Mebx-Pass-3!") {
				t.Errorf("MEBx password not committed")
			}
			if st.PID == testPID {
				t.Errorf("SetTLSPSK's PID not committed")
			}
			if st.Net.Audit == nil || st.Net.Audit.ProvServerIP != "127.0.0.1" || st.Net.Audit.TLSMode != 2 || !st.Net.Audit.TimeValid {
				t.Errorf("audit record %+v", st.Net.Audit)
			}

			// TLS-PSK is gone from 16993.
			if _, err := c.GetGeneralSettings(ctx); err == nil {
				t.Errorf("TLS-PSK still accepted after commit")
			}
			// TLS with the kiosk-signed certificate over the device key.
			pool := x509.NewCertPool()
			pool.AddCert(ca.cert)
			tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "amt.lab.example"}}
			t.Cleanup(tr.CloseIdleConnections)
			tc2, err := wsman.NewClient(wsman.Options{Endpoint: "https://" + n.tlsAddr + "/wsman", Password: newAdmin,
				HTTPClient: &http.Client{Transport: tr, Timeout: 30 * time.Second}})
			if err != nil {
				t.Fatal(err)
			}
			sc, err := tc2.GetSetupAndConfigurationService(ctx)
			if err != nil {
				t.Fatalf("over TLS after commit: %v", err)
			}
			if sc.ProvisioningState != wsman.StatePost {
				t.Errorf("ProvisioningState %v, want post", sc.ProvisioningState)
			}
			conn, err := tls.Dial("tcp", n.tlsAddr, &tls.Config{RootCAs: pool, ServerName: "amt.lab.example"})
			if err != nil {
				t.Fatal(err)
			}
			leaf := conn.ConnectionState().PeerCertificates[0]
			conn.Close()
			if !leaf.PublicKey.(*rsa.PublicKey).Equal(&st.Net.Keys[0].Key.PublicKey) {
				t.Errorf("TLS certificate is not over the device's generated key")
			}
			// The old password no longer logs in; audit by both shapes.
			if _, err := n.httpClient(t, "admin", testMEBx).GetGeneralSettings(ctx); !errors.Is(err, wsman.ErrUnauthorized) && err == nil {
				t.Errorf("old password still accepted")
			}
			a, err := tc2.GetProvisioningAuditRecord(ctx)
			if err != nil || a.ProvServerIP != "127.0.0.1" {
				t.Errorf("GetProvisioningAuditRecord: %+v, %v", a, err)
			}
			as, err := tc2.ProvisioningAuditRecords(ctx)
			if err != nil || len(as) != 1 {
				t.Errorf("IPS_ProvisioningAuditRecord: %+v, %v", as, err)
			}
			// Over HECI the same machine is post too.
			me := NewMEServer(n.srv.Device(), nil)
			defer me.Close()
			dev := me.Pipe(ctx, nil)
			defer dev.Close()
			ht, err := dev.Connect(ctx, heci.AMTHIClient)
			if err != nil {
				t.Fatal(err)
			}
			if ps, err := (amthi.GetProvisioningState{}).Execute(ctx, ht); err != nil || ps.State != amthi.StatePost {
				t.Errorf("over HECI: %+v, %v; want post", ps, err)
			}
			if strings.Contains(n.logs.String(), testPPS) || strings.Contains(n.logs.String(), newAdmin) {
				t.Errorf("a secret reached the log")
			}
		})
	}
}

func TestHTTPDigestAndMembers(t *testing.T) {
	n := startNet(t, inSetup(t), nil)
	ctx := t.Context()
	c := n.httpClient(t, "admin", testMEBx)
	u, err := c.GetUuid(ctx)
	if err != nil || u.String() != "939b524b-13d4-1d18-e487-1c697a6b7a2b" {
		t.Errorf("GetUuid = %v, %v", u, err)
	}
	if c.Realm() != n.srv.Realm() || n.srv.Realm() != DefaultRealm(amthi.UUID(u)) {
		t.Errorf("realm %q, server %q", c.Realm(), n.srv.Realm())
	}
	sc, err := c.GetSetupAndConfigurationService(ctx)
	if err != nil || sc.PasswordModel != 1 || !sc.ZeroTouchConfigurationEnabled || sc.DhcpDNSSuffix != "lab.example" || sc.ProvisioningMode != 1 {
		t.Errorf("AMT_SetupAndConfigurationService %+v, %v", sc, err)
	}
	if err := c.ExtendProvisioningPeriod(ctx, 24); err != nil || n.srv.Device().State().Net.ExtendedHours != 24 {
		t.Errorf("ExtendProvisioningPeriod: %v", err)
	}
	if err := c.SetMEBxPassword(ctx, "short"); !errors.Is(err, wsman.StatusInvalidPassword) {
		t.Errorf("short MEBx password: %v, want 2054", err)
	}
	if err := c.SetTLSPSK(ctx, "ABCD-0123", wsman.Secret(testPPS)); !errors.Is(err, wsman.StatusInvalidPIDFormat) {
		t.Errorf("SetTLSPSK with a bad check character: %v, want 42", err)
	}
	if _, err := c.GetProvisioningAuditRecord(ctx); !errors.Is(err, wsman.StatusDataMissing) {
		t.Errorf("audit before commit: %v", err)
	}
	if _, err := n.httpClient(t, "admin", "wrong").GetGeneralSettings(ctx); !errors.Is(err, wsman.ErrUnauthorized) {
		t.Errorf("wrong password: %v", err)
	}
	if err := c.Get(ctx, wsman.AMTSchema+"AMT_NoSuchClass", nil, &struct{}{}); !errors.Is(err, wsman.ErrDestinationUnreachable) {
		t.Errorf("unknown class: %v", err)
	}
	// A user added by ACL logs in; AddUserAclEntryEx twice is a duplicate.
	in := wsman.AddUserAclEntryExInput{DigestUsername: "operator", DigestPassword: wsman.DigestPassword("operator", n.srv.Realm(), "Op-Pass-4!"), AccessPermission: 2, Realms: []uint32{3, 24}}
	if _, err := c.AddUserAclEntryEx(ctx, in); err != nil {
		t.Fatal(err)
	}
	if _, err := c.AddUserAclEntryEx(ctx, in); !errors.Is(err, wsman.StatusDuplicate) {
		t.Errorf("second AddUserAclEntryEx: %v", err)
	}
	if _, err := n.httpClient(t, "operator", "Op-Pass-4!").GetGeneralSettings(ctx); err != nil {
		t.Errorf("ACL user: %v", err)
	}
	// Commit without TLS: 16993 closes, 16992 stays; commit again in post
	// is allowed (it applies setting changes).
	if err := c.CommitChanges(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.CommitChanges(ctx); err != nil {
		t.Errorf("commit in post: %v", err)
	}
	if err := c.SetMEBxPassword(ctx, "Mebx-Pass-9!"); !errors.Is(err, wsman.StatusNotPermitted) {
		t.Errorf("SetMEBxPassword in post: %v, want 16", err)
	}
	// PartialUnprovision keeps the PSK: back in setup, TLS-PSK works again.
	if err := c.PartialUnprovision(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := n.pskClient(t, testPPS, testMEBx, tlspsk.KeyPPSASCII, wsman.PSKText).GetGeneralSettings(ctx); err != nil {
		t.Errorf("TLS-PSK after PartialUnprovision: %v", err)
	}
	if err := c.Unprovision(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if st := n.srv.Device().State(); st.ProvisioningState != amthi.StatePre || st.PID != "" {
		t.Errorf("after Unprovision: %v, PID %q", st.ProvisioningState, st.PID)
	}
}

func TestCommitDataMissing(t *testing.T) {
	n := startNet(t, inSetup(t), nil)
	ctx := t.Context()
	c := n.pskClient(t, testPPS, testMEBx, tlspsk.KeyPPSASCII, wsman.PSKText)
	ts, err := c.GetTLSSettingData(ctx, wsman.TLSSettingsNetwork)
	if err != nil {
		t.Fatal(err)
	}
	ts.Enabled = true
	if _, err := c.PutTLSSettingData(ctx, ts); err != nil {
		t.Fatal(err)
	}
	if err := c.CommitChanges(ctx); !errors.Is(err, wsman.StatusDataMissing) {
		t.Errorf("commit with TLS and no certificate: %v, want 2057", err)
	}
	// A certificate for a key the device does not hold cannot be bound.
	other, _ := rsa.GenerateKey(rand.Reader, 1024)
	ca := newKioskCA(t)
	cref, err := c.AddCertificate(ctx, ca.sign(t, &other.PublicKey, "x"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateTLSCredentialContext(ctx, cref); !errors.Is(err, wsman.ErrInvalidParameter) {
		t.Errorf("binding a foreign certificate: %v", err)
	}
	if _, err := c.AddCertificate(ctx, ca.sign(t, &other.PublicKey, "x")[:10]); !errors.Is(err, wsman.StatusInvalidCert) {
		t.Errorf("AddCertificate garbage: %v", err)
	}
	if _, err := c.GenerateKeyPair(ctx, 1024); !errors.Is(err, wsman.StatusInvalidParameter) {
		t.Errorf("GenerateKeyPair 1024: %v", err)
	}
	if err := c.SetHighAccuracyTimeSynch(ctx, 12345, time.Now(), time.Now()); !errors.Is(err, wsman.StatusInvalidParameter) {
		t.Errorf("SetHighAccuracyTimeSynch with a foreign Ta0: %v", err)
	}
}

// TestCommitDowntime: after a commit 16993 refuses connections for the
// downtime (AMT restarting its network stack), then serves TLS.
func TestCommitDowntime(t *testing.T) {
	n := startNet(t, inSetup(t), func(o *NetOptions) { o.CommitDowntime = 300 * time.Millisecond })
	ctx := t.Context()
	c := n.pskClient(t, testPPS, testMEBx, tlspsk.KeyPPSASCII, wsman.PSKText)
	provision(ctx, t, c, "Admin-Pass-2!", "Mebx-Pass-3!", false)
	cfg := &tls.Config{InsecureSkipVerify: true}
	if conn, err := tls.Dial("tcp", n.tlsAddr, cfg); err == nil {
		conn.Close()
		t.Errorf("TLS accepted during the commit downtime")
	}
	time.Sleep(350 * time.Millisecond)
	conn, err := tls.Dial("tcp", n.tlsAddr, cfg)
	if err != nil {
		t.Fatalf("TLS after the downtime: %v", err)
	}
	conn.Close()
}
