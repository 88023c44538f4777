// Package provision is the kiosk's per-machine PSK provisioning workflow
// (../../../shared/specs/amt-psk.md §4–§6): for a hello, look up the entry by
// PID, connect back to the machine with TLS-PSK on 16993 (PID/PPS through
// the tlspsk.KeyForm switch) and HTTP Digest as admin with the record's
// MEBx password, and run steps 1–11 as a resumable state machine whose
// progress lives in the kiosk store. After the commit it reconnects with
// ordinary TLS, trusting only the kiosk CA, to verify that the machine
// presents the kiosk-signed certificate and accepts the new admin password,
// and only then marks the entry provisioned.
//
// Resuming: the last confirmed step and what the steps learnt (key and
// certificate references, the realm, the generated password — sealed) are
// saved before and after each step that is not idempotent, so a kiosk
// restarted mid-way resumes from there. Steps that create something on the
// device read first: an existing key pair is reused rather than a second
// one generated, an existing certificate from this CA for this key is
// reused, an existing TLS credential context is accepted. A commit whose
// reply was lost is detected by connecting with TLS first (the machine has
// dropped TLS-PSK once committed).
//
// Plain HTTP on 16992 (spec §4: "or plain HTTP on 16992 for devices set
// up without TLS"): with Options.Plain set to PlainFallback, a machine whose
// 16993 refuses the TCP connection is provisioned over plain HTTP on 16992
// with the same Digest login (the exchange is then not encrypted, which the
// history says); PlainAlways uses 16992 only. The steps are the same, and
// the verification after the commit is over TLS as always.
//
// Step 12 (the provisioning audit record) is read after the verification,
// best effort (IPS_ProvisioningAuditRecord, else the pre-7.0 method), and
// written to the history. Steps 8 (extra digest users) and 10 (the next
// PID/PPS) are optional and off by default; see optional.go. Kerberos
// (the second half of step 8) is not implemented: an offline site has no
// KDC.
package provision

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/provstick/provstick/internal/tlspsk"
	"github.com/provstick/provstick/internal/wsman"
	"github.com/provstick/provstick/kiosk/ca"
	"github.com/provstick/provstick/kiosk/store"
	"github.com/provstick/provstick/setupbin"
)

// Steps of spec §6 as this package numbers them.
const (
	StepReadState = 1
	StepTime      = 2
	StepKey       = 3
	StepCert      = 4
	StepBind      = 5
	StepEnableTLS = 6
	StepAdmin     = 7
	StepUsers     = 8
	StepMEBx      = 9
	StepNextPSK   = 10
	StepCommit    = 11
	// StepVerify is ours: reconnecting over TLS after the commit.
	StepVerify = 13
)

func stepName(s int) string {
	switch s {
	case StepReadState:
		return "read state"
	case StepTime:
		return "time"
	case StepKey:
		return "TLS key"
	case StepCert:
		return "TLS certificate"
	case StepBind:
		return "bind"
	case StepEnableTLS:
		return "enable TLS"
	case StepAdmin:
		return "admin"
	case StepUsers:
		return "users"
	case StepMEBx:
		return "MEBx password"
	case StepNextPSK:
		return "next PID/PPS"
	case StepCommit:
		return "commit"
	case StepVerify:
		return "verify"
	}
	return strconv.Itoa(s)
}

// Job is one machine to provision, from a hello.
type Job struct {
	PID   string         // from the hello
	UUID  string         // text form, from the hello
	Peer  netip.AddrPort // where the hello came from
	Retry uint32         // the hello's retry count
}

// Options configure a Provisioner.
type Options struct {
	Store *store.Store // required, unlocked
	CA    *ca.CA       // required
	// Logger: one info line per outcome, debug per step; never secrets.
	Logger *slog.Logger
	// Concurrency bounds machines provisioned at once; 0 → 16.
	Concurrency int
	// Queue bounds hellos waiting for a worker; 0 → 4096. A full queue
	// drops the hello (the machine says hello again).
	Queue int
	// StepTimeout bounds each step (connection included); 0 → 60 s.
	StepTimeout time.Duration
	// VerifyDelay is the wait after the commit before reconnecting (AMT
	// restarts its network stack, about 5 s on real machines); 0 → 5 s,
	// negative → none. VerifyTimeout bounds the reconnection attempts;
	// 0 → 60 s.
	VerifyDelay, VerifyTimeout time.Duration
	// KeyForm and PSKEncoding are the UNCONFIRMED switches of spec §3 and
	// §6 step 10 (the simulator mirrors them).
	KeyForm     tlspsk.KeyForm
	PSKEncoding wsman.PSKEncoding
	// TLSMaxVersion bounds TLS-PSK (0 → TLS 1.2).
	TLSMaxVersion uint16
	// Resolve gives the host:port of a machine's 16993; nil → the hello's
	// source address, port 16993.
	Resolve func(ctx context.Context, j Job) (string, error)
	// Plain says when to use plain HTTP on 16992 (see the package doc);
	// zero: never.
	Plain PlainMode
	// ResolvePlain gives the host:port of a machine's 16992; nil → the
	// host Resolve gave, port 16992.
	ResolvePlain func(ctx context.Context, j Job) (string, error)
	// PasswordLength of generated admin passwords; 0 → 16.
	PasswordLength int
	// Rand for passwords; nil → crypto/rand.
	Rand io.Reader
	// OnResult, if set, is called after each run (tests, metrics, web).
	OnResult func(Result)
	// Users are extra digest users added in step 8 (none: step 8 is
	// skipped), each with its own generated password per machine.
	Users []User
	// NextPSK turns on step 10: each machine is given the next PID/PPS
	// from the pool with SetTLSPSK (encoding per PSKEncoding, unconfirmed).
	NextPSK bool
}

// PlainMode says when the kiosk provisions over plain HTTP on 16992.
type PlainMode int

// Plain modes.
const (
	PlainNever    PlainMode = iota // TLS-PSK on 16993 only
	PlainFallback                  // 16992 when 16993 refuses the connection
	PlainAlways                    // 16992 only
)

// ParsePlainMode parses "never", "fallback" or "always".
func ParsePlainMode(s string) (PlainMode, error) {
	switch s {
	case "never", "":
		return PlainNever, nil
	case "fallback":
		return PlainFallback, nil
	case "always":
		return PlainAlways, nil
	}
	return 0, fmt.Errorf("plain HTTP mode %q: want never, fallback or always", s)
}

// Outcome of a run.
type Outcome string

// Outcomes.
const (
	OutcomeProvisioned Outcome = "provisioned"
	OutcomeAlready     Outcome = "already-provisioned" // the entry was provisioned before this hello
	OutcomeUnknownPID  Outcome = "unknown-pid"
	OutcomeFailed      Outcome = "failed"
)

// Result is what one run did.
type Result struct {
	Job      Job
	Outcome  Outcome
	Failure  *Failure // for OutcomeFailed
	Duration time.Duration
	Resumed  int // the step resumed after (0 = from the start)
}

// ErrUnknownPID: the hello's PID is not in this pool.
var ErrUnknownPID = errors.New("provision: PID not in this pool")

// Provisioner runs the workflow for many machines.
type Provisioner struct {
	o     Options
	log   *slog.Logger
	queue chan Job

	mu       sync.Mutex
	inflight map[string]*flight // by PID
}

type flight struct {
	folded int
	retry  uint32
}

// New checks the options.
func New(o Options) (*Provisioner, error) {
	if o.Store == nil || !o.Store.Unlocked() {
		return nil, errors.New("provisioner: needs an unlocked store")
	}
	if o.CA == nil {
		return nil, errors.New("provisioner: needs the kiosk CA")
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 16
	}
	if o.Queue <= 0 {
		o.Queue = 4096
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
	if err := checkUsers(o.Users); err != nil {
		return nil, fmt.Errorf("provisioner: %w", err)
	}
	o.Users = slices.Clone(o.Users)
	if o.Resolve == nil {
		o.Resolve = func(_ context.Context, j Job) (string, error) {
			if !j.Peer.Addr().IsValid() {
				return "", fmt.Errorf("no address for machine %s", j.UUID)
			}
			return net.JoinHostPort(j.Peer.Addr().String(), "16993"), nil
		}
	}
	p := &Provisioner{o: o, log: o.Logger, queue: make(chan Job, o.Queue), inflight: map[string]*flight{}}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	return p, nil
}

// Submit queues a job. It returns "queued", "folded" (the PID is being
// handled already; the retry count is kept) or "dropped" (queue full).
func (p *Provisioner) Submit(j Job) string {
	p.mu.Lock()
	if f, ok := p.inflight[j.PID]; ok {
		f.folded++
		f.retry = max(f.retry, j.Retry)
		p.mu.Unlock()
		return "folded"
	}
	p.inflight[j.PID] = &flight{retry: j.Retry}
	p.mu.Unlock()
	select {
	case p.queue <- j:
		return "queued"
	default:
		p.done(j.PID)
		p.log.Warn("provisioning queue full, hello dropped", "pid", j.PID, "uuid", j.UUID)
		return "dropped"
	}
}

func (p *Provisioner) done(pid string) *flight {
	p.mu.Lock()
	defer p.mu.Unlock()
	f := p.inflight[pid]
	delete(p.inflight, pid)
	return f
}

// Run works the queue with Concurrency workers until ctx ends.
func (p *Provisioner) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for range p.o.Concurrency {
		wg.Go(func() {
			for {
				select {
				case <-ctx.Done():
					return
				case j := <-p.queue:
					res := p.Provision(ctx, j)
					f := p.done(j.PID)
					if f != nil && f.folded > 0 {
						p.log.Debug("hellos folded while provisioning", "pid", j.PID, "folded", f.folded, "retry", f.retry)
					}
					if p.o.OnResult != nil {
						p.o.OnResult(res)
					}
				}
			}
		})
	}
	wg.Wait()
	return nil
}

// progress is the public part of a machine's saved progress (JSON).
type progress struct {
	UUID       string                   `json:"uuid"`
	Peer       string                   `json:"peer,omitempty"` // the hello's source, to resume after a restart
	Realm      string                   `json:"realm,omitempty"`
	AMTVersion string                   `json:"amt_version,omitempty"`
	Key        *wsman.EndpointReference `json:"key,omitempty"`
	Cert       *wsman.EndpointReference `json:"cert,omitempty"`
	CertDER    []byte                   `json:"cert_der,omitempty"`
	Bound      bool                     `json:"bound,omitempty"`
	NextPID    string                   `json:"next_pid,omitempty"`   // step 10's entry
	Committing bool                     `json:"committing,omitempty"` // CommitChanges sent (reply maybe lost)
	Committed  bool                     `json:"committed,omitempty"`
}

// run is one machine's run.
type run struct {
	p        *Provisioner
	j        Job
	pid      setupbin.PID
	entry    store.Lookup
	step     int // last confirmed
	attempts int
	pr       progress
	password setupbin.Password            // generated admin/MEBx password
	userPw   map[string]setupbin.Password // step 8 users' generated passwords
	addr     string
	plain    string // host:port of 16992 when provisioning over plain HTTP
	audit    string // step 12, for the history
	actions  []store.AuditRecord
	c        *wsman.Client
	tr       *http.Transport
	log      *slog.Logger
}

// Provision runs the workflow for one machine now, on the caller's
// goroutine.
func (p *Provisioner) Provision(ctx context.Context, j Job) Result {
	start := time.Now()
	res := Result{Job: j}
	r := &run{p: p, j: j, log: p.log.With("pid", j.PID, "uuid", j.UUID)}
	err := r.do(ctx, &res)
	res.Duration = time.Since(start)
	switch {
	case errors.Is(err, ErrUnknownPID):
		res.Outcome = OutcomeUnknownPID
		r.log.Warn("hello: PID not in this pool", "peer", j.Peer.String(), "retry", j.Retry)
	case err != nil && ctx.Err() != nil:
		// The kiosk is stopping: not the machine's failure. The entry stays
		// hello-seen with its progress, and Resume picks it up next time.
		res.Outcome, res.Failure = OutcomeFailed, &Failure{Class: ClassKiosk, Step: r.step + 1, Err: fmt.Errorf("interrupted: %w", ctx.Err())}
		r.log.Warn("provisioning interrupted", "after_step", r.step)
	case err != nil:
		f := Classify(r.step+1, err)
		res.Outcome, res.Failure = OutcomeFailed, f
		r.fail(ctx, f)
	case res.Outcome == "":
		res.Outcome = OutcomeProvisioned
		r.log.Info("provisioned", "duration", res.Duration.Round(time.Millisecond), "resumed_after", res.Resumed)
	}
	if r.tr != nil {
		r.tr.CloseIdleConnections()
	}
	r.flushAudit(ctx, res)
	return res
}

// act notes one action for the audit log (written at the end of the run,
// in one transaction).
func (r *run) act(action, outcome, detail string) {
	r.actions = append(r.actions, store.AuditRecord{At: time.Now(), Actor: "kiosk", Action: action, PID: r.j.PID, UUID: r.j.UUID, Outcome: outcome, Detail: detail})
}

// flushAudit writes the run's actions and its outcome to the audit log.
func (r *run) flushAudit(ctx context.Context, res Result) {
	outcome := string(res.Outcome)
	detail := fmt.Sprintf("from %s, %v", r.j.Peer, res.Duration.Round(time.Millisecond))
	if res.Failure != nil {
		outcome = "failed: " + string(res.Failure.Class)
		detail += ", step " + strconv.Itoa(res.Failure.Step) + ": " + res.Failure.Error()
	}
	if r.plain != "" {
		detail += ", over plain HTTP " + r.plain
	}
	r.act("provision.run", outcome, detail)
	if err := r.p.o.Store.Audit(context.WithoutCancel(ctx), r.actions...); err != nil {
		r.log.Error("writing the audit log", "err", err)
	}
}

// fail records a failure in the store (unless it is about the entry
// itself) and the log.
func (r *run) fail(ctx context.Context, f *Failure) {
	r.log.Error("provisioning failed", "step", f.Step, "class", string(f.Class), "err", f.Err, "advice", f.Class.Advice())
	if r.entry.State == "" {
		return // never read the entry
	}
	reason := f.Error() + " — " + f.Class.Advice()
	ctx = context.WithoutCancel(ctx)
	st, err := r.p.o.Store.State(ctx, r.pid)
	switch {
	case err != nil:
		r.log.Error("recording the failure", "err", err)
	case store.CanChange(st, store.StateFailed):
		if err := r.p.o.Store.Fail(ctx, r.pid, reason); err != nil {
			r.log.Error("recording the failure", "err", err)
		}
	default:
		if err := r.p.o.Store.Note(ctx, r.pid, reason); err != nil {
			r.log.Error("recording the failure", "err", err)
		}
	}
}

func (r *run) do(ctx context.Context, res *Result) error {
	s := r.p.o.Store
	pid, err := setupbin.ParsePID(r.j.PID)
	if err != nil {
		return fmt.Errorf("hello PID %q: %w", r.j.PID, ErrUnknownPID)
	}
	r.pid = pid
	r.entry, err = s.EntryOf(ctx, pid)
	if errors.Is(err, store.ErrNotFound) {
		return ErrUnknownPID
	}
	if err != nil {
		return &Failure{Class: ClassKiosk, Err: err}
	}
	if r.entry.Machine != "" && !strings.EqualFold(r.entry.Machine, r.j.UUID) {
		err := fmt.Errorf("hello from machine %s, but the entry was consumed by %s", r.j.UUID, r.entry.Machine)
		if nerr := s.Note(ctx, pid, "alarm: "+err.Error()); nerr != nil {
			r.log.Error("recording a note", "err", nerr)
		}
		r.entry.State = "" // do not fail the entry: the rightful machine may be provisioning
		return &Failure{Class: ClassCopiedStick, Err: err}
	}
	hello := fmt.Sprintf("hello from %s (retry %d)", r.j.Peer, r.j.Retry)
	switch r.entry.State {
	case store.StateAllocated:
		// The ledger has not been imported yet: the hello itself proves the
		// machine consumed the record, so record that (the ledger import
		// then finds it consumed by the same UUID, or reports a mismatch).
		if err := s.Consume(ctx, pid, store.Machine{UUID: r.j.UUID, ProvisioningState: "in"}, "consumed: inferred from a hello, ledger not yet imported"); err != nil {
			return &Failure{Class: ClassKiosk, Err: err}
		}
		fallthrough
	case store.StateConsumed, store.StateFailed:
		if err := s.Transition(ctx, pid, store.StateHelloSeen, store.Change{Reason: hello}); err != nil {
			return &Failure{Class: ClassKiosk, Err: err}
		}
		r.entry.State = store.StateHelloSeen
	case store.StateHelloSeen:
		// A kiosk restarted mid-way, or a hello folded by a previous run.
	case store.StateProvisioned:
		res.Outcome = OutcomeAlready
		r.log.Info("hello from an already provisioned machine", "peer", r.j.Peer.String(), "retry", r.j.Retry)
		return s.Note(ctx, pid, "hello from a provisioned machine: "+hello)
	default:
		err := fmt.Errorf("entry is %s", r.entry.State)
		r.entry.State = ""
		if nerr := s.Note(ctx, pid, "refused: "+hello+": "+err.Error()); nerr != nil {
			r.log.Error("recording a note", "err", nerr)
		}
		return &Failure{Class: ClassEntry, Err: err}
	}
	if err := r.load(ctx); err != nil {
		return err
	}
	res.Resumed = r.step
	if r.addr, err = r.p.o.Resolve(ctx, r.j); err != nil {
		return &Failure{Class: ClassUnreachable, Err: err}
	}
	if r.pr.Committing || r.pr.Committed {
		// The commit was sent: try the committed path first.
		if err := r.verify(ctx); err == nil {
			return r.finish(ctx)
		} else if r.pr.Committed {
			return Classify(StepVerify, err)
		}
	}
	if err := r.choosePlain(ctx); err != nil {
		return err
	}
	if err := r.connect(); err != nil {
		return &Failure{Class: ClassKiosk, Err: err}
	}
	for _, st := range []struct {
		n int
		f func(context.Context) error
	}{
		{StepReadState, r.readState},
		{StepTime, r.time},
		{StepKey, r.key},
		{StepCert, r.cert},
		{StepBind, r.bind},
		{StepEnableTLS, r.enableTLS},
		{StepAdmin, r.admin},
		{StepUsers, r.users},
		{StepMEBx, r.mebx},
		{StepNextPSK, r.nextPSK},
		{StepCommit, r.commit},
	} {
		if st.n <= r.step && st.n != StepReadState && st.n != StepTime {
			continue // confirmed before a restart (state and time are always redone)
		}
		if (st.n == StepUsers && len(r.p.o.Users) == 0) || (st.n == StepNextPSK && !r.p.o.NextPSK) {
			continue // optional, off
		}
		sctx, cancel := context.WithTimeout(ctx, r.p.o.StepTimeout)
		err := st.f(sctx)
		cancel()
		if errors.Is(err, errCommitted) {
			break
		}
		if err != nil && st.n == StepCommit && r.pr.Committing && Classify(st.n, err).Class == ClassUnreachable {
			// The commit was sent and the answer lost: the machine may have
			// committed and dropped TLS-PSK, and it sends no more hellos
			// then, so find out now rather than wait for one.
			r.log.Warn("commit answer lost, verifying over TLS", "err", err)
			break
		}
		if err != nil {
			r.act(fmt.Sprintf("provision.step %d %s", st.n, stepName(st.n)), "failed", err.Error())
			return Classify(st.n, err)
		}
		r.act(fmt.Sprintf("provision.step %d %s", st.n, stepName(st.n)), "ok", "")
		r.step = max(r.step, st.n)
		r.log.Debug("step done", "step", st.n, "name", stepName(st.n))
	}
	if r.p.o.VerifyDelay > 0 {
		select {
		case <-time.After(r.p.o.VerifyDelay):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if err := r.verify(ctx); err != nil {
		r.act("provision.verify", "failed", err.Error())
		return Classify(StepVerify, err)
	}
	r.act("provision.verify", "ok", "kiosk-signed certificate presented, new admin password accepted")
	return r.finish(ctx)
}

// errCommitted: step 1 found the machine post-provisioned by our own
// earlier commit.
var errCommitted = errors.New("already committed by this kiosk")

// load reads the saved progress or starts a new one (with a new password,
// saved before any device call uses it).
func (r *run) load(ctx context.Context) error {
	s := r.p.o.Store
	p, err := s.LoadProgress(ctx, r.pid)
	switch {
	case errors.Is(err, store.ErrNotFound):
		pw, err := setupbin.GenerateMEBxPassword(r.p.o.Rand, r.p.o.PasswordLength)
		if err != nil {
			return &Failure{Class: ClassKiosk, Err: fmt.Errorf("generating the admin password: %w", err)}
		}
		r.password, r.pr = pw, progress{UUID: r.j.UUID}
		r.userPw = nil
	case err == nil && len(p.Secret) == 0:
		return &Failure{Class: ClassKiosk, Err: fmt.Errorf("saved progress of %s has no password", r.pid)}
	case err != nil:
		return &Failure{Class: ClassKiosk, Err: err}
	default:
		if err := json.Unmarshal(p.Public, &r.pr); err != nil {
			return &Failure{Class: ClassKiosk, Err: fmt.Errorf("reading the saved progress of %s: %w", r.pid, err)}
		}
		r.step, r.attempts = p.Step, p.Attempts
		if r.password, r.userPw, err = decodeSecrets(p.Secret); err != nil {
			return &Failure{Class: ClassKiosk, Err: fmt.Errorf("reading the saved progress of %s: %w", r.pid, err)}
		}
		if !strings.EqualFold(r.pr.UUID, r.j.UUID) {
			return &Failure{Class: ClassCopiedStick, Err: fmt.Errorf("saved progress is for machine %s, hello from %s", r.pr.UUID, r.j.UUID)}
		}
	}
	if _, err := r.newUserPasswords(); err != nil {
		return &Failure{Class: ClassKiosk, Err: err}
	}
	if r.j.Peer.IsValid() {
		r.pr.Peer = r.j.Peer.String()
	}
	r.attempts++
	note := fmt.Sprintf("provisioning run %d started", r.attempts)
	if r.step > 0 {
		note += fmt.Sprintf(", resuming after step %d (%s)", r.step, stepName(r.step))
	}
	return r.save(ctx, note)
}

// save writes the progress with a note in the entry's history.
func (r *run) save(ctx context.Context, note string) error {
	b, err := json.Marshal(r.pr)
	if err != nil {
		return &Failure{Class: ClassKiosk, Err: err}
	}
	err = r.p.o.Store.SaveProgress(context.WithoutCancel(ctx), r.pid, store.Progress{Step: r.step, Public: b, Secret: encodeSecrets(r.password, r.userPw), Attempts: r.attempts}, note)
	if err != nil {
		return &Failure{Class: ClassKiosk, Err: err}
	}
	return nil
}

// choosePlain decides, per Options.Plain, whether this run talks plain
// HTTP to 16992, and notes it in the history.
func (r *run) choosePlain(ctx context.Context) error {
	switch r.p.o.Plain {
	case PlainNever:
		return nil
	case PlainFallback:
		d := net.Dialer{Timeout: r.p.o.StepTimeout}
		c, err := d.DialContext(ctx, "tcp", r.addr)
		if err == nil {
			c.Close()
			return nil
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			return nil // unreachable: the TLS-PSK attempt classifies it
		}
	}
	addr, err := r.plainAddr(ctx)
	if err != nil {
		return &Failure{Class: ClassUnreachable, Err: err}
	}
	r.plain = addr
	r.log.Warn("provisioning over plain HTTP on 16992: the Digest exchange is not encrypted", "addr", addr)
	if err := r.p.o.Store.Note(ctx, r.pid, "connecting over plain HTTP to "+addr+" (16993 refused the connection): not encrypted"); err != nil {
		return &Failure{Class: ClassKiosk, Err: err}
	}
	return nil
}

func (r *run) plainAddr(ctx context.Context) (string, error) {
	if r.p.o.ResolvePlain != nil {
		return r.p.o.ResolvePlain(ctx, r.j)
	}
	host, _, err := net.SplitHostPort(r.addr)
	if err != nil {
		return "", fmt.Errorf("address %q: %w", r.addr, err)
	}
	return net.JoinHostPort(host, "16992"), nil
}

// connect makes the TLS-PSK + Digest client (or, on the plain path, the
// plain HTTP + Digest client).
func (r *run) connect() error {
	if r.plain != "" {
		r.tr = &http.Transport{MaxIdleConnsPerHost: 1, DisableCompression: true}
		c, err := wsman.NewClient(wsman.Options{Endpoint: "http://" + r.plain + "/wsman", Password: wsman.Secret(r.entry.NewPassword.Reveal()),
			HTTPClient: &http.Client{Transport: r.tr}, PSKEncoding: r.p.o.PSKEncoding, Logger: r.log})
		if err != nil {
			return err
		}
		r.c = c
		return nil
	}
	pid, pps := r.pid.String(), r.entry.PPS.Reveal()
	form := r.p.o.KeyForm
	d := &tlspsk.Dialer{NetDialer: &net.Dialer{Timeout: r.p.o.StepTimeout}, Config: &tlspsk.Config{
		MaxVersion: r.p.o.TLSMaxVersion,
		Identity:   func(string) (string, []byte, error) { return pid, form.Key(pid, pps), nil },
	}}
	r.tr = &http.Transport{DialTLSContext: d.DialContext, MaxIdleConnsPerHost: 1, DisableCompression: true}
	c, err := wsman.NewClient(wsman.Options{Endpoint: "https://" + r.addr + "/wsman", Password: wsman.Secret(r.entry.NewPassword.Reveal()),
		HTTPClient: &http.Client{Transport: r.tr}, PSKEncoding: r.p.o.PSKEncoding, Logger: r.log})
	if err != nil {
		return err
	}
	r.c = c
	return nil
}

// Step 1.
func (r *run) readState(ctx context.Context) error {
	g, err := r.c.GetGeneralSettings(ctx)
	if err != nil {
		return fmt.Errorf("reading AMT_GeneralSettings: %w", err)
	}
	sc, err := r.c.GetSetupAndConfigurationService(ctx)
	if err != nil {
		return fmt.Errorf("reading AMT_SetupAndConfigurationService: %w", err)
	}
	switch sc.ProvisioningState {
	case wsman.StateIn:
	case wsman.StatePost:
		if r.pr.Committing {
			return errCommitted
		}
		return &Failure{Class: ClassAlreadyProvisioned, Step: StepReadState, Err: errors.New("ProvisioningState is post")}
	default:
		return &Failure{Class: ClassNotInSetup, Step: StepReadState, Err: fmt.Errorf("ProvisioningState is %v", sc.ProvisioningState)}
	}
	v, err := r.c.AMTVersion(ctx)
	if err != nil && !errors.Is(err, wsman.ErrNoVersion) {
		return fmt.Errorf("reading CIM_SoftwareIdentity: %w", err)
	}
	changed := r.pr.Realm != g.DigestRealm || r.pr.AMTVersion != v
	r.pr.Realm, r.pr.AMTVersion = g.DigestRealm, v
	if changed {
		if err := r.p.o.Store.UpdateMachine(ctx, store.Machine{UUID: r.j.UUID, AMTVersion: v, ProvisioningState: "in"}); err != nil {
			return &Failure{Class: ClassKiosk, Err: err}
		}
		return r.saveStep(ctx, StepReadState, fmt.Sprintf("step 1: in setup, AMT %s", v))
	}
	return nil
}

func (r *run) saveStep(ctx context.Context, step int, note string) error {
	r.step = max(r.step, step)
	return r.save(ctx, note)
}

// Step 2 (idempotent).
func (r *run) time(ctx context.Context) error { return syncTime(ctx, r.c) }

type keyPair struct {
	InstanceID string       `xml:"InstanceID"`
	DERKey     wsman.Base64 `xml:"DERKey"`
}

// Step 3: reuse a key pair the device has (ours, from a run whose reply
// was lost) before generating one.
func (r *run) key(ctx context.Context) error {
	if r.pr.Key == nil {
		kps, err := wsman.EnumerateAs[keyPair](ctx, r.c, wsman.URIPublicPrivateKeyPair, nil)
		if err != nil {
			return fmt.Errorf("enumerating AMT_PublicPrivateKeyPair: %w", err)
		}
		note := "step 3: reused the device's key pair"
		if n := len(kps); n > 0 && kps[n-1].InstanceID != "" {
			r.pr.Key = &wsman.EndpointReference{ResourceURI: wsman.URIPublicPrivateKeyPair, Selectors: wsman.SelectorSet{{Name: "InstanceID", Value: kps[n-1].InstanceID}}}
		} else {
			ref, err := r.c.GenerateKeyPair(ctx, 2048)
			if err != nil {
				return fmt.Errorf("GenerateKeyPair: %w", err)
			}
			r.pr.Key, note = ref, "step 3: device generated an RSA 2048 key pair"
		}
		return r.saveStep(ctx, StepKey, note)
	}
	return nil
}

// devicePublicKey reads the public half of the device key.
func (r *run) devicePublicKey(ctx context.Context) (*rsa.PublicKey, error) {
	return devicePublicKey(ctx, r.c, r.pr.Key)
}

type deviceCert struct {
	InstanceID      string       `xml:"InstanceID"`
	X509Certificate wsman.Base64 `xml:"X509Certificate"`
}

// Step 4: reuse a certificate from this CA for this key and machine
// already on the device, else sign and add one.
func (r *run) cert(ctx context.Context) error {
	pub, err := r.devicePublicKey(ctx)
	if err != nil {
		return err
	}
	certs, err := wsman.EnumerateAs[deviceCert](ctx, r.c, wsman.URIPublicKeyCertificate, nil)
	if err != nil {
		return fmt.Errorf("enumerating AMT_PublicKeyCertificate: %w", err)
	}
	for _, dc := range certs {
		c, err := r.p.o.CA.Verify(dc.X509Certificate, r.j.UUID)
		if err != nil || !pub.Equal(c.PublicKey) {
			continue
		}
		r.pr.Cert = &wsman.EndpointReference{ResourceURI: wsman.URIPublicKeyCertificate, Selectors: wsman.SelectorSet{{Name: "InstanceID", Value: dc.InstanceID}}}
		r.pr.CertDER = dc.X509Certificate
		return r.saveStep(ctx, StepCert, "step 4: reused the kiosk-signed certificate on the device, serial "+c.SerialNumber.Text(16))
	}
	der, err := r.p.o.CA.Sign(pub, ca.Device{UUID: r.j.UUID})
	if err != nil {
		return &Failure{Class: ClassKiosk, Step: StepCert, Err: err}
	}
	ref, err := r.c.AddCertificate(ctx, der)
	if err != nil {
		return fmt.Errorf("AddCertificate: %w", err)
	}
	r.pr.Cert, r.pr.CertDER = ref, der
	c, _ := x509.ParseCertificate(der)
	return r.saveStep(ctx, StepCert, "step 4: added a kiosk-signed certificate, serial "+c.SerialNumber.Text(16))
}

// Step 5.
func (r *run) bind(ctx context.Context) error {
	existed, err := bindCert(ctx, r.c, r.pr.Cert)
	if err != nil {
		return err
	}
	note := "step 5: certificate bound to TLS"
	if existed {
		note = "step 5: TLS credential context exists already"
	}
	r.pr.Bound = true
	return r.saveStep(ctx, StepBind, note)
}

// Step 6 (read, then write only if needed).
func (r *run) enableTLS(ctx context.Context) error { return enableTLS(ctx, r.c) }

// Step 7 (idempotent: the same user and password every time).
func (r *run) admin(ctx context.Context) error {
	if err := r.c.SetAdminAclEntryEx(ctx, "admin", r.realm(), wsman.Secret(r.password.Reveal())); err != nil {
		return fmt.Errorf("SetAdminAclEntryEx: %w", err)
	}
	return nil
}

// Step 9 (idempotent). The MEBx password becomes the generated password
// too: the record's password is on a plaintext stick, so it must not keep
// opening the MEBx; one per-machine secret, stored encrypted, covers both.
func (r *run) mebx(ctx context.Context) error { return setMEBx(ctx, r.c, r.password) }

// Step 11: mark the commit as sent before sending it.
func (r *run) commit(ctx context.Context) error {
	r.pr.Committing = true
	last := StepMEBx // the last step before the commit that ran
	if r.p.o.NextPSK {
		last = StepNextPSK
	}
	if err := r.saveStep(ctx, last, r.commitNote()); err != nil {
		return err
	}
	if err := r.c.CommitChanges(ctx); err != nil {
		if errors.Is(err, wsman.StatusFlashWriteLimitExceeded) || errors.Is(err, wsman.StatusDataMissing) || errors.Is(err, wsman.StatusInternalError) {
			// The device answered: nothing was committed.
			r.pr.Committing = false
			if serr := r.save(ctx, ""); serr != nil {
				return serr
			}
		}
		return fmt.Errorf("CommitChanges: %w", err)
	}
	r.pr.Committing, r.pr.Committed = false, true
	return r.saveStep(ctx, StepCommit, "step 11: committed")
}

// commitNote says what steps 6–10 did, for the history.
func (r *run) commitNote() string {
	s8, s10 := "step 8 skipped", "step 10 skipped"
	if len(r.p.o.Users) > 0 {
		s8 = fmt.Sprintf("%d users in the ACL", len(r.p.o.Users))
	}
	if r.p.o.NextPSK && r.pr.NextPID != "" {
		s10 = "next PID " + r.pr.NextPID
	}
	return fmt.Sprintf("steps 6–10: TLS enabled, admin ACL and MEBx password set, %s, %s; committing", s8, s10)
}

// verify reconnects with ordinary TLS trusting only the kiosk CA, checks
// the certificate is the one this run signed for this machine, and logs in
// with the new admin password.
func (r *run) verify(ctx context.Context) error {
	o := r.p.o
	return reconnectTLS(ctx, tlsCheck{CA: o.CA, UUID: r.j.UUID, Addr: r.addr, Password: r.password, Want: r.pr.CertDER,
		VerifyTimeout: o.VerifyTimeout, StepTimeout: o.StepTimeout, Log: r.log}, r.readAudit)
}

// readAudit is step 12, best effort: the provisioning audit record as the
// device tells it (IPS_ProvisioningAuditRecord on 7.0+, else the older
// method), for the history.
func (r *run) readAudit(ctx context.Context, c *wsman.Client) {
	ctx, cancel := context.WithTimeout(ctx, r.p.o.StepTimeout)
	defer cancel()
	var a *wsman.ProvisioningAuditRecord
	if as, err := c.ProvisioningAuditRecords(ctx); err == nil && len(as) > 0 {
		a = &as[len(as)-1]
	} else if one, err2 := c.GetProvisioningAuditRecord(ctx); err2 == nil {
		a = one
	} else {
		r.log.Debug("step 12: no audit record", "err", err2)
		r.audit = "step 12: the device gave no provisioning audit record"
		return
	}
	r.audit = fmt.Sprintf("step 12: audit record: TLS mode %d, provisioning server %s %s, time valid %v",
		a.ProvisioningTLSMode, a.ProvServerIP, a.ProvServerFQDN, a.IsTimeValid)
}

// finish records the machine as provisioned.
func (r *run) finish(ctx context.Context) error {
	s := r.p.o.Store
	if err := s.UpdateMachine(ctx, store.Machine{UUID: r.j.UUID, AMTVersion: r.pr.AMTVersion, ControlMode: "acm", ProvisioningState: "post"}); err != nil {
		return &Failure{Class: ClassKiosk, Err: err}
	}
	serial := ""
	if c, err := x509.ParseCertificate(r.pr.CertDER); err == nil {
		serial = c.SerialNumber.Text(16)
	}
	if r.audit != "" {
		if err := s.Note(ctx, r.pid, r.audit); err != nil {
			return &Failure{Class: ClassKiosk, Err: err}
		}
	}
	if r.pr.NextPID != "" {
		if next, err := setupbin.ParsePID(r.pr.NextPID); err == nil {
			note := "the machine " + r.j.UUID + " committed holding this PID/PPS as its next one (step 10): it says hello with it after a partial unprovision"
			if err := s.Note(ctx, next, note); err != nil {
				return &Failure{Class: ClassKiosk, Err: err}
			}
		}
	}
	err := s.Transition(ctx, r.pid, store.StateProvisioned, store.Change{Reason: "verified over TLS: kiosk-signed certificate serial " + serial + ", new admin password accepted"})
	if err != nil {
		return &Failure{Class: ClassKiosk, Err: err}
	}
	return nil
}

// Resume submits a job for every entry whose provisioning was under way
// (hello-seen with saved progress) when the kiosk stopped: a machine that
// committed sends no more hellos, so the kiosk must come back to it by
// itself. It returns how many it submitted.
func (p *Provisioner) Resume(ctx context.Context) (int, error) {
	pids, err := p.o.Store.InProgress(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, pid := range pids {
		sp, err := p.o.Store.LoadProgress(ctx, pid)
		if err != nil {
			return n, err
		}
		var pr progress
		if err := json.Unmarshal(sp.Public, &pr); err != nil {
			p.log.Error("unreadable saved progress, not resumed", "pid", pid.String(), "err", err)
			continue
		}
		peer, _ := netip.ParseAddrPort(pr.Peer)
		if p.Submit(Job{PID: pid.String(), UUID: pr.UUID, Peer: peer}) == "queued" {
			n++
		}
	}
	if n > 0 {
		p.log.Info("resuming interrupted provisioning", "machines", n)
	}
	return n, nil
}

// AdminPassword returns the admin password the kiosk generated for the
// machine holding pid (for the technician, the web console, tests).
func AdminPassword(ctx context.Context, s *store.Store, pid setupbin.PID) (setupbin.Password, error) {
	p, err := s.LoadProgress(ctx, pid)
	if err != nil {
		return "", err
	}
	pw, _, err := decodeSecrets(p.Secret)
	if err != nil {
		return "", fmt.Errorf("progress of %s: %w", pid, err)
	}
	return pw, nil
}
