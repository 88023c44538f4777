package amtsim

import (
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"net"
	"slices"
	"strings"

	"github.com/provstick/provstick/initramfs/heci/amthi"
	"github.com/provstick/provstick/internal/wsman"
)

// URIHostBasedSetupService is IPS_HostBasedSetupService (specs/pki.md §5).
const URIHostBasedSetupService = "http://intel.com/wbem/wscim/1/ips-schema/1/IPS_HostBasedSetupService"

// HBSStatus is an IPS_HostBasedSetupService ReturnValue (specs/pki.md §5;
// the numbers after 0 are [U]).
type HBSStatus = wsman.Status

// IPS_HostBasedSetupService return values.
const (
	HBSSuccess            HBSStatus = 0
	HBSInternalError      HBSStatus = 1
	HBSInvalidState       HBSStatus = 2
	HBSInvalidParam       HBSStatus = 3
	HBSMethodDisabled     HBSStatus = 4
	HBSAuthFailed         HBSStatus = 5
	HBSFlashWriteLimit    HBSStatus = 6
	HBSChainLengthTooLong HBSStatus = 4 // AddNextCertInChain only
)

// Control modes in CurrentControlMode/AllowedControlModes.
const (
	controlPre    = 0
	controlClient = 1
	controlAdmin  = 2
)

// Digest password encoding of NetAdminPassEncryptionType.
const encHTTPDigest = 2

// Signing algorithms of AdminSetup.
const (
	signRSASHA1   = 1
	signRSASHA256 = 2
)

// hostBasedSetupService is the IPS_HostBasedSetupService instance.
type hostBasedSetupService struct {
	CreationClassName       string       `xml:"CreationClassName"`
	ElementName             string       `xml:"ElementName"`
	Name                    string       `xml:"Name"`
	SystemCreationClassName string       `xml:"SystemCreationClassName"`
	SystemName              string       `xml:"SystemName"`
	CurrentControlMode      uint32       `xml:"CurrentControlMode"`
	AllowedControlModes     []uint32     `xml:"AllowedControlModes"`
	ConfigurationNonce      wsman.Base64 `xml:"ConfigurationNonce"`
	CertChainStatus         uint32       `xml:"CertChainStatus"`
}

type addNextCertInChainInput struct {
	NextCertificate   wsman.Base64 `xml:"NextCertificate"`
	IsLeafCertificate bool         `xml:"IsLeafCertificate"`
	IsRootCertificate bool         `xml:"IsRootCertificate"`
}

type adminSetupInput struct {
	NetAdminPassEncryptionType uint32       `xml:"NetAdminPassEncryptionType"`
	NetworkAdminPassword       wsman.Secret `xml:"NetworkAdminPassword"`
	McNonce                    wsman.Base64 `xml:"McNonce"`
	SigningAlgorithm           uint32       `xml:"SigningAlgorithm"`
	DigitalSignature           wsman.Base64 `xml:"DigitalSignature"`
}

type setupInput struct {
	NetAdminPassEncryptionType uint32       `xml:"NetAdminPassEncryptionType"`
	NetworkAdminPassword       wsman.Secret `xml:"NetworkAdminPassword"`
}

// hbsInstance is the service as the device shows it now.
func hbsInstance(st State, nonce []byte, chainStatus uint32) hostBasedSetupService {
	out := hostBasedSetupService{
		CreationClassName: "IPS_HostBasedSetupService", ElementName: "Intel(r) AMT Host Based Setup Service",
		Name: "Intel(r) AMT Host Based Setup Service", SystemCreationClassName: "CIM_ComputerSystem", SystemName: "Intel(r) AMT",
		CurrentControlMode: uint32(st.ControlMode), ConfigurationNonce: nonce, CertChainStatus: chainStatus,
	}
	if st.ProvisioningState != amthi.StatePost {
		out.AllowedControlModes = []uint32{controlClient, controlAdmin}
	}
	return out
}

// decodeNetworkAdminPassword reads NetworkAdminPassword with encoding 2:
// hex of MD5(admin:realm:password) (specs/pki.md §5).
func decodeNetworkAdminPassword(enc uint32, p wsman.Secret) (wsman.HA1, bool) {
	var h wsman.HA1
	if enc != encHTTPDigest {
		return h, false
	}
	raw, err := hex.DecodeString(strings.TrimSpace(p.Reveal()))
	if err != nil || len(raw) != len(h) {
		return h, false
	}
	copy(h[:], raw)
	return h, true
}

// registerPKI adds IPS_HostBasedSetupService to the network side: Get,
// AddNextCertInChain and AdminSetup (Setup is local only, hostbased.go).
func (s *NetServer) registerPKI() {
	ws := s.ws
	ws.HandleGet(URIHostBasedSetupService, func(context.Context, *wsman.Request) (any, error) {
		st := s.dev.shallow()
		s.pki.mu.Lock()
		status := uint32(0)
		if s.pki.chainDone {
			status = 2
		} else if len(s.pki.chain) > 0 {
			status = 1
		}
		s.pki.mu.Unlock()
		return hbsInstance(st, s.configNonce(), status), nil
	})
	ws.HandleMethod(URIHostBasedSetupService, "AddNextCertInChain", func(_ context.Context, r *wsman.Request) (any, wsman.Status, error) {
		var in addNextCertInChainInput
		if err := r.Decode(&in); err != nil {
			return nil, 0, err
		}
		st := s.dev.shallow()
		if st.ProvisioningState == amthi.StatePost {
			return nil, HBSInvalidState, nil
		}
		cert, err := x509.ParseCertificate(in.NextCertificate)
		if err != nil {
			return nil, HBSInvalidParam, nil
		}
		s.pki.mu.Lock()
		if in.IsLeafCertificate {
			s.pki.chain, s.pki.chainDone = nil, false
		}
		if len(s.pki.chain) == 0 && !in.IsLeafCertificate || s.pki.chainDone {
			s.pki.mu.Unlock()
			return nil, HBSInvalidState, nil
		}
		if len(s.pki.chain) >= maxChain {
			s.pki.chain = nil
			s.pki.mu.Unlock()
			return nil, HBSChainLengthTooLong, nil
		}
		s.pki.chain = append(s.pki.chain, cert)
		chain := slices.Clone(s.pki.chain)
		s.pki.mu.Unlock()
		if !in.IsRootCertificate {
			return nil, HBSSuccess, nil
		}
		if rej := CheckProvisioningChain(chain, st.Hashes, pkiSuffix(st), s.deviceNow(st)); rej != nil {
			s.reject(rej)
			s.pki.mu.Lock()
			s.pki.chain = nil
			s.pki.mu.Unlock()
			return nil, HBSAuthFailed, nil
		}
		s.pki.mu.Lock()
		s.pki.chainDone = true
		s.pki.mu.Unlock()
		return nil, HBSSuccess, nil
	})
	ws.HandleMethod(URIHostBasedSetupService, "AdminSetup", func(_ context.Context, r *wsman.Request) (any, wsman.Status, error) {
		var in adminSetupInput
		if err := r.Decode(&in); err != nil {
			return nil, 0, err
		}
		nonce := s.configNonce()
		defer s.newConfigNonce() // one attempt per nonce
		st := s.dev.shallow()
		if st.ProvisioningState != amthi.StateIn || st.TLSMode != amthi.TLSModePKI {
			return nil, HBSInvalidState, nil
		}
		ha1, ok := decodeNetworkAdminPassword(in.NetAdminPassEncryptionType, in.NetworkAdminPassword)
		if !ok || len(in.McNonce) != 20 || len(in.DigitalSignature) == 0 {
			return nil, HBSInvalidParam, nil
		}
		s.pki.mu.Lock()
		done, chain := s.pki.chainDone, slices.Clone(s.pki.chain)
		s.pki.mu.Unlock()
		if !done {
			s.reject(&PKIRejection{Class: PKIChain, Detail: "AdminSetup before a complete AddNextCertInChain sequence", Time: s.opts.Now()})
			return nil, HBSAuthFailed, nil
		}
		pub, ok := chain[0].PublicKey.(*rsa.PublicKey)
		if !ok {
			s.reject(&PKIRejection{Class: PKISignature, Detail: "the leaf key is not RSA", Time: s.opts.Now()})
			return nil, HBSAuthFailed, nil
		}
		msg := append(slices.Clone(nonce), in.McNonce...)
		var verr error
		switch in.SigningAlgorithm {
		case signRSASHA256:
			sum := sha256.Sum256(msg)
			verr = rsa.VerifyPKCS1v15(pub, crypto.SHA256, sum[:], in.DigitalSignature)
		case signRSASHA1:
			sum := sha1.Sum(msg)
			verr = rsa.VerifyPKCS1v15(pub, crypto.SHA1, sum[:], in.DigitalSignature)
		default:
			return nil, HBSInvalidParam, nil
		}
		if verr != nil {
			s.reject(&PKIRejection{Class: PKISignature, Detail: "the signature over ConfigurationNonce||McNonce does not verify with the leaf key", Time: s.opts.Now()})
			return nil, HBSAuthFailed, nil
		}
		ip := ""
		if r.HTTP != nil {
			if h, _, err := net.SplitHostPort(r.HTTP.RemoteAddr); err == nil {
				ip = h
			}
		}
		now := s.opts.Now()
		rv := HBSSuccess
		s.dev.Update(func(st *State) {
			if st.ProvisioningState != amthi.StateIn {
				rv = HBSInvalidState
				return
			}
			n := &st.Net
			n.AdminUser, n.AdminHA1, n.AdminSet = "admin", ha1, true
			if !n.pend.mebx.IsZero() { // SetMEBxPassword staged during setup
				st.MEBxPassword = n.pend.mebx
			}
			n.pend = pending{}
			n.Commits++
			n.Audit = &AuditRecord{Time: now.Add(n.ClockOffset), TLSMode: 1, ProvServerIP: ip,
				ProvServerFQDN: chain[0].Subject.CommonName, TimeValid: n.TimeValid}
			st.ProvisioningState = amthi.StatePost
			st.ControlMode = amthi.ControlAdmin
			if st.ProvisioningMode == amthi.ModeNone {
				st.ProvisioningMode = amthi.ModeEnterprise
			}
		})
		if rv == HBSSuccess {
			s.log.Info("amtsim: provisioned (AdminSetup, admin control mode)", "uuid", st.UUID.String())
		}
		return nil, rv, nil
	})
}
