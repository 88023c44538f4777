package hello

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	wire "github.com/provstick/provstick/internal/hello"
)

type collector struct {
	mu sync.Mutex
	rs []Received
	ch chan struct{}
}

func (c *collector) handle(_ context.Context, r Received) {
	c.mu.Lock()
	c.rs = append(c.rs, r)
	c.mu.Unlock()
	c.ch <- struct{}{}
}

func start(t *testing.T, timeout time.Duration) (*Listener, *collector, string) {
	t.Helper()
	l, c, ln := startWith(t, Options{ReadTimeout: timeout, MaxConnections: 4})
	return l, c, ln.Addr().String()
}

// startWith serves a Listener made from o (Handler and Logger filled in)
// on a loopback port until the test ends.
func startWith(t *testing.T, o Options) (*Listener, *collector, net.Listener) {
	t.Helper()
	c := &collector{ch: make(chan struct{}, 100)}
	o.Handler, o.Logger = c.handle, slog.New(slog.NewTextHandler(t.Output(), nil))
	l, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() { done <- l.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return l, c, ln
}

func send(t *testing.T, addr string, b []byte, closeWrite bool) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
	if closeWrite {
		c.Close()
	} else {
		t.Cleanup(func() { c.Close() })
	}
}

func TestListener(t *testing.T) {
	l, c, addr := start(t, 300*time.Millisecond)
	psk, err := (&wire.Hello{Version: wire.VersionPSK, RetryCount: 3, UUID: wire.UUID{1, 2, 3}, PID: "ABCD2345"}).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	pki, err := (&wire.Hello{Version: wire.VersionPKI, UUID: wire.UUID{4}, RootHashes: []wire.RootHash{{Type: wire.HashSHA256, Hash: make([]byte, 32)}}}).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		b       []byte
		hold    bool // keep the connection open (the deadline must end it)
		wantErr error
		check   func(*testing.T, Received)
	}{
		{name: "psk", b: psk, check: func(t *testing.T, r Received) {
			if r.Hello.PID != "ABCD2345" || r.Hello.RetryCount != 3 || !r.Peer.Addr().IsLoopback() {
				t.Errorf("got %+v from %v", r.Hello, r.Peer)
			}
		}},
		{name: "pki", b: pki, check: func(t *testing.T, r Received) {
			if r.Hello.Version != wire.VersionPKI || len(r.Hello.RootHashes) != 1 {
				t.Errorf("got %+v", r.Hello)
			}
		}},
		{name: "short", b: psk[:31], wantErr: wire.ErrFormat},
		{name: "garbage", b: []byte("GET / HTTP/1.0\r\n\r\n"), wantErr: wire.ErrFormat},
		{name: "oversize", b: make([]byte, wire.MaxSize+100), wantErr: ErrTooLarge},
		{name: "never closes", b: psk, hold: true, wantErr: errTimeout},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			send(t, addr, tc.b, !tc.hold)
			select {
			case <-c.ch:
			case <-time.After(5 * time.Second):
				t.Fatal("no message handled")
			}
			c.mu.Lock()
			r := c.rs[len(c.rs)-1]
			c.mu.Unlock()
			switch {
			case tc.wantErr == errTimeout:
				var ne net.Error
				if !errors.As(r.Err, &ne) || !ne.Timeout() {
					t.Errorf("err %v, want a timeout", r.Err)
				}
			case tc.wantErr != nil:
				if !errors.Is(r.Err, tc.wantErr) {
					t.Errorf("err %v, want %v", r.Err, tc.wantErr)
				}
			default:
				if r.Err != nil {
					t.Fatal(r.Err)
				}
				tc.check(t, r)
			}
		})
	}
	if s := l.Stats(); s.Connections != 6 || s.PSK != 1 || s.PKI != 1 || s.Malformed != 4 {
		t.Errorf("stats %+v", s)
	}
	// On Linux "never closes" was accepted with its bytes but no EOF: it
	// went on on a goroutine with the deadline.
	if s := l.Stats(); runtime.GOOS == "linux" && s.Waited == 0 {
		t.Errorf("stats %+v: no connection waited", s)
	}
}

var errTimeout = errors.New("timeout")

// TestListenerSilent: a connection on which nothing ever arrives is still
// ended and reported as a timeout, after ReadTimeout, or with DeferAccept
// (Linux) after the kernel has held it for about DeferAccept
// (TCP_DEFER_ACCEPT counts SYN-ACK retransmissions: 1 s → one, answered
// after 1 + 2 s at worst) and then ReadTimeout.
func TestListenerSilent(t *testing.T) {
	const timeout = 300 * time.Millisecond
	for _, deferAccept := range []time.Duration{0, time.Second} {
		t.Run(fmt.Sprintf("defer %v", deferAccept), func(t *testing.T) {
			_, c, ln := startWith(t, Options{ReadTimeout: timeout, DeferAccept: deferAccept})
			var held time.Duration
			if deferAccept > 0 {
				held = waitDeferAccept(t, ln) // Linux: once Serve has set it; elsewhere 0
			}
			t0 := time.Now()
			conn, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			select {
			case <-c.ch:
			case <-time.After(10 * time.Second):
				t.Fatal("a silent connection was never ended")
			}
			took := time.Since(t0)
			c.mu.Lock()
			r := c.rs[0]
			c.mu.Unlock()
			var ne net.Error
			if !errors.As(r.Err, &ne) || !ne.Timeout() {
				t.Errorf("err %v, want a timeout", r.Err)
			}
			if took < held+timeout {
				t.Errorf("reported after %v, want at least %v (held by the kernel, then the read timeout)", took, held+timeout)
			}
			t.Logf("silent connection reported after %v: %v", took.Round(time.Millisecond), r.Err)
		})
	}
}

// TestListenerBounded: with every slot held by a silent peer, a new hello
// waits for a slot instead of being dropped or spawning without bound.
func TestListenerBounded(t *testing.T) {
	_, c, addr := start(t, 400*time.Millisecond)
	for range 4 {
		send(t, addr, []byte{0}, false)
	}
	time.Sleep(50 * time.Millisecond)
	psk, _ := (&wire.Hello{Version: wire.VersionPSK, UUID: wire.UUID{9}, PID: "ABCD2345"}).MarshalBinary()
	send(t, addr, psk, true)
	deadline := time.After(5 * time.Second)
	for {
		select {
		case <-c.ch:
		case <-deadline:
			t.Fatal("the hello waiting for a slot was never handled")
		}
		c.mu.Lock()
		var ok bool
		for _, r := range c.rs {
			ok = ok || r.Err == nil
		}
		n := len(c.rs)
		first := c.rs[0]
		c.mu.Unlock()
		if ok {
			if n < 2 || first.Err == nil {
				t.Errorf("the hello was handled before a slot freed (%d messages)", n)
			}
			return
		}
	}
}

// TestListenerProbe: a connection closed (or reset) without a byte is a
// reachability probe — counted and logged, not a malformed hello and not
// handed to the Handler — while a silent peer that holds the connection
// until the deadline is still malformed.
func TestListenerProbe(t *testing.T) {
	l, c, addr := start(t, 300*time.Millisecond)
	wait := func(what string, want func(Stats) bool) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for !want(l.Stats()) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: stats %+v", what, l.Stats())
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	send(t, addr, nil, true) // connect, close: what the agent does
	wait("closed", func(s Stats) bool { return s.Probes == 1 })

	rc, err := net.Dial("tcp", addr) // connect, reset
	if err != nil {
		t.Fatal(err)
	}
	rc.(*net.TCPConn).SetLinger(0)
	rc.Close()
	wait("reset", func(s Stats) bool { return s.Probes == 2 })

	send(t, addr, nil, false) // connect, stay silent
	select {
	case <-c.ch:
	case <-time.After(5 * time.Second):
		t.Fatal("the silent connection was not handled")
	}
	c.mu.Lock()
	rs := append([]Received(nil), c.rs...)
	c.mu.Unlock()
	if len(rs) != 1 || rs[0].Err == nil {
		t.Fatalf("handled %+v, want only the silent connection, malformed", rs)
	}
	if s := l.Stats(); s.Connections != 3 || s.Probes != 2 || s.Malformed != 1 || s.PSK != 0 {
		t.Errorf("stats %+v", s)
	}
}
