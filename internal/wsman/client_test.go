package wsman

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

const testPassword Secret = "P@ssw0rd-Adm1n!"

// syncBuffer is a bytes.Buffer safe for the server's and client's loggers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func debugLogger(w *syncBuffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func newTestClient(t testing.TB, url string, pw Secret, log *slog.Logger, mod ...func(*Options)) *Client {
	t.Helper()
	o := Options{Endpoint: url + "/wsman", Username: "admin", Password: pw, Logger: log,
		HTTPClient: &http.Client{Timeout: 30 * time.Second}}
	for _, m := range mod {
		m(&o)
	}
	c, err := NewClient(o)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func setup(t *testing.T) (*fakeAMT, *Client) {
	t.Helper()
	f := newFakeAMT(t, nil, testPassword)
	ts := f.start(t)
	return f, newTestClient(t, ts.URL, testPassword, nil)
}

func TestGetAndEnumerate(t *testing.T) {
	f, c := setup(t)
	ctx := t.Context()
	g, err := c.GetGeneralSettings(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if g.DigestRealm != testRealm || g.HostName != "pc-1" || !g.NetworkInterfaceEnabled {
		t.Errorf("general settings = %+v", g)
	}
	if c.Realm() != testRealm {
		t.Errorf("client realm = %q, want %q", c.Realm(), testRealm)
	}
	s, err := c.GetSetupAndConfigurationService(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if s.ProvisioningState != StateIn || s.DhcpDNSSuffix != "example" || s.PasswordModel != 1 {
		t.Errorf("setup service = %+v", s)
	}
	for _, batch := range []int{1, 2, 100} {
		c.maxElem = batch
		ids, err := c.SoftwareIdentities(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(ids) != len(f.versions) || ids[3] != f.versions[3] {
			t.Errorf("batch %d: identities = %+v", batch, ids)
		}
	}
	v, err := c.AMTVersion(ctx)
	if err != nil || v != "7.1.20" {
		t.Errorf("AMTVersion = %q, %v", v, err)
	}
	recs, err := c.ProvisioningAuditRecords(ctx)
	if err != nil || len(recs) != 1 || recs[0].ProvServerFQDN != "provisionserver.example" {
		t.Errorf("audit records = %+v, %v", recs, err)
	}
	// Raw element access.
	var el *Element
	if err := c.Get(ctx, URIGeneralSettings, nil, &el); err != nil {
		t.Fatal(err)
	}
	if el.Name.Space != URIGeneralSettings || el.ChildText("DigestRealm") != testRealm {
		t.Errorf("raw element %v realm %q", el.Name, el.ChildText("DigestRealm"))
	}
}

func TestProvisioningCalls(t *testing.T) {
	f, c := setup(t)
	ctx := t.Context()

	ta0, err := c.GetLowAccuracyTimeSynch(ctx)
	if err != nil || ta0 != f.clock {
		t.Fatalf("GetLowAccuracyTimeSynch = %d, %v", ta0, err)
	}
	tm := time.Unix(1700000100, 0)
	if err := c.SetHighAccuracyTimeSynch(ctx, ta0, tm, tm.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if f.timeSet.Tm1 != 1700000100 || f.timeSet.Tm2 != 1700000101 {
		t.Errorf("time set %+v", f.timeSet)
	}
	if err := c.SetHighAccuracyTimeSynch(ctx, ta0+1, tm, tm); !errors.Is(err, StatusInvalidParameter) {
		t.Errorf("wrong Ta0: err = %v", err)
	}

	kp, err := c.GenerateKeyPair(ctx, 2048)
	if err != nil {
		t.Fatal(err)
	}
	if kp.ResourceURI != URIPublicPrivateKeyPair || kp.Selectors[0].Value != "Intel(r) AMT Key: Handle: 0" {
		t.Errorf("key pair = %+v", kp)
	}
	if _, err := c.AddKey(ctx, []byte("private key DER")); err != nil {
		t.Fatal(err)
	}
	cert, err := c.AddCertificate(ctx, []byte{0x30, 0x82, 0x01, 0x00, '<', '&'})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(f.certs[0], []byte{0x30, 0x82, 0x01, 0x00, '<', '&'}) {
		t.Errorf("cert stored %x", f.certs[0])
	}
	cc, err := c.CreateTLSCredentialContext(ctx, cert)
	if err != nil {
		t.Fatal(err)
	}
	if cc.ResourceURI != URITLSCredentialContext || f.contexts != 1 {
		t.Errorf("credential context %+v (%d)", cc, f.contexts)
	}

	ts, err := c.GetTLSSettingData(ctx, TLSSettingsNetwork)
	if err != nil {
		t.Fatal(err)
	}
	ts.Enabled, ts.MutualAuthentication = true, false
	ts.TrustedCN = []string{"kiosk.example"}
	got, err := c.PutTLSSettingData(ctx, ts)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Enabled || !f.tls.Enabled || len(f.tls.TrustedCN) != 1 {
		t.Errorf("put TLS settings: reply %+v stored %+v", got, f.tls)
	}

	if err := c.SetMEBxPassword(ctx, "Mebx-Pa55!"); err != nil {
		t.Fatal(err)
	}
	if f.mebx != "Mebx-Pa55!" {
		t.Errorf("MEBx password not stored")
	}
	h, err := c.AddUserAclEntryEx(ctx, AddUserAclEntryExInput{DigestUsername: "op", DigestPassword: DigestPassword("op", testRealm, "Op-Pa55!"), AccessPermission: 2, Realms: []uint32{3, 5}})
	if err != nil || h != 1 || len(f.users[1].Realms) != 2 {
		t.Errorf("AddUserAclEntryEx = %d, %v (%+v)", h, err, f.users)
	}
	if err := c.SetTLSPSK(ctx, "ABCD-EFGH", "0123-4567-89AB-CDEF-0123-4567-89AB-CDEF"); err != nil {
		t.Fatal(err)
	}
	if f.pid != "ABCDEFGH" || f.pps != "0123456789ABCDEF0123456789ABCDEF" {
		t.Errorf("PSK stored %q", f.pid)
	}
	if err := c.ExtendProvisioningPeriod(ctx, 24); err != nil || f.extended != 24 {
		t.Errorf("extend: %v (%d)", err, f.extended)
	}
	u, err := c.GetUuid(ctx)
	if err != nil || u.String() != "939b524b-13d4-1d18-e487-1c697a6b7a2b" {
		t.Errorf("GetUuid = %v, %v", u, err)
	}
	rec, err := c.GetProvisioningAuditRecord(ctx)
	if err != nil || rec.ProvServerIP != "10.0.0.1" || !rec.IsTimeValid {
		t.Errorf("audit = %+v, %v", rec, err)
	}

	// The admin password changes: the next call must use the new one.
	newPW := Secret("N3w-Adm1n-Pw!")
	if err := c.SetAdminAclEntryEx(ctx, "admin", testRealm, newPW); err != nil {
		t.Fatal(err)
	}
	if f.adminHA1 != DigestHA1("admin", testRealm, newPW) {
		t.Errorf("admin HA1 not stored")
	}
	if err := c.CommitChanges(ctx); !errors.Is(err, ErrUnauthorized) {
		t.Errorf("old password after SetAdminAclEntryEx: err = %v, want ErrUnauthorized", err)
	}
	c2 := newTestClient(t, strings.TrimSuffix(c.endpoint, "/wsman"), newPW, nil)
	if err := c2.CommitChanges(ctx); err != nil {
		t.Fatal(err)
	}
	if f.state != StatePost {
		t.Errorf("state after commit = %v", f.state)
	}
	if err := c2.SetMEBxPassword(ctx, "Another-1!"); !errors.Is(err, StatusNotPermitted) {
		t.Errorf("SetMEBxPassword after commit: %v", err)
	}
	if err := c2.PartialUnprovision(ctx); err != nil || f.state != StateIn {
		t.Errorf("PartialUnprovision: %v, %v", err, f.state)
	}
	if err := c2.Unprovision(ctx, 1); err != nil || f.state != StatePre {
		t.Errorf("Unprovision: %v, %v", err, f.state)
	}
	if err := c2.Delete(ctx, URIPublicKeyCertificate, SelectorSet{{Name: "InstanceID", Value: "0"}}); err != nil || f.certs[0] != nil {
		t.Errorf("Delete: %v", err)
	}
}

func TestReturnValues(t *testing.T) {
	f, c := setup(t)
	ctx := t.Context()
	tests := []struct {
		name   string
		method string
		rv     Status
		call   func() error
		text   string
	}{
		{"commit internal error", "CommitChanges", StatusInternalError, func() error { return c.CommitChanges(ctx) }, "INTERNAL_ERROR"},
		{"commit flash limit", "CommitChanges", StatusFlashWriteLimitExceeded, func() error { return c.CommitChanges(ctx) }, "FLASH_WRITE_LIMIT_EXCEEDED"},
		{"commit data missing", "CommitChanges", StatusDataMissing, func() error { return c.CommitChanges(ctx) }, "DATA_MISSING"},
		{"mebx not permitted", "SetMEBxPassword", StatusNotPermitted, func() error { return c.SetMEBxPassword(ctx, "Mebx-Pa55!") }, "NOT_PERMITTED"},
		{"mebx invalid", "SetMEBxPassword", StatusInvalidPassword, func() error { return c.SetMEBxPassword(ctx, "Mebx-Pa55!") }, "INVALID_PASSWORD"},
		{"unknown code", "GetUuid", Status(0x9999), func() error { _, err := c.GetUuid(ctx); return err }, "status 39321"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f.forceReturn(tt.method, tt.rv)
			err := tt.call()
			if !errors.Is(err, tt.rv) {
				t.Fatalf("err = %v, want %v", err, tt.rv)
			}
			me, ok := errors.AsType[*MethodError](err)
			if !ok || me.Method != tt.method || me.Class != className(URISetupAndConfigurationService) {
				t.Errorf("MethodError = %+v", me)
			}
			if !strings.Contains(err.Error(), tt.text) {
				t.Errorf("message %q lacks %q", err, tt.text)
			}
			for _, other := range []Status{StatusNotPermitted, StatusInvalidPassword, StatusFlashWriteLimitExceeded, StatusDataMissing, StatusInternalError} {
				if other != tt.rv && errors.Is(err, other) {
					t.Errorf("error also matches %v", other)
				}
			}
		})
	}
	if f.state != StateIn {
		t.Errorf("forced failures changed state to %v", f.state)
	}
}

func TestFaults(t *testing.T) {
	_, c := setup(t)
	ctx := t.Context()
	tests := []struct {
		name   string
		call   func() error
		want   *Fault
		status int
	}{
		{"invalid selectors", func() error {
			_, err := c.GetTLSSettingData(ctx, "no such instance")
			return err
		}, ErrInvalidSelectors, 400},
		{"missing selectors", func() error {
			return c.Get(ctx, URITLSSettingData, nil, &TLSSettingData{})
		}, ErrInvalidSelectors, 400},
		{"unknown class", func() error {
			return c.Get(ctx, AMTSchema+"AMT_NoSuchClass", nil, &GeneralSettings{})
		}, ErrDestinationUnreachable, 400},
		{"unknown method", func() error {
			return c.Invoke(ctx, URISetupAndConfigurationService, "NoSuchMethod", nil, nil, nil)
		}, ErrActionNotSupported, 400},
		{"put on read-only class", func() error {
			return c.Put(ctx, URIGeneralSettings, nil, GeneralSettings{}, nil)
		}, ErrActionNotSupported, 400},
		{"bad create references", func() error {
			_, err := c.CreateTLSCredentialContext(ctx, &EndpointReference{ResourceURI: "x", Selectors: SelectorSet{{Name: "InstanceID", Value: "1"}}})
			return err
		}, ErrInvalidParameter, 400},
		{"bad pull context", func() error {
			_, _, err := c.Pull(ctx, URISoftwareIdentity, "uuid:nope", nil)
			return err
		}, ErrInvalidEnumContext, 400},
		{"delete without selector", func() error {
			return c.Delete(ctx, URIPublicKeyCertificate, nil)
		}, ErrInvalidSelectors, 400},
		{"delete unknown", func() error {
			return c.Delete(ctx, URIPublicKeyCertificate, SelectorSet{{Name: "InstanceID", Value: "7"}})
		}, ErrInvalidSelectors, 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want fault %s", err, tt.want.Subcode.Local)
			}
			f, ok := errors.AsType[*Fault](err)
			if !ok || f.HTTPStatus != tt.status || f.Code != CodeSender || f.Reason == "" {
				t.Errorf("fault = %+v", f)
			}
			if errors.Is(err, ErrAccessDenied) {
				t.Errorf("fault matches AccessDenied too")
			}
		})
	}
}

func TestHandlerErrors(t *testing.T) {
	f := newFakeAMT(t, nil, testPassword)
	uri := AMTSchema + "AMT_Test"
	f.srv.HandleGet(uri, func(context.Context, *Request) (any, error) {
		return nil, errors.New("secret internal detail")
	})
	f.srv.HandleMethod(uri, "Deny", func(context.Context, *Request) (any, Status, error) {
		return nil, 0, ErrAccessDenied.WithReason("operator may not do this")
	})
	f.srv.HandleMethod(uri, "Drop", func(context.Context, *Request) (any, Status, error) {
		return nil, 0, ErrDropConnection
	})
	ts := f.start(t)
	c := newTestClient(t, ts.URL, testPassword, nil)
	ctx := t.Context()
	err := c.Get(ctx, uri, nil, &GeneralSettings{})
	if !errors.Is(err, ErrInternal) || strings.Contains(err.Error(), "secret") {
		t.Errorf("internal error: %v", err)
	}
	if fl, _ := errors.AsType[*Fault](err); fl == nil || fl.HTTPStatus != 500 || fl.Code != CodeReceiver {
		t.Errorf("internal fault = %+v", fl)
	}
	if err := c.Invoke(ctx, uri, "Deny", nil, nil, nil); !errors.Is(err, ErrAccessDenied) {
		t.Errorf("access denied: %v", err)
	}
	err = c.Invoke(ctx, uri, "Drop", nil, nil, nil)
	if err == nil {
		t.Errorf("dropped connection: no error")
	} else if _, isFault := errors.AsType[*Fault](err); isFault {
		t.Errorf("dropped connection came back as a fault: %v", err)
	}
	// A method called with the wrong body element.
	_, err = c.Do(ctx, Header{Action: uri + "/Deny", ResourceURI: uri}, named{name: xmlName(uri, "Other_INPUT")})
	if !errors.Is(err, ErrSchemaValidation) {
		t.Errorf("wrong input element: %v", err)
	}
}

func TestContextCancel(t *testing.T) {
	f := newFakeAMT(t, nil, testPassword)
	uri := AMTSchema + "AMT_Slow"
	release := make(chan struct{})
	f.srv.HandleMethod(uri, "Wait", func(ctx context.Context, _ *Request) (any, Status, error) {
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil, 0, nil
	})
	ts := f.start(t)
	defer close(release)
	c := newTestClient(t, ts.URL, testPassword, nil)
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	err := c.Invoke(ctx, uri, "Wait", nil, nil, nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want deadline exceeded", err)
	}
}

// TestSecretsNotLogged runs every secret-bearing call with both sides
// logging at debug level and checks that no secret, in any encoding,
// reaches the log.
func TestSecretsNotLogged(t *testing.T) {
	var buf syncBuffer
	log := debugLogger(&buf)
	f := newFakeAMT(t, log, testPassword)
	ts := f.start(t)
	for _, enc := range []PSKEncoding{PSKText, PSKBase64} {
		f.pskEnc = enc
		c := newTestClient(t, ts.URL, testPassword, log, func(o *Options) { o.PSKEncoding = enc })
		ctx := t.Context()
		keyDER := []byte("-----PRIVATE KEY MATERIAL 0123456789-----")
		mebx := Secret("MebxSecret-9!")
		user := Secret("UserSecret-7!")
		pid, pps := "PIDX-1234", Secret("SECR-ETPP-SABC-DEFG-HIJK-LMNO-PQRS-TUVW")
		if _, err := c.AddKey(ctx, keyDER); err != nil {
			t.Fatal(err)
		}
		if err := c.SetMEBxPassword(ctx, mebx); err != nil {
			t.Fatal(err)
		}
		if _, err := c.AddUserAclEntryEx(ctx, AddUserAclEntryExInput{DigestUsername: "op", DigestPassword: DigestPassword("op", testRealm, user), AccessPermission: 1, Realms: []uint32{3}}); err != nil {
			t.Fatal(err)
		}
		if err := c.SetTLSPSK(ctx, pid, pps); err != nil {
			t.Fatal(err)
		}
		if string(f.pps) != "SECRETPPSABCDEFGHIJKLMNOPQRSTUVW" {
			t.Fatalf("%v: PPS not stored", enc)
		}
		// Admin last: it changes the password the client uses.
		newAdmin := Secret("AdminSecret-5!")
		if err := c.SetAdminAclEntryEx(ctx, "admin", testRealm, newAdmin); err != nil {
			t.Fatal(err)
		}
		f.mu.Lock()
		f.adminHA1 = DigestHA1("admin", testRealm, testPassword)
		f.mu.Unlock()

		logs := buf.String()
		if !strings.Contains(logs, "SetMEBxPassword_INPUT") || !strings.Contains(logs, "REDACTED") || !strings.Contains(logs, "wsman response") {
			t.Fatalf("debug log lacks the exchange:\n%s", logs)
		}
		ha1 := func(u string, p Secret) string { h := DigestHA1(u, testRealm, p); return hex.EncodeToString(h[:]) }
		b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
		secrets := map[string]string{
			"admin password":         string(testPassword),
			"new admin password":     string(newAdmin),
			"new admin DigestPw":     string(DigestPassword("admin", testRealm, newAdmin)),
			"new admin HA1 hex":      ha1("admin", newAdmin),
			"admin HA1 hex":          ha1("admin", testPassword),
			"MEBx password":          string(mebx),
			"user password":          string(user),
			"user DigestPassword":    string(DigestPassword("op", testRealm, user)),
			"PPS":                    string(pps),
			"PPS without dashes":     "SECRETPPSABCDEFGHIJKLMNOPQRSTUVW",
			"PPS base64":             b64("SECRETPPSABCDEFGHIJKLMNOPQRSTUVW"),
			"key DER base64":         base64.StdEncoding.EncodeToString(keyDER),
			"key DER":                string(keyDER),
			"key DER base64 (start)": base64.StdEncoding.EncodeToString(keyDER)[:16],
		}
		for name, s := range secrets {
			if strings.Contains(logs, s) {
				t.Errorf("%v: %s appears in the debug log", enc, name)
			}
		}
	}
}

func TestMaskSecrets(t *testing.T) {
	in := `<s:Envelope xmlns:s="` + NSSOAP + `"><s:Body><r:X xmlns:r="urn:x"><r:Password>hunter2</r:Password><r:PPS><inner>deep</inner>tail</r:PPS><r:NetworkAdminPassword>0123456789abcdef</r:NetworkAdminPassword><r:Name a="1">visible &amp; kept</r:Name></r:X></s:Body></s:Envelope>`
	got := maskedXML(in).String()
	for _, s := range []string{"hunter2", "deep", "tail", "0123456789abcdef"} {
		if strings.Contains(got, s) {
			t.Errorf("masked output holds %q: %s", s, got)
		}
	}
	for _, s := range []string{"<r:Password>REDACTED</r:Password>", "<r:PPS>REDACTED</r:PPS>", `<r:Name a="1">visible &amp; kept</r:Name>`} {
		if !strings.Contains(got, s) {
			t.Errorf("masked output lacks %q: %s", s, got)
		}
	}
	if got := maskedXML("<a><Password>x</a>").String(); strings.Contains(got, "x<") || !strings.Contains(got, "not shown") {
		t.Errorf("malformed input shown: %s", got)
	}
}

func TestSecretFormatting(t *testing.T) {
	s := Secret("topsecret")
	var buf bytes.Buffer
	slog.New(slog.NewTextHandler(&buf, nil)).Info("x", "s", s, "h", DigestHA1("a", "b", s))
	for _, out := range []string{buf.String(), s.String(), s.GoString(), DigestHA1("a", "b", s).String()} {
		if strings.Contains(out, "topsecret") || !strings.Contains(out, "REDACTED") {
			t.Errorf("secret formatting: %q", out)
		}
	}
}

func TestNewClientErrors(t *testing.T) {
	for _, ep := range []string{"", "ftp://x/wsman", "http://", "::", "http://admin:secret@host/wsman"} {
		_, err := NewClient(Options{Endpoint: ep})
		if err == nil {
			t.Errorf("endpoint %q accepted", ep)
		} else if strings.Contains(err.Error(), "secret") {
			t.Errorf("error shows the password: %v", err)
		}
	}
}

func TestAuthorize(t *testing.T) {
	f := newFakeAMT(t, nil, testPassword)
	opHA1 := DigestHA1("op", testRealm, "Op-Pa55!")
	admin := f.srv.opts.Credentials
	f.srv.opts.Credentials = func(ctx context.Context, user, realm string) (HA1, bool) {
		if user == "op" {
			return opHA1, true
		}
		return admin(ctx, user, realm)
	}
	f.srv.opts.Authorize = func(_ context.Context, r *Request) error {
		if r.Username != "admin" && r.ResourceURI == URISetupAndConfigurationService {
			return errors.New("operators may not touch the setup service")
		}
		return nil
	}
	ts := f.start(t)
	op := newTestClient(t, ts.URL, "Op-Pa55!", nil, func(o *Options) { o.Username = "op" })
	ctx := t.Context()
	if _, err := op.GetGeneralSettings(ctx); err != nil {
		t.Errorf("operator Get: %v", err)
	}
	err := op.CommitChanges(ctx)
	if !errors.Is(err, ErrAccessDenied) || strings.Contains(err.Error(), "operators") {
		t.Errorf("operator commit: %v", err)
	}
	if f.state != StateIn {
		t.Errorf("denied commit changed state")
	}
	adm := newTestClient(t, ts.URL, testPassword, nil)
	if err := adm.CommitChanges(ctx); err != nil {
		t.Errorf("admin commit: %v", err)
	}
}
