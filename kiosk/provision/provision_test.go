package provision

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/provstick/provstick/internal/amtsim"
	wire "github.com/provstick/provstick/internal/hello"
	"github.com/provstick/provstick/internal/tlspsk"
	"github.com/provstick/provstick/internal/wsman"
	"github.com/provstick/provstick/kiosk/ca"
	"github.com/provstick/provstick/kiosk/store"
)

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want Class
	}{
		{fmt.Errorf("x: %w", tlspsk.ErrBadKey), ClassWrongPPS},
		{fmt.Errorf("x: %w", tlspsk.ErrUnknownIdentity), ClassUnknownPID},
		{fmt.Errorf("x: %w", wsman.ErrUnauthorized), ClassWrongPassword},
		{&wsman.MethodError{Method: "CommitChanges", Status: wsman.StatusFlashWriteLimitExceeded}, ClassFlashLimit},
		{&wsman.MethodError{Method: "CommitChanges", Status: wsman.StatusDataMissing}, ClassDataMissing},
		{&wsman.MethodError{Method: "SetMEBxPassword", Status: wsman.StatusInvalidPassword}, ClassPasswordRefused},
		{fmt.Errorf("dial: %w", syscall.ECONNREFUSED), ClassUnreachable},
		{io.ErrUnexpectedEOF, ClassUnreachable},
		{context.DeadlineExceeded, ClassUnreachable},
		{&Failure{Class: ClassCopiedStick}, ClassCopiedStick},
		{errors.New("something else"), ClassDevice},
	} {
		f := Classify(3, tc.err)
		if f.Class != tc.want {
			t.Errorf("Classify(%v) = %q, want %q", tc.err, f.Class, tc.want)
		}
		if f.Class.Advice() == "" {
			t.Errorf("%q has no advice", f.Class)
		}
	}
}

var (
	keyOnce sync.Once
	key     *rsa.PrivateKey
)

func fastKey(int) (*rsa.PrivateKey, error) {
	keyOnce.Do(func() { key, _ = rsa.GenerateKey(rand.Reader, 2048) })
	return key, nil
}

type rig struct {
	t     *testing.T
	s     *store.Store
	ca    *ca.CA
	entry store.Entry
	uuid  string
	m     amtsim.FleetMachine
	log   *slog.Logger
}

func newRig(t *testing.T) *rig {
	ctx := t.Context()
	r := &rig{t: t, log: slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))}
	s, err := store.Open(ctx, filepath.Join(t.TempDir(), "pool.db"), &store.Options{Key: store.Passphrase([]byte("pw")),
		KDF: store.KDFParams{Time: 1, Memory: 1024, Threads: 1}, Logger: r.log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	r.s = s
	if _, err := s.Generate(ctx, store.GenerateSpec{Count: 1, Profile: "amt6-10"}); err != nil {
		t.Fatal(err)
	}
	_, es, err := s.AllocateStick(ctx, store.StickSpec{Label: "s", Recipe: "default", Count: 1, Profile: "amt6-10"})
	if err != nil {
		t.Fatal(err)
	}
	r.entry = es[0]
	if r.ca, err = ca.Open(ctx, s, ca.Options{NotFound: store.ErrNotFound}); err != nil {
		t.Fatal(err)
	}
	f, err := amtsim.StartFleet(context.Background(), amtsim.FleetOptions{Devices: 1, Base: amtsim.DefaultState(),
		Records: []amtsim.SetupRecord{{PID: r.entry.PID.String(), PPS: amtsim.NewSecret(r.entry.PPS.Reveal()), MEBxPassword: amtsim.NewSecret(r.entry.NewPassword.Reveal())}},
		Net:     amtsim.NetOptions{GenerateKey: fastKey, CommitDowntime: 50 * time.Millisecond, Hello: amtsim.HelloOptions{Disabled: true}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	r.m = f.Machines[0]
	r.uuid = wire.UUID(r.m.Net.Device().State().UUID).String()
	return r
}

func (r *rig) provisioner() *Provisioner {
	p, err := New(Options{Store: r.s, CA: r.ca, Logger: r.log, StepTimeout: 5 * time.Second, VerifyDelay: 10 * time.Millisecond, VerifyTimeout: 5 * time.Second,
		Resolve: func(context.Context, Job) (string, error) { return r.m.TLSAddr, nil }})
	if err != nil {
		r.t.Fatal(err)
	}
	return p
}

func (r *rig) job() Job {
	return Job{PID: r.entry.PID.String(), UUID: r.uuid, Peer: netip.MustParseAddrPort("127.0.0.1:1")}
}

func (r *rig) history() string {
	h, err := r.s.History(context.Background(), r.entry.PID)
	if err != nil {
		r.t.Fatal(err)
	}
	var b strings.Builder
	for _, ev := range h {
		fmt.Fprintf(&b, "%s→%s %s\n", ev.From, ev.To, ev.Reason)
	}
	return b.String()
}

func (r *rig) checkDevice() {
	st := r.m.Net.Device().State()
	if len(st.Net.Keys) != 1 || len(st.Net.Certs) != 1 {
		r.t.Errorf("device holds %d keys and %d certificates, want 1 and 1 (read-before-write)", len(st.Net.Keys), len(st.Net.Certs))
	}
	if s, _ := r.s.State(context.Background(), r.entry.PID); s != store.StateProvisioned {
		r.t.Errorf("entry %s", s)
	}
}

// TestLostReplies: a reply lost after the call took effect fails the run
// as "device unreachable"; the next run reads before writing, so the key
// pair and the certificate are not created twice.
func TestLostReplies(t *testing.T) {
	for _, step := range []int{amtsim.StepKey, amtsim.StepCert, amtsim.StepBind} {
		t.Run(stepName(step), func(t *testing.T) {
			r := newRig(t)
			r.m.Net.DropAtStep(step, true, 1)
			p := r.provisioner()
			res := p.Provision(t.Context(), r.job())
			if res.Outcome != OutcomeFailed || res.Failure.Class != ClassUnreachable || res.Failure.Step != step {
				t.Fatalf("first run: %+v %v", res, res.Failure)
			}
			res = p.Provision(t.Context(), r.job())
			if res.Outcome != OutcomeProvisioned {
				t.Fatalf("second run: %+v %v\n%s", res, res.Failure, r.history())
			}
			r.checkDevice()
			if h := r.history(); !strings.Contains(h, "failed") || !strings.Contains(h, "run 2 started") {
				t.Errorf("history:\n%s", h)
			}
		})
	}
}

// TestCommitReplyLost: the commit takes effect but its reply is lost; the
// machine sends no more hellos, so the same run verifies over TLS.
func TestCommitReplyLost(t *testing.T) {
	r := newRig(t)
	r.m.Net.DropAtStep(amtsim.StepCommit, true, 1)
	res := r.provisioner().Provision(t.Context(), r.job())
	if res.Outcome != OutcomeProvisioned {
		t.Fatalf("%+v %v\n%s", res, res.Failure, r.history())
	}
	r.checkDevice()
}

// TestRestartResumes: the kiosk stops mid-way (its context ends while a
// step waits on a slow device); the entry stays hello-seen with its
// progress, and a new kiosk's Resume finishes it without a hello.
func TestRestartResumes(t *testing.T) {
	r := newRig(t)
	ctx, cancel := context.WithCancel(t.Context())
	p := r.provisioner()
	var once sync.Once
	// Stop the kiosk once step 5 is saved.
	go func() {
		for ctx.Err() == nil {
			if pr, err := r.s.LoadProgress(context.Background(), r.entry.PID); err == nil && pr.Step >= StepBind {
				r.m.Net.SlowResponses(time.Second)
				once.Do(cancel)
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	res := p.Provision(ctx, r.job())
	cancel()
	if res.Outcome != OutcomeFailed || res.Failure.Class != ClassKiosk {
		t.Fatalf("interrupted run: %+v %v", res, res.Failure)
	}
	if s, _ := r.s.State(context.Background(), r.entry.PID); s != store.StateHelloSeen {
		t.Fatalf("after interruption: %s, want hello-seen", s)
	}
	r.m.Net.SlowResponses(0)

	done := make(chan Result, 1)
	p2, err := New(Options{Store: r.s, CA: r.ca, Logger: r.log, StepTimeout: 5 * time.Second, VerifyDelay: 10 * time.Millisecond,
		Resolve:  func(context.Context, Job) (string, error) { return r.m.TLSAddr, nil },
		OnResult: func(res Result) { done <- res }})
	if err != nil {
		t.Fatal(err)
	}
	rctx, rcancel := context.WithCancel(t.Context())
	defer rcancel()
	go p2.Run(rctx)
	if n, err := p2.Resume(rctx); n != 1 || err != nil {
		t.Fatalf("Resume: %d, %v", n, err)
	}
	select {
	case res := <-done:
		if res.Outcome != OutcomeProvisioned || res.Resumed < StepBind {
			t.Fatalf("resumed run: %+v %v\n%s", res, res.Failure, r.history())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("resumed run did not finish")
	}
	r.checkDevice()
	if h := r.history(); !strings.Contains(h, "resuming after step") {
		t.Errorf("history:\n%s", h)
	}
}

// TestUnknownAndCopied: a PID not in the pool, and a hello with a known PID
// from a machine other than the one that consumed it.
func TestUnknownAndCopied(t *testing.T) {
	r := newRig(t)
	p := r.provisioner()
	if res := p.Provision(t.Context(), Job{PID: "ZZZZ2345", UUID: r.uuid}); res.Outcome != OutcomeUnknownPID {
		t.Errorf("unknown PID: %+v", res)
	}
	if err := r.s.Consume(t.Context(), r.entry.PID, store.Machine{UUID: r.uuid}, "ledger"); err != nil {
		t.Fatal(err)
	}
	j := r.job()
	j.UUID = "00000000-0000-0000-0000-000000000001"
	res := p.Provision(t.Context(), j)
	if res.Outcome != OutcomeFailed || res.Failure.Class != ClassCopiedStick {
		t.Errorf("copied stick: %+v %v", res, res.Failure)
	}
	if s, _ := r.s.State(t.Context(), r.entry.PID); s != store.StateConsumed {
		t.Errorf("entry changed to %s by a stranger's hello", s)
	}
	if h := r.history(); !strings.Contains(h, "alarm: hello from machine 00000000-0000-0000-0000-000000000001") {
		t.Errorf("history:\n%s", h)
	}
}

// TestFolding: while a PID is queued or running, its further hellos fold.
func TestFolding(t *testing.T) {
	r := newRig(t)
	p := r.provisioner()
	if got := p.Submit(r.job()); got != "queued" {
		t.Fatalf("first: %s", got)
	}
	j := r.job()
	j.Retry = 4
	if got := p.Submit(j); got != "folded" {
		t.Fatalf("second: %s", got)
	}
	if f := p.done(j.PID); f == nil || f.folded != 1 || f.retry != 4 {
		t.Errorf("flight %+v", f)
	}
}
