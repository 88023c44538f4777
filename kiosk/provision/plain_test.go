package provision

import (
	"context"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/provstick/provstick/initramfs/heci/amthi"
)

// closedAddr is a loopback address where nothing listens (connections
// are refused).
func closedAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := ln.Addr().String()
	ln.Close()
	return a
}

// TestPlainFallback: a machine whose 16993 refuses connections is
// provisioned over plain HTTP on 16992 with PlainFallback, and the history
// says the exchange was not encrypted; with PlainNever it fails as
// unreachable. Step 12's audit record is in the history either way.
func TestPlainFallback(t *testing.T) {
	for _, mode := range []PlainMode{PlainNever, PlainFallback} {
		t.Run([]string{"never", "fallback"}[mode], func(t *testing.T) {
			r := newRig(t)
			// The machine's 16993 as the kiosk sees it refuses connections
			// until the machine has committed (TLS set up), then leads to
			// the simulator's 16993.
			closed := closedAddr(t)
			go proxyAfterCommit(t, r, closed)
			p, err := New(Options{Store: r.s, CA: r.ca, Logger: r.log, StepTimeout: 5 * time.Second, VerifyDelay: 10 * time.Millisecond, VerifyTimeout: 10 * time.Second,
				Plain:        mode,
				Resolve:      func(context.Context, Job) (string, error) { return closed, nil },
				ResolvePlain: func(context.Context, Job) (string, error) { return r.m.HTTPAddr, nil }})
			if err != nil {
				t.Fatal(err)
			}
			res := p.Provision(t.Context(), r.job())
			if mode == PlainNever {
				if res.Outcome != OutcomeFailed || res.Failure.Class != ClassUnreachable {
					t.Fatalf("%+v %v", res, res.Failure)
				}
				return
			}
			if res.Outcome != OutcomeProvisioned {
				t.Fatalf("%+v %v\n%s", res, res.Failure, r.history())
			}
			h := r.history()
			if !strings.Contains(h, "plain HTTP to "+r.m.HTTPAddr) || !strings.Contains(h, "not encrypted") {
				t.Errorf("history:\n%s", h)
			}
			if !strings.Contains(h, "step 12: audit record") {
				t.Errorf("no audit record in the history:\n%s", h)
			}
			r.checkDevice()
		})
	}
}

// proxyAfterCommit listens on addr once the machine is post-provisioned
// and forwards connections to its 16993.
func proxyAfterCommit(t *testing.T, r *rig, addr string) {
	ctx := t.Context()
	for r.m.Net.Device().State().ProvisioningState != amthi.StatePost {
		select {
		case <-ctx.Done():
			return
		case <-time.After(5 * time.Millisecond):
		}
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Errorf("proxy: %v", err)
		return
	}
	context.AfterFunc(ctx, func() { ln.Close() })
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			u, err := net.Dial("tcp", r.m.TLSAddr)
			if err != nil {
				return
			}
			defer u.Close()
			go io.Copy(u, c)
			io.Copy(c, u)
		}()
	}
}

func TestParsePlainMode(t *testing.T) {
	for in, want := range map[string]PlainMode{"": PlainNever, "never": PlainNever, "fallback": PlainFallback, "always": PlainAlways} {
		if got, err := ParsePlainMode(in); err != nil || got != want {
			t.Errorf("%q: %v %v", in, got, err)
		}
	}
	if _, err := ParsePlainMode("sometimes"); err == nil {
		t.Error("no error")
	}
}
