package amtsim

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/provstick/provstick/initramfs/heci/amthi"
	"github.com/provstick/provstick/internal/wsman"
	"github.com/provstick/provstick/setupbin"
)

// Instance names the simulator gives keys and certificates, in the shape
// AMT uses ("Intel(r) AMT Key: Handle: 0").
const (
	keyInstancePrefix  = "Intel(r) AMT Key: Handle: "
	certInstancePrefix = "Intel(r) AMT Certificate: Handle: "
	// maxKeys and maxCerts bound what one device stores; real limits are
	// not documented here, these are the simulator's.
	maxKeys  = 8
	maxCerts = 16
)

// GeneralSettings, SetupAndConfigurationService ... are served with the
// wsman package's structs; the classes below have no client-side struct.

// publicPrivateKeyPair is an AMT_PublicPrivateKeyPair instance. DERKey is
// the public key as PKCS#1 RSAPublicKey DER (base64), what the kiosk signs.
type publicPrivateKeyPair struct {
	ElementName string       `xml:"ElementName"`
	InstanceID  string       `xml:"InstanceID"`
	DERKey      wsman.Base64 `xml:"DERKey"`
}

// publicKeyCertificate is an AMT_PublicKeyCertificate instance (AMT
// spells TrustedRootCertficate without the second i).
type publicKeyCertificate struct {
	ElementName           string       `xml:"ElementName"`
	InstanceID            string       `xml:"InstanceID"`
	X509Certificate       wsman.Base64 `xml:"X509Certificate"`
	TrustedRootCertficate bool         `xml:"TrustedRootCertficate"`
	Issuer                string       `xml:"Issuer"`
	Subject               string       `xml:"Subject"`
	ReadOnlyCertificate   bool         `xml:"ReadOnlyCertificate"`
}

type adminAclEntry struct {
	Username string `xml:"Username"`
}

// register puts every class and method of spec §6 on the WS-Man server.
func (s *NetServer) register() {
	ws := s.ws
	get := func(uri string, step int, f func(ctx context.Context, r *wsman.Request) (any, error)) {
		ws.HandleGet(uri, s.guardH(step, f))
	}
	enum := func(uri string, step int, f func() []any) {
		ws.HandleEnumerate(uri, func(ctx context.Context, r *wsman.Request) ([]any, error) {
			if s.fault.drop(step, false) {
				return nil, wsman.ErrDropConnection
			}
			return f(), nil
		})
	}
	method := func(uri, name string, step int, f wsman.MethodFunc) {
		ws.HandleMethod(uri, name, func(ctx context.Context, r *wsman.Request) (any, wsman.Status, error) {
			if s.fault.drop(step, false) {
				s.log.Info("amtsim: fault: connection dropped", "method", name)
				return nil, 0, wsman.ErrDropConnection
			}
			if rv, ok := s.fault.forcedReturn(name); ok {
				s.log.Info("amtsim: fault: forced return value", "method", name, "status", rv.String())
				return nil, rv, nil
			}
			out, rv, err := f(ctx, r)
			if err == nil && s.fault.drop(step, true) {
				s.log.Info("amtsim: fault: connection dropped after the call took effect", "method", name)
				return nil, 0, wsman.ErrDropConnection
			}
			if err == nil {
				s.log.Debug("amtsim: method", "method", name, "status", rv.String())
			}
			return out, rv, err
		})
	}

	// Step 1: state.
	get(wsman.URIGeneralSettings, StepReadState, func(context.Context, *wsman.Request) (any, error) {
		st := s.dev.shallow()
		return wsman.GeneralSettings{
			ElementName: "Intel(r) AMT: General Settings", InstanceID: "Intel(r) AMT: General Settings",
			NetworkInterfaceEnabled: true, DigestRealm: st.Net.Realm, HostName: st.Net.HostName, DomainName: st.DNSSuffix,
			PingResponseEnabled: true, AMTNetworkEnabled: 1,
		}, nil
	})
	get(wsman.URISetupAndConfigurationService, StepReadState, func(context.Context, *wsman.Request) (any, error) {
		st := s.dev.shallow()
		return wsman.SetupAndConfigurationService{
			CreationClassName: "AMT_SetupAndConfigurationService", ElementName: "Intel(r) AMT Setup and Configuration Service",
			EnabledState: 5, Name: "Intel(r) AMT Setup and Configuration Service",
			PasswordModel:     1, // separate MEBx and network admin passwords
			ProvisioningMode:  uint32(st.ProvisioningMode),
			ProvisioningState: wsman.ProvisioningState(st.ProvisioningState),
			RequestedState:    12, SystemCreationClassName: "CIM_ComputerSystem", SystemName: "Intel(r) AMT",
			ZeroTouchConfigurationEnabled: st.ZeroTouch, DhcpDNSSuffix: st.DNSSuffix,
		}, nil
	})
	enum(wsman.URISoftwareIdentity, StepReadState, func() []any {
		st := s.dev.shallow()
		var out []any
		for _, v := range [][2]string{
			{"Flash", st.AMTVersion}, {"Netstack", st.AMTVersion}, {"AMTApps", st.AMTVersion}, {"AMT", st.AMTVersion},
			{"Sku", st.SKU}, {"VendorID", "8086"}, {"Build Number", st.BuildNumber},
			{"Recovery Version", st.AMTVersion}, {"Recovery Build Num", st.BuildNumber}, {"Legacy Mode", "False"},
		} {
			out = append(out, wsman.SoftwareIdentity{InstanceID: v[0], IsEntity: true, VersionString: v[1]})
		}
		return out
	})

	// Step 2: time.
	method(wsman.URITimeSynchronizationService, "GetLowAccuracyTimeSynch", StepTime, func(context.Context, *wsman.Request) (any, wsman.Status, error) {
		var ta0 int64
		s.dev.Update(func(st *State) {
			ta0 = s.opts.Now().Add(st.Net.ClockOffset).Unix()
			st.Net.lastTa0 = ta0
		})
		return wsman.GetLowAccuracyTimeSynchOutput{Ta0: ta0}, 0, nil
	})
	method(wsman.URITimeSynchronizationService, "SetHighAccuracyTimeSynch", StepTime, func(_ context.Context, r *wsman.Request) (any, wsman.Status, error) {
		var in wsman.SetHighAccuracyTimeSynchInput
		if err := r.Decode(&in); err != nil {
			return nil, 0, err
		}
		rv := wsman.StatusSuccess
		s.dev.Update(func(st *State) {
			if in.Ta0 != st.Net.lastTa0 || in.Tm2 < in.Tm1 {
				rv = wsman.StatusInvalidParameter
				return
			}
			// The device takes Tm2 as the time now (the request's
			// travel time is what the high-accuracy method corrects).
			st.Net.ClockOffset = time.Unix(in.Tm2, 0).Sub(s.opts.Now())
			st.Net.TimeValid = true
		})
		return nil, rv, nil
	})

	// Steps 3 and 4: key pair and certificate.
	method(wsman.URIPublicKeyManagementService, "GenerateKeyPair", StepKey, func(_ context.Context, r *wsman.Request) (any, wsman.Status, error) {
		var in wsman.GenerateKeyPairInput
		if err := r.Decode(&in); err != nil {
			return nil, 0, err
		}
		if in.KeyAlgorithm != 0 || in.KeyLength != 2048 {
			return nil, wsman.StatusInvalidParameter, nil
		}
		if len(s.dev.shallow().Net.Keys) >= maxKeys {
			return nil, wsman.StatusMaxLimitReached, nil
		}
		key, err := s.opts.GenerateKey(int(in.KeyLength))
		if err != nil {
			return nil, 0, fmt.Errorf("generating an RSA key: %w", err)
		}
		h := s.addKey(key)
		return wsman.GenerateKeyPairOutput{KeyPair: keyRef(h)}, 0, nil
	})
	method(wsman.URIPublicKeyManagementService, "AddKey", StepKey, func(_ context.Context, r *wsman.Request) (any, wsman.Status, error) {
		var in wsman.AddKeyInput
		if err := r.Decode(&in); err != nil {
			return nil, 0, err
		}
		key, err := parseRSAKey(in.KeyBlob)
		if err != nil {
			return nil, wsman.StatusInvalidKey, nil
		}
		if len(s.dev.shallow().Net.Keys) >= maxKeys {
			return nil, wsman.StatusMaxLimitReached, nil
		}
		return wsman.AddKeyOutput{CreatedKey: keyRef(s.addKey(key))}, 0, nil
	})
	get(wsman.URIPublicPrivateKeyPair, StepKey, func(_ context.Context, r *wsman.Request) (any, error) {
		id, err := r.Selector("InstanceID")
		if err != nil {
			return nil, err
		}
		for _, k := range s.dev.shallow().Net.Keys {
			if keyInstancePrefix+strconv.Itoa(k.Handle) == id {
				return keyInstance(k), nil
			}
		}
		return nil, wsman.ErrInvalidSelectors.WithReason("no AMT_PublicPrivateKeyPair " + strconv.Quote(id))
	})
	enum(wsman.URIPublicPrivateKeyPair, StepKey, func() []any {
		var out []any
		for _, k := range s.dev.shallow().Net.Keys {
			out = append(out, keyInstance(k))
		}
		return out
	})
	method(wsman.URIPublicKeyManagementService, "AddCertificate", StepCert, func(_ context.Context, r *wsman.Request) (any, wsman.Status, error) {
		var in wsman.AddCertificateInput
		if err := r.Decode(&in); err != nil {
			return nil, 0, err
		}
		cert, err := x509.ParseCertificate(in.CertificateBlob)
		if err != nil {
			return nil, wsman.StatusInvalidCert, nil
		}
		var h int
		rv := wsman.StatusSuccess
		s.dev.Update(func(st *State) {
			for _, c := range st.Net.Certs {
				if slices.Equal(c.DER, in.CertificateBlob) {
					rv = wsman.StatusDuplicate
					return
				}
			}
			if len(st.Net.Certs) >= maxCerts {
				rv = wsman.StatusMaxLimitReached
				return
			}
			c := Certificate{Handle: st.Net.handle(), DER: slices.Clone(in.CertificateBlob), KeyHandle: -1}
			if pub, ok := cert.PublicKey.(*rsa.PublicKey); ok {
				for _, k := range st.Net.Keys {
					if k.Key.PublicKey.Equal(pub) {
						c.KeyHandle = k.Handle
					}
				}
			}
			st.Net.Certs = append(slices.Clip(st.Net.Certs), c)
			h = c.Handle
		})
		if rv != 0 {
			return nil, rv, nil
		}
		return wsman.AddCertificateOutput{CreatedCertificate: certRef(h)}, 0, nil
	})
	enum(wsman.URIPublicKeyCertificate, StepCert, func() []any {
		var out []any
		for _, c := range s.dev.shallow().Net.Certs {
			out = append(out, certInstance(c))
		}
		return out
	})
	get(wsman.URIPublicKeyCertificate, StepCert, func(_ context.Context, r *wsman.Request) (any, error) {
		id, err := r.Selector("InstanceID")
		if err != nil {
			return nil, err
		}
		for _, c := range s.dev.shallow().Net.Certs {
			if certInstancePrefix+strconv.Itoa(c.Handle) == id {
				return certInstance(c), nil
			}
		}
		return nil, wsman.ErrInvalidSelectors.WithReason("no AMT_PublicKeyCertificate " + strconv.Quote(id))
	})

	// Step 5: bind the certificate to TLS.
	ws.HandleCreate(wsman.URITLSCredentialContext, func(_ context.Context, r *wsman.Request) (*wsman.EndpointReference, error) {
		if s.fault.drop(StepBind, false) {
			return nil, wsman.ErrDropConnection
		}
		var in wsman.TLSCredentialContext
		if err := r.Decode(&in); err != nil {
			return nil, err
		}
		if in.ElementProvidingContext.ResourceURI != wsman.URITLSProtocolEndpointCollection {
			return nil, wsman.ErrInvalidParameter.WithReason("ElementProvidingContext is not AMT_TLSProtocolEndpointCollection")
		}
		if in.ElementInContext.ResourceURI != wsman.URIPublicKeyCertificate {
			return nil, wsman.ErrInvalidParameter.WithReason("ElementInContext is not an AMT_PublicKeyCertificate")
		}
		id, _ := in.ElementInContext.Selectors.Get("InstanceID")
		var ferr error
		s.dev.Update(func(st *State) {
			if st.Net.HasTLSCredential {
				ferr = wsman.ErrAlreadyExists.WithReason("a TLS credential context exists")
				return
			}
			for _, c := range st.Net.Certs {
				if certInstancePrefix+strconv.Itoa(c.Handle) != id {
					continue
				}
				if c.KeyHandle < 0 {
					ferr = wsman.ErrInvalidParameter.WithReason("the certificate's public key is not a key pair of this device")
					return
				}
				st.Net.TLSCredential, st.Net.HasTLSCredential = c.Handle, true
				return
			}
			ferr = wsman.ErrInvalidParameter.WithReason("no AMT_PublicKeyCertificate " + strconv.Quote(id))
		})
		if ferr != nil {
			return nil, ferr
		}
		if s.fault.drop(StepBind, true) {
			return nil, wsman.ErrDropConnection
		}
		return credentialRef(id), nil
	})
	enum(wsman.URITLSCredentialContext, StepBind, func() []any {
		st := s.dev.shallow()
		if !st.Net.HasTLSCredential {
			return nil
		}
		return []any{wsman.TLSCredentialContext{
			ElementInContext:        certRef(st.Net.TLSCredential),
			ElementProvidingContext: endpointCollectionRef(),
		}}
	})

	// Step 6: TLS settings.
	tlsSel := func(r *wsman.Request) (string, error) {
		id, err := r.Selector("InstanceID")
		if err != nil {
			return "", err
		}
		if id != wsman.TLSSettingsNetwork && id != wsman.TLSSettingsLocal {
			return "", wsman.ErrInvalidSelectors.WithReason("no AMT_TLSSettingData " + strconv.Quote(id))
		}
		return id, nil
	}
	get(wsman.URITLSSettingData, StepEnableTLS, func(_ context.Context, r *wsman.Request) (any, error) {
		id, err := tlsSel(r)
		if err != nil {
			return nil, err
		}
		st := s.dev.shallow()
		t := st.Net.TLS
		if id == wsman.TLSSettingsLocal {
			t = st.Net.TLSLocal
		}
		return tlsInstance(id, t), nil
	})
	enum(wsman.URITLSSettingData, StepEnableTLS, func() []any {
		st := s.dev.shallow()
		return []any{tlsInstance(wsman.TLSSettingsNetwork, st.Net.TLS), tlsInstance(wsman.TLSSettingsLocal, st.Net.TLSLocal)}
	})
	ws.HandlePut(wsman.URITLSSettingData, s.guardH(StepEnableTLS, func(_ context.Context, r *wsman.Request) (any, error) {
		id, err := tlsSel(r)
		if err != nil {
			return nil, err
		}
		var in wsman.TLSSettingData
		if err := r.Decode(&in); err != nil {
			return nil, err
		}
		if in.InstanceID != "" && in.InstanceID != id {
			return nil, wsman.ErrInvalidParameter.WithReason("InstanceID differs from the selector")
		}
		t := TLSSettings{Enabled: in.Enabled, MutualAuthentication: in.MutualAuthentication,
			AcceptNonSecureConnections: in.AcceptNonSecureConnections, TrustedCN: slices.Clone(in.TrustedCN)}
		s.dev.Update(func(st *State) {
			if id == wsman.TLSSettingsLocal {
				st.Net.TLSLocal = t
			} else {
				st.Net.TLS = t
			}
		})
		return tlsInstance(id, t), nil
	}))

	// Steps 7 and 8: ACL.
	method(wsman.URIAuthorizationService, "SetAdminAclEntryEx", StepAdmin, func(_ context.Context, r *wsman.Request) (any, wsman.Status, error) {
		var in wsman.SetAdminAclEntryExInput
		if err := r.Decode(&in); err != nil {
			return nil, 0, err
		}
		ha1, ok := decodeDigestPassword(in.DigestPassword)
		if !ok {
			return nil, wsman.StatusInvalidPassword, nil
		}
		if in.Username == "" || len(in.Username) > 16 {
			return nil, wsman.StatusInvalidParameter, nil
		}
		s.dev.Update(func(st *State) {
			if st.ProvisioningState == amthi.StatePost {
				st.Net.AdminUser, st.Net.AdminHA1, st.Net.AdminSet = in.Username, ha1, true
				return
			}
			st.Net.pend.adminUser, st.Net.pend.adminHA1, st.Net.pend.adminSet = in.Username, ha1, true
		})
		return nil, 0, nil
	})
	get(wsman.URIAuthorizationService, StepAdmin, func(context.Context, *wsman.Request) (any, error) {
		return struct {
			Name string `xml:"Name"`
		}{"Intel(r) AMT Authorization Service"}, nil
	})
	method(wsman.URIAuthorizationService, "GetAdminAclEntry", StepAdmin, func(context.Context, *wsman.Request) (any, wsman.Status, error) {
		st := s.dev.shallow()
		u := "admin"
		if st.Net.AdminSet {
			u = st.Net.AdminUser
		}
		return adminAclEntry{Username: u}, 0, nil
	})
	method(wsman.URIAuthorizationService, "AddUserAclEntryEx", StepUsers, func(_ context.Context, r *wsman.Request) (any, wsman.Status, error) {
		var in wsman.AddUserAclEntryExInput
		if err := r.Decode(&in); err != nil {
			return nil, 0, err
		}
		if in.KerberosUserSid != "" {
			// No KDC on an offline site; the simulator has no Kerberos.
			return nil, wsman.StatusNotPermitted, nil
		}
		if !validUserName(in.DigestUsername) {
			return nil, wsman.StatusInvalidName, nil
		}
		ha1, ok := decodeDigestPassword(in.DigestPassword)
		if !ok {
			return nil, wsman.StatusInvalidPassword, nil
		}
		if in.AccessPermission > uint32(wsman.AccessAny) {
			return nil, wsman.StatusInvalidParameter, nil
		}
		if len(in.Realms) == 0 || len(in.Realms) > 32 {
			return nil, wsman.StatusInvalidRealm, nil
		}
		for _, rl := range in.Realms {
			if !wsman.Realm(rl).Valid() {
				return nil, wsman.StatusInvalidRealm, nil
			}
		}
		var h uint32
		rv := wsman.StatusSuccess
		s.dev.Update(func(st *State) {
			admin := "admin"
			if st.Net.AdminSet {
				admin = st.Net.AdminUser
			}
			if in.DigestUsername == admin || in.DigestUsername == st.Net.pend.adminUser {
				rv = wsman.StatusDuplicate
				return
			}
			for _, u := range st.Net.Users {
				if u.Username == in.DigestUsername {
					rv = wsman.StatusDuplicate
					return
				}
			}
			if len(st.Net.Users) >= MaxUsers {
				rv = wsman.StatusMaxLimitReached
				return
			}
			h = uint32(st.Net.handle())
			st.Net.Users = append(slices.Clip(st.Net.Users), ACLUser{Handle: h, Username: in.DigestUsername, HA1: ha1,
				AccessPermission: in.AccessPermission, Realms: slices.Clone(in.Realms)})
		})
		if rv != 0 {
			return nil, rv, nil
		}
		return wsman.AddUserAclEntryExOutput{Handle: h}, 0, nil
	})
	// The reads of step 8 are not step 8 for DropAtStep, so that a drop
	// at StepUsers hits AddUserAclEntryEx (the call a lost reply matters
	// for).
	method(wsman.URIAuthorizationService, "EnumerateUserAclEntries", stepOther, func(_ context.Context, r *wsman.Request) (any, wsman.Status, error) {
		var in wsman.EnumerateUserAclEntriesInput
		if err := r.Decode(&in); err != nil {
			return nil, 0, err
		}
		users := s.dev.State().Net.Users
		if in.StartIndex < 1 || int(in.StartIndex) > len(users)+1 {
			return nil, wsman.StatusInvalidIndex, nil
		}
		out := wsman.EnumerateUserAclEntriesOutput{TotalCount: uint32(len(users))}
		for _, u := range users[in.StartIndex-1:] {
			if len(out.Handles) == userAclPage {
				break
			}
			out.Handles = append(out.Handles, u.Handle)
		}
		return out, 0, nil
	})
	method(wsman.URIAuthorizationService, "GetUserAclEntryEx", stepOther, func(_ context.Context, r *wsman.Request) (any, wsman.Status, error) {
		var in wsman.GetUserAclEntryExInput
		if err := r.Decode(&in); err != nil {
			return nil, 0, err
		}
		for _, u := range s.dev.State().Net.Users {
			if u.Handle == in.Handle {
				return wsman.UserAclEntry{DigestUsername: u.Username, AccessPermission: u.AccessPermission, Realms: slices.Clone(u.Realms)}, 0, nil
			}
		}
		return nil, wsman.StatusInvalidHandle, nil
	})

	// Steps 9–11 and the other members of AMT_SetupAndConfigurationService.
	sc := wsman.URISetupAndConfigurationService
	method(sc, "SetMEBxPassword", StepMEBx, func(_ context.Context, r *wsman.Request) (any, wsman.Status, error) {
		var in wsman.SetMEBxPasswordInput
		if err := r.Decode(&in); err != nil {
			return nil, 0, err
		}
		if s.dev.shallow().ProvisioningState != amthi.StateIn {
			return nil, wsman.StatusNotPermitted, nil
		}
		if setupbin.ValidateMEBxPassword(setupbin.Password(in.Password.Reveal())) != nil {
			return nil, wsman.StatusInvalidPassword, nil
		}
		s.dev.Update(func(st *State) { st.Net.pend.mebx = NewSecret(in.Password.Reveal()) })
		return nil, 0, nil
	})
	method(sc, "SetTLSPSK", StepNextPSK, func(_ context.Context, r *wsman.Request) (any, wsman.Status, error) {
		var in wsman.SetTLSPSKInput
		if err := r.Decode(&in); err != nil {
			return nil, 0, err
		}
		pid, pps, err := wsman.DecodeTLSPSK(s.opts.PSKEncoding, in)
		if err != nil {
			return nil, wsman.StatusInvalidPPSFormat, nil
		}
		if _, err := setupbin.ParsePID(pid); err != nil {
			return nil, wsman.StatusInvalidPIDFormat, nil
		}
		if _, err := setupbin.ParsePPS(pps.Reveal()); err != nil {
			return nil, wsman.StatusInvalidPPSFormat, nil
		}
		s.dev.Update(func(st *State) { st.Net.pend.pid, st.Net.pend.pps = pid, NewSecret(pps.Reveal()) })
		return nil, 0, nil
	})
	method(sc, "CommitChanges", StepCommit, func(ctx context.Context, r *wsman.Request) (any, wsman.Status, error) {
		return nil, s.commit(ctx, r), nil
	})
	method(sc, "Unprovision", stepOther, func(ctx context.Context, r *wsman.Request) (any, wsman.Status, error) {
		var in wsman.UnprovisionInput
		if err := r.Decode(&in); err != nil {
			return nil, 0, err
		}
		if in.ProvisioningMode > 1 {
			return nil, wsman.StatusInvalidParameter, nil
		}
		s.dev.Update(func(st *State) { st.unprovision() })
		s.afterStateChange(ctx)
		s.log.Info("amtsim: unprovisioned")
		return nil, 0, nil
	})
	method(sc, "PartialUnprovision", stepOther, func(ctx context.Context, r *wsman.Request) (any, wsman.Status, error) {
		s.dev.Update(func(st *State) {
			st.Net.partialUnprovision()
			st.ControlMode = amthi.ControlPre
			if st.PID != "" {
				st.ProvisioningState, st.TLSMode = amthi.StateIn, amthi.TLSModePSK
			} else {
				st.ProvisioningState, st.TLSMode = amthi.StatePre, amthi.TLSModeNotReady
			}
		})
		s.afterStateChange(ctx)
		s.hello.restart()
		s.log.Info("amtsim: partially unprovisioned")
		return nil, 0, nil
	})
	method(sc, "GetUuid", StepReadState, func(context.Context, *wsman.Request) (any, wsman.Status, error) {
		u := s.dev.shallow().UUID
		return wsman.GetUuidOutput{UUID: u[:]}, 0, nil
	})
	method(sc, "ExtendProvisioningPeriod", stepOther, func(_ context.Context, r *wsman.Request) (any, wsman.Status, error) {
		var in wsman.ExtendProvisioningPeriodInput
		if err := r.Decode(&in); err != nil {
			return nil, 0, err
		}
		rv := wsman.StatusSuccess
		s.dev.Update(func(st *State) {
			if st.ProvisioningState != amthi.StateIn {
				rv = wsman.StatusInvalidProvisioningState
				return
			}
			st.Net.ExtendedHours += in.Duration
		})
		return nil, rv, nil
	})

	// Step 12: audit record, both shapes (the method before AMT 7.0, the
	// class from 7.0); the simulator answers both whatever its version.
	method(sc, "GetProvisioningAuditRecord", StepAudit, func(context.Context, *wsman.Request) (any, wsman.Status, error) {
		st := s.dev.shallow()
		if st.Net.Audit == nil {
			return nil, wsman.StatusDataMissing, nil
		}
		return auditInstance(*st.Net.Audit, false), 0, nil
	})
	enum(wsman.URIProvisioningAuditRecord, StepAudit, func() []any {
		st := s.dev.shallow()
		if st.Net.Audit == nil {
			return nil
		}
		return []any{auditInstance(*st.Net.Audit, true)}
	})

	s.registerPKI() // IPS_HostBasedSetupService, pki_wsman.go
}

// guardH wraps a Get or Put handler with the drop faults of its step.
func (s *NetServer) guardH(step int, f func(ctx context.Context, r *wsman.Request) (any, error)) wsman.Handler {
	return func(ctx context.Context, r *wsman.Request) (any, error) {
		if s.fault.drop(step, false) {
			return nil, wsman.ErrDropConnection
		}
		out, err := f(ctx, r)
		if err == nil && s.fault.drop(step, true) {
			return nil, wsman.ErrDropConnection
		}
		return out, err
	}
}

// commit is CommitChanges: in setup it moves the machine to post,
// applying what was staged; in post it applies TLS setting changes.
func (s *NetServer) commit(ctx context.Context, r *wsman.Request) wsman.Status {
	rv := wsman.StatusSuccess
	now := s.opts.Now()
	var provisioned bool
	s.dev.Update(func(st *State) {
		n := &st.Net
		switch st.ProvisioningState {
		case amthi.StateIn:
		case amthi.StatePost:
			if n.TLS.Enabled && !n.HasTLSCredential {
				rv = wsman.StatusDataMissing
				return
			}
			n.TLSActive = n.TLS
			n.TLSActive.TrustedCN = slices.Clone(n.TLS.TrustedCN)
			n.Commits++
			return
		default:
			rv = wsman.StatusNotPermitted
			return
		}
		// TLS enabled without a certificate bound: the data is missing.
		if n.TLS.Enabled && !n.HasTLSCredential {
			rv = wsman.StatusDataMissing
			return
		}
		if n.pend.adminSet {
			n.AdminUser, n.AdminHA1, n.AdminSet = n.pend.adminUser, n.pend.adminHA1, true
		}
		if !n.pend.mebx.IsZero() {
			st.MEBxPassword = n.pend.mebx
		}
		if n.pend.pid != "" {
			st.PID, st.PPS = n.pend.pid, n.pend.pps
		}
		n.pend = pending{}
		n.TLSActive = n.TLS
		n.TLSActive.TrustedCN = slices.Clone(n.TLS.TrustedCN)
		n.Commits++
		mode := uint32(2) // PSK
		if st.TLSMode == amthi.TLSModePKI {
			mode = 1
		}
		ip := ""
		if r.HTTP != nil {
			if h, _, err := net.SplitHostPort(r.HTTP.RemoteAddr); err == nil {
				ip = h
			}
		}
		n.Audit = &AuditRecord{Time: now.Add(n.ClockOffset), TLSMode: mode, ProvServerIP: ip, TimeValid: n.TimeValid}
		if dom := s.opts.Hello.Domain; dom != "" {
			n.Audit.ProvServerFQDN = "provisionserver." + dom
		} else if st.DNSSuffix != "" && s.opts.Hello.SCS == "" && n.SCS == "" {
			n.Audit.ProvServerFQDN = "provisionserver." + st.DNSSuffix
		}
		st.ProvisioningState = amthi.StatePost
		st.ControlMode = amthi.ControlAdmin
		if st.ProvisioningMode == amthi.ModeNone {
			st.ProvisioningMode = amthi.ModeEnterprise
		}
		provisioned = true
	})
	if rv != wsman.StatusSuccess {
		return rv
	}
	s.afterStateChange(ctx)
	if provisioned {
		s.log.Info("amtsim: provisioned (CommitChanges)", "uuid", s.dev.shallow().UUID.String())
	}
	return rv
}

// afterStateChange ends the TLS session that carried a state change
// (commit, unprovision) and starts the commit downtime.
func (s *NetServer) afterStateChange(ctx context.Context) {
	closeAfterReply(ctx)
	s.mu.Lock()
	s.tlsCert = nil
	if s.opts.CommitDowntime > 0 {
		s.downUntil = s.opts.Now().Add(s.opts.CommitDowntime)
	}
	s.mu.Unlock()
	s.dropIdlePSKConns()
}

func (s *NetServer) addKey(key *rsa.PrivateKey) int {
	var h int
	s.dev.Update(func(st *State) {
		h = st.Net.handle()
		st.Net.Keys = append(slices.Clip(st.Net.Keys), KeyPair{Handle: h, Key: key})
	})
	return h
}

func parseRSAKey(der []byte) (*rsa.PrivateKey, error) {
	if k, err := x509.ParsePKCS1PrivateKey(der); err == nil {
		return k, nil
	}
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, err
	}
	rk, ok := k.(*rsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("key is %T, not RSA", k)
	}
	return rk, nil
}

// MaxUsers is how many user ACL entries the simulator holds besides the
// admin; one more is StatusMaxLimitReached. The figure for real firmware
// is not in the SDK pages we read; 16 is what this simulator has always
// used.
const MaxUsers = 16

// userAclPage is how many handles one EnumerateUserAclEntries answer
// carries (the SDK: up to 50).
const userAclPage = 50

// validUserName: 1–16 characters of 7-bit ASCII, no control characters
// and no ':' (it separates user and realm in the Digest hash).
func validUserName(n string) bool {
	if n == "" || len(n) > wsman.MaxUserNameLen {
		return false
	}
	for i := 0; i < len(n); i++ {
		if n[i] < 0x21 || n[i] > 0x7e || n[i] == ':' {
			return false
		}
	}
	return true
}

// decodeDigestPassword reads the DigestPassword parameter: base64 of the
// raw 16-byte MD5(user:realm:password) (spec §6 step 7).
func decodeDigestPassword(p wsman.Secret) (wsman.HA1, bool) {
	var h wsman.HA1
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(p.Reveal()))
	if err != nil || len(raw) != len(h) {
		return h, false
	}
	copy(h[:], raw)
	return h, true
}

func keyRef(h int) wsman.EndpointReference {
	return wsman.EndpointReference{ResourceURI: wsman.URIPublicPrivateKeyPair,
		Selectors: wsman.SelectorSet{{Name: "InstanceID", Value: keyInstancePrefix + strconv.Itoa(h)}}}
}

func certRef(h int) wsman.EndpointReference {
	return wsman.EndpointReference{ResourceURI: wsman.URIPublicKeyCertificate,
		Selectors: wsman.SelectorSet{{Name: "InstanceID", Value: certInstancePrefix + strconv.Itoa(h)}}}
}

func endpointCollectionRef() wsman.EndpointReference {
	return wsman.EndpointReference{ResourceURI: wsman.URITLSProtocolEndpointCollection,
		Selectors: wsman.SelectorSet{{Name: "ElementName", Value: wsman.TLSEndpointCollectionName}}}
}

// credentialRef names the AMT_TLSCredentialContext created for a
// certificate. Real AMT's selectors are nested references; the wsman
// package carries text selectors only, so the simulator names the
// certificate's InstanceID.
func credentialRef(certID string) *wsman.EndpointReference {
	return &wsman.EndpointReference{ResourceURI: wsman.URITLSCredentialContext,
		Selectors: wsman.SelectorSet{{Name: "ElementInContext", Value: certID}}}
}

func keyInstance(k KeyPair) publicPrivateKeyPair {
	return publicPrivateKeyPair{ElementName: "Intel(r) AMT Key", InstanceID: keyInstancePrefix + strconv.Itoa(k.Handle),
		DERKey: x509.MarshalPKCS1PublicKey(&k.Key.PublicKey)}
}

func certInstance(c Certificate) publicKeyCertificate {
	out := publicKeyCertificate{ElementName: "Intel(r) AMT Certificate", InstanceID: certInstancePrefix + strconv.Itoa(c.Handle),
		X509Certificate: c.DER}
	if cert, err := x509.ParseCertificate(c.DER); err == nil {
		out.Issuer, out.Subject = cert.Issuer.String(), cert.Subject.String()
		out.TrustedRootCertficate = cert.IsCA && c.KeyHandle < 0
	}
	return out
}

func tlsInstance(id string, t TLSSettings) wsman.TLSSettingData {
	ns := true
	return wsman.TLSSettingData{ElementName: id, InstanceID: id, MutualAuthentication: t.MutualAuthentication,
		Enabled: t.Enabled, TrustedCN: slices.Clone(t.TrustedCN), AcceptNonSecureConnections: t.AcceptNonSecureConnections,
		NonSecureConnectionsSupported: &ns}
}

func auditInstance(a AuditRecord, withID bool) wsman.ProvisioningAuditRecord {
	out := wsman.ProvisioningAuditRecord{ProvisioningTLSMode: a.TLSMode, ProvServerFQDN: a.ProvServerFQDN,
		ProvServerIP: a.ProvServerIP, IsTimeValid: a.TimeValid, TLSStartTime: a.Time.UTC().Format(time.RFC3339)}
	if withID {
		out.InstanceID = "Intel(r) AMT Provisioning Audit Record 0"
	}
	return out
}
