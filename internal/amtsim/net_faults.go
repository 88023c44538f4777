package amtsim

import (
	"sync"
	"time"

	"github.com/provstick/provstick/internal/wsman"
)

// Provisioning steps of specs/amt-psk.md §6, as DropAtStep counts them.
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
	StepAudit     = 12
	stepOther     = 0
)

// faults is the per-device fault injection state (issue 9).
type faults struct {
	mu         sync.Mutex
	dropStep   int  // 0: none
	dropAfter  bool // apply the call, then drop instead of replying
	dropCount  int  // how many times left
	delay      time.Duration
	forced     map[string][]wsman.Status // method → return values to give next
	dupHellos  int                       // extra copies of each hello
	garbage    int                       // next n hellos preceded by garbage
	garbageRNG uint64
}

// DropAtStep makes the next request of provisioning step step (StepTime
// …, spec §6 numbering) end with the connection closed and no reply. With
// after, the call takes effect first (the reply is lost, the state
// changed); otherwise it is dropped unread. n is how many such requests
// are dropped (0 turns it off).
func (s *NetServer) DropAtStep(step int, after bool, n int) {
	s.fault.mu.Lock()
	s.fault.dropStep, s.fault.dropAfter, s.fault.dropCount = step, after, n
	s.fault.mu.Unlock()
	s.log.Info("amtsim: fault armed: drop connection", "step", step, "after", after, "times", n)
}

// SlowResponses delays every HTTP reply by d (0 turns it off).
func (s *NetServer) SlowResponses(d time.Duration) {
	s.fault.mu.Lock()
	s.fault.delay = d
	s.fault.mu.Unlock()
}

// ForceReturn makes the next calls of method ("CommitChanges",
// "SetMEBxPassword", ...) return the given values in turn, without
// effect: e.g. ForceReturn("CommitChanges", wsman.StatusFlashWriteLimitExceeded)
// for 38, StatusDataMissing for 2057, StatusInvalidPassword for 2054.
func (s *NetServer) ForceReturn(method string, rv ...wsman.Status) {
	s.fault.mu.Lock()
	if s.fault.forced == nil {
		s.fault.forced = map[string][]wsman.Status{}
	}
	s.fault.forced[method] = append(s.fault.forced[method], rv...)
	s.fault.mu.Unlock()
}

// ChangeRealm gives the device a new Digest realm at once, as a
// re-provisioned or reset machine can have. An admin ACL entry set for
// the old realm no longer matches, as on real firmware.
func (s *NetServer) ChangeRealm(realm string) {
	s.dev.Update(func(st *State) { st.Net.Realm = realm })
	s.ws.SetRealm(realm)
	s.log.Info("amtsim: fault: realm changed", "realm", realm)
}

// StoreWrongPPS models a machine whose ME holds a PPS other than the one
// the kiosk has for its PID (a mixed-up stick, a half-written record):
// the stored PPS gets its first character changed, so TLS-PSK fails with
// a key mismatch.
func (s *NetServer) StoreWrongPPS() {
	s.dev.Update(func(st *State) {
		p := []byte(st.PPS.Reveal())
		if len(p) == 0 {
			p = []byte("X")
		} else if p[0] == 'A' {
			p[0] = 'B'
		} else {
			p[0] = 'A'
		}
		st.PPS = NewSecret(string(p))
	})
	s.log.Info("amtsim: fault: wrong PPS stored")
}

// DuplicateHellos makes every hello go out 1+n times (0 turns it off).
func (s *NetServer) DuplicateHellos(n int) {
	s.fault.mu.Lock()
	s.fault.dupHellos = n
	s.fault.mu.Unlock()
}

// GarbageHellos makes the next n hellos each preceded by a connection
// carrying random bytes instead of a hello.
func (s *NetServer) GarbageHellos(n int) {
	s.fault.mu.Lock()
	s.fault.garbage = n
	s.fault.mu.Unlock()
}

func (f *faults) slow() time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.delay
}

// drop reports whether this request of step must be dropped, before
// (after=false) or after (after=true) it takes effect.
func (f *faults) drop(step int, after bool) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.dropCount <= 0 || step != f.dropStep || after != f.dropAfter {
		return false
	}
	f.dropCount--
	return true
}

func (f *faults) forcedReturn(method string) (wsman.Status, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	rvs := f.forced[method]
	if len(rvs) == 0 {
		return 0, false
	}
	f.forced[method] = rvs[1:]
	return rvs[0], true
}

func (f *faults) hellos() (dup int, garbage bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.garbage > 0 {
		f.garbage--
		garbage = true
	}
	return f.dupHellos, garbage
}

// garbageBytes returns 1–64 pseudo-random bytes (xorshift; reproducible).
func (f *faults) garbageBytes() []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.garbageRNG == 0 {
		f.garbageRNG = 0x9e3779b97f4a7c15
	}
	next := func() uint64 {
		x := f.garbageRNG
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		f.garbageRNG = x
		return x
	}
	b := make([]byte, 1+next()%64)
	for i := range b {
		b[i] = byte(next())
	}
	return b
}
