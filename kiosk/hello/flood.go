package hello

import (
	"net/netip"
	"sync"
	"time"
)

// limiter is a token bucket per source address. It keeps at most
// maxSources buckets: when full, buckets that have refilled (idle sources)
// are dropped, and if none has, the new source shares the overflow bucket,
// so a spoofed-source flood cannot grow memory.
type limiter struct {
	mu      sync.Mutex
	rate    float64 // tokens per second
	burst   float64
	every   time.Duration // report interval
	sources map[netip.Addr]*bucket
	over    bucket
}

type bucket struct {
	tokens     float64
	last       time.Time
	dropped    uint64 // since the last report
	reportedAt time.Time
}

const maxSources = 1 << 16

func newLimiter(rate float64, burst int, every time.Duration) *limiter {
	return &limiter{rate: rate, burst: float64(burst), every: every, sources: map[netip.Addr]*bucket{}}
}

// allow takes a token for addr. When it refuses, report is the number of
// refusals to report now (0: not yet, the last report was under every ago).
func (l *limiter) allow(addr netip.Addr, now time.Time) (ok bool, report uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.sources[addr]
	if b == nil {
		if len(l.sources) >= maxSources {
			l.sweep(now)
		}
		if len(l.sources) >= maxSources {
			b = &l.over
		} else {
			b = &bucket{tokens: l.burst, last: now}
			l.sources[addr] = b
		}
	}
	if el := now.Sub(b.last).Seconds(); el > 0 {
		b.tokens = min(l.burst, b.tokens+el*l.rate)
		b.last = now
	}
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	b.dropped++
	if now.Sub(b.reportedAt) >= l.every {
		report, b.dropped, b.reportedAt = b.dropped, 0, now
	}
	return false, report
}

// sweep drops the buckets that would be full by now.
func (l *limiter) sweep(now time.Time) {
	full := time.Duration(l.burst / l.rate * float64(time.Second))
	for a, b := range l.sources {
		if now.Sub(b.last) >= full && b.dropped == 0 {
			delete(l.sources, a)
		}
	}
}
