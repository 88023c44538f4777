package wsman

import (
	"bytes"
	"errors"
	"flag"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/golden from the current encoder")

// TestParseResponses reads the hand-written AMT-shaped replies under
// testdata/responses (see testdata/README.md) the way the client does.
func TestParseResponses(t *testing.T) {
	read := func(t *testing.T, name string) *Message {
		t.Helper()
		b, err := os.ReadFile(filepath.Join("testdata", "responses", name))
		if err != nil {
			t.Fatal(err)
		}
		m, err := ParseMessage(b)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return m
	}
	t.Run("general settings", func(t *testing.T) {
		m := read(t, "amt-get-generalsettings.xml")
		var g GeneralSettings
		if err := decodeBody(m, &g); err != nil {
			t.Fatal(err)
		}
		if m.Action != ActionGetResponse || m.ResourceURI != URIGeneralSettings || m.RelatesTo != "uuid:00000000-8086-8086-8086-000000000001" {
			t.Errorf("header %+v", m.Header)
		}
		if g.DigestRealm != "Digest:A3829B3827DE4D33D4449B366831FD01" || g.HostName != "line3-pc17" || g.AMTNetworkEnabled != 1 || !g.PingResponseEnabled {
			t.Errorf("settings %+v", g)
		}
	})
	t.Run("setup service", func(t *testing.T) {
		var s SetupAndConfigurationService
		if err := decodeBody(read(t, "amt-get-setupandconfigurationservice.xml"), &s); err != nil {
			t.Fatal(err)
		}
		if s.ProvisioningState != StateIn || !s.ZeroTouchConfigurationEnabled || s.PasswordModel != 1 {
			t.Errorf("service %+v", s)
		}
	})
	t.Run("enumerate and pull", func(t *testing.T) {
		m := read(t, "amt-enumerate-response.xml")
		if m.Body.Name.Local != "EnumerateResponse" || m.Body.ChildText("EnumerationContext") != "0D000000-0000-0000-0000-000000000000" {
			t.Errorf("enumerate body %+v", m.Body)
		}
		p := read(t, "amt-pull-softwareidentity.xml")
		items := p.Body.Child("Items").Children
		if len(items) != 5 || p.Body.Child("EndOfSequence") == nil {
			t.Fatalf("pull: %d items", len(items))
		}
		var id SoftwareIdentity
		if err := items[2].Decode(&id); err != nil || id.InstanceID != "AMT" || id.VersionString != "8.1.40" {
			t.Errorf("item 2 = %+v, %v", id, err)
		}
	})
	t.Run("method outputs", func(t *testing.T) {
		m := read(t, "amt-setmebxpassword-output.xml")
		if m.Body.Name.Local != "SetMEBxPassword_OUTPUT" || m.Body.ChildText("ReturnValue") != "2054" {
			t.Errorf("body %+v", m.Body)
		}
		var kp GenerateKeyPairOutput
		if err := read(t, "amt-generatekeypair-output.xml").Body.Decode(&kp); err != nil {
			t.Fatal(err)
		}
		if kp.KeyPair.ResourceURI != URIPublicPrivateKeyPair || kp.KeyPair.Selectors[0] != (Selector{Name: "InstanceID", Value: "Intel(r) AMT Key: Handle: 0"}) {
			t.Errorf("key pair %+v", kp)
		}
		var u GetUuidOutput
		if err := read(t, "amt-getuuid-output.xml").Body.Decode(&u); err != nil {
			t.Fatal(err)
		}
		if DeviceUUID(u.UUID).String() != "939b524b-13d4-1d18-e487-1c697a6b7a2b" {
			t.Errorf("uuid %x", u.UUID)
		}
		var ref EndpointReference
		if err := read(t, "amt-create-resourcecreated.xml").Body.Decode(&ref); err != nil {
			t.Fatal(err)
		}
		if ref.ResourceURI != URITLSCredentialContext || ref.Selectors[0].Name != "ElementInContext" {
			t.Errorf("created %+v", ref)
		}
	})
	t.Run("faults", func(t *testing.T) {
		f := parseFault(read(t, "amt-fault-invalidselectors.xml").Body)
		if !errors.Is(f, ErrInvalidSelectors) || f.Code != CodeSender || !strings.Contains(f.Detail, "InsufficientSelectors") {
			t.Errorf("fault %+v", f)
		}
		f = parseFault(read(t, "amt-fault-destinationunreachable.xml").Body)
		if !errors.Is(f, ErrDestinationUnreachable) || !strings.HasPrefix(f.Reason, "No route") {
			t.Errorf("fault %+v", f)
		}
	})
	t.Run("negative", func(t *testing.T) {
		for _, name := range []string{"neg-not-soap.xml", "neg-truncated.xml", "neg-soap11.xml"} {
			b, err := os.ReadFile(filepath.Join("testdata", "responses", name))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := ParseMessage(b); !errors.Is(err, ErrMalformed) {
				t.Errorf("%s: err = %v, want ErrMalformed", name, err)
			}
		}
	})
}

// TestServerRequests feeds the MeshCentral-shaped requests under
// testdata/requests to the dispatcher with the fake AMT behind it.
func TestServerRequests(t *testing.T) {
	f := newFakeAMT(t, nil, testPassword)
	f.srv.opts.Unauthenticated = true
	tests := []struct {
		file   string
		status int
		body   string // local name of the reply body's root
	}{
		{"mc-get-generalsettings.xml", 200, "AMT_GeneralSettings"},
		{"mc-enumerate-softwareidentity.xml", 200, "EnumerateResponse"},
		{"mc-pull-softwareidentity.xml", 400, "Fault"},
		{"mc-setmebxpassword.xml", 200, "SetMEBxPassword_OUTPUT"},
		{"mc-put-tlssettingdata.xml", 200, "AMT_TLSSettingData"},
		{"mc-create-tlscredentialcontext.xml", 200, "ResourceCreated"},
		{"mc-unknown-method.xml", 400, "Fault"},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join("testdata", "requests", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			w := httptest.NewRecorder()
			f.srv.ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/wsman", bytes.NewReader(b)))
			if w.Code != tt.status {
				t.Errorf("status %d, want %d\n%s", w.Code, tt.status, w.Body.String())
			}
			m, err := ParseMessage(w.Body.Bytes())
			if err != nil {
				t.Fatal(err)
			}
			if m.Body == nil || m.Body.Name.Local != tt.body {
				t.Errorf("reply body %v, want %s", m.Body, tt.body)
			}
			req, _ := ParseMessage(b)
			if m.RelatesTo != req.MessageID {
				t.Errorf("RelatesTo %q, want %q", m.RelatesTo, req.MessageID)
			}
		})
	}
	if f.mebx != "Example-Pw1!" || !f.tls.Enabled || f.contexts != 1 {
		t.Errorf("device state after requests: mebx set %v, tls %+v, contexts %d", f.mebx != "", f.tls, f.contexts)
	}
}

// goldenEnvelopes are our own encoder's output for fixed inputs; they pin
// the wire form. Refresh with go test ./internal/wsman -run Golden -update.
func goldenEnvelopes(t *testing.T) map[string][]byte {
	t.Helper()
	reqHeader := func(action, uri string, sel SelectorSet) *Header {
		return &Header{Action: action, To: "/wsman", ResourceURI: uri, MessageID: "uuid:00000000-0000-4000-8000-000000000001",
			ReplyTo: AddressAnonymous, OperationTimeout: "PT60S", Selectors: sel}
	}
	respHeader := func(action, uri string) *Header {
		return &Header{Action: action, To: AddressAnonymous, ResourceURI: uri,
			MessageID: "uuid:00000000-0000-4000-8000-000000000002", RelatesTo: "uuid:00000000-0000-4000-8000-000000000001"}
	}
	text, err := EncodeTLSPSK(PSKText, "ABCD-EFGH", "0123-4567-89AB-CDEF-0123-4567-89AB-CDEF")
	if err != nil {
		t.Fatal(err)
	}
	b64, err := EncodeTLSPSK(PSKBase64, "ABCD-EFGH", "0123-4567-89AB-CDEF-0123-4567-89AB-CDEF")
	if err != nil {
		t.Fatal(err)
	}
	scs := URISetupAndConfigurationService
	input := func(uri, method string, v any) any { return named{name: xmlName(uri, method+"_INPUT"), v: v} }
	cases := []struct {
		name string
		h    *Header
		body any
	}{
		{"req-get-generalsettings.xml", reqHeader(ActionGet, URIGeneralSettings, nil), nil},
		{"req-enumerate.xml", reqHeader(ActionEnumerate, URISoftwareIdentity, nil), enumerateBody{}},
		{"req-pull.xml", reqHeader(ActionPull, URISoftwareIdentity, nil), pullBody{EnumerationContext: "uuid:ctx", MaxElements: 100}},
		{"req-setmebxpassword.xml", reqHeader(scs+"/SetMEBxPassword", scs, nil), input(scs, "SetMEBxPassword", SetMEBxPasswordInput{Password: "Example-Pw1!"})},
		{"req-settlspsk-text.xml", reqHeader(scs+"/SetTLSPSK", scs, nil), input(scs, "SetTLSPSK", text)},
		{"req-settlspsk-base64.xml", reqHeader(scs+"/SetTLSPSK", scs, nil), input(scs, "SetTLSPSK", b64)},
		{"req-setadminaclentryex.xml", reqHeader(URIAuthorizationService+"/SetAdminAclEntryEx", URIAuthorizationService, nil),
			input(URIAuthorizationService, "SetAdminAclEntryEx", SetAdminAclEntryExInput{Username: "admin", DigestPassword: DigestPassword("admin", testRealm, "Example-Pw1!")})},
		{"req-create-tlscredentialcontext.xml", reqHeader(ActionCreate, URITLSCredentialContext, nil),
			named{name: xmlName(URITLSCredentialContext, "AMT_TLSCredentialContext"), v: TLSCredentialContext{
				ElementInContext: EndpointReference{ResourceURI: URIPublicKeyCertificate, Selectors: SelectorSet{{Name: "InstanceID", Value: "Intel(r) AMT Certificate: Handle: 0"}}},
				ElementProvidingContext: EndpointReference{ResourceURI: URITLSProtocolEndpointCollection,
					Selectors: SelectorSet{{Name: "ElementName", Value: TLSEndpointCollectionName}}}}}},
		{"req-put-tlssettingdata.xml", reqHeader(ActionPut, URITLSSettingData, SelectorSet{{Name: "InstanceID", Value: TLSSettingsNetwork}}),
			InstanceOf(URITLSSettingData, TLSSettingData{ElementName: TLSSettingsNetwork, InstanceID: TLSSettingsNetwork, Enabled: true, TrustedCN: []string{"kiosk.example"}})},
		{"resp-pull.xml", respHeader(ActionPullResponse, URISoftwareIdentity), pullResponse{
			Items:         pullItems{InstanceOf(URISoftwareIdentity, SoftwareIdentity{InstanceID: "AMT", IsEntity: true, VersionString: "7.1.20"})},
			EndOfSequence: &struct{}{}}},
		{"resp-fault-invalidselectors.xml", respHeader(ActionWSManFault, ""), faultElement(ErrInvalidSelectors.WithReason("no instance <x> & \"y\""))},
		{"resp-fault-internal.xml", respHeader(ActionWSManFault, ""), faultElement(ErrInternal.WithReason("internal error"))},
	}
	out := make(map[string][]byte, len(cases))
	for _, c := range cases {
		var buf bytes.Buffer
		if err := writeEnvelope(&buf, c.h, c.body); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		buf.WriteByte('\n')
		out[c.name] = buf.Bytes()
	}
	return out
}

func TestGoldenEnvelopes(t *testing.T) {
	dir := filepath.Join("testdata", "golden")
	for name, got := range goldenEnvelopes(t) {
		path := filepath.Join(dir, name)
		if *update {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, got, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		want, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v (run with -update to create)", err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs from the encoder's output:\ngot  %s\nwant %s", name, got, want)
		}
		if _, err := ParseMessage(got); err != nil {
			t.Errorf("%s does not parse back: %v", name, err)
		}
	}
}
