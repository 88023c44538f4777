package kiosk

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/provstick/provstick/initramfs/heci/amthi"
	"github.com/provstick/provstick/internal/amtsim"
	wire "github.com/provstick/provstick/internal/hello"
	"github.com/provstick/provstick/internal/wsman"
	khello "github.com/provstick/provstick/kiosk/hello"
	"github.com/provstick/provstick/kiosk/pki"
	"github.com/provstick/provstick/kiosk/provision"
	"github.com/provstick/provstick/kiosk/store"
	"github.com/provstick/provstick/setupbin"
)

// pkiSites are made once per test binary: RSA keys are slow under -race.
var pkiSites struct {
	once        sync.Once
	site, other *pki.Site
	err         error
}

func sites(t testing.TB) (site, other *pki.Site) {
	t.Helper()
	pkiSites.once.Do(func() {
		if pkiSites.site, pkiSites.err = pki.Generate(pki.Options{Suffix: "site.example"}); pkiSites.err == nil {
			pkiSites.other, pkiSites.err = pki.Generate(pki.Options{Suffix: "site.example"})
		}
	})
	if pkiSites.err != nil {
		t.Fatal(pkiSites.err)
	}
	return pkiSites.site, pkiSites.other
}

// pkiMEBx is the new MEBx password every record of the test stick sets
// (setupbin pki --new-password): the kiosk's Lookup is FixedPassword.
const pkiMEBx = setupbin.Password("Site-MEBx-Pw1!")

// pkiMachineSpec is one simulated machine: the root its record adds and
// the PKI DNS suffix it sets.
type pkiMachineSpec struct {
	trust  *pki.Site
	suffix string
}

// pkiStick writes a setup.bin with setupbin.PKI records and reads its
// records back, as the simulator's BIOS would consume them.
func pkiStick(t testing.TB, specs []pkiMachineSpec) []amtsim.SetupRecord {
	t.Helper()
	var file bytes.Buffer
	w, err := setupbin.NewWriter(&file, setupbin.WriterOptions{Profile: setupbin.ProfileAMT11Plus, Records: uint32(len(specs))})
	if err != nil {
		t.Fatal(err)
	}
	for _, sp := range specs {
		h := sp.trust.RootHash()
		rec, err := (&setupbin.PKI{NewPassword: pkiMEBx, RootHash: h[:], Suffix: sp.suffix}).Record(setupbin.ProfileAMT11Plus)
		if err != nil {
			t.Fatal(err)
		}
		if err := w.AddRecord(rec); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	rd, err := setupbin.NewReader(bytes.NewReader(file.Bytes()), int64(file.Len()))
	if err != nil {
		t.Fatal(err)
	}
	recs := make([]amtsim.SetupRecord, len(rd.Records))
	for i := range rd.Records {
		p, err := rd.Records[i].PKI()
		if err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
		recs[i] = amtsim.PKISetupRecord(p)
	}
	return recs
}

// pkiBench is a kiosk with PKI provisioning and a fleet of PKI machines.
type pkiBench struct {
	t       testing.TB
	s       *store.Store
	k       *Kiosk
	fleet   *amtsim.Fleet
	uuids   []string
	results chan provision.PKIResult
	ready   time.Time
	cancel  context.CancelFunc
	done    chan error
}

type pkiBenchOptions struct {
	specs       []pkiMachineSpec
	prepare     func(i int, s *amtsim.NetServer)
	logLevel    slog.Level
	timescal    float64 // 0 → 600
	keys        int     // distinct device keys; 0 → 4
	concurrency int     // PKI workers; 0 → 16
}

func newPKIBench(t testing.TB, o pkiBenchOptions) *pkiBench {
	t.Helper()
	ctx := context.Background()
	site, _ := sites(t)
	n := len(o.specs)
	b := &pkiBench{t: t, results: make(chan provision.PKIResult, 4*n+100)}
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: o.logLevel}))
	s, err := store.Open(ctx, filepath.Join(t.TempDir(), "pool.db"), &store.Options{Key: store.Passphrase([]byte("pw")), KDF: testKDF,
		Station: "kiosk-test", Actor: "test", Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	b.s = s
	recs := pkiStick(t, o.specs)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addrs := map[string]string{} // upper-case UUID → 16993 address
	var amu sync.Mutex
	ready := make(chan struct{})
	k, err := New(ctx, Options{Store: s, Logger: log, HelloListener: ln, HelloFlush: 20 * time.Millisecond, HelloFloodRate: -1,
		PKI: &provision.PKIOptions{Site: site, Lookup: provision.FixedPassword(pkiMEBx, nil),
			StepTimeout: 20 * time.Second, VerifyDelay: 20 * time.Millisecond, VerifyTimeout: 20 * time.Second,
			Resolve: func(ctx context.Context, j provision.PKIJob) (string, error) {
				select {
				case <-ready:
				case <-ctx.Done():
					return "", ctx.Err()
				}
				amu.Lock()
				defer amu.Unlock()
				a, ok := addrs[strings.ToUpper(j.UUID)]
				if !ok {
					return "", fmt.Errorf("no simulated machine %s", j.UUID)
				}
				return a, nil
			}},
		PKIQueue: provision.PKIQueueOptions{Concurrency: max(16, o.concurrency), OnResult: func(r provision.PKIResult) { b.results <- r }},
	})
	if err != nil {
		t.Fatal(err)
	}
	b.k = k
	rctx, cancel := context.WithCancel(ctx)
	b.cancel, b.done = cancel, make(chan error, 1)
	go func() { b.done <- k.Serve(rctx) }()
	t.Cleanup(b.stop)

	ks := newKeys(t, max(o.keys, 4))
	ts := o.timescal
	if ts == 0 {
		ts = 600
	}
	base := amtsim.PKIState()
	base.AMTVersion = "16.1.25"
	f, err := amtsim.StartFleet(ctx, amtsim.FleetOptions{Devices: n, Base: base, Records: recs,
		Net: amtsim.NetOptions{GenerateKey: ks.gen, CommitDowntime: 100 * time.Millisecond,
			Hello: amtsim.HelloOptions{SCS: ln.Addr().String(), TimeScale: ts, Timeout: 5 * time.Second}},
		Prepare: o.prepare})
	if err != nil {
		t.Fatal(err)
	}
	b.fleet = f
	t.Cleanup(func() { f.Close() })
	amu.Lock()
	for _, m := range f.Machines {
		u := wire.UUID(m.Net.Device().State().UUID).String()
		b.uuids = append(b.uuids, u)
		addrs[strings.ToUpper(u)] = m.TLSAddr
	}
	amu.Unlock()
	b.ready = time.Now()
	close(ready)
	return b
}

func (b *pkiBench) stop() {
	if b.cancel == nil {
		return
	}
	b.cancel()
	if err := <-b.done; err != nil {
		b.t.Errorf("Serve: %v", err)
	}
	b.cancel = nil
}

// waitResults collects results until every listed machine has one with
// an outcome other than "failed and retried", or within passes.
func (b *pkiBench) waitResults(want map[string]bool, within time.Duration) map[string]provision.PKIResult {
	b.t.Helper()
	got := map[string]provision.PKIResult{}
	deadline := time.After(within)
	for len(got) < len(want) {
		select {
		case r := <-b.results:
			if _, dup := got[r.Job.UUID]; dup {
				b.t.Errorf("machine %s: a second result (%s, %v): tried again", r.Job.UUID, r.Outcome, r.Failure)
			}
			if !want[r.Job.UUID] {
				b.t.Errorf("result for an unexpected machine %s", r.Job.UUID)
			}
			got[r.Job.UUID] = r
		case <-deadline:
			b.t.Fatalf("after %v, results for %d of %d machines", within, len(got), len(want))
		}
	}
	return got
}

// pkiTransport talks to a machine whose 16993 presents the kiosk-signed
// certificate for uuid.
func (b *pkiBench) kioskTLS(uuid string) *http.Transport {
	return &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true, // verified below against the kiosk CA
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			_, err := b.k.CA().Verify(raw[0], uuid)
			return err
		}}}
}

// login checks the password against the machine's Digest admin account.
func login(ctx context.Context, addr string, tr *http.Transport, pw setupbin.Password) error {
	c, err := wsman.NewClient(wsman.Options{Endpoint: "https://" + addr + "/wsman", Password: wsman.Secret(pw.Reveal()),
		HTTPClient: &http.Client{Transport: tr, Timeout: 10 * time.Second}})
	if err != nil {
		return err
	}
	_, err = c.GetGeneralSettings(ctx)
	return err
}

// TestPKIKiosk: a PKI stick's machines send version-3 hellos to the
// kiosk. Three reach admin control mode with kiosk-signed certificates and
// their admin passwords kept sealed in the store; one whose record trusted
// another root is refused from its hello (never connected to), one with
// another PKI DNS suffix refuses the chain once, one whose commit fails
// after AdminSetup still has its admin password kept. Neither refused
// machine is tried again on its later hellos.
func TestPKIKiosk(t *testing.T) {
	site, other := sites(t)
	const good = 3
	const wrongRoot, wrongSuffix, commitFails = good, good + 1, good + 2
	specs := []pkiMachineSpec{{site, "site.example"}, {site, "site.example"}, {site, "site.example"},
		{other, "site.example"}, {site, "other.example"}, {site, "site.example"}}
	b := newPKIBench(t, pkiBenchOptions{specs: specs, logLevel: slog.LevelWarn,
		prepare: func(i int, s *amtsim.NetServer) {
			if i == commitFails {
				s.ForceReturn("CommitChanges", wsman.StatusFlashWriteLimitExceeded)
			}
		}})
	want := map[string]bool{}
	for _, u := range b.uuids {
		want[u] = true
	}
	res := b.waitResults(want, 60*time.Second)
	ctx := context.Background()

	for i := range good {
		u, m := b.uuids[i], b.fleet.Machines[i]
		r := res[u]
		if r.Outcome != provision.OutcomeProvisioned {
			t.Fatalf("machine %d: %s: %v", i, r.Outcome, r.Failure)
		}
		st := m.Net.Device().State()
		if st.ProvisioningState != amthi.StatePost || st.ControlMode != amthi.ControlAdmin {
			t.Errorf("machine %d: %v / %v, want post / admin control mode", i, st.ProvisioningState, st.ControlMode)
		}
		a, err := b.s.PKIAdminOf(ctx, u)
		if err != nil {
			t.Fatalf("machine %d: %v", i, err)
		}
		if !a.Provisioned || a.Password != r.AdminPassword || a.Password == pkiMEBx || len(a.Password) != 16 {
			t.Errorf("machine %d: stored %+v (provisioned %v), want the run's new 16-character password", i, a.UUID, a.Provisioned)
		}
		tr := b.kioskTLS(u)
		conn, err := tls.Dial("tcp", m.TLSAddr, tr.TLSClientConfig)
		if err != nil {
			t.Fatalf("machine %d: TLS with the kiosk-signed certificate: %v", i, err)
		}
		if leaf := conn.ConnectionState().PeerCertificates[0]; !bytes.Equal(leaf.Raw, r.CertDER) {
			t.Errorf("machine %d: presents a certificate other than the run's", i)
		}
		conn.Close()
		if err := login(ctx, m.TLSAddr, tr, a.Password); err != nil {
			t.Errorf("machine %d: admin login with the stored password: %v", i, err)
		}
		if err := login(ctx, m.TLSAddr, tr, pkiMEBx); !errors.Is(err, wsman.ErrUnauthorized) {
			t.Errorf("machine %d: the record's MEBx password still logs in (%v)", i, err)
		}
		tr.CloseIdleConnections()
		if mm, err := b.s.Machine(ctx, u); err != nil || mm.ControlMode != "acm" || mm.ProvisioningState != "post" {
			t.Errorf("machine %d in the store: %+v, %v", i, mm, err)
		}
	}

	// Wrong root: refused from the hello's hash list, never connected to.
	r := res[b.uuids[wrongRoot]]
	if r.Outcome != provision.OutcomeFailed || r.Failure == nil || r.Failure.Class != provision.ClassPKIUntrustedRoot || r.AdminSet {
		t.Errorf("wrong root: %s %v, want failed: %s", r.Outcome, r.Failure, provision.ClassPKIUntrustedRoot)
	}
	if rj := b.fleet.Machines[wrongRoot].Net.PKIRejections(); len(rj) != 0 {
		t.Errorf("wrong root: the kiosk connected anyway (%d refusals recorded by the machine)", len(rj))
	}
	// Wrong suffix: the machine refuses the chain, once.
	r = res[b.uuids[wrongSuffix]]
	if r.Outcome != provision.OutcomeFailed || r.Failure == nil || r.Failure.Class != provision.ClassPKIDomain || r.AdminSet {
		t.Errorf("wrong suffix: %s %v, want failed: %s", r.Outcome, r.Failure, provision.ClassPKIDomain)
	}
	// AdminSetup done, commit refused: the password is kept all the same.
	r = res[b.uuids[commitFails]]
	if r.Outcome != provision.OutcomeFailed || !r.AdminSet {
		t.Errorf("commit fails: %s (admin set %v) %v, want failed after AdminSetup", r.Outcome, r.AdminSet, r.Failure)
	}
	a, err := b.s.PKIAdminOf(ctx, b.uuids[commitFails])
	if err != nil || a.Provisioned || a.Password != r.AdminPassword || !strings.Contains(a.Detail, "step 11") {
		t.Errorf("commit fails: stored %q provisioned %v detail %q, %v", a.UUID, a.Provisioned, a.Detail, err)
	}
	if st := b.fleet.Machines[commitFails].Net.Device().State(); st.ControlMode != amthi.ControlAdmin {
		t.Errorf("commit fails: machine in %v, want admin control mode", st.ControlMode)
	} else {
		// 16993 still asks for the provisioning chain (TLS not committed).
		tr := &http.Transport{TLSClientConfig: provision.PKIClientConfig(site)}
		if err := login(ctx, b.fleet.Machines[commitFails].TLSAddr, tr, a.Password); err != nil {
			t.Errorf("commit fails: admin login with the stored password: %v", err)
		}
		tr.CloseIdleConnections()
	}

	// The refused machines keep saying hello; the kiosk does not try them
	// again (no second result: waitResults above and the drain below).
	deadline := time.Now().Add(20 * time.Second)
	for _, i := range []int{wrongRoot, wrongSuffix} {
		for {
			hs, err := b.s.Hellos(ctx, "", 10000)
			if err != nil {
				t.Fatal(err)
			}
			again := 0
			for _, h := range hs {
				if strings.EqualFold(h.UUID, b.uuids[i]) && strings.HasPrefix(h.Outcome, "refused again: ") {
					again++
				}
			}
			if again >= 2 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("machine %d: %d hellos logged as refused again, want 2 or more", i, again)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	if n := len(b.fleet.Machines[wrongSuffix].Net.PKIRejections()); n != 1 {
		t.Errorf("wrong suffix: the machine refused the chain %d times, want once", n)
	}
	select {
	case r := <-b.results:
		t.Errorf("machine %s tried again: %s %v", r.Job.UUID, r.Outcome, r.Failure)
	default:
	}

	// The audit log tells the story with the class and the advice.
	var audit []store.AuditRecord
	if err := b.s.AuditLog(ctx, store.AuditFilter{}, func(a store.AuditRecord) error {
		if a.Action == "provision.pki" {
			audit = append(audit, a)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	outcomes := map[string]string{}
	for _, a := range audit {
		outcomes[a.UUID] = a.Outcome + " | " + a.Detail
		if pw := res[a.UUID].AdminPassword; strings.Contains(a.Detail, string(pkiMEBx)) || pw != "" && strings.Contains(a.Detail, string(pw)) {
			t.Errorf("audit record of %s holds a password", a.UUID)
		}
	}
	if len(audit) != len(specs) {
		t.Errorf("%d provision.pki audit records, want %d: %v", len(audit), len(specs), outcomes)
	}
	if o := outcomes[b.uuids[wrongRoot]]; !strings.HasPrefix(o, "failed: "+string(provision.ClassPKIUntrustedRoot)) ||
		!strings.Contains(o, provision.PKIAdvice(provision.ClassPKIUntrustedRoot)) {
		t.Errorf("wrong root audit: %q", o)
	}
	if o := outcomes[b.uuids[commitFails]]; !strings.HasPrefix(o, "failed: "+string(provision.ClassFlashLimit)+" | admin control mode set (admin password kept), then step 11") {
		t.Errorf("commit fails audit: %q", o)
	}
	if o := outcomes[b.uuids[0]]; !strings.HasPrefix(o, "ok | admin control mode") {
		t.Errorf("provisioned audit: %q", o)
	}
}

// TestPKIOff: without Options.PKI, version-3 hellos are logged and counted
// only.
func TestPKIOff(t *testing.T) {
	b := newBench(t, benchOptions{n: 1, noFleet: true, logLevel: slog.LevelWarn})
	if b.k.PKIProvisioner() != nil {
		t.Fatal("PKI provisioner without Options.PKI")
	}
	site, _ := sites(t)
	h := site.RootHash()
	msg, err := (&wire.Hello{Version: wire.VersionPKI, RootHashes: []wire.RootHash{{Type: wire.HashSHA256, Hash: h[:]}}}).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", b.k.o.HelloListener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.Write(msg)
	c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		hs, err := b.s.Hellos(context.Background(), "", 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(hs) == 1 {
			if hs[0].Version != 3 || hs[0].Outcome != "pki: not configured" {
				t.Errorf("hello log: %+v", hs[0])
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("hello log: %d rows", len(hs))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if st := b.k.HelloStats(); st.PKI != 1 {
		t.Errorf("stats %+v: want one PKI hello", st)
	}
}

// TestPKIRefusalMemory: hellos from a machine that does not trust the site
// root are refused once and then logged as refused again — also when the
// listener's backlog hands them over out of order — until the machine's
// hellos start over (a lower retry count, later than pkiRestartAfter) or
// list other root hashes.
func TestPKIRefusalMemory(t *testing.T) {
	site, other := sites(t)
	ctx := context.Background()
	s, err := store.Open(ctx, filepath.Join(t.TempDir(), "pool.db"), &store.Options{Key: store.Passphrase([]byte("pw")), KDF: testKDF})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var reports []provision.PKIResult
	k, err := New(ctx, Options{Store: s, HelloListener: ln,
		PKI:      &provision.PKIOptions{Site: site, Lookup: provision.FixedPassword(pkiMEBx, nil)},
		PKIQueue: provision.PKIQueueOptions{Queue: 1, OnResult: func(r provision.PKIResult) { reports = append(reports, r) }}})
	if err != nil {
		t.Fatal(err)
	}
	clock := time.Unix(1_800_000_000, 0)
	k.pki.now = func() time.Time { return clock }
	oh, sh := other.RootHash(), site.RootHash()
	otherHashes := []wire.RootHash{{Type: wire.HashSHA256, Hash: oh[:]}}
	hello := func(retry uint32, hs []wire.RootHash) string {
		return k.onPKIHello(khello.Received{At: clock, Peer: netip.MustParseAddrPort("127.0.0.9:1000"),
			Hello: &wire.Hello{Version: wire.VersionPKI, UUID: wire.UUID{1, 2, 3}, RetryCount: retry, RootHashes: hs}})
	}
	refused, again := "refused: "+string(provision.ClassPKIUntrustedRoot), "refused again: "+string(provision.ClassPKIUntrustedRoot)
	for i, c := range []struct {
		retry   uint32
		hashes  []wire.RootHash
		advance time.Duration
		want    string
	}{
		{4, otherHashes, 0, refused},
		{0, otherHashes, time.Second, again}, // out of order from the backlog
		{5, otherHashes, time.Minute, again},
		{6, otherHashes, time.Hour, again},
		{0, otherHashes, time.Minute, refused}, // a new hello sequence
		{1, otherHashes, time.Minute, again},
		// A new record consumed: the site root is now trusted, so the
		// machine is queued (the one-slot queue holds it: no Run here).
		{2, []wire.RootHash{{Type: wire.HashSHA256, Hash: sh[:]}}, 0, "queued"},
		{3, []wire.RootHash{{Type: wire.HashSHA256, Hash: sh[:]}}, 0, "folded"},
	} {
		clock = clock.Add(c.advance)
		if got := hello(c.retry, c.hashes); !strings.HasPrefix(got, c.want) {
			t.Errorf("hello %d (retry %d): %q, want %q", i, c.retry, got, c.want)
		}
	}
	if len(reports) != 2 {
		t.Fatalf("%d reports, want 2 (one per refused hello sequence)", len(reports))
	}
	for _, r := range reports {
		if r.Outcome != provision.OutcomeFailed || r.Failure.Class != provision.ClassPKIUntrustedRoot || r.AdminSet {
			t.Errorf("report %s %v", r.Outcome, r.Failure)
		}
	}
}

// BenchmarkProvisionPKI provisions -kiosk.devices simulated PKI machines
// per iteration through the kiosk (version-3 hello, TLS with the site's
// provisioning chain, AdminSetup, key, certificate, TLS, commit,
// verification) and reports devices/s from the moment every machine is
// listening to the last one provisioned, with the same settings as
// BenchmarkProvisionSQLite (its PSK peer: run both in one go test).
func BenchmarkProvisionPKI(b *testing.B) {
	n := *benchDevices
	specs := make([]pkiMachineSpec, n)
	site, _ := sites(b)
	for i := range specs {
		specs[i] = pkiMachineSpec{site, "site.example"}
	}
	var durs []time.Duration
	var total time.Duration
	for b.Loop() {
		b.StopTimer()
		b.StartTimer()
		bn := newPKIBench(b, pkiBenchOptions{specs: specs, logLevel: 12, concurrency: 32, keys: 16, timescal: 60})
		got := 0
		deadline := time.After(10 * time.Minute)
		for got < n {
			select {
			case r := <-bn.results:
				switch r.Outcome {
				case provision.OutcomeProvisioned:
					got++
					durs = append(durs, r.Duration)
				default:
					b.Fatalf("machine %s: %s: %v", r.Job.UUID, r.Outcome, r.Failure)
				}
			case <-deadline:
				b.Fatalf("%d of %d provisioned", got, n)
			}
		}
		b.StopTimer()
		total += time.Since(bn.ready)
		bn.stop()
		bn.fleet.Close()
		b.StartTimer()
	}
	slices.Sort(durs)
	b.ReportMetric(float64(len(durs))/total.Seconds(), "devices/s")
	b.ReportMetric(float64(durs[len(durs)/2].Milliseconds()), "p50-ms")
	b.ReportMetric(float64(durs[len(durs)*99/100].Milliseconds()), "p99-ms")
	b.ReportMetric(0, "ns/op")
}
