package hello

import (
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	wire "github.com/provstick/provstick/internal/hello"
)

func TestLimiter(t *testing.T) {
	l := newLimiter(2, 3, 10*time.Second)
	a, b := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")
	t0 := time.Unix(1000, 0)
	for i := range 3 {
		if ok, _ := l.allow(a, t0); !ok {
			t.Fatalf("burst hello %d refused", i)
		}
	}
	ok, report := l.allow(a, t0)
	if ok || report != 1 {
		t.Fatalf("4th at once: ok %v report %d, want refused and reported", ok, report)
	}
	if ok, report := l.allow(a, t0.Add(100*time.Millisecond)); ok || report != 0 {
		t.Fatalf("5th: ok %v report %d, want refused, report later", ok, report)
	}
	if ok, _ := l.allow(b, t0); !ok {
		t.Fatal("another source refused")
	}
	if ok, _ := l.allow(a, t0.Add(time.Second)); !ok {
		t.Fatal("after a second (2 tokens refilled) refused")
	}
	// The refusals since the first report are reported once the interval
	// has passed.
	l.allow(a, t0.Add(time.Second))
	if ok, report := l.allow(a, t0.Add(time.Second)); ok || report != 0 {
		t.Fatalf("within the interval: ok %v report %d", ok, report)
	}
	l.tokensFor(a, 0)
	if ok, report := l.allow(a, t0.Add(11*time.Second)); ok || report != 3 {
		t.Fatalf("after the interval: ok %v report %d, want refused, 3 reported", ok, report)
	}
}

// tokensFor empties or sets a bucket (tests).
func (l *limiter) tokensFor(a netip.Addr, n float64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sources[a].tokens = n
	l.sources[a].last = time.Unix(1<<40, 0)
}

func TestLimiterBoundedMemory(t *testing.T) {
	l := newLimiter(1, 1, time.Second)
	t0 := time.Unix(1000, 0)
	for i := range maxSources + 100 {
		var b [4]byte
		b[0], b[1], b[2], b[3] = 10, byte(i>>16), byte(i>>8), byte(i)
		l.allow(netip.AddrFrom4(b), t0)
	}
	if len(l.sources) > maxSources {
		t.Fatalf("%d buckets", len(l.sources))
	}
}

// TestListenerFlood: one address over the limit has its connections
// closed unread, counted, and reported to the handler once; another
// address is served meanwhile.
func TestListenerFlood(t *testing.T) {
	l, c, ln := startWith(t, Options{ReadTimeout: time.Second, FloodRate: 0.001, FloodBurst: 3, FloodReport: time.Hour})
	psk, _ := (&wire.Hello{Version: wire.VersionPSK, UUID: wire.UUID{1}, PID: "ABCD2345"}).MarshalBinary()
	for range 10 {
		send(t, ln.Addr().String(), psk, true)
	}
	// Another source (any 127/8 address is the loopback on Linux).
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}
	oc, err := d.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	oc.Write(psk)
	oc.Close()
	// The handler sees the flood report and the other source's hello; the
	// counters add up.
	seen := func() (floods int, other bool) {
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, r := range c.rs {
			if errors.Is(r.Err, ErrFlood) {
				floods++
			}
			if r.Err == nil && r.Peer.Addr() == netip.MustParseAddr("127.0.0.2") {
				other = true
			}
		}
		return floods, other
	}
	deadline := time.After(5 * time.Second)
	for {
		floods, other := seen()
		s := l.Stats()
		if s.Connections == 11 && s.PSK == 4 && floods == 1 && other {
			break
		}
		select {
		case <-c.ch:
		case <-deadline:
			t.Fatalf("stats %+v, flood reports %d (want 1), other source served %v", s, floods, other)
		case <-time.After(10 * time.Millisecond):
		}
	}
	if s := l.Stats(); s.Flooded != 7 || s.Malformed != 0 {
		t.Errorf("stats %+v", s)
	}
	time.Sleep(50 * time.Millisecond)
	if floods, _ := seen(); floods != 1 {
		t.Errorf("flood reports %d, want 1 (one per FloodReport)", floods)
	}
}
