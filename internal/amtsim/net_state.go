package amtsim

import (
	"crypto/rsa"
	"slices"
	"time"

	"github.com/provstick/provstick/internal/wsman"
)

// NetState is the part of a machine's [State] only the network side
// (hello, TLS, WS-Management) uses. The ME side shares the rest
// (provisioning state, PID/PPS, MEBx password, UUID), so a machine
// provisioned over the network reports "post" over HECI too.
type NetState struct {
	// Realm is the Digest realm, "Digest:" and 32 upper-case hex digits;
	// "" → derived from the UUID when the network side starts.
	Realm    string
	HostName string
	// SCS is a static SCS "host:port" (setup.bin 2/17 and 2/18); "" → find
	// it through DNS (spec §1).
	SCS string

	// AdminUser and AdminHA1 are the admin ACL entry once
	// SetAdminAclEntryEx has been committed; until then (AdminSet false)
	// the Digest user is "admin" with the MEBx password.
	AdminUser string
	AdminHA1  wsman.HA1
	AdminSet  bool
	Users     []ACLUser

	// ClockOffset is the device clock minus the host's; TimeValid is set
	// by SetHighAccuracyTimeSynch.
	ClockOffset time.Duration
	TimeValid   bool

	Keys  []KeyPair
	Certs []Certificate
	// TLSCredential is the handle of the certificate bound by Create
	// AMT_TLSCredentialContext; -1 (or HasTLSCredential false) for none.
	TLSCredential    int
	HasTLSCredential bool
	// TLS and TLSLocal are AMT_TLSSettingData as stored by Put; TLSActive
	// is the network setting in effect, copied from TLS at CommitChanges.
	TLS, TLSLocal, TLSActive TLSSettings

	// Audit is the provisioning audit record, written at the first
	// successful CommitChanges.
	Audit *AuditRecord
	// ExtendedHours sums ExtendProvisioningPeriod calls.
	ExtendedHours uint32
	// Commits counts CommitChanges that wrote flash.
	Commits int

	lastTa0    int64
	nextHandle int
	pend       pending
}

// pending holds what the simulator stages until CommitChanges while in
// setup: the admin ACL, the MEBx password and the next PID/PPS. Whether
// real firmware applies SetAdminAclEntryEx and SetMEBxPassword at once or
// at commit is not documented (specs/amt-psk.md §6); staging them keeps
// the Digest credentials of the running provisioning session stable,
// which is what every SCS we know of assumes.
type pending struct {
	adminUser string
	adminHA1  wsman.HA1
	adminSet  bool
	mebx      Secret
	pid       string
	pps       Secret
}

// ACLUser is one entry added by AddUserAclEntryEx.
type ACLUser struct {
	Handle           uint32
	Username         string
	HA1              wsman.HA1
	AccessPermission uint32
	Realms           []uint32
}

// KeyPair is an RSA key made by GenerateKeyPair or given by AddKey; it
// never leaves the device (only the public half is readable).
type KeyPair struct {
	Handle int
	Key    *rsa.PrivateKey
}

// Certificate is one AMT_PublicKeyCertificate.
type Certificate struct {
	Handle int
	DER    []byte
	// KeyHandle is the handle of the device key pair whose public key the
	// certificate carries, or -1.
	KeyHandle int
}

// TLSSettings is one AMT_TLSSettingData instance.
type TLSSettings struct {
	Enabled                    bool
	MutualAuthentication       bool
	AcceptNonSecureConnections bool
	TrustedCN                  []string
}

// AuditRecord is the provisioning audit record (spec §6 step 12).
type AuditRecord struct {
	Time           time.Time
	TLSMode        uint32 // 1 PKI, 2 PSK
	ProvServerIP   string
	ProvServerFQDN string
	TimeValid      bool
}

func (n NetState) clone() NetState {
	c := n
	c.Users = slices.Clone(n.Users)
	for i := range c.Users {
		c.Users[i].Realms = slices.Clone(c.Users[i].Realms)
	}
	c.Keys = slices.Clone(n.Keys)
	c.Certs = slices.Clone(n.Certs)
	for i := range c.Certs {
		c.Certs[i].DER = slices.Clone(c.Certs[i].DER)
	}
	c.TLS.TrustedCN = slices.Clone(n.TLS.TrustedCN)
	c.TLSLocal.TrustedCN = slices.Clone(n.TLSLocal.TrustedCN)
	c.TLSActive.TrustedCN = slices.Clone(n.TLSActive.TrustedCN)
	if n.Audit != nil {
		a := *n.Audit
		c.Audit = &a
	}
	return c
}

// unprovision is the network half of a full unprovision: everything but
// the realm, the host name and the handle counter goes.
func (n *NetState) unprovision() {
	*n = NetState{Realm: n.Realm, HostName: n.HostName, nextHandle: n.nextHandle, TLSCredential: -1}
}

// partialUnprovision keeps the admin ACL, the host name and the SCS
// address (spec §6, "Other members"); keys, certificates, TLS settings
// and users go.
func (n *NetState) partialUnprovision() {
	*n = NetState{Realm: n.Realm, HostName: n.HostName, SCS: n.SCS, nextHandle: n.nextHandle, TLSCredential: -1,
		AdminUser: n.AdminUser, AdminHA1: n.AdminHA1, AdminSet: n.AdminSet, Audit: n.Audit}
}

func (n *NetState) handle() int {
	h := n.nextHandle
	n.nextHandle++
	return h
}
