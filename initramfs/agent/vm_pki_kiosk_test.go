package agent

// TestVMPKIEndToEnd is issue 12's proof in one chain, from what the other
// tests prove in parts:
//
//  1. a PKI stick built with images/pki.yaml for a kiosk/pki site made in
//     the test (buildPKIStick);
//  2. booted under QEMU (TCG, SeaBIOS) as a machine whose ME simulator
//     "consumed" record 1 (amtsim.PKIState + PKISetupRecord: it trusts
//     only the site root), without activation: the agent's ledger line
//     holds the site root hash among amt.root_hashes, AMT left in setup;
//  3. the same simulated machine's network side (an amtsim.NetServer on
//     the very Device the ME side served, so the same UUID and the same
//     record) says hello (version 3) to a kiosk with Options.PKI for the
//     site, which provisions it to admin control mode;
//  4. the machine is post-provisioning in admin control mode, presents
//     the kiosk-signed certificate, the admin password the store keeps
//     (PKIAdminOf) logs in, and the ledger's root hash is the site's;
//  5. the stick's ledger goes into the same kiosk store through
//     kiosk/reconcile.Import. A PKI stick is not allocated from the pool
//     (no PIDs), so the pool does not know it: the report says so (a
//     foreign-stick warning), with the line read and nothing damaged.
//
// Same needs as TestVMAgent; skipped with -short.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/provstick/provstick/initramfs/heci/amthi"
	"github.com/provstick/provstick/internal/amtsim"
	"github.com/provstick/provstick/internal/ledger"
	"github.com/provstick/provstick/internal/wsman"
	"github.com/provstick/provstick/kiosk"
	"github.com/provstick/provstick/kiosk/provision"
	"github.com/provstick/provstick/kiosk/reconcile"
	"github.com/provstick/provstick/kiosk/store"
	"github.com/provstick/provstick/setupbin"
)

func TestVMPKIEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a VM under TCG; skipped with -short")
	}
	start := time.Now()
	t.Setenv("PROVSTICK_AMT_SITE_SECRET", "vm-test-site-secret-0123456789ab")
	st := site(t)
	root := st.RootHashHex()

	// 1–2: build, consume record 1, boot, read the ledger.
	s, records := buildPKIStick(t, t.TempDir(), 2, "provstick.mei=virtio:org.provstick.mei")
	s.consume(t, 1)
	ms := pkiMachine(t, records[0])
	ms.UUID[0], ms.UUID[15] = 0xE2, 0xE2
	addr, dev := simulator(t, ms)
	m := &machine{name: "e2e-legacy-P1-pki", dev: dev, sock: strings.TrimPrefix(addr, "unix://")}
	s.put(t, ConfPath, []byte(`{"format":"provstick-agent/1","after":"poweroff","countdown":0}`))
	built := time.Since(start)
	r := bootOnce(t, s.img, false, m, false, nil)
	raw, l := readLedgerImage(t, s.img, false)
	if len(l.Records) != 1 || len(l.Findings) != 0 {
		t.Fatalf("ledger: %d records, findings %v\n%s", len(l.Records), l.Findings, raw)
	}
	rec := l.Last()
	uuid := m.uuid()
	if rec.Case != ledger.CaseNormal || rec.Record != 1 || rec.Kind != KindPKI || rec.AMT == nil ||
		rec.AMT.UUID != uuid || rec.AMT.ProvisioningState != "in" || rec.Activation != nil {
		t.Fatalf("ledger line %s; want normal, record 1, pki, UUID %s in setup, no activation", raw, uuid)
	}
	var ledgerRoot string
	for _, h := range rec.AMT.RootHashes {
		if h.UserAdded && h.Active && h.Algorithm == "SHA-256" {
			ledgerRoot = h.Hash
		}
	}
	if ledgerRoot != root {
		t.Fatalf("the ledger's user-added root hash is %q, the site's %s (amt.root_hashes %+v)", ledgerRoot, root, rec.AMT.RootHashes)
	}

	// 3: the kiosk, and the machine's network side.
	ctx := t.Context()
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	kst, err := store.Open(ctx, filepath.Join(t.TempDir(), "pool.db"), &store.Options{Key: store.Passphrase([]byte("pw")),
		KDF: store.KDFParams{Time: 1, Memory: 1024, Threads: 1}, Station: "vm-e2e", Actor: "test", Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { kst.Close() })
	httpLn, tlsLn, err := amtsim.ListenNet("127.0.0.1", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	tlsAddr := tlsLn.Addr().String()
	helloLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	results := make(chan provision.PKIResult, 16)
	k, err := kiosk.New(ctx, kiosk.Options{Store: kst, Logger: log, HelloListener: helloLn, HelloFlush: 20 * time.Millisecond, HelloFloodRate: -1,
		PKI: &provision.PKIOptions{Site: st, Lookup: provision.FixedPassword(records[0].NewPassword, nil),
			StepTimeout: 20 * time.Second, VerifyDelay: 20 * time.Millisecond, VerifyTimeout: 20 * time.Second,
			Resolve: func(_ context.Context, j provision.PKIJob) (string, error) {
				if !strings.EqualFold(j.UUID, uuid) {
					return "", errors.New("no such simulated machine")
				}
				return tlsAddr, nil
			}},
		PKIQueue: provision.PKIQueueOptions{OnResult: func(r provision.PKIResult) { results <- r }},
	})
	if err != nil {
		t.Fatal(err)
	}
	kctx, cancel := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- k.Serve(kctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("kiosk Serve: %v", err)
		}
	})
	netStart := time.Now()
	ns := amtsim.NewNetServer(dev, &amtsim.NetOptions{Logger: log, CommitDowntime: 100 * time.Millisecond,
		Hello: amtsim.HelloOptions{SCS: helloLn.Addr().String(), TimeScale: 600, Timeout: 5 * time.Second}})
	ns.Start(kctx, httpLn, tlsLn)
	t.Cleanup(func() { ns.Close() })

	var res provision.PKIResult
	select {
	case res = <-results:
	case <-time.After(60 * time.Second):
		t.Fatal("no PKI result from the kiosk within 60 s")
	}
	provisioned := time.Since(netStart)
	if res.Outcome != provision.OutcomeProvisioned || !strings.EqualFold(res.Job.UUID, uuid) {
		t.Fatalf("kiosk: machine %s: %s: %v; want %s provisioned", res.Job.UUID, res.Outcome, res.Failure, uuid)
	}

	// 4: the machine and the store.
	got := dev.State()
	if got.ProvisioningState != amthi.StatePost || got.ControlMode != amthi.ControlAdmin {
		t.Errorf("the simulated machine: %v / %v, want post / admin control mode", got.ProvisioningState, got.ControlMode)
	}
	a, err := kst.PKIAdminOf(ctx, uuid)
	if err != nil {
		t.Fatal(err)
	}
	if !a.Provisioned || a.Password != res.AdminPassword || a.Password == records[0].NewPassword {
		t.Errorf("stored admin of %s: provisioned %v, the run's new password %v", uuid, a.Provisioned, a.Password == res.AdminPassword)
	}
	cfg := &tls.Config{InsecureSkipVerify: true, // verified against the kiosk CA below
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			_, err := k.CA().Verify(raw[0], uuid)
			return err
		}}
	conn, err := tls.Dial("tcp", tlsAddr, cfg)
	if err != nil {
		t.Fatalf("TLS to 16993 with the kiosk-signed certificate: %v", err)
	}
	if leaf := conn.ConnectionState().PeerCertificates[0]; !bytes.Equal(leaf.Raw, res.CertDER) {
		t.Error("16993 presents a certificate other than the one the kiosk signed in the run")
	}
	conn.Close()
	tr := &http.Transport{TLSClientConfig: cfg}
	defer tr.CloseIdleConnections()
	if err := adminLogin(ctx, tlsAddr, tr, a.Password); err != nil {
		t.Errorf("admin login with the stored password: %v", err)
	}
	if err := adminLogin(ctx, tlsAddr, tr, records[0].NewPassword); !errors.Is(err, wsman.ErrUnauthorized) {
		t.Errorf("the record's MEBx password still logs in as admin (%v)", err)
	}
	// The root the ledger names is the site's root certificate's SHA-256,
	// and the one the machine's version-3 hello listed.
	sum := sha256.Sum256(st.Root.Raw)
	if ledgerRoot != hex.EncodeToString(sum[:]) {
		t.Errorf("ledger root %s is not SHA-256 of the site's root certificate", ledgerRoot)
	}
	inHello := false
	for _, h := range res.Job.RootHashes {
		inHello = inHello || hex.EncodeToString(h.Hash) == ledgerRoot
	}
	if !inHello {
		t.Errorf("the hello's root hashes %x lack the ledger's root %s", res.Job.RootHashes, ledgerRoot)
	}

	// 5: the stick's ledger into the same store.
	rep, err := reconcile.Import(ctx, kst, "stick.img:"+ledger.FileName, bytes.NewReader(raw), reconcile.Options{Logger: log})
	if err != nil {
		t.Fatalf("reconcile.Import: %v", err)
	}
	for _, d := range rep.Discrepancies {
		t.Logf("reconcile: %s %s %s: %s (%s)", d.Severity, d.Kind, d.Subject, d.Detail, d.Advice)
	}
	if rep.Records != 1 || rep.Damaged != 0 || rep.Stick != s.id || rep.Alarms() != 0 {
		t.Errorf("reconcile report: stick %q, %d records, %d damaged, %d alarms; want %s, 1, 0, 0", rep.Stick, rep.Records, rep.Damaged, rep.Alarms(), s.id)
	}
	if rep.Known || len(rep.Discrepancies) != 1 || rep.Discrepancies[0].Kind != reconcile.KindPKIStick || rep.Discrepancies[0].Severity != reconcile.SeverityInfo {
		t.Errorf("reconcile: known %v, discrepancies %+v; want the PKI stick reported (information) as one this pool did not allocate", rep.Known, rep.Discrepancies)
	}
	if m, err := kst.Machine(ctx, strings.ToLower(res.Job.UUID)); err != nil || m.ControlMode != "acm" || m.DMIModel == "" {
		t.Errorf("the machine after the import: %+v, %v; want admin control mode and the ledger's DMI model", m, err)
	}

	t.Logf("build %.1f s, boot (QEMU start → exit) %.1f s, hellos on → admin control mode %.1f s (run %v), whole test %.1f s; load average: %s",
		built.Seconds(), r.total.Seconds(), provisioned.Seconds(), res.Duration.Round(time.Millisecond), time.Since(start).Seconds(), loadAvg())
}

// adminLogin checks pw against the machine's Digest admin account over tr
// (kiosk/pki_test.go's login, which is in another package's test file).
func adminLogin(ctx context.Context, addr string, tr *http.Transport, pw setupbin.Password) error {
	c, err := wsman.NewClient(wsman.Options{Endpoint: "https://" + addr + "/wsman", Password: wsman.Secret(pw.Reveal()),
		HTTPClient: &http.Client{Transport: tr, Timeout: 10 * time.Second}})
	if err != nil {
		return err
	}
	_, err = c.GetGeneralSettings(ctx)
	return err
}
