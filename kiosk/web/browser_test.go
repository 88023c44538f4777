package web

// Browser tests: headless Chromium (Debian package chromium) driven by
// chromedp against the console over HTTPS, in front of a real kiosk that
// provisions simulated AMT machines (internal/amtsim) on loopback.
// Screenshots go to $PROVSTICK_ARTIFACTS/kiosk-web when that is set, else
// to the test's temporary directory. Without Chromium the test skips on a
// workstation and fails under CI=true.

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/provstick/provstick/internal/amtsim"
	wire "github.com/provstick/provstick/internal/hello"
	"github.com/provstick/provstick/kiosk"
	"github.com/provstick/provstick/kiosk/provision"
	"github.com/provstick/provstick/kiosk/store"
)

// chromiumPath finds the browser; CI=true makes its absence a failure.
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if p := "/usr/bin/chromium"; fileExists(p) {
		return p
	}
	msg := "headless Chromium not found (Debian package chromium; scripts/install-deps.sh installs it)"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func artifactDir(t *testing.T) string {
	if d := os.Getenv("PROVSTICK_ARTIFACTS"); d != "" {
		dir := filepath.Join(d, "kiosk-web")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	return t.TempDir()
}

// site is a kiosk with n allocated entries, its console over HTTPS and,
// once start is called, n simulated machines holding the records.
type site struct {
	t       *testing.T
	s       *store.Store
	entries []store.Entry
	uuids   []string
	k       *kiosk.Kiosk
	srv     *Server
	url     string
	spki    string // base64 SHA-256 of the console certificate's public key
	hello   net.Listener
	ready   chan struct{}
	mu      sync.Mutex
	addrs   map[string]string
	rec     *fakeReconciler
}

func newSite(t *testing.T, n int) *site {
	ctx := t.Context()
	st := &site{t: t, ready: make(chan struct{}), addrs: map[string]string{}, rec: &fakeReconciler{}}
	log := testLogger(t)
	s, err := store.Open(ctx, filepath.Join(t.TempDir(), "pool.db"), &store.Options{Key: store.Passphrase([]byte("pw")), KDF: testKDF, Station: "kiosk-b", Actor: "kiosk"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	st.s = s
	if _, err := s.Generate(ctx, store.GenerateSpec{Count: n + 2, Profile: "amt6-10"}); err != nil {
		t.Fatal(err)
	}
	if _, st.entries, err = s.AllocateStick(ctx, store.StickSpec{Label: "line-2-0001", Recipe: "default", Count: n, Profile: "amt6-10"}); err != nil {
		t.Fatal(err)
	}
	base := amtsim.DefaultState()
	for i := range n {
		u := base.UUID
		u[12], u[13], u[14], u[15] = byte((i+1)>>24), byte((i+1)>>16), byte((i+1)>>8), byte(i+1) // as StartFleet numbers them
		st.uuids = append(st.uuids, wire.UUID(u).String())
	}
	if st.hello, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	k, err := kiosk.New(ctx, kiosk.Options{Store: s, Logger: log, HelloListener: st.hello, HelloFlush: 20 * time.Millisecond,
		Provision: provision.Options{Concurrency: 4, StepTimeout: 30 * time.Second, VerifyDelay: 20 * time.Millisecond, VerifyTimeout: 30 * time.Second,
			Resolve: func(ctx context.Context, j provision.Job) (string, error) {
				select {
				case <-st.ready:
				case <-ctx.Done():
					return "", ctx.Err()
				}
				st.mu.Lock()
				defer st.mu.Unlock()
				a, ok := st.addrs[j.UUID]
				if !ok {
					return "", fmt.Errorf("no simulated machine %s", j.UUID)
				}
				return a, nil
			}}})
	if err != nil {
		t.Fatal(err)
	}
	st.k = k
	hash, err := HashPasswordParams(testPassword, testHash)
	if err != nil {
		t.Fatal(err)
	}
	st.srv, err = New(Options{Store: s, Reconciler: st.rec, AdminPasswordHash: hash, CA: k.CA(), Hosts: []string{"127.0.0.1"},
		Logger: log, LiveInterval: 200 * time.Millisecond,
		Counters: func() Counters {
			h := k.HelloStats()
			_, dropped := k.HelloLogStats()
			return Counters{HellosReceived: h.Connections, HellosPSK: h.PSK, HellosPKI: h.PKI, HellosMalformed: h.Malformed, HellosDropped: dropped, Workers: 4}
		},
		Settings: []Setting{NewSetting("store.dsn", "pool.db"), NewSetting("kiosk.concurrency", "4")}})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := st.srv.TLSConfig()
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(cfg.Certificates[0].Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(leaf.RawSubjectPublicKeyInfo)
	st.spki = base64.StdEncoding.EncodeToString(sum[:])

	rctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := k.Serve(rctx); err != nil {
			t.Errorf("kiosk: %v", err)
		}
	})
	wln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	wg.Go(func() {
		if err := st.srv.Serve(rctx, wln); err != nil {
			t.Errorf("console: %v", err)
		}
	})
	t.Cleanup(func() { cancel(); wg.Wait() })
	st.url = "https://" + wln.Addr().String()
	return st
}

// start powers the simulated machines on: they say hello and the kiosk
// provisions them.
func (st *site) start() {
	t := st.t
	keys := make([]*rsa.PrivateKey, 2)
	for i := range keys {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		keys[i] = k
	}
	var kmu sync.Mutex
	next := 0
	base := amtsim.DefaultState()
	base.AMTVersion = "9.5.30"
	recs := make([]amtsim.SetupRecord, len(st.entries))
	for i, e := range st.entries {
		recs[i] = amtsim.SetupRecord{PID: e.PID.String(), PPS: amtsim.NewSecret(e.PPS.Reveal()), MEBxPassword: amtsim.NewSecret(e.NewPassword.Reveal())}
	}
	f, err := amtsim.StartFleet(context.Background(), amtsim.FleetOptions{Devices: len(st.entries), Base: base, Records: recs,
		Net: amtsim.NetOptions{
			GenerateKey: func(int) (*rsa.PrivateKey, error) {
				kmu.Lock()
				defer kmu.Unlock()
				next++
				return keys[next%len(keys)], nil
			},
			CommitDowntime: 50 * time.Millisecond,
			Hello:          amtsim.HelloOptions{SCS: st.hello.Addr().String(), TimeScale: 600, Timeout: 5 * time.Second}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	st.mu.Lock()
	for i, m := range f.Machines {
		st.addrs[st.uuids[i]] = m.TLSAddr
	}
	st.mu.Unlock()
	close(st.ready)
}

func TestBrowser(t *testing.T) {
	chrome := chromiumPath(t)
	const n = 6
	st := newSite(t, n)
	art := artifactDir(t)

	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chrome),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
		// Trust exactly the console's key (signed by the kiosk CA, which
		// this throwaway profile does not hold), nothing else.
		chromedp.Flag("ignore-certificate-errors-spki-list", st.spki),
	}
	actx, acancel := chromedp.NewExecAllocator(context.Background(), opts...)
	defer acancel()
	bctx, bcancel := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	defer bcancel()
	ctx, cancel := context.WithTimeout(bctx, 150*time.Second)
	defer cancel()

	shot := func(name string) {
		t.Helper()
		// FullScreenshot at quality 100 is a PNG of the whole page.
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("screenshot %s: %v", name, err)
		}
		p := filepath.Join(art, name+".png")
		if err := os.WriteFile(p, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot %s (%d bytes)", p, len(png))
	}
	do := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, steps...); err != nil {
			shot("failed-" + strings.ReplaceAll(what, " ", "-"))
			t.Fatalf("%s: %v", what, err)
		}
	}
	text := func(what, sel string) string {
		t.Helper()
		v, err := chromedp.Run(ctx, chromedp.Text(sel))
		if err != nil {
			shot("failed-" + strings.ReplaceAll(what, " ", "-"))
			t.Fatalf("%s: %v", what, err)
		}
		return v
	}

	// Log in: the dashboard redirects to the form first.
	do("open the console", chromedp.Navigate(st.url+"/"), chromedp.WaitVisible("#login-form"))
	if loc, err := chromedp.Run(ctx, chromedp.Location()); err != nil || !strings.Contains(loc, "/login?next=") {
		t.Errorf("anonymous visit landed on %s (%v)", loc, err)
	}
	do("wrong password", chromedp.SendKeys("#user", "admin"), chromedp.SendKeys("#password", "not it"), chromedp.Click("#login"),
		chromedp.WaitVisible("#login-error"))
	shot("login-refused")
	do("log in", chromedp.SetValue("#user", "admin"), chromedp.SetValue("#password", testPassword), chromedp.Click("#login"),
		chromedp.WaitVisible("#count-provisioned"))
	if before := text("read the dashboard", "#count-provisioned"); before != "0" {
		t.Errorf("provisioned before the machines start: %q", before)
	}
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.provstickMarker = 42; true`)); err != nil {
		t.Fatal(err)
	}
	shot("dashboard-before")

	// Power the machines on; the open page follows without a reload.
	st.start()
	deadline := time.Now().Add(120 * time.Second)
	for {
		now := text("poll the dashboard", "#count-provisioned")
		if now == fmt.Sprint(n) {
			break
		}
		if time.Now().After(deadline) {
			shot("dashboard-stuck")
			t.Fatalf("dashboard shows %s provisioned after 120 s, want %d", now, n)
		}
		time.Sleep(250 * time.Millisecond)
	}
	if marker, err := chromedp.Run(ctx, chromedp.Evaluate[int](`window.provstickMarker || 0`)); err != nil || marker != 42 {
		t.Errorf("the dashboard reloaded instead of updating live (marker %d, %v)", marker, err)
	}
	if recent := text("read recent activity", "#recent"); !strings.Contains(recent, "hello-seen → provisioned") {
		t.Errorf("recent activity lacks provisioning: %q", recent)
	}
	shot("dashboard-after")

	// Search a machine by PID and open its timeline.
	pid := st.entries[2].PID.Display()
	link := `a[href="/machines/` + st.uuids[2] + `"]`
	do("search by PID", chromedp.Click(`nav a[href="/machines"]`), chromedp.WaitVisible("#q"), chromedp.SendKeys("#q", pid),
		chromedp.Click("#search"), chromedp.WaitVisible(link))
	shot("machines-search")
	do("open the timeline", chromedp.Click(link), chromedp.WaitVisible("#timeline"))
	timeline := text("read the timeline", "#timeline")
	for _, want := range []string{"allocated → consumed", "consumed → hello-seen", "hello-seen → provisioned", "hello"} {
		if !strings.Contains(timeline, want) {
			t.Errorf("timeline lacks %q:\n%s", want, timeline)
		}
	}
	shot("machine-timeline")

	// Upload a ledger and open the discrepancy it raised.
	ledger := filepath.Join(t.TempDir(), "ledger.jsonl")
	if err := os.WriteFile(ledger, []byte("ZZZZ9999 "+st.uuids[0]+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	do("upload a ledger", chromedp.Click(`nav a[href="/discrepancies"]`), chromedp.WaitVisible("#ledger"),
		chromedp.SetUploadFiles("#ledger", []string{ledger}), chromedp.Click("#upload"), chromedp.WaitVisible("#import-result"))
	if result := text("read the import result", "#import-result"); !strings.Contains(result, "ledger.jsonl") || !strings.Contains(result, "1 discrepancies") {
		t.Errorf("import result: %q", result)
	}
	shot("ledger-imported")
	do("open the discrepancy", chromedp.Click("table.discrepancies tbody a"), chromedp.WaitVisible("#discrepancy"))
	if advice := text("read the advice", "#advice"); !strings.Contains(advice, "return the stick") {
		t.Errorf("discrepancy advice: %q", advice)
	}
	shot("discrepancy")

	do("settings", chromedp.Click(`nav a[href="/settings"]`), chromedp.WaitVisible("table.settings"))
	do("log out", chromedp.Click("#logout"), chromedp.WaitVisible("#login-form"))
	do("the session is gone", chromedp.Navigate(st.url+"/sticks"), chromedp.WaitVisible("#login-form"))
}
