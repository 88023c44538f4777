// Package kiosk is the offline Setup and Configuration Server: it wires the
// hello listener (kiosk/hello, with a per-source flood limit), DNS and the
// optional DHCP server (kiosk/netsvc; DHCP leases are kept in the store),
// the kiosk CA (kiosk/ca) and the provisioning workflow (kiosk/provision,
// which writes the audit log) around one store (kiosk/store). Ledger
// reconciliation is kiosk/reconcile. See ../../shared/DESIGN.md §1 and
// specs/amt-psk.md.
//
// Every hello goes to the store's hello log with what became of it:
// "queued" (a worker will provision the machine), "folded" (the machine is
// being handled; its retry count is kept), "dropped" (queue full; the
// machine says hello again), "malformed: ..." or "flood: ..." (one row per
// flooding source per 10 s). A hello whose PID is not in the pool gets a
// second row, "unknown-pid", once a worker has looked it up, and a warning
// in the log.
//
// Version-3 (PKI) hellos go to the PKI provisioner when Options.PKI is set
// (specs/pki.md): "queued", "folded", "dropped", or "refused: ..."
// when the kiosk can tell without connecting that the machine will refuse
// the site's chain, and "refused again: ..." for the later hellos of a
// refused machine (not tried again until its hellos start over or list
// other root hashes). Without Options.PKI they are logged as
// "pki: not configured".
//
// Entry state changes (hello-seen, provisioned, failed) and step outcomes
// go to the entry's history.
//
// An entry still "allocated" (its stick's ledger not imported yet) is
// treated as consumed by the machine that says hello with its PID: the
// hello proves the record was applied. The kiosk records the consumption
// with the hello's UUID and says so in the reason; a later ledger import
// finds it consumed by that machine or reports the mismatch.
package kiosk

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	wire "github.com/provstick/provstick/internal/hello"
	"github.com/provstick/provstick/kiosk/ca"
	khello "github.com/provstick/provstick/kiosk/hello"
	"github.com/provstick/provstick/kiosk/netsvc"
	"github.com/provstick/provstick/kiosk/provision"
	"github.com/provstick/provstick/kiosk/store"
	"github.com/provstick/provstick/setupbin"
)

// Options configure a Kiosk.
type Options struct {
	Store  *store.Store // required, unlocked
	Logger *slog.Logger // nil discards

	// HelloListener is where hellos arrive (TCP, normally :9971).
	// Required.
	HelloListener net.Listener
	// HelloReadTimeout and MaxHelloConnections: see kiosk/hello.
	HelloReadTimeout    time.Duration
	MaxHelloConnections int
	// HelloFloodRate and HelloFloodBurst limit hellos per source address
	// (see kiosk/hello: 0 → 100/s, burst 200; a negative rate turns the
	// limit off). A flooding source gets one "flood: ..." row in the hello
	// log per 10 s, not one per connection.
	HelloFloodRate  float64
	HelloFloodBurst int
	// HelloAcceptors is how many goroutines accept hellos; 0 → 2.
	HelloAcceptors int

	// DNS, when not nil, is served on DNSConn (UDP) and DNSListener (TCP,
	// optional).
	DNS         *netsvc.DNSOptions
	DNSConn     net.PacketConn
	DNSListener net.Listener

	// DHCP, when not nil, serves DHCP on DHCP.Interface (Linux). Its
	// Leases default to the store. It probes first and, when another
	// DHCP server answers, Serve fails with netsvc.ErrOtherServer.
	DHCP *netsvc.DHCPOptions

	// Provision configures the workflow; Store, CA and Logger are filled
	// in. Its OnResult is still called.
	Provision provision.Options

	// HelloFlush is how often the hello log is written; 0 → 100 ms.
	HelloFlush time.Duration

	// PKI, when not nil, provisions the machines that send version-3
	// hellos to admin control mode (specs/pki.md). Site and Lookup are
	// required; CA is the kiosk CA and Logger the kiosk's. Nil: PKI hellos
	// are logged and counted only.
	PKI *provision.PKIOptions
	// PKIQueue sizes the PKI queue. Its OnResult is still called, after
	// the kiosk kept the admin password (whenever AdminSetup succeeded)
	// and wrote the audit record; also for a hello the kiosk refused
	// without connecting (Outcome failed, class ClassPKIUntrustedRoot).
	PKIQueue provision.PKIQueueOptions
}

// Kiosk is a running SCS.
type Kiosk struct {
	o        Options
	log      *slog.Logger
	ca       *ca.CA
	listener *khello.Listener
	prov     *provision.Provisioner
	pki      *pkiPath // nil without Options.PKI
	dns      *netsvc.DNS
	dhcp     *netsvc.DHCP
	hellos   chan store.HelloRecord

	written, dropped atomic.Uint64 // hello log rows
}

// New opens (or creates) the kiosk CA and builds the services.
func New(ctx context.Context, o Options) (*Kiosk, error) {
	if o.Store == nil || !o.Store.Unlocked() {
		return nil, errors.New("kiosk: needs an unlocked store")
	}
	if o.HelloListener == nil {
		return nil, errors.New("kiosk: no hello listener")
	}
	if o.HelloFlush <= 0 {
		o.HelloFlush = 100 * time.Millisecond
	}
	k := &Kiosk{o: o, log: o.Logger, hellos: make(chan store.HelloRecord, 65536)}
	if k.log == nil {
		k.log = slog.New(slog.DiscardHandler)
	}
	c, err := ca.Open(ctx, o.Store, ca.Options{NotFound: store.ErrNotFound})
	if err != nil {
		return nil, err
	}
	k.ca = c
	po := o.Provision
	po.Store, po.CA = o.Store, c
	if po.Logger == nil {
		po.Logger = k.log
	}
	user := po.OnResult
	po.OnResult = func(r provision.Result) {
		if r.Outcome == provision.OutcomeUnknownPID {
			k.record(store.HelloRecord{At: time.Now(), Peer: r.Job.Peer.String(), UUID: r.Job.UUID, PID: r.Job.PID,
				Version: 2, Retry: int(r.Job.Retry), Outcome: "unknown-pid: PID not in this pool"})
		}
		if user != nil {
			user(r)
		}
	}
	// One connection per worker, the hello log and the listener's lookups.
	o.Store.KeepConnections(max(po.Concurrency, 16) + 4)
	if k.prov, err = provision.New(po); err != nil {
		return nil, err
	}
	if o.PKI != nil {
		if k.pki, err = k.newPKI(*o.PKI, o.PKIQueue); err != nil {
			return nil, err
		}
	}
	if k.listener, err = khello.New(khello.Options{Handler: k.onHello, ReadTimeout: o.HelloReadTimeout,
		MaxConnections: o.MaxHelloConnections, Logger: k.log, FloodRate: o.HelloFloodRate, FloodBurst: o.HelloFloodBurst,
		Acceptors: o.HelloAcceptors}); err != nil {
		return nil, err
	}
	if o.DNS != nil {
		do := *o.DNS
		if do.Logger == nil {
			do.Logger = k.log
		}
		if k.dns, err = netsvc.NewDNS(do); err != nil {
			return nil, err
		}
	}
	if o.DHCP != nil {
		do := *o.DHCP
		if do.Logger == nil {
			do.Logger = k.log
		}
		if do.Leases == nil {
			do.Leases = storeLeases{o.Store}
		}
		if k.dhcp, err = netsvc.NewDHCP(do); err != nil {
			return nil, err
		}
	}
	return k, nil
}

// storeLeases keeps the DHCP leases in the store.
type storeLeases struct{ s *store.Store }

func (sl storeLeases) Leases(ctx context.Context) ([]netsvc.Lease, error) {
	ls, err := sl.s.DHCPLeases(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]netsvc.Lease, 0, len(ls))
	for _, l := range ls {
		ip, err := netip.ParseAddr(l.IP)
		if err != nil {
			continue // not ours to fix; the address is handed out again
		}
		out = append(out, netsvc.Lease{MAC: l.MAC, IP: ip, Hostname: l.Hostname, Expires: l.Expires})
	}
	return out, nil
}

func (sl storeLeases) SaveLease(ctx context.Context, l netsvc.Lease) error {
	return sl.s.SaveDHCPLease(ctx, store.DHCPLease{MAC: l.MAC, IP: l.IP.String(), Hostname: l.Hostname, Expires: l.Expires})
}

// DHCP is the DHCP server, nil when off.
func (k *Kiosk) DHCP() *netsvc.DHCP { return k.dhcp }

// CA is the kiosk CA.
func (k *Kiosk) CA() *ca.CA { return k.ca }

// Provisioner is the workflow (to submit a job by hand, e.g. a retry).
func (k *Kiosk) Provisioner() *provision.Provisioner { return k.prov }

// HelloStats are the listener's counters.
func (k *Kiosk) HelloStats() khello.Stats { return k.listener.Stats() }

// onHello turns a message into a job and a hello log row.
func (k *Kiosk) onHello(_ context.Context, r khello.Received) {
	rec := store.HelloRecord{At: r.At, Peer: r.Peer.String()}
	switch {
	case errors.Is(r.Err, khello.ErrFlood):
		rec.Outcome = "flood: " + r.Err.Error()
	case r.Err != nil:
		rec.Outcome = "malformed: " + r.Err.Error()
	default:
		h := r.Hello
		rec.UUID, rec.PID, rec.Version, rec.Retry = h.UUID.String(), h.PID, int(h.Version), int(h.RetryCount)
		if h.Version != 2 {
			rec.Outcome = k.onPKIHello(r)
			break
		}
		rec.Outcome = k.prov.Submit(provision.Job{PID: h.PID, UUID: rec.UUID, Peer: r.Peer, Retry: h.RetryCount})
	}
	k.record(rec)
}

// record queues a row for the hello log. When the log falls behind by
// 65,536 rows the caller (a listener connection) waits up to a second,
// which slows accepting down; after that the row is dropped and counted.
func (k *Kiosk) record(rec store.HelloRecord) {
	select {
	case k.hellos <- rec:
		return
	default:
	}
	t := time.NewTimer(time.Second)
	defer t.Stop()
	select {
	case k.hellos <- rec:
	case <-t.C:
		k.dropped.Add(1)
		k.log.Warn("hello log behind, row dropped", "peer", rec.Peer, "pid", rec.PID)
	}
}

// HelloLogStats counts the hello log's rows written and dropped.
func (k *Kiosk) HelloLogStats() (written, dropped uint64) { return k.written.Load(), k.dropped.Load() }

// writeHellos batches the hello log until ctx ends, then flushes.
func (k *Kiosk) writeHellos(ctx context.Context) {
	t := time.NewTicker(k.o.HelloFlush)
	defer t.Stop()
	var batch []store.HelloRecord
	flush := func() {
		if len(batch) == 0 {
			return
		}
		if err := k.o.Store.RecordHellos(context.WithoutCancel(ctx), batch); err != nil {
			k.dropped.Add(uint64(len(batch)))
			k.log.Error("writing the hello log", "rows", len(batch), "err", err)
		} else {
			k.written.Add(uint64(len(batch)))
		}
		batch = batch[:0]
	}
	for {
		select {
		case rec := <-k.hellos:
			batch = append(batch, rec)
			if len(batch) >= 4096 {
				flush()
			}
		case <-t.C:
			flush()
		case <-ctx.Done():
			for {
				select {
				case rec := <-k.hellos:
					batch = append(batch, rec)
				default:
					flush()
					return
				}
			}
		}
	}
}

// Serve runs every service until ctx ends; it returns nil then, or the
// first service's error (after stopping the others).
func (k *Kiosk) Serve(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, 4)
	svc := func(name string, f func(context.Context) error) {
		wg.Go(func() {
			if err := f(ctx); err != nil {
				errc <- fmt.Errorf("%s: %w", name, err)
				cancel()
			}
		})
	}
	svc("provisioner", k.prov.Run)
	if k.pki != nil {
		svc("PKI provisioner", k.pki.p.Run)
	}
	if n, err := k.prov.Resume(ctx); err != nil {
		k.log.Error("resuming interrupted provisioning", "err", err, "resumed", n)
	}
	svc("hello listener", func(ctx context.Context) error { return k.listener.Serve(ctx, k.o.HelloListener) })
	if k.dns != nil {
		svc("dns", func(ctx context.Context) error { return k.dns.Serve(ctx, k.o.DNSConn, k.o.DNSListener) })
	}
	if k.dhcp != nil {
		svc("dhcp", k.dhcp.Serve)
	}
	k.log.Info("kiosk serving", "hello", k.o.HelloListener.Addr().String(), "dns", k.dns != nil, "dhcp", k.dhcp != nil, "pki", k.pki != nil)
	// The hello log outlives the listener so that its last rows are kept.
	hctx, hcancel := context.WithCancel(context.WithoutCancel(ctx))
	hw := make(chan struct{})
	go func() { k.writeHellos(hctx); close(hw) }()
	wg.Wait()
	hcancel()
	<-hw
	select {
	case err := <-errc:
		return err
	default:
		return nil
	}
}

// The PKI path: version-3 hellos to provision.PKIProvisioner, its results
// kept in the store.

// pkiPath is the kiosk's PKI provisioner with what it remembers of
// refused machines.
type pkiPath struct {
	p    *provision.PKIProvisioner
	root [32]byte // the site root's SHA-256
	user func(provision.PKIResult)
	now  func() time.Time

	mu      sync.Mutex
	refused map[string]pkiRefusal // by upper-case UUID
	busy    map[string]bool       // submitted, result not handled yet
}

// pkiRefusal is a machine that refused (or would refuse) the site's chain
// for a reason another hello does not change. The kiosk does not try it
// again until its hellos carry other root hashes or start over: a retry
// count below the highest seen, at least pkiRestartAfter after the
// refusal (hellos queued in the listener's backlog arrive out of order;
// a machine needs longer than that to consume a new record or to be
// power-cycled into a new hello sequence).
type pkiRefusal struct {
	retry  uint32   // highest retry count seen
	hashes [32]byte // digest of the hello's root hash list
	class  provision.Class
	at     time.Time
}

// maxRefused bounds the refusal memory (one row per machine of a site).
const maxRefused = 65536

// pkiRestartAfter: see pkiRefusal.
const pkiRestartAfter = 30 * time.Second

// pkiFinal are the classes a repeated hello from the same machine does not
// change: the machine's trust list, clock or suffix, or the kiosk's
// certificate, must change first.
func pkiFinal(c provision.Class) bool {
	switch c {
	case provision.ClassPKIUntrustedRoot, provision.ClassPKIExpired, provision.ClassPKINoMark,
		provision.ClassPKIDomain, provision.ClassPKIRefused:
		return true
	}
	return false
}

func (k *Kiosk) newPKI(po provision.PKIOptions, qo provision.PKIQueueOptions) (*pkiPath, error) {
	if po.Site == nil {
		return nil, errors.New("kiosk: PKI provisioning needs the site PKI")
	}
	po.CA = k.ca
	if po.Logger == nil {
		po.Logger = k.log
	}
	// The password is sealed in the store before AdminSetup is sent, so
	// that a kiosk killed mid-run never leaves a machine in admin control
	// mode with a password nobody has (the run's end saves it again with
	// its outcome).
	if po.BeforeAdminSetup == nil {
		po.BeforeAdminSetup = func(_ context.Context, uuid string, pw setupbin.Password) error {
			return k.savePKIAdmin(store.PKIAdmin{UUID: uuid, Password: pw, Detail: "AdminSetup sent; the run's outcome is not known yet"})
		}
	}
	p, err := provision.NewPKI(po)
	if err != nil {
		return nil, fmt.Errorf("kiosk: %w", err)
	}
	pp := &pkiPath{p: p, root: po.Site.RootHash(), user: qo.OnResult, now: time.Now,
		refused: map[string]pkiRefusal{}, busy: map[string]bool{}}
	qo.OnResult = k.onPKIResult
	p.SetQueue(qo)
	return pp, nil
}

// PKIProvisioner is the PKI workflow, nil without Options.PKI.
func (k *Kiosk) PKIProvisioner() *provision.PKIProvisioner {
	if k.pki == nil {
		return nil
	}
	return k.pki.p
}

// hashesDigest identifies a hello's root hash list.
func hashesDigest(hs []wire.RootHash) [32]byte {
	h := sha256.New()
	for _, r := range hs {
		h.Write([]byte{byte(r.Type), byte(len(r.Hash))})
		h.Write(r.Hash)
	}
	var d [32]byte
	h.Sum(d[:0])
	return d
}

// onPKIHello submits a version-3 hello and returns its hello log outcome.
func (k *Kiosk) onPKIHello(r khello.Received) string {
	if k.pki == nil {
		return "pki: not configured"
	}
	h := r.Hello
	j := provision.PKIJob{UUID: h.UUID.String(), Peer: r.Peer, Retry: h.RetryCount, RootHashes: h.RootHashes}
	key := strings.ToUpper(j.UUID)
	pp := k.pki
	pp.mu.Lock()
	if pp.busy[key] {
		pp.mu.Unlock()
		return "folded"
	}
	if rf, ok := pp.refused[key]; ok {
		restart := h.RetryCount < rf.retry && pp.now().Sub(rf.at) >= pkiRestartAfter
		if !restart && rf.hashes == hashesDigest(h.RootHashes) {
			rf.retry = max(rf.retry, h.RetryCount)
			pp.refused[key] = rf
			pp.mu.Unlock()
			return "refused again: " + string(rf.class) + " (not tried again until the machine's hellos start over)"
		}
		delete(pp.refused, key)
	}
	// The hello lists the roots the machine trusts: without the site root
	// it refuses the chain (specs/pki.md §3), so the kiosk does not connect.
	if len(h.RootHashes) > 0 && !containsHash(h.RootHashes, pp.root) {
		pp.rememberLocked(j, provision.ClassPKIUntrustedRoot)
		pp.mu.Unlock()
		f := &provision.Failure{Class: provision.ClassPKIUntrustedRoot,
			Err: fmt.Errorf("the hello lists %d trusted root hashes, none the site root's SHA-256 %x", len(h.RootHashes), pp.root[:8])}
		k.log.Warn("PKI hello from a machine that does not trust the site root; not connecting", "uuid", j.UUID, "peer", j.Peer.String(),
			"retry", j.Retry, "advice", provision.PKIAdvice(f.Class))
		k.pkiReport(provision.PKIResult{Job: j, Outcome: provision.OutcomeFailed, Failure: f}, "")
		return "refused: " + string(f.Class)
	}
	pp.busy[key] = true
	pp.mu.Unlock()
	out := pp.p.Submit(j)
	if out != "queued" {
		pp.mu.Lock()
		delete(pp.busy, key)
		pp.mu.Unlock()
	}
	return out
}

func containsHash(hs []wire.RootHash, want [32]byte) bool {
	for _, h := range hs {
		if h.Type == wire.HashSHA256 && bytes.Equal(h.Hash, want[:]) {
			return true
		}
	}
	return false
}

// rememberLocked records a refusal; pp.mu is held.
func (pp *pkiPath) rememberLocked(j provision.PKIJob, c provision.Class) {
	if len(pp.refused) >= maxRefused {
		for u := range pp.refused { // forget one: that machine is tried once more
			delete(pp.refused, u)
			break
		}
	}
	pp.refused[strings.ToUpper(j.UUID)] = pkiRefusal{retry: j.Retry, hashes: hashesDigest(j.RootHashes), class: c, at: pp.now()}
}

// onPKIResult keeps what a PKI run produced: the admin password whenever
// AdminSetup succeeded (the machine is then in admin control mode with it,
// even if a later step failed), an audit record, the refusal memory.
func (k *Kiosk) onPKIResult(r provision.PKIResult) {
	note := ""
	if r.AdminSet {
		a := store.PKIAdmin{UUID: r.Job.UUID, Password: r.AdminPassword, AdminSet: true, Provisioned: r.Outcome == provision.OutcomeProvisioned}
		if r.Failure != nil {
			a.Detail = "AdminSetup done, then: " + r.Failure.Error()
		}
		note = "admin control mode set (admin password kept), then "
		if err := k.savePKIAdmin(a); err != nil {
			// The machine holds a password the kiosk does not know: say so loudly.
			k.log.Error("PKI: could not keep the admin password of a machine in admin control mode; unprovision it in the MEBx and let it say hello again",
				"uuid", r.Job.UUID, "err", err)
			note = "admin control mode set, admin password NOT kept (store error), then "
		}
	}
	pp := k.pki
	pp.mu.Lock()
	if r.Failure != nil && pkiFinal(r.Failure.Class) && !r.AdminSet {
		pp.rememberLocked(r.Job, r.Failure.Class)
	}
	delete(pp.busy, strings.ToUpper(r.Job.UUID))
	pp.mu.Unlock()
	if r.Outcome == provision.OutcomeUnknownMachine {
		k.record(store.HelloRecord{At: time.Now(), Peer: r.Job.Peer.String(), UUID: r.Job.UUID, Version: 3, Retry: int(r.Job.Retry),
			Outcome: "unknown-machine: no stick record known for this UUID"})
	}
	k.pkiReport(r, note)
}

// savePKIAdmin keeps the password, trying three times: losing it leaves a
// machine in admin control mode that nobody can log in to.
func (k *Kiosk) savePKIAdmin(a store.PKIAdmin) error {
	var err error
	for i, wait := range []time.Duration{0, 200 * time.Millisecond, 2 * time.Second} {
		time.Sleep(wait)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err = k.o.Store.SavePKIAdmin(ctx, a)
		cancel()
		if err == nil || errors.Is(err, store.ErrInvalid) || errors.Is(err, store.ErrLocked) {
			return err
		}
		k.log.Warn("PKI: keeping the admin password failed, trying again", "uuid", a.UUID, "attempt", i+1, "err", err)
	}
	return err
}

// pkiReport writes the audit record of a PKI result (note, when the
// run failed, says what it did before) and calls the caller's OnResult.
func (k *Kiosk) pkiReport(r provision.PKIResult, note string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ar := store.AuditRecord{Actor: "kiosk", Action: "provision.pki", UUID: r.Job.UUID, Outcome: "ok",
		Detail: fmt.Sprintf("admin control mode, kiosk-signed certificate, %v", r.Duration.Round(time.Millisecond))}
	if r.Failure != nil {
		ar.Outcome = "failed: " + string(r.Failure.Class)
		ar.Detail = note + r.Failure.Error() + "; next: " + provision.PKIAdvice(r.Failure.Class)
	}
	if err := k.o.Store.Audit(ctx, ar); err != nil {
		k.log.Error("writing the audit log", "uuid", r.Job.UUID, "err", err)
	}
	if k.pki.user != nil {
		k.pki.user(r)
	}
}
