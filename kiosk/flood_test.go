package kiosk

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	wire "github.com/provstick/provstick/internal/hello"
	"github.com/provstick/provstick/kiosk/provision"
)

// TestHelloFlood: 300 hellos at once from one address against a limit of
// a burst of 200: 100 connections are closed unread and counted, the hello
// log gets the 200 and one "flood" row (not one per connection), and the
// kiosk keeps serving.
func TestHelloFlood(t *testing.T) {
	bn := newBench(t, benchOptions{n: 1, consume: true, logLevel: 12, noFleet: true, floodRate: 0.001})
	block := make(chan struct{})
	defer close(block)
	bn.resolveHook = func(ctx context.Context) {
		select {
		case <-block:
		case <-ctx.Done():
		}
	}
	pid := bn.entries[0].PID.String()
	bn.k.Provisioner().Submit(provision.Job{PID: pid, UUID: bn.uuids[0]})
	msg, err := (&wire.Hello{Version: wire.VersionPSK, UUID: wire.UUID{1}, PID: pid}).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	addr := bn.k.o.HelloListener.Addr().String()
	for range 300 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.Write(msg)
		c.Close()
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		s := bn.k.HelloStats()
		w, _ := bn.k.HelloLogStats()
		if s.Connections == 300 && s.PSK+s.Flooded == 300 && w == s.PSK+1 {
			if s.PSK != 200 || s.Flooded != 100 {
				t.Fatalf("stats %+v, want 200 read and 100 over the limit", s)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stats %+v, hello log rows %d", s, w)
		}
		time.Sleep(20 * time.Millisecond)
	}
	hs, err := bn.s.Hellos(t.Context(), "", 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(hs) != 1 || !strings.HasPrefix(hs[0].Outcome, "flood: ") || !strings.HasPrefix(hs[0].Peer, "127.0.0.1:") {
		t.Errorf("rows without a PID: %+v", hs)
	}
	n, err := bn.s.CountHellos(t.Context())
	if err != nil || n != 201 {
		t.Errorf("hello log holds %d rows (%v), want 201", n, err)
	}
}
