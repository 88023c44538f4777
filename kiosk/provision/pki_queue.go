package provision

import (
	"context"
	"strings"
	"sync"

	"github.com/provstick/provstick/setupbin"
)

// The PKI provisioner's queue, shaped like Provisioner's so that the kiosk
// wires both the same way: Submit from the hello listener, Run as a
// service. Hellos for a machine already being handled are folded by UUID.

// PKIQueueOptions size the queue; zero values as in Options.
type PKIQueueOptions struct {
	Concurrency int // 0 → 16
	Queue       int // 0 → 4096
	// OnResult, if set, is called after each run (store, web, metrics):
	// it receives the generated admin password to keep, sealed.
	OnResult func(PKIResult)
}

type pkiQueue struct {
	once     sync.Once
	o        PKIQueueOptions
	ch       chan PKIJob
	mu       sync.Mutex
	inflight map[string]int // by upper-case UUID: hellos folded
}

func (p *PKIProvisioner) queue() *pkiQueue {
	p.q.once.Do(func() {
		o := &p.q.o
		if o.Concurrency <= 0 {
			o.Concurrency = 16
		}
		if o.Queue <= 0 {
			o.Queue = 4096
		}
		p.q.ch = make(chan PKIJob, o.Queue)
		p.q.inflight = map[string]int{}
	})
	return &p.q
}

// SetQueue sets the queue's options; call it before Submit and Run.
func (p *PKIProvisioner) SetQueue(o PKIQueueOptions) { p.q.o = o }

// Submit queues a job from a version-3 hello. It returns "queued",
// "folded" (the machine is being handled) or "dropped" (queue full).
func (p *PKIProvisioner) Submit(j PKIJob) string {
	q := p.queue()
	key := strings.ToUpper(j.UUID)
	q.mu.Lock()
	if _, ok := q.inflight[key]; ok {
		q.inflight[key]++
		q.mu.Unlock()
		return "folded"
	}
	q.inflight[key] = 0
	q.mu.Unlock()
	select {
	case q.ch <- j:
		return "queued"
	default:
		q.mu.Lock()
		delete(q.inflight, key)
		q.mu.Unlock()
		p.log.Warn("PKI provisioning queue full, hello dropped", "uuid", j.UUID)
		return "dropped"
	}
}

// Run works the queue until ctx ends.
func (p *PKIProvisioner) Run(ctx context.Context) error {
	q := p.queue()
	var wg sync.WaitGroup
	for range q.o.Concurrency {
		wg.Go(func() {
			for {
				select {
				case <-ctx.Done():
					return
				case j := <-q.ch:
					res := p.Provision(ctx, j)
					q.mu.Lock()
					folded := q.inflight[strings.ToUpper(j.UUID)]
					delete(q.inflight, strings.ToUpper(j.UUID))
					q.mu.Unlock()
					if folded > 0 {
						p.log.Debug("PKI hellos folded while provisioning", "uuid", j.UUID, "folded", folded)
					}
					if q.o.OnResult != nil {
						q.o.OnResult(res)
					}
				}
			}
		})
	}
	wg.Wait()
	return nil
}

// FixedPassword is a Lookup for sticks whose PKI records all set the same
// new MEBx password (setupbin pki --new-password): every UUID in known is
// a machine of this kiosk; a nil known accepts every UUID.
func FixedPassword(pw setupbin.Password, known func(uuid string) bool) func(context.Context, string) (PKIMachine, error) {
	return func(_ context.Context, uuid string) (PKIMachine, error) {
		if known != nil && !known(uuid) {
			return PKIMachine{}, ErrUnknownMachine
		}
		return PKIMachine{UUID: uuid, MEBxPassword: pw}, nil
	}
}
