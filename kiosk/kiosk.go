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
// machine says hello again), "pki" (logged; the PKI path comes later),
// "malformed: ..." or "flood: ..." (one row per flooding source per 10 s). A hello whose PID is not in the pool gets a second row,
// "unknown-pid", once a worker has looked it up, and a warning in the log.
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
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/provstick/provstick/kiosk/ca"
	khello "github.com/provstick/provstick/kiosk/hello"
	"github.com/provstick/provstick/kiosk/netsvc"
	"github.com/provstick/provstick/kiosk/provision"
	"github.com/provstick/provstick/kiosk/store"
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
}

// Kiosk is a running SCS.
type Kiosk struct {
	o        Options
	log      *slog.Logger
	ca       *ca.CA
	listener *khello.Listener
	prov     *provision.Provisioner
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
			rec.Outcome = "pki: not implemented yet"
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
	k.log.Info("kiosk serving", "hello", k.o.HelloListener.Addr().String(), "dns", k.dns != nil, "dhcp", k.dhcp != nil)
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
