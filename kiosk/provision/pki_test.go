package provision

import (
	"context"
	"crypto/x509"
	"errors"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/provstick/provstick/initramfs/heci/amthi"
	"github.com/provstick/provstick/internal/amtsim"
	wire "github.com/provstick/provstick/internal/hello"
	"github.com/provstick/provstick/kiosk/ca"
	"github.com/provstick/provstick/kiosk/pki"
	"github.com/provstick/provstick/setupbin"
)

// memCA keeps the kiosk CA in memory (ca.Storage).
type memCA struct {
	mu        sync.Mutex
	cert, key []byte
}

var errNoCA = errors.New("no CA")

func (m *memCA) LoadCA(context.Context) ([]byte, []byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cert == nil {
		return nil, nil, errNoCA
	}
	return m.cert, m.key, nil
}

func (m *memCA) SaveCA(_ context.Context, c, k []byte) ([]byte, []byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cert == nil {
		m.cert, m.key = c, k
	}
	return m.cert, m.key, nil
}

// pkiFixtures are made once per test binary: RSA keys are slow.
var pkiFix struct {
	once                        sync.Once
	site, other, expired, plain *pki.Site
	ca                          *ca.CA
}

func pkiFixtures(t testing.TB) {
	t.Helper()
	pkiFix.once.Do(func() {
		var err error
		must := func(s *pki.Site, e error) *pki.Site {
			if e != nil && err == nil {
				err = e
			}
			return s
		}
		pkiFix.site = must(pki.Generate(pki.Options{Suffix: "site.example"}))
		pkiFix.other = must(pki.Generate(pki.Options{Suffix: "site.example"}))
		if err == nil {
			pkiFix.expired = must(pkiFix.site.Issue(pki.Options{Suffix: "site.example", LeafValidity: -time.Hour}))
			pkiFix.plain = must(pkiFix.site.Issue(pki.Options{Suffix: "site.example", Usage: pki.UsageNone}))
		}
		if err == nil {
			pkiFix.ca, err = ca.Open(context.Background(), &memCA{}, ca.Options{NotFound: errNoCA})
		}
		if err != nil {
			panic(err)
		}
	})
}

const pkiMEBx = setupbin.Password("Stick-MEBx-Pw1!")

// pkiMachine starts a simulated machine that consumed a PKI record adding
// trusted's root hash with the given suffix.
func pkiMachine(t testing.TB, trusted *pki.Site, suffix string, log *slog.Logger) (*amtsim.NetServer, string, PKIJob) {
	t.Helper()
	dev := amtsim.NewDevice(amtsim.PKIState())
	h := trusted.RootHash()
	if err := dev.ApplySetupRecord(amtsim.PKISetupRecord(setupbin.PKI{NewPassword: pkiMEBx, RootHash: h[:], Suffix: suffix})); err != nil {
		t.Fatal(err)
	}
	ns := amtsim.NewNetServer(dev, &amtsim.NetOptions{Logger: log, GenerateKey: fastKey, CommitDowntime: 20 * time.Millisecond, Hello: amtsim.HelloOptions{Disabled: true}})
	_, tl, err := amtsim.ListenNet("127.0.0.1", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ns.Start(ctx, nil, tl)
	t.Cleanup(func() { cancel(); ns.Close() })
	st := dev.State()
	j := PKIJob{UUID: wire.UUID(st.UUID).String(), Peer: netip.MustParseAddrPort("127.0.0.1:1")}
	for _, c := range st.Hashes {
		if c.Active && c.Algorithm == amthi.HashSHA256 {
			j.RootHashes = append(j.RootHashes, wire.RootHash{Type: wire.HashSHA256, Hash: c.Hash})
		}
	}
	return ns, tl.Addr().String(), j
}

func pkiProvisioner(t testing.TB, site *pki.Site, addr string, log *slog.Logger) *PKIProvisioner {
	t.Helper()
	p, err := NewPKI(PKIOptions{Site: site, CA: pkiFix.ca, Logger: log, StepTimeout: 10 * time.Second, VerifyDelay: 10 * time.Millisecond, VerifyTimeout: 10 * time.Second,
		Resolve: func(context.Context, PKIJob) (string, error) { return addr, nil },
		Lookup: func(_ context.Context, uuid string) (PKIMachine, error) {
			if uuid == "00000000-0000-0000-0000-000000000000" {
				return PKIMachine{}, ErrUnknownMachine
			}
			return PKIMachine{UUID: uuid, MEBxPassword: pkiMEBx}, nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPKIProvision(t *testing.T) {
	pkiFixtures(t)
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
	ns, addr, j := pkiMachine(t, pkiFix.site, "site.example", log)
	p := pkiProvisioner(t, pkiFix.site, addr, log)
	res := p.Provision(t.Context(), j)
	if res.Outcome != OutcomeProvisioned || !res.AdminSet {
		t.Fatalf("outcome %s: %v", res.Outcome, res.Failure)
	}
	st := ns.Device().State()
	if st.ProvisioningState != amthi.StatePost || st.ControlMode != amthi.ControlAdmin {
		t.Fatalf("machine %v %v, want post, admin control", st.ProvisioningState, st.ControlMode)
	}
	if !st.Net.TLSActive.Enabled || st.Net.Audit == nil || st.Net.Audit.TLSMode != 1 {
		t.Fatalf("TLS %+v audit %+v", st.Net.TLSActive, st.Net.Audit)
	}
	if !st.MEBxPassword.Equal(res.AdminPassword.Reveal()) || st.MEBxPassword.Equal(string(pkiMEBx)) {
		t.Error("the MEBx password was not replaced by the generated one")
	}
	if _, err := x509.ParseCertificate(res.CertDER); err != nil {
		t.Errorf("certificate: %v", err)
	}
	// A second hello after provisioning: refused as already provisioned
	// (16993 now shows the kiosk certificate and wants no client chain).
	if res := p.Provision(t.Context(), j); res.Outcome != OutcomeFailed {
		t.Errorf("second run: %s", res.Outcome)
	}
	// Unknown UUID.
	if res := p.Provision(t.Context(), PKIJob{UUID: "00000000-0000-0000-0000-000000000000"}); res.Outcome != OutcomeUnknownMachine || res.Failure.Class != ClassUnknownMachine {
		t.Errorf("unknown machine: %s %v", res.Outcome, res.Failure)
	}
}

func TestPKIProvisionRefused(t *testing.T) {
	pkiFixtures(t)
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	for _, tc := range []struct {
		name    string
		trusted *pki.Site // root the stick gave the machine
		suffix  string    // the stick's PKI DNS suffix
		present *pki.Site // what the kiosk presents
		sim     amtsim.PKIClass
		class   Class
	}{
		{"wrong root", pkiFix.other, "site.example", pkiFix.site, amtsim.PKIUntrustedRoot, ClassPKIUntrustedRoot},
		{"wrong suffix", pkiFix.site, "other.example", pkiFix.site, amtsim.PKIDomain, ClassPKIDomain},
		{"expired provisioning certificate", pkiFix.site, "site.example", pkiFix.expired, amtsim.PKIExpired, ClassPKIExpired},
		{"missing OID", pkiFix.site, "site.example", pkiFix.plain, amtsim.PKINoMark, ClassPKINoMark},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns, addr, j := pkiMachine(t, tc.trusted, tc.suffix, log)
			res := pkiProvisioner(t, tc.present, addr, log).Provision(t.Context(), j)
			if res.Outcome != OutcomeFailed || res.Failure == nil {
				t.Fatalf("outcome %s", res.Outcome)
			}
			if res.Failure.Class != tc.class || res.Failure.Step != StepReadState {
				t.Errorf("kiosk: %v (class %q), want class %q at step 1", res.Failure, res.Failure.Class, tc.class)
			}
			rej := ns.PKIRejections()
			if len(rej) == 0 || rej[0].Class != tc.sim {
				t.Fatalf("simulator rejections %+v, want %s", rej, tc.sim)
			}
			if st := ns.Device().State(); st.ProvisioningState != amthi.StateIn || res.AdminSet || res.AdminPassword != "" {
				t.Errorf("machine left setup: %v", st.ProvisioningState)
			}
			t.Logf("kiosk: %v — %s", res.Failure, PKIAdvice(res.Failure.Class))
			t.Logf("machine: %s: %s", rej[0].Class, rej[0].Detail)
		})
	}
}

func TestPKIQueue(t *testing.T) {
	pkiFixtures(t)
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	ns, addr, j := pkiMachine(t, pkiFix.site, "site.example", log)
	p, err := NewPKI(PKIOptions{Site: pkiFix.site, CA: pkiFix.ca, Logger: log, VerifyDelay: -1,
		Resolve: func(context.Context, PKIJob) (string, error) { return addr, nil },
		Lookup:  FixedPassword(pkiMEBx, func(u string) bool { return u == j.UUID })})
	if err != nil {
		t.Fatal(err)
	}
	results := make(chan PKIResult, 4)
	p.SetQueue(PKIQueueOptions{Concurrency: 2, OnResult: func(r PKIResult) { results <- r }})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { _ = p.Run(ctx); close(done) }()
	if got := p.Submit(j); got != "queued" {
		t.Fatalf("Submit: %s", got)
	}
	p.Submit(j) // folded or queued after the first finished: either is fine
	unknown := j
	unknown.UUID = "11111111-2222-3333-4444-555555555555"
	p.Submit(unknown)
	var provisioned, unknownSeen bool
	for !provisioned || !unknownSeen {
		select {
		case r := <-results:
			provisioned = provisioned || r.Outcome == OutcomeProvisioned
			unknownSeen = unknownSeen || r.Outcome == OutcomeUnknownMachine
		case <-time.After(20 * time.Second):
			t.Fatal("no result")
		}
	}
	cancel()
	<-done
	if ns.Device().State().ControlMode != amthi.ControlAdmin {
		t.Error("not in admin control mode")
	}
}

// A failure after AdminSetup still hands back the admin password: the
// machine is in admin control mode with it and says no more hellos.
func TestPKIFailureAfterAdminSetup(t *testing.T) {
	pkiFixtures(t)
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	ns, addr, j := pkiMachine(t, pkiFix.site, "site.example", log)
	ns.ForceReturn("CommitChanges", 38)
	res := pkiProvisioner(t, pkiFix.site, addr, log).Provision(t.Context(), j)
	if res.Outcome != OutcomeFailed || res.Failure.Class != ClassFlashLimit || res.Failure.Step != StepCommit {
		t.Fatalf("%s: %v", res.Outcome, res.Failure)
	}
	st := ns.Device().State()
	if !res.AdminSet || res.AdminPassword == "" || !st.MEBxPassword.Equal(res.AdminPassword.Reveal()) || st.ControlMode != amthi.ControlAdmin {
		t.Fatalf("admin set %v, machine %v", res.AdminSet, st.ControlMode)
	}
}

// The kiosk's debug log (envelopes included) holds no password, digest or
// key of the PKI run.
func TestPKINoSecretsInLogs(t *testing.T) {
	pkiFixtures(t)
	var buf syncBuffer
	klog := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ns, addr, j := pkiMachine(t, pkiFix.site, "site.example", nil)
	res := pkiProvisioner(t, pkiFix.site, addr, klog).Provision(t.Context(), j)
	if res.Outcome != OutcomeProvisioned {
		t.Fatalf("%s: %v", res.Outcome, res.Failure)
	}
	logs := buf.String()
	if !strings.Contains(logs, "AdminSetup") && !strings.Contains(logs, "AddNextCertInChain") {
		t.Fatal("debug log has no envelopes: the test checks nothing")
	}
	for _, secret := range []string{res.AdminPassword.Reveal(), string(pkiMEBx)} {
		if strings.Contains(logs, secret) {
			t.Errorf("a password is in the debug log")
		}
	}
	// The Digest form AdminSetup carries.
	if strings.Contains(logs, NetworkAdminPassword("admin", ns.Realm(), res.AdminPassword).Reveal()) {
		t.Errorf("NetworkAdminPassword in the debug log")
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
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

// The admin password reaches BeforeAdminSetup before the machine gets it
// (a kiosk killed mid-run must have kept it), and a hook that cannot keep
// it stops the run before AdminSetup: the machine stays in setup.
func TestPKIBeforeAdminSetup(t *testing.T) {
	pkiFixtures(t)
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	ns, addr, j := pkiMachine(t, pkiFix.site, "site.example", log)
	p := pkiProvisioner(t, pkiFix.site, addr, log)
	p.o.BeforeAdminSetup = func(context.Context, string, setupbin.Password) error { return errors.New("store is down") }
	res := p.Provision(t.Context(), j)
	if res.Outcome != OutcomeFailed || res.AdminSet || res.Failure.Class != ClassKiosk {
		t.Fatalf("with a failing hook: outcome %s, admin set %v, failure %v", res.Outcome, res.AdminSet, res.Failure)
	}
	if st := ns.Device().State(); st.ControlMode == amthi.ControlAdmin {
		t.Fatal("AdminSetup was sent although the password could not be kept")
	}
	var kept setupbin.Password
	var keptState amthi.ControlMode
	p.o.BeforeAdminSetup = func(_ context.Context, uuid string, pw setupbin.Password) error {
		if uuid != j.UUID {
			t.Errorf("hook for %s, want %s", uuid, j.UUID)
		}
		kept, keptState = pw, ns.Device().State().ControlMode
		return nil
	}
	res = p.Provision(t.Context(), j)
	if res.Outcome != OutcomeProvisioned {
		t.Fatalf("outcome %s: %v", res.Outcome, res.Failure)
	}
	if kept == "" || kept != res.AdminPassword || keptState == amthi.ControlAdmin {
		t.Errorf("hook saw password %v (same as the result's: %v) while the machine was in control mode %v", kept != "", kept == res.AdminPassword, keptState)
	}
}
