package kiosk

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/provstick/provstick/initramfs/heci/amthi"
	"github.com/provstick/provstick/internal/amtsim"
	wire "github.com/provstick/provstick/internal/hello"
	"github.com/provstick/provstick/internal/wsman"
	"github.com/provstick/provstick/kiosk/provision"
	"github.com/provstick/provstick/kiosk/store"
)

var testKDF = store.KDFParams{Time: 1, Memory: 1024, Threads: 1}

// keys hands the simulated devices a few pre-made RSA keys (GenerateKeyPair
// with the real generator for 50 devices under -race would dominate the
// run); certificates still differ per device (serial, CN).
type keys struct {
	mu   sync.Mutex
	ks   []*rsa.PrivateKey
	next int
}

func newKeys(t testing.TB, n int) *keys {
	k := &keys{}
	for range n {
		key, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		k.ks = append(k.ks, key)
	}
	return k
}

func (k *keys) gen(int) (*rsa.PrivateKey, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.next++
	return k.ks[k.next%len(k.ks)], nil
}

// bench is a store with n consumed entries, a fleet holding their records,
// and a kiosk serving them.
type bench struct {
	t       testing.TB
	s       *store.Store
	entries []store.Entry
	uuids   []string
	fleet   *amtsim.Fleet
	k       *Kiosk
	results chan provision.Result
	// resolveHook, if set, runs at the start of every Resolve.
	resolveHook func(context.Context)
	// ready is when the fleet's addresses became known; waited holds how
	// long each PID's first Resolve waited for that (benchmarks subtract it).
	ready  time.Time
	wmu    sync.Mutex
	waited map[string]time.Duration
	cancel context.CancelFunc
	done   chan error
}

type benchOptions struct {
	n           int
	prepare     func(i int, s *amtsim.NetServer)
	consume     bool // mark entries consumed first, as a ledger import would
	timescal    float64
	logLevel    slog.Level
	dsn         string // "" → a SQLite file in a temporary directory
	concurrency int
	keys        int  // distinct device keys (default 4)
	noFleet     bool // no simulated machines (hello benchmarks)
	// floodRate is the hello flood limit; 0 → off, since every simulated
	// machine says hello from 127.0.0.1.
	floodRate float64
	// extraFree entries stay free in the pool (for step 10); nextPSK and
	// users turn on the optional steps 10 and 8.
	extraFree int
	nextPSK   bool
	users     []provision.User
}

func newBench(t testing.TB, o benchOptions) *bench {
	t.Helper()
	ctx := context.Background()
	b := &bench{t: t, results: make(chan provision.Result, 4*o.n+100), waited: map[string]time.Duration{}}
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: o.logLevel}))
	if o.floodRate == 0 {
		o.floodRate = -1
	}
	dsn := o.dsn
	if dsn == "" {
		dsn = filepath.Join(t.TempDir(), "pool.db")
	}
	s, err := store.Open(ctx, dsn, &store.Options{Key: store.Passphrase([]byte("pw")), KDF: testKDF,
		Station: "kiosk-test", Actor: "test", Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	b.s = s
	if _, err := s.Generate(ctx, store.GenerateSpec{Count: o.n + o.extraFree, Profile: "amt6-10"}); err != nil {
		t.Fatal(err)
	}
	if _, b.entries, err = s.AllocateStick(ctx, store.StickSpec{Label: "stick-1", Recipe: "default", Count: o.n, Profile: "amt6-10"}); err != nil {
		t.Fatal(err)
	}
	base := amtsim.DefaultState()
	base.AMTVersion = "9.5.30"
	recs := make([]amtsim.SetupRecord, o.n)
	for i, e := range b.entries {
		recs[i] = amtsim.SetupRecord{PID: e.PID.String(), PPS: amtsim.NewSecret(e.PPS.Reveal()), MEBxPassword: amtsim.NewSecret(e.NewPassword.Reveal())}
		u := base.UUID
		u[12], u[13], u[14], u[15] = byte((i+1)>>24), byte((i+1)>>16), byte((i+1)>>8), byte(i+1)
		b.uuids = append(b.uuids, wire.UUID(u).String())
		if o.consume {
			if err := s.Consume(ctx, e.PID, store.Machine{UUID: b.uuids[i]}, "ledger import (test)"); err != nil {
				t.Fatal(err)
			}
		}
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addrs := map[string]string{} // UUID → 16993 address
	var amu sync.Mutex
	ready := make(chan struct{}) // closed once the fleet's addresses are known
	k, err := New(ctx, Options{Store: s, Logger: log, HelloListener: ln, HelloFlush: 20 * time.Millisecond, HelloFloodRate: o.floodRate,
		Provision: provision.Options{Concurrency: max(16, o.concurrency), StepTimeout: 20 * time.Second, VerifyDelay: 20 * time.Millisecond, VerifyTimeout: 20 * time.Second,
			Resolve: func(ctx context.Context, j provision.Job) (string, error) {
				if b.resolveHook != nil {
					b.resolveHook(ctx)
				}
				t0 := time.Now()
				select {
				case <-ready:
				case <-ctx.Done():
					return "", ctx.Err()
				}
				if w := time.Since(t0); w > time.Millisecond {
					b.wmu.Lock()
					b.waited[j.PID] += w
					b.wmu.Unlock()
				}
				amu.Lock()
				defer amu.Unlock()
				a, ok := addrs[j.UUID]
				if !ok {
					return "", fmt.Errorf("no simulated machine %s", j.UUID)
				}
				return a, nil
			},
			OnResult: func(r provision.Result) { b.results <- r },
			NextPSK:  o.nextPSK, Users: o.users,
		}})
	if err != nil {
		t.Fatal(err)
	}
	b.k = k
	rctx, cancel := context.WithCancel(ctx)
	b.cancel, b.done = cancel, make(chan error, 1)
	go func() { b.done <- k.Serve(rctx) }()
	t.Cleanup(b.stop)

	if o.noFleet {
		close(ready)
		return b
	}
	ks := newKeys(t, max(o.keys, 4))
	ts := o.timescal
	if ts == 0 {
		ts = 600
	}
	f, err := amtsim.StartFleet(ctx, amtsim.FleetOptions{Devices: o.n, Base: base, Records: recs,
		Net: amtsim.NetOptions{GenerateKey: ks.gen, CommitDowntime: 100 * time.Millisecond,
			Hello: amtsim.HelloOptions{SCS: ln.Addr().String(), TimeScale: ts, Timeout: 5 * time.Second}},
		Prepare: func(i int, srv *amtsim.NetServer) {
			if o.prepare != nil {
				o.prepare(i, srv)
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	b.fleet = f
	t.Cleanup(func() { f.Close() })
	amu.Lock()
	for i, m := range f.Machines {
		addrs[b.uuids[i]] = m.TLSAddr
	}
	amu.Unlock()
	b.ready = time.Now()
	close(ready)
	return b
}

func (b *bench) stop() {
	if b.cancel == nil {
		return
	}
	b.cancel()
	if err := <-b.done; err != nil {
		b.t.Errorf("Serve: %v", err)
	}
	b.cancel = nil
}

// waitState waits until every listed entry is in state want.
func (b *bench) waitState(idx []int, want store.State, within time.Duration) {
	b.t.Helper()
	deadline := time.Now().Add(within)
	for {
		var missing []string
		for _, i := range idx {
			st, err := b.s.State(context.Background(), b.entries[i].PID)
			if err != nil {
				b.t.Fatal(err)
			}
			if st != want {
				missing = append(missing, fmt.Sprintf("%d:%s", i, st))
			}
		}
		if len(missing) == 0 {
			return
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("after %v, not %s: %s", within, want, strings.Join(missing, " "))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func all(n int) []int {
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	return idx
}

// checkProvisioned verifies machine i from the outside: post over HECI's
// view of the state, a kiosk-signed certificate for its UUID over TLS, and
// the generated admin password accepted. It returns the certificate.
func (b *bench) checkProvisioned(i int) *x509.Certificate {
	b.t.Helper()
	ctx := context.Background()
	m := b.fleet.Machines[i]
	st := m.Net.Device().State()
	if st.ProvisioningState != amthi.StatePost || st.ControlMode != amthi.ControlAdmin {
		b.t.Errorf("machine %d: state %v/%v", i, st.ProvisioningState, st.ControlMode)
	}
	cfg := &tls.Config{RootCAs: b.k.CA().Pool(), ServerName: "unused", InsecureSkipVerify: true}
	conn, err := tls.Dial("tcp", m.TLSAddr, cfg)
	if err != nil {
		b.t.Fatalf("machine %d: TLS: %v", i, err)
	}
	leaf := conn.ConnectionState().PeerCertificates[0]
	conn.Close()
	if _, err := b.k.CA().Verify(leaf.Raw, b.uuids[i]); err != nil {
		b.t.Errorf("machine %d: %v", i, err)
	}
	pw, err := provision.AdminPassword(ctx, b.s, b.entries[i].PID)
	if err != nil {
		b.t.Fatal(err)
	}
	if pw == b.entries[i].NewPassword || len(pw) != 16 {
		b.t.Errorf("machine %d: admin password not a new 16-character one", i)
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: b.k.CA().Pool(), ServerName: b.uuids[i],
		InsecureSkipVerify: true, VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			_, err := b.k.CA().Verify(raw[0], b.uuids[i])
			return err
		}}}
	defer tr.CloseIdleConnections()
	c, err := wsman.NewClient(wsman.Options{Endpoint: "https://" + m.TLSAddr + "/wsman", Password: wsman.Secret(pw.Reveal()),
		HTTPClient: &http.Client{Transport: tr, Timeout: 10 * time.Second}})
	if err != nil {
		b.t.Fatal(err)
	}
	if _, err := c.GetGeneralSettings(ctx); err != nil {
		b.t.Errorf("machine %d: admin login with the generated password: %v", i, err)
	}
	bad, _ := wsman.NewClient(wsman.Options{Endpoint: "https://" + m.TLSAddr + "/wsman", Password: wsman.Secret(b.entries[i].NewPassword.Reveal()),
		HTTPClient: &http.Client{Transport: tr, Timeout: 10 * time.Second}})
	if _, err := bad.GetGeneralSettings(ctx); !errors.Is(err, wsman.ErrUnauthorized) {
		b.t.Errorf("machine %d: the record's password still logs in as admin (%v)", i, err)
	}
	if !st.MEBxPassword.Equal(pw.Reveal()) {
		b.t.Errorf("machine %d: MEBx password is not the generated one", i)
	}
	return leaf
}

// TestEndToEnd: 50 machines that consumed records say hello; every one
// ends post with its own kiosk-signed certificate and a working admin
// password, and the store tells the story.
func TestEndToEnd(t *testing.T) {
	const n = 50
	b := newBench(t, benchOptions{n: n, consume: true, logLevel: slog.LevelWarn,
		prepare: func(i int, s *amtsim.NetServer) {
			if i%10 == 3 {
				s.DuplicateHellos(2) // folded while provisioning
			}
		}})
	start := time.Now()
	b.waitState(all(n), store.StateProvisioned, 120*time.Second) // bounded; loaded CI machines with -race need more than 45 s (a lost commit answer waits out a 20 s step timeout, then verifies)
	t.Logf("%d machines provisioned in %v", n, time.Since(start).Round(time.Millisecond))
	serials := map[string]int{}
	for i := range n {
		c := b.checkProvisioned(i)
		if j, dup := serials[c.SerialNumber.String()]; dup {
			t.Errorf("machines %d and %d share a certificate", i, j)
		}
		serials[c.SerialNumber.String()] = i
	}
	ctx := context.Background()
	h, err := b.s.History(ctx, b.entries[0].PID)
	if err != nil {
		t.Fatal(err)
	}
	var story []string
	for _, ev := range h {
		story = append(story, fmt.Sprintf("%s→%s %s", ev.From, ev.To, ev.Reason))
	}
	text := strings.Join(story, "\n")
	for _, want := range []string{"→free", "free→allocated", "allocated→consumed", "consumed→hello-seen hello from", "run 1 started",
		"step 3: device generated", "step 4: added a kiosk-signed certificate", "step 5", "committing", "step 11: committed", "hello-seen→provisioned verified over TLS"} {
		if !strings.Contains(text, want) {
			t.Errorf("history lacks %q:\n%s", want, text)
		}
	}
	if h[len(h)-1].Machine != b.uuids[0] {
		t.Errorf("history machine %q", h[len(h)-1].Machine)
	}
	m, err := b.s.Machine(ctx, b.uuids[0])
	if err != nil || m.ProvisioningState != "post" || m.AMTVersion != "9.5.30" || m.ControlMode != "acm" {
		t.Errorf("machine record %+v, %v", m, err)
	}
	b.stop()
	hs, err := b.s.Hellos(ctx, b.entries[3].PID.String(), 0)
	if err != nil {
		t.Fatal(err)
	}
	var folded int
	for _, h := range hs {
		folded += strings.Count(h.Outcome, "folded")
	}
	if len(hs) < 3 || folded == 0 {
		t.Errorf("machine 3 (duplicate hellos): %d hellos logged, %d folded", len(hs), folded)
	}
	if s := b.k.HelloStats(); s.PSK < n || s.Malformed != 0 {
		t.Errorf("hello stats %+v", s)
	}
}

// TestFaults: a wrong PPS and a flash write limit end in the right
// classified failures; after the fix, the machine's next hello succeeds.
// Garbage hellos are counted, an allocated entry (ledger not imported) is
// provisioned, and a hello for a PID not in the pool is logged.
func TestFaults(t *testing.T) {
	const n = 4
	var wrongPPS *amtsim.NetServer
	b := newBench(t, benchOptions{n: n, consume: false, logLevel: slog.LevelError,
		prepare: func(i int, s *amtsim.NetServer) {
			switch i {
			case 0:
				s.StoreWrongPPS()
				wrongPPS = s
			case 1:
				s.ForceReturn("CommitChanges", wsman.StatusFlashWriteLimitExceeded)
			case 2:
				s.GarbageHellos(2)
			}
		}})
	ctx := context.Background()
	// Both fail first, classified.
	failed := map[int]provision.Class{}
	deadline := time.After(30 * time.Second)
	for len(failed) < 2 {
		select {
		case r := <-b.results:
			if r.Outcome == provision.OutcomeFailed {
				for i, e := range b.entries {
					if e.PID.String() == r.Job.PID {
						failed[i] = r.Failure.Class
					}
				}
			}
		case <-deadline:
			t.Fatalf("failures seen: %v", failed)
		}
	}
	if failed[0] != provision.ClassWrongPPS || failed[1] != provision.ClassFlashLimit {
		t.Fatalf("classes %v", failed)
	}
	for i, want := range map[int]string{0: "wrong PPS", 1: "flash write limit"} {
		h, _ := b.s.History(ctx, b.entries[i].PID)
		var ok bool
		for _, ev := range h {
			ok = ok || ev.To == store.StateFailed && strings.Contains(ev.Reason, want) && strings.Contains(ev.Reason, " — ")
		}
		if !ok {
			t.Errorf("entry %d: no failure %q with advice in the history", i, want)
		}
	}
	// The fix: the right PPS in the machine (the stick re-run); the flash
	// limit passes by itself (ForceReturn answered once).
	wrongPPS.Device().Update(func(st *amtsim.State) { st.PPS = amtsim.NewSecret(b.entries[0].PPS.Reveal()) })
	b.waitState(all(n), store.StateProvisioned, 40*time.Second)
	for i := range n {
		b.checkProvisioned(i)
	}
	h, _ := b.s.History(ctx, b.entries[1].PID)
	var resumed bool
	for _, ev := range h {
		resumed = resumed || strings.Contains(ev.Reason, "resuming after step 9")
	}
	if !resumed {
		t.Errorf("flash-limited machine did not resume after step 9")
	}
	h, _ = b.s.History(ctx, b.entries[2].PID)
	if !strings.Contains(h[2].Reason, "inferred from a hello") {
		t.Errorf("allocated entry: %+v", h[2])
	}

	// A PID not in the pool.
	c, err := net.Dial("tcp", b.k.o.HelloListener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	msg, _ := (&wire.Hello{Version: wire.VersionPSK, UUID: wire.UUID{7}, PID: "ZZZZ2345"}).MarshalBinary()
	c.Write(msg)
	c.Close()
	select {
	case r := <-waitOutcome(b.results, provision.OutcomeUnknownPID):
		if r.Job.PID != "ZZZZ2345" {
			t.Errorf("unknown PID result %+v", r)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no result for the unknown PID")
	}
	b.stop()
	hs, _ := b.s.Hellos(ctx, "ZZZZ2345", 0)
	if len(hs) != 2 || !strings.HasPrefix(hs[1].Outcome, "unknown-pid") {
		t.Errorf("unknown PID hello log %+v", hs)
	}
	// Machine 2 precedes its first two hellos with garbage; when it is
	// provisioned after its first hello, it sends only one. Every garbage
	// message it sent is counted and logged, whatever the timing.
	sent := b.fleet.Machines[2].Net.HelloStats().Garbage
	if sent < 1 {
		t.Fatalf("the simulator sent no garbage hello")
	}
	if s := b.k.HelloStats(); s.Malformed != uint64(sent) {
		t.Errorf("garbage hellos: %d sent, counted %+v", sent, s)
	}
	if garbage, _ := b.s.Hellos(ctx, "", 0); len(garbage) != sent || !strings.HasPrefix(garbage[0].Outcome, "malformed") {
		t.Errorf("garbage hellos: %d sent, logged %+v", sent, garbage)
	}
}

func waitOutcome(ch <-chan provision.Result, o provision.Outcome) <-chan provision.Result {
	out := make(chan provision.Result, 1)
	go func() {
		for r := range ch {
			if r.Outcome == o {
				out <- r
				return
			}
		}
	}()
	return out
}
