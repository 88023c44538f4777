package amtsim

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/provstick/provstick/internal/hello"
	"github.com/provstick/provstick/internal/tlspsk"
	"github.com/provstick/provstick/internal/wsman"
)

// scs is a minimal hello listener: every connection's bytes, in order.
type scs struct {
	ln net.Listener
	ch chan []byte
}

func newSCS(t *testing.T) *scs {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &scs{ln: ln, ch: make(chan []byte, 256)}
	// One connection at a time, read to EOF before the next is accepted:
	// the simulator writes its messages one after another, so s.ch keeps
	// the order they were sent in (a goroutine per connection let a later
	// message overtake an earlier one on a loaded machine).
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			b, _ := io.ReadAll(io.LimitReader(c, hello.MaxSize+1))
			c.Close()
			s.ch <- b
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return s
}

func (s *scs) next(t *testing.T) []byte {
	t.Helper()
	select {
	case b := <-s.ch:
		return b
	case <-time.After(10 * time.Second):
		t.Fatal("no hello within 10 s")
		return nil
	}
}

func (s *scs) nextHello(t *testing.T) *hello.Hello {
	t.Helper()
	h, err := hello.Parse(s.next(t))
	if err != nil {
		t.Fatalf("hello: %v", err)
	}
	return h
}

func (s *scs) quiet(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case b := <-s.ch:
		t.Fatalf("unexpected message %x", b)
	case <-time.After(d):
	}
}

// dnsServer answers A queries for one name with 127.0.0.1 and NXDOMAIN
// for the rest, over UDP (enough for Go's resolver).
func dnsServer(t *testing.T, name string) (addr string, queries func() []string) {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	var mu sync.Mutex
	var seen []string
	go func() {
		buf := make([]byte, 512)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			q := buf[:n]
			if len(q) < 12 {
				continue
			}
			// Question name (labels), then type and class.
			off, labels := 12, []string{}
			for off < len(q) && q[off] != 0 {
				l := int(q[off])
				if off+1+l > len(q) {
					break
				}
				labels = append(labels, string(q[off+1:off+1+l]))
				off += 1 + l
			}
			qend := off + 5
			if qend > len(q) {
				continue
			}
			qname := strings.ToLower(strings.Join(labels, "."))
			mu.Lock()
			seen = append(seen, qname)
			mu.Unlock()
			resp := append([]byte{}, q[:qend]...)
			binary.BigEndian.PutUint16(resp[2:], 0x8180) // response, RD, RA
			binary.BigEndian.PutUint16(resp[6:], 0)      // ANCOUNT
			binary.BigEndian.PutUint16(resp[8:], 0)
			binary.BigEndian.PutUint16(resp[10:], 0)
			if qname == strings.ToLower(name) && binary.BigEndian.Uint16(q[off+1:]) == 1 {
				binary.BigEndian.PutUint16(resp[6:], 1)
				resp = append(resp, 0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 1)
			} else {
				resp[3] |= 3 // NXDOMAIN
			}
			_, _ = pc.WriteTo(resp, from)
		}
	}()
	return pc.LocalAddr().String(), func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), seen...)
	}
}

func TestHelloDelaySchedule(t *testing.T) {
	var total time.Duration
	for r := 1; r <= hello.MaxRetryCount; r++ {
		total += HelloDelay(r)
	}
	// 4 × 1 min + 5 × 10 min + 5 × 1 h: the first hello goes at once.
	if want := 4*time.Minute + 50*time.Minute + 5*time.Hour; total != want {
		t.Errorf("schedule lasts %v, want %v", total, want)
	}
	for r, want := range map[int]time.Duration{0: 0, 1: time.Minute, 4: time.Minute, 5: 10 * time.Minute, 9: 10 * time.Minute, 10: time.Hour, 14: time.Hour} {
		if got := HelloDelay(r); got != want {
			t.Errorf("HelloDelay(%d) = %v, want %v", r, got, want)
		}
	}
}

// TestHelloScheduleStatic runs the whole schedule to a static SCS at
// 600,000× (an hour in 6 ms): retry counts 0–14 in order, then silence;
// an ME reset starts again at 0.
func TestHelloScheduleStatic(t *testing.T) {
	s := newSCS(t)
	n := startNet(t, inSetup(t), func(o *NetOptions) {
		o.Hello = HelloOptions{SCS: s.ln.Addr().String(), TimeScale: 600000}
	})
	for r := 0; r <= hello.MaxRetryCount; r++ {
		h := s.nextHello(t)
		if int(h.RetryCount) != r || h.Version != hello.VersionPSK || h.PID != testPID || h.UUID.String() != "939b524b-13d4-1d18-e487-1c697a6b7a2b" || !h.AdminCredentialsSet {
			t.Fatalf("hello %d = %+v", r, h)
		}
	}
	s.quiet(t, 100*time.Millisecond)
	if st := n.srv.HelloStats(); st.Sent != 15 || st.Running || st.LastRetry != 14 {
		t.Errorf("stats %+v", st)
	}
	n.srv.Device().Reset()
	if h := s.nextHello(t); h.RetryCount != 0 {
		t.Errorf("after an ME reset: retry %d, want 0", h.RetryCount)
	}
}

// TestHelloDNS finds the SCS as provisionserver.<domain> through a DNS
// server (the device's suffix, matched case-insensitively by the server),
// on the configured port.
func TestHelloDNS(t *testing.T) {
	s := newSCS(t)
	_, port, _ := net.SplitHostPort(s.ln.Addr().String())
	dns, queries := dnsServer(t, "provisionserver.lab.example")
	p := 0
	for _, c := range port {
		p = p*10 + int(c-'0')
	}
	startNet(t, inSetup(t), func(o *NetOptions) {
		o.Hello = HelloOptions{DNSServer: dns, Port: p, TimeScale: 1}
	})
	if h := s.nextHello(t); h.RetryCount != 0 || h.PID != testPID {
		t.Errorf("hello %+v", h)
	}
	if q := queries(); len(q) == 0 || q[0] != "provisionserver.lab.example" {
		t.Errorf("DNS queries %q", q)
	}
}

// TestHelloNoSCS: no static address and no DNS: nothing is sent, and
// the attempt counts as failed.
func TestHelloNoSCS(t *testing.T) {
	n := startNet(t, inSetup(t), func(o *NetOptions) { o.Hello = HelloOptions{TimeScale: 600000} })
	waitFor(t, func() bool { return n.srv.HelloStats().Failed == 15 })
	if st := n.srv.HelloStats(); st.Sent != 0 {
		t.Errorf("stats %+v", st)
	}
}

// TestHelloStopsAfterCommit: hellos at one per second (scaled) stop once
// the kiosk commits.
func TestHelloStopsAfterCommit(t *testing.T) {
	s := newSCS(t)
	n := startNet(t, inSetup(t), func(o *NetOptions) {
		o.Hello = HelloOptions{SCS: s.ln.Addr().String(), TimeScale: 300} // 1 min → 200 ms
	})
	s.nextHello(t)
	c := n.pskClient(t, testPPS, testMEBx, tlspsk.KeyPPSASCII, wsman.PSKText)
	if err := c.CommitChanges(t.Context()); err != nil {
		t.Fatal(err)
	}
	// One hello may have been on its way; then silence.
	select {
	case <-s.ch:
	case <-time.After(300 * time.Millisecond):
	}
	s.quiet(t, 600*time.Millisecond)
	if n.srv.HelloStats().Running {
		t.Errorf("sender still running after commit")
	}
	// A reset of a provisioned machine sends nothing.
	n.srv.Device().Reset()
	s.quiet(t, 200*time.Millisecond)
}

func TestHelloFaults(t *testing.T) {
	s := newSCS(t)
	n := startNet(t, inSetup(t), func(o *NetOptions) {
		o.Hello = HelloOptions{SCS: s.ln.Addr().String(), TimeScale: 1}
	})
	// The first hello went out at start; arm faults and reset.
	s.nextHello(t)
	n.srv.DuplicateHellos(2)
	n.srv.GarbageHellos(1)
	n.srv.Device().Reset()
	if _, err := hello.Parse(s.next(t)); !errors.Is(err, hello.ErrFormat) {
		t.Errorf("first message after GarbageHellos parsed: %v", err)
	}
	for i := range 3 {
		if h := s.nextHello(t); h.RetryCount != 0 {
			t.Errorf("copy %d: retry %d", i, h.RetryCount)
		}
	}
	waitFor(t, func() bool { st := n.srv.HelloStats(); return st.Garbage == 1 && st.Sent == 4 })
}

// TestHelloPKI: a machine with no PID (a PKI record) sends version 3
// with its active root hashes.
func TestHelloPKI(t *testing.T) {
	s := newSCS(t)
	d := NewDevice(DefaultState())
	if err := d.ApplySetupRecord(SetupRecord{DNSSuffix: "lab.example"}); err != nil {
		t.Fatal(err)
	}
	startNet(t, d.State(), func(o *NetOptions) { o.Hello = HelloOptions{SCS: s.ln.Addr().String(), TimeScale: 1} })
	h := s.nextHello(t)
	if h.Version != hello.VersionPKI || len(h.RootHashes) != 3 || h.RootHashes[0].Type != hello.HashSHA256 {
		t.Errorf("PKI hello %+v", h)
	}
}
