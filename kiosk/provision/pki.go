package provision

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/provstick/provstick/internal/hello"
	"github.com/provstick/provstick/internal/wsman"
	"github.com/provstick/provstick/kiosk/ca"
	"github.com/provstick/provstick/kiosk/pki"
	"github.com/provstick/provstick/setupbin"
)

// The PKI path (../../specs/pki.md): a version-3 hello, the machine found
// by UUID, TLS to 16993 presenting the site's provisioning chain,
// IPS_HostBasedSetupService.AdminSetup with the nonces signed by the
// provisioning key (admin control mode), then the TLS steps of the PSK
// path (time, key, certificate, bind, TLS settings, commit) and a
// verification over TLS with the kiosk-signed certificate.
//
// The PKI provisioner does not use the pool store: the machine is found
// through PKIOptions.Lookup (the ledger import knows which stick record,
// hence which MEBx password, each UUID took), and the generated admin
// password comes back in the result for the caller to keep (sealed).

// PKIJob is one machine from a version-3 hello.
type PKIJob struct {
	UUID  string         // text form
	Peer  netip.AddrPort // where the hello came from
	Retry uint32
	// RootHashes are the hello's trusted root hashes; when given, the
	// kiosk uses them to explain a refusal.
	RootHashes []hello.RootHash
}

// PKIMachine is what the kiosk knows about a machine before provisioning.
type PKIMachine struct {
	UUID string
	// MEBxPassword is the password the stick's record set (1/2): the
	// Digest password of "admin" until AdminSetup.
	MEBxPassword setupbin.Password
}

// ErrUnknownMachine: Lookup does not know the UUID.
var ErrUnknownMachine = errors.New("provision: machine not known to this kiosk")

// PKI failure classes (on top of the PSK ones in failure.go).
const (
	ClassPKIUntrustedRoot Class = "site root not trusted by the machine"
	ClassPKIExpired       Class = "provisioning certificate outside its validity"
	ClassPKINoMark        Class = "provisioning certificate lacks the Intel OID/OU"
	ClassPKIDomain        Class = "provisioning certificate not under the machine's PKI DNS suffix"
	ClassPKIRefused       Class = "machine refused the provisioning certificate"
	ClassPKISetup         Class = "admin setup refused"
	ClassUnknownMachine   Class = "machine unknown to this kiosk"
)

// PKIAdvice is the technician's next step for a PKI class (and Advice for
// the others).
func PKIAdvice(c Class) string {
	switch c {
	case ClassPKIUntrustedRoot:
		return "the machine does not trust the site root: run a stick built with this site's root hash (provstick kiosk ca show) on it, and check that the record was consumed"
	case ClassPKIExpired:
		return "the provisioning certificate is expired or not yet valid at the machine's clock: issue a new one (provstick kiosk ca) or set the machine's clock in the BIOS"
	case ClassPKINoMark:
		return "the provisioning certificate has neither the Intel OID 2.16.840.1.113741.1.2.3 nor the OU \"Intel(R) Client Setup Certificate\": issue one with provstick kiosk ca"
	case ClassPKIDomain:
		return "the machine's PKI DNS suffix (setup.bin 2/3 or DHCP option 15) differs from the provisioning certificate's domain: rebuild the stick with the certificate's suffix"
	case ClassPKIRefused:
		return "the machine refused the provisioning chain: check the root hash on the stick, the PKI DNS suffix, the certificate's validity and the Intel OID"
	case ClassPKISetup:
		return "the machine refused AdminSetup (nonce signature or chain): see the kiosk log; power-cycle the machine so it says hello again"
	case ClassUnknownMachine:
		return "no stick record is known for this UUID: import the stick's ledger, then the machine's next hello is provisioned"
	}
	return c.Advice()
}

// PKIOptions configure a PKIProvisioner.
type PKIOptions struct {
	Site *pki.Site // required: chain and provisioning key
	CA   *ca.CA    // required: signs the device TLS certificate
	// Lookup finds a machine by UUID; an error wrapping ErrUnknownMachine
	// means "not ours". Required.
	Lookup func(ctx context.Context, uuid string) (PKIMachine, error)
	Logger *slog.Logger
	// StepTimeout bounds each call; 0 → 60 s. VerifyDelay, VerifyTimeout
	// as in Options (0 → 5 s and 60 s, negative delay → none).
	StepTimeout, VerifyDelay, VerifyTimeout time.Duration
	// Resolve gives the host:port of 16993; nil → the hello's address.
	Resolve func(ctx context.Context, j PKIJob) (string, error)
	// PasswordLength of the generated admin password; 0 → 16.
	PasswordLength int
	// Rand for passwords and nonces; nil → crypto/rand.
	Rand io.Reader
	// Now is the kiosk clock for the local checks; nil → time.Now.
	Now func() time.Time
	// BeforeAdminSetup, if set, is given the admin password just before
	// AdminSetup is sent, so that the caller keeps it (sealed) first: a
	// kiosk that dies after the machine took the password but before the
	// run ends must not leave a machine in admin control mode whose
	// password nobody knows. An error stops the run before AdminSetup.
	BeforeAdminSetup func(ctx context.Context, uuid string, password setupbin.Password) error
}

// PKIResult is what one run did.
type PKIResult struct {
	Job      PKIJob
	Outcome  Outcome
	Failure  *Failure
	Duration time.Duration
	// AdminPassword is the password set by AdminSetup (admin user
	// "admin", and the MEBx password); the caller stores it sealed. It is
	// set whenever AdminSetup succeeded — also when a later step failed,
	// since the machine then is in admin control mode with this password
	// and sends no more hellos (AdminSet tells).
	AdminPassword setupbin.Password
	// AdminSet reports that AdminSetup succeeded in this run.
	AdminSet bool
	// CertDER is the kiosk-signed TLS certificate the machine now shows.
	CertDER []byte
}

// OutcomeUnknownMachine: Lookup did not know the UUID.
const OutcomeUnknownMachine Outcome = "unknown-machine"

// PKIProvisioner runs the PKI workflow.
type PKIProvisioner struct {
	o   PKIOptions
	log *slog.Logger
	q   pkiQueue // pki_queue.go
}

// NewPKI checks the options.
func NewPKI(o PKIOptions) (*PKIProvisioner, error) {
	if o.Site == nil || o.Site.Signer() == nil {
		return nil, errors.New("PKI provisioner: needs the site PKI with its provisioning key")
	}
	if o.CA == nil || o.Lookup == nil {
		return nil, errors.New("PKI provisioner: needs the kiosk CA and a Lookup")
	}
	if o.StepTimeout <= 0 {
		o.StepTimeout = 60 * time.Second
	}
	if o.VerifyDelay == 0 {
		o.VerifyDelay = 5 * time.Second
	}
	if o.VerifyTimeout <= 0 {
		o.VerifyTimeout = 60 * time.Second
	}
	if o.PasswordLength == 0 {
		o.PasswordLength = 16
	}
	if o.Rand == nil {
		o.Rand = rand.Reader
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Resolve == nil {
		o.Resolve = func(_ context.Context, j PKIJob) (string, error) {
			if !j.Peer.IsValid() {
				return "", errors.New("hello has no source address")
			}
			return net.JoinHostPort(j.Peer.Addr().Unmap().String(), "16993"), nil
		}
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &PKIProvisioner{o: o, log: log}, nil
}

// PKICipherSuites are offered on PKI connections only: ECDHE first, then
// the RSA key exchange suites AMT 6–10 firmware speaks, which Go leaves out
// of its defaults (specs/pki.md §4).
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

// PKIClientConfig is the TLS client configuration of a PKI connection:
// TLS 1.0–1.2 with the suites above, presenting the provisioning chain.
// The device's own certificate is self-signed and there is nothing to
// check it against during setup (specs/pki.md §4); the kiosk's trust in
// the machine comes from the hello's UUID and the verification after the
// commit, which trusts only the kiosk CA.
func PKIClientConfig(site *pki.Site) *tls.Config {
	return &tls.Config{
		Certificates:       []tls.Certificate{site.TLSCertificate()},
		InsecureSkipVerify: true, // see the doc comment: verified after the commit
		MinVersion:         tls.VersionTLS10,
		MaxVersion:         tls.VersionTLS12,
		CipherSuites:       PKICipherSuites,
	}
}

// Hostbased setup return values (specs/pki.md §5; numbers [U]).
func hbsStatusText(s wsman.Status) string {
	switch s {
	case 1:
		return "internal error"
	case 2:
		return "invalid state"
	case 3:
		return "invalid parameter"
	case 4:
		return "method disabled (or chain too long)"
	case 5:
		return "authentication failed"
	case 6:
		return "flash write limit exceeded"
	}
	return fmt.Sprintf("return value %d", uint32(s))
}

// HBSError is a refusal by IPS_HostBasedSetupService.
type HBSError struct {
	Method string
	Status wsman.Status
}

func (e *HBSError) Error() string {
	return fmt.Sprintf("IPS_HostBasedSetupService.%s: %s", e.Method, hbsStatusText(e.Status))
}

func hbsErr(method string, err error) error {
	if me, ok := errors.AsType[*wsman.MethodError](err); ok {
		return &HBSError{Method: method, Status: me.Status}
	}
	return fmt.Errorf("IPS_HostBasedSetupService.%s: %w", method, err)
}

// URIHostBasedSetupService is IPS_HostBasedSetupService.
const URIHostBasedSetupService = "http://intel.com/wbem/wscim/1/ips-schema/1/IPS_HostBasedSetupService"

type hostBasedSetupService struct {
	CurrentControlMode  uint32       `xml:"CurrentControlMode"`
	AllowedControlModes []uint32     `xml:"AllowedControlModes"`
	ConfigurationNonce  wsman.Base64 `xml:"ConfigurationNonce"`
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

// NetworkAdminPassword is the encoding-2 form of AdminSetup and Setup:
// lower-case hex of MD5(user:realm:password) (specs/pki.md §5).
func NetworkAdminPassword(user, realm string, password setupbin.Password) wsman.Secret {
	sum := md5.Sum([]byte(user + ":" + realm + ":" + password.Reveal()))
	return wsman.Secret(hex.EncodeToString(sum[:]))
}

// pkiRun is one machine's run.
type pkiRun struct {
	p        *PKIProvisioner
	j        PKIJob
	m        PKIMachine
	addr     string
	password setupbin.Password
	tr       *http.Transport
	c        *wsman.Client
	realm    string
	key      *wsman.EndpointReference
	cert     *wsman.EndpointReference
	certDER  []byte
	adminSet bool // AdminSetup answered success
	log      *slog.Logger
}

// Provision runs the PKI workflow for one machine on the caller's
// goroutine.
func (p *PKIProvisioner) Provision(ctx context.Context, j PKIJob) PKIResult {
	start := time.Now()
	res := PKIResult{Job: j}
	r := &pkiRun{p: p, j: j, log: p.log.With("uuid", j.UUID, "path", "pki")}
	err := r.do(ctx)
	if r.tr != nil {
		r.tr.CloseIdleConnections()
	}
	res.Duration = time.Since(start)
	if r.adminSet {
		res.AdminSet, res.AdminPassword = true, r.password
	}
	switch {
	case errors.Is(err, ErrUnknownMachine):
		res.Outcome, res.Failure = OutcomeUnknownMachine, &Failure{Class: ClassUnknownMachine, Err: err}
		r.log.Warn("PKI hello from a machine unknown to this kiosk", "peer", j.Peer.String(), "retry", j.Retry)
	case err != nil:
		f := Classify(0, err)
		res.Outcome, res.Failure = OutcomeFailed, f
		r.log.Error("PKI provisioning failed", "step", f.Step, "class", string(f.Class), "err", f.Err, "advice", PKIAdvice(f.Class),
			"admin_control_mode", r.adminSet)
	default:
		res.Outcome, res.CertDER = OutcomeProvisioned, r.certDER
		r.log.Info("provisioned (PKI, admin control mode)", "duration", res.Duration.Round(time.Millisecond))
	}
	return res
}

func (r *pkiRun) do(ctx context.Context) error {
	o := r.p.o
	m, err := o.Lookup(ctx, r.j.UUID)
	if err != nil {
		if errors.Is(err, ErrUnknownMachine) {
			return err
		}
		return &Failure{Class: ClassKiosk, Err: fmt.Errorf("looking up machine %s: %w", r.j.UUID, err)}
	}
	r.m = m
	if hint := r.localDiagnosis(); hint != "" {
		r.log.Warn("PKI: the machine will likely refuse the provisioning certificate", "reason", hint)
	}
	if r.addr, err = o.Resolve(ctx, r.j); err != nil {
		return &Failure{Class: ClassUnreachable, Err: err}
	}
	if r.password, err = setupbin.GenerateMEBxPassword(o.Rand, o.PasswordLength); err != nil {
		return &Failure{Class: ClassKiosk, Err: fmt.Errorf("generating the admin password: %w", err)}
	}
	r.tr = &http.Transport{TLSClientConfig: PKIClientConfig(o.Site), MaxIdleConnsPerHost: 1, DisableCompression: true,
		DialContext: (&net.Dialer{Timeout: o.StepTimeout}).DialContext}
	if r.c, err = r.client(m.MEBxPassword); err != nil {
		return &Failure{Class: ClassKiosk, Err: err}
	}
	steps := []struct {
		n int
		f func(context.Context) error
	}{
		{StepReadState, r.readState},
		{StepTime, r.time},
		{StepMEBx, r.mebx},
		{StepAdmin, r.adminSetup},
		{StepKey, r.keyStep},
		{StepCert, r.certStep},
		{StepBind, r.bind},
		{StepEnableTLS, r.enableTLS},
		{StepCommit, r.commit},
	}
	for _, st := range steps {
		sctx, cancel := context.WithTimeout(ctx, o.StepTimeout)
		err := st.f(sctx)
		cancel()
		if err != nil {
			return r.classify(st.n, err)
		}
		r.log.Debug("step done", "step", st.n, "name", stepName(st.n))
	}
	if o.VerifyDelay > 0 {
		select {
		case <-time.After(o.VerifyDelay):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if err := r.verify(ctx); err != nil {
		return Classify(StepVerify, err)
	}
	return nil
}

func (r *pkiRun) client(pw setupbin.Password) (*wsman.Client, error) {
	return wsman.NewClient(wsman.Options{Endpoint: "https://" + r.addr + "/wsman", Password: wsman.Secret(pw.Reveal()),
		HTTPClient: &http.Client{Transport: r.tr}, Logger: r.log})
}

// localDiagnosis checks what the kiosk can check itself against the
// machine's rules (specs/pki.md §4): the hello's hashes, the validity at
// the kiosk's clock, the mark. "" when nothing is wrong.
func (r *pkiRun) localDiagnosis() string {
	c, ok := r.diagnose()
	if !ok {
		return ""
	}
	return string(c)
}

func (r *pkiRun) diagnose() (Class, bool) {
	site := r.p.o.Site
	if len(r.j.RootHashes) > 0 {
		want := site.RootHash()
		found := false
		for _, h := range r.j.RootHashes {
			found = found || h.Type == hello.HashSHA256 && bytes.Equal(h.Hash, want[:])
		}
		if !found {
			return ClassPKIUntrustedRoot, true
		}
	}
	now := r.p.o.Now()
	for _, c := range []*x509.Certificate{site.Leaf, site.Root} {
		if now.Before(c.NotBefore) || now.After(c.NotAfter) {
			return ClassPKIExpired, true
		}
	}
	if !pki.HasProvisioningMark(site.Leaf) {
		return ClassPKINoMark, true
	}
	return "", false
}

// classify turns a step's error into a Failure; a TLS refusal of the
// provisioning chain gets the class the local checks point to, else the
// domain (the one rule the kiosk cannot check: it does not know the
// machine's suffix) when the hello's hashes show the root is trusted.
func (r *pkiRun) classify(step int, err error) error {
	if f, ok := errors.AsType[*Failure](err); ok {
		return f
	}
	if isTLSRefusal(err) {
		c, ok := r.diagnose()
		if !ok {
			c = ClassPKIRefused
			if len(r.j.RootHashes) > 0 {
				c = ClassPKIDomain
			}
		}
		return &Failure{Class: c, Step: step, Err: fmt.Errorf("TLS with the provisioning chain (CN %s): %w", r.p.o.Site.FQDN(), err)}
	}
	if _, ok := errors.AsType[*HBSError](err); ok {
		return &Failure{Class: ClassPKISetup, Step: step, Err: err}
	}
	return Classify(step, err)
}

// isTLSRefusal: the device answered the handshake with a certificate alert.
func isTLSRefusal(err error) bool {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "remote error" {
		s := op.Err.Error()
		return strings.Contains(s, "certificate") || strings.Contains(s, "unknown ca") || strings.Contains(s, "certificate authority")
	}
	return false
}

// Step 1: the machine must be in setup (PKI), not provisioned.
func (r *pkiRun) readState(ctx context.Context) error {
	g, err := r.c.GetGeneralSettings(ctx)
	if err != nil {
		return fmt.Errorf("reading AMT_GeneralSettings: %w", err)
	}
	r.realm = g.DigestRealm
	sc, err := r.c.GetSetupAndConfigurationService(ctx)
	if err != nil {
		return fmt.Errorf("reading AMT_SetupAndConfigurationService: %w", err)
	}
	switch sc.ProvisioningState {
	case wsman.StateIn:
	case wsman.StatePost:
		return &Failure{Class: ClassAlreadyProvisioned, Step: StepReadState, Err: errors.New("the machine is post-provisioning")}
	default:
		return &Failure{Class: ClassNotInSetup, Step: StepReadState, Err: fmt.Errorf("the machine reports %v", sc.ProvisioningState)}
	}
	return nil
}

// Step 2.
func (r *pkiRun) time(ctx context.Context) error { return syncTime(ctx, r.c) }

// Step 9 while in setup: the stick's MEBx password is on a plaintext
// stick, so it becomes the generated one (as on the PSK path).
func (r *pkiRun) mebx(ctx context.Context) error { return setMEBx(ctx, r.c, r.password) }

// Step 7 on the PKI path: the chain, then AdminSetup with the signed
// nonces; afterwards the Digest password is the new admin password.
func (r *pkiRun) adminSetup(ctx context.Context) error {
	site := r.p.o.Site
	chain := site.Chain()
	for i, der := range chain {
		in := addNextCertInChainInput{NextCertificate: der, IsLeafCertificate: i == 0, IsRootCertificate: i == len(chain)-1}
		if err := r.c.Invoke(ctx, URIHostBasedSetupService, "AddNextCertInChain", nil, in, nil); err != nil {
			return hbsErr("AddNextCertInChain", err)
		}
	}
	var svc hostBasedSetupService
	if err := r.c.Get(ctx, URIHostBasedSetupService, nil, &svc); err != nil {
		return fmt.Errorf("reading IPS_HostBasedSetupService: %w", err)
	}
	if len(svc.ConfigurationNonce) == 0 {
		return errors.New("IPS_HostBasedSetupService has no ConfigurationNonce")
	}
	mc := make([]byte, 20)
	if _, err := io.ReadFull(r.p.o.Rand, mc); err != nil {
		return &Failure{Class: ClassKiosk, Err: fmt.Errorf("making the nonce: %w", err)}
	}
	sig, err := site.SignNonces(r.p.o.Rand, svc.ConfigurationNonce, mc)
	if err != nil {
		return &Failure{Class: ClassKiosk, Err: err}
	}
	realm := r.realm
	if realm == "" {
		realm = r.c.Realm()
	}
	in := adminSetupInput{NetAdminPassEncryptionType: 2, NetworkAdminPassword: NetworkAdminPassword("admin", realm, r.password),
		McNonce: mc, SigningAlgorithm: 2, DigitalSignature: sig}
	// wsman's envelope masking does not know NetworkAdminPassword (a
	// password-equivalent digest): this call goes through a client that
	// logs no envelopes.
	quiet, err := wsman.NewClient(wsman.Options{Endpoint: "https://" + r.addr + "/wsman", Password: wsman.Secret(r.m.MEBxPassword.Reveal()),
		HTTPClient: &http.Client{Transport: r.tr}})
	if err != nil {
		return &Failure{Class: ClassKiosk, Err: err}
	}
	if hook := r.p.o.BeforeAdminSetup; hook != nil {
		if err := hook(ctx, r.j.UUID, r.password); err != nil {
			return &Failure{Class: ClassKiosk, Step: StepAdmin, Err: fmt.Errorf("keeping the admin password before AdminSetup: %w", err)}
		}
	}
	if err := quiet.Invoke(ctx, URIHostBasedSetupService, "AdminSetup", nil, in, nil); err != nil {
		return hbsErr("AdminSetup", err)
	}
	r.adminSet = true
	c, err := r.client(r.password)
	if err != nil {
		return &Failure{Class: ClassKiosk, Err: err}
	}
	r.c = c
	return nil
}

// Step 3: the device generates its TLS key.
func (r *pkiRun) keyStep(ctx context.Context) error {
	ref, err := r.c.GenerateKeyPair(ctx, 2048)
	if err != nil {
		return fmt.Errorf("GenerateKeyPair: %w", err)
	}
	r.key = ref
	return nil
}

// Step 4: the kiosk CA signs the device key.
func (r *pkiRun) certStep(ctx context.Context) error {
	pub, err := devicePublicKey(ctx, r.c, r.key)
	if err != nil {
		return err
	}
	der, err := r.p.o.CA.Sign(pub, ca.Device{UUID: r.j.UUID})
	if err != nil {
		return &Failure{Class: ClassKiosk, Step: StepCert, Err: err}
	}
	ref, err := r.c.AddCertificate(ctx, der)
	if err != nil {
		return fmt.Errorf("AddCertificate: %w", err)
	}
	r.cert, r.certDER = ref, der
	return nil
}

// Step 5.
func (r *pkiRun) bind(ctx context.Context) error {
	_, err := bindCert(ctx, r.c, r.cert)
	return err
}

// Step 6.
func (r *pkiRun) enableTLS(ctx context.Context) error { return enableTLS(ctx, r.c) }

// Step 11: post-provisioning, the commit applies the TLS settings.
func (r *pkiRun) commit(ctx context.Context) error {
	if err := r.c.CommitChanges(ctx); err != nil {
		return fmt.Errorf("CommitChanges: %w", err)
	}
	return nil
}

// verify reconnects over TLS trusting only the kiosk CA, expecting the
// certificate this run added and the new admin password.
func (r *pkiRun) verify(ctx context.Context) error {
	o := r.p.o
	return reconnectTLS(ctx, tlsCheck{CA: o.CA, UUID: r.j.UUID, Addr: r.addr, Password: r.password, Want: r.certDER,
		Legacy: true, VerifyTimeout: o.VerifyTimeout, StepTimeout: o.StepTimeout, Log: r.log}, nil)
}
