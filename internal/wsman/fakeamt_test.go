package wsman

import (
	"context"
	"encoding/base64"
	"encoding/xml"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
)

// fakeAMT is a small in-test device: a handful of classes on a Server,
// enough to exercise every call shape. The real simulator is internal/amtsim.
type fakeAMT struct {
	mu        sync.Mutex
	realm     string
	adminHA1  HA1
	state     ProvisioningState
	mebx      Secret
	pid       string
	pps       Secret
	pskEnc    PSKEncoding
	tls       TLSSettingData
	certs     [][]byte
	keys      int
	contexts  int
	users     map[uint32]AddUserAclEntryExInput
	clock     int64
	timeSet   SetHighAccuracyTimeSynchInput
	nextRV    map[string]Status // method → forced return value
	versions  []SoftwareIdentity
	uuid      DeviceUUID
	extended  uint32
	audit     ProvisioningAuditRecord
	lastInput map[string]*Element // method → last input element

	srv *Server
}

const testRealm = "Digest:0123456789ABCDEF0123456789ABCDEF"

func newFakeAMT(t testing.TB, log *slog.Logger, password Secret) *fakeAMT {
	f := &fakeAMT{
		realm:  testRealm,
		state:  StateIn,
		tls:    TLSSettingData{ElementName: "Intel(r) AMT 802.3 TLS Settings", InstanceID: TLSSettingsNetwork},
		users:  map[uint32]AddUserAclEntryExInput{},
		clock:  1700000000,
		nextRV: map[string]Status{},
		versions: []SoftwareIdentity{
			{InstanceID: "Flash", IsEntity: true, VersionString: "7.1.20"},
			{InstanceID: "Netstack", IsEntity: true, VersionString: "7.1.20"},
			{InstanceID: "AMTApps", IsEntity: true, VersionString: "7.1.20"},
			{InstanceID: "AMT", IsEntity: true, VersionString: "7.1.20"},
			{InstanceID: "Build Number", IsEntity: true, VersionString: "1176"},
		},
		uuid:      DeviceUUID{0x4b, 0x52, 0x9b, 0x93, 0xd4, 0x13, 0x18, 0x1d, 0xe4, 0x87, 0x1c, 0x69, 0x7a, 0x6b, 0x7a, 0x2b},
		audit:     ProvisioningAuditRecord{ProvisioningTLSMode: 2, ProvServerFQDN: "provisionserver.example", ProvServerIP: "10.0.0.1", IsTimeValid: true},
		lastInput: map[string]*Element{},
	}
	f.adminHA1 = DigestHA1("admin", f.realm, password)
	f.srv = NewServer(ServerOptions{
		Realm:        f.realm,
		Logger:       log,
		ServerHeader: "Intel(R) Active Management Technology 7.1.20",
		Credentials: func(_ context.Context, user, realm string) (HA1, bool) {
			f.mu.Lock()
			defer f.mu.Unlock()
			if user != "admin" || realm != f.realm {
				return HA1{}, false
			}
			return f.adminHA1, true
		},
	})
	f.register()
	return f
}

func (f *fakeAMT) start(t testing.TB) *httptest.Server {
	ts := httptest.NewServer(f.srv)
	t.Cleanup(ts.Close)
	return ts
}

func (f *fakeAMT) method(uri, name string, h func(r *Request) (any, Status, error)) {
	f.srv.HandleMethod(uri, name, func(_ context.Context, r *Request) (any, Status, error) {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.lastInput[name] = r.Body
		if rv, ok := f.nextRV[name]; ok {
			delete(f.nextRV, name)
			return nil, rv, nil
		}
		return h(r)
	})
}

func (f *fakeAMT) register() {
	s := f.srv
	s.HandleGet(URIGeneralSettings, func(context.Context, *Request) (any, error) {
		f.mu.Lock()
		defer f.mu.Unlock()
		return GeneralSettings{
			ElementName: "Intel(r) AMT: General Settings", InstanceID: "Intel(r) AMT: General Settings",
			NetworkInterfaceEnabled: true, DigestRealm: f.realm, HostName: "pc-1", DomainName: "example",
			PingResponseEnabled: true, AMTNetworkEnabled: 1,
		}, nil
	})
	s.HandleGet(URISetupAndConfigurationService, func(context.Context, *Request) (any, error) {
		f.mu.Lock()
		defer f.mu.Unlock()
		return SetupAndConfigurationService{
			CreationClassName: "AMT_SetupAndConfigurationService", ElementName: "Intel(r) AMT Setup and Configuration Service",
			EnabledState: 5, Name: "Intel(r) AMT Setup and Configuration Service", PasswordModel: 1, ProvisioningMode: 1,
			ProvisioningState: f.state, RequestedState: 12, SystemCreationClassName: "CIM_ComputerSystem", SystemName: "Intel(r) AMT",
			DhcpDNSSuffix: "example",
		}, nil
	})
	s.HandleEnumerate(URISoftwareIdentity, func(context.Context, *Request) ([]any, error) {
		f.mu.Lock()
		defer f.mu.Unlock()
		out := make([]any, len(f.versions))
		for i, v := range f.versions {
			out[i] = v
		}
		return out, nil
	})
	s.HandleEnumerate(URIProvisioningAuditRecord, func(context.Context, *Request) ([]any, error) {
		f.mu.Lock()
		defer f.mu.Unlock()
		a := f.audit
		a.InstanceID = "Intel(r) AMT Provisioning Audit Record 0"
		return []any{a}, nil
	})
	selTLS := func(r *Request) error {
		id, ok := r.Selectors.Get("InstanceID")
		if !ok || (id != TLSSettingsNetwork && id != TLSSettingsLocal) {
			return ErrInvalidSelectors.WithReason("no AMT_TLSSettingData " + strconv.Quote(id))
		}
		return nil
	}
	s.HandleGet(URITLSSettingData, func(_ context.Context, r *Request) (any, error) {
		if err := selTLS(r); err != nil {
			return nil, err
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.tls, nil
	})
	s.HandlePut(URITLSSettingData, func(_ context.Context, r *Request) (any, error) {
		if err := selTLS(r); err != nil {
			return nil, err
		}
		var t TLSSettingData
		if err := r.Decode(&t); err != nil {
			return nil, err
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		f.tls = t
		return f.tls, nil
	})
	s.HandleCreate(URITLSCredentialContext, func(_ context.Context, r *Request) (*EndpointReference, error) {
		var c TLSCredentialContext
		if err := r.Decode(&c); err != nil {
			return nil, err
		}
		if c.ElementInContext.ResourceURI != URIPublicKeyCertificate || c.ElementProvidingContext.ResourceURI != URITLSProtocolEndpointCollection {
			return nil, ErrInvalidParameter.WithReason("wrong references")
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		f.contexts++
		return &EndpointReference{ResourceURI: URITLSCredentialContext, Selectors: SelectorSet{
			{Name: "ElementInContext", Value: c.ElementInContext.Selectors[0].Value},
		}}, nil
	})
	s.HandleDelete(URIPublicKeyCertificate, func(_ context.Context, r *Request) error {
		id, err := r.Selector("InstanceID")
		if err != nil {
			return err
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		n, err := strconv.Atoi(id)
		if err != nil || n < 0 || n >= len(f.certs) || f.certs[n] == nil {
			return ErrInvalidSelectors.WithReason("no such certificate")
		}
		f.certs[n] = nil
		return nil
	})

	f.method(URITimeSynchronizationService, "GetLowAccuracyTimeSynch", func(*Request) (any, Status, error) {
		return GetLowAccuracyTimeSynchOutput{Ta0: f.clock}, 0, nil
	})
	f.method(URITimeSynchronizationService, "SetHighAccuracyTimeSynch", func(r *Request) (any, Status, error) {
		var in SetHighAccuracyTimeSynchInput
		if err := r.Decode(&in); err != nil {
			return nil, 0, err
		}
		if in.Ta0 != f.clock {
			return nil, StatusInvalidParameter, nil
		}
		f.timeSet = in
		return nil, 0, nil
	})
	f.method(URIPublicKeyManagementService, "GenerateKeyPair", func(r *Request) (any, Status, error) {
		var in GenerateKeyPairInput
		if err := r.Decode(&in); err != nil {
			return nil, 0, err
		}
		if in.KeyAlgorithm != 0 || in.KeyLength != 2048 {
			return nil, StatusInvalidParameter, nil
		}
		f.keys++
		return GenerateKeyPairOutput{KeyPair: EndpointReference{ResourceURI: URIPublicPrivateKeyPair,
			Selectors: SelectorSet{{Name: "InstanceID", Value: fmt.Sprintf("Intel(r) AMT Key: Handle: %d", f.keys-1)}}}}, 0, nil
	})
	f.method(URIPublicKeyManagementService, "AddKey", func(r *Request) (any, Status, error) {
		var in AddKeyInput
		if err := r.Decode(&in); err != nil {
			return nil, 0, err
		}
		if len(in.KeyBlob) == 0 {
			return nil, StatusInvalidKey, nil
		}
		f.keys++
		return AddKeyOutput{CreatedKey: EndpointReference{ResourceURI: URIPublicPrivateKeyPair,
			Selectors: SelectorSet{{Name: "InstanceID", Value: fmt.Sprintf("Intel(r) AMT Key: Handle: %d", f.keys-1)}}}}, 0, nil
	})
	f.method(URIPublicKeyManagementService, "AddCertificate", func(r *Request) (any, Status, error) {
		var in AddCertificateInput
		if err := r.Decode(&in); err != nil {
			return nil, 0, err
		}
		if len(in.CertificateBlob) == 0 {
			return nil, StatusInvalidCert, nil
		}
		f.certs = append(f.certs, in.CertificateBlob)
		return AddCertificateOutput{CreatedCertificate: EndpointReference{ResourceURI: URIPublicKeyCertificate,
			Selectors: SelectorSet{{Name: "InstanceID", Value: strconv.Itoa(len(f.certs) - 1)}}}}, 0, nil
	})
	f.method(URIAuthorizationService, "SetAdminAclEntryEx", func(r *Request) (any, Status, error) {
		var in SetAdminAclEntryExInput
		if err := r.Decode(&in); err != nil {
			return nil, 0, err
		}
		raw, err := base64.StdEncoding.DecodeString(string(in.DigestPassword))
		if err != nil || len(raw) != 16 || in.Username != "admin" {
			return nil, StatusInvalidPassword, nil
		}
		copy(f.adminHA1[:], raw)
		return nil, 0, nil
	})
	f.method(URIAuthorizationService, "AddUserAclEntryEx", func(r *Request) (any, Status, error) {
		var in AddUserAclEntryExInput
		if err := r.Decode(&in); err != nil {
			return nil, 0, err
		}
		h := uint32(len(f.users) + 1)
		f.users[h] = in
		return AddUserAclEntryExOutput{Handle: h}, 0, nil
	})
	f.method(URISetupAndConfigurationService, "SetMEBxPassword", func(r *Request) (any, Status, error) {
		var in SetMEBxPasswordInput
		if err := r.Decode(&in); err != nil {
			return nil, 0, err
		}
		if f.state == StatePost {
			return nil, StatusNotPermitted, nil
		}
		if len(in.Password) < 8 {
			return nil, StatusInvalidPassword, nil
		}
		f.mebx = in.Password
		return nil, 0, nil
	})
	f.method(URISetupAndConfigurationService, "SetTLSPSK", func(r *Request) (any, Status, error) {
		var in SetTLSPSKInput
		if err := r.Decode(&in); err != nil {
			return nil, 0, err
		}
		pid, pps, err := DecodeTLSPSK(f.pskEnc, in)
		if err != nil {
			return nil, StatusInvalidPPSFormat, nil
		}
		f.pid, f.pps = pid, pps
		return nil, 0, nil
	})
	f.method(URISetupAndConfigurationService, "CommitChanges", func(*Request) (any, Status, error) {
		if f.state != StateIn {
			return nil, StatusNotPermitted, nil
		}
		f.state = StatePost
		return nil, 0, nil
	})
	f.method(URISetupAndConfigurationService, "Unprovision", func(r *Request) (any, Status, error) {
		var in UnprovisionInput
		if err := r.Decode(&in); err != nil {
			return nil, 0, err
		}
		f.state = StatePre
		return nil, 0, nil
	})
	f.method(URISetupAndConfigurationService, "PartialUnprovision", func(*Request) (any, Status, error) {
		f.state = StateIn
		return nil, 0, nil
	})
	f.method(URISetupAndConfigurationService, "GetUuid", func(*Request) (any, Status, error) {
		return GetUuidOutput{UUID: f.uuid[:]}, 0, nil
	})
	f.method(URISetupAndConfigurationService, "ExtendProvisioningPeriod", func(r *Request) (any, Status, error) {
		var in ExtendProvisioningPeriodInput
		if err := r.Decode(&in); err != nil {
			return nil, 0, err
		}
		f.extended += in.Duration
		return nil, 0, nil
	})
	f.method(URISetupAndConfigurationService, "GetProvisioningAuditRecord", func(*Request) (any, Status, error) {
		return f.audit, 0, nil
	})
}

// forceReturn makes the next call of method return rv.
func (f *fakeAMT) forceReturn(method string, rv Status) {
	f.mu.Lock()
	f.nextRV[method] = rv
	f.mu.Unlock()
}

func xmlName(space, local string) xml.Name { return xml.Name{Space: space, Local: local} }
