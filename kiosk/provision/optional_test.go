package provision

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/provstick/provstick/internal/amtsim"
	"github.com/provstick/provstick/internal/wsman"
	"github.com/provstick/provstick/kiosk/store"
	"github.com/provstick/provstick/setupbin"
)

var testUsers = []User{
	{Name: "helpdesk", Access: wsman.AccessNetwork, Realms: []wsman.Realm{wsman.RealmRedirection, wsman.RealmRemoteControl, wsman.RealmHardwareAsset}},
	{Name: "inventory", Access: wsman.AccessAny, Realms: []wsman.Realm{wsman.RealmHardwareAsset, wsman.RealmGeneralInfo}},
}

type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// optionalRig is a rig with free entries for step 10 and logs kept for a
// secrets check.
func optionalRig(t *testing.T, free int) (*rig, *lockedBuf) {
	r := newRig(t)
	if _, err := r.s.Generate(t.Context(), store.GenerateSpec{Count: free, Profile: "amt6-10"}); err != nil {
		t.Fatal(err)
	}
	logs := &lockedBuf{}
	r.log = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	return r, logs
}

func (r *rig) optionalProvisioner(users []User, next bool) *Provisioner {
	p, err := New(Options{Store: r.s, CA: r.ca, Logger: r.log, StepTimeout: 5 * time.Second, VerifyDelay: 10 * time.Millisecond, VerifyTimeout: 5 * time.Second,
		Resolve: func(context.Context, Job) (string, error) { return r.m.TLSAddr, nil }, Users: users, NextPSK: next})
	if err != nil {
		r.t.Fatal(err)
	}
	return p
}

func historyOf(t *testing.T, s *store.Store, pid setupbin.PID) string {
	h, err := s.History(context.Background(), pid)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, ev := range h {
		b.WriteString(string(ev.From) + "→" + string(ev.To) + " " + ev.Reason + "\n")
	}
	return b.String()
}

// TestOptionalSteps: steps 8 and 10 on, without faults and with the reply
// of AddUserAclEntryEx or SetTLSPSK lost (the call took effect): the
// rerun reads first, adds no user twice and reuses the same next entry.
func TestOptionalSteps(t *testing.T) {
	for _, tc := range []struct {
		name string
		drop int
	}{{"clean", 0}, {"user reply lost", amtsim.StepUsers}, {"SetTLSPSK reply lost", amtsim.StepNextPSK}} {
		t.Run(tc.name, func(t *testing.T) {
			r, logs := optionalRig(t, 3)
			ctx := t.Context()
			p := r.optionalProvisioner(testUsers, true)
			if tc.drop != 0 {
				r.m.Net.DropAtStep(tc.drop, true, 1)
				res := p.Provision(ctx, r.job())
				if res.Outcome != OutcomeFailed || res.Failure.Class != ClassUnreachable || res.Failure.Step != tc.drop {
					t.Fatalf("first run: %+v %v", res, res.Failure)
				}
			}
			res := p.Provision(ctx, r.job())
			if res.Outcome != OutcomeProvisioned {
				t.Fatalf("%+v %v\n%s", res, res.Failure, r.history())
			}
			r.checkDevice()
			st := r.m.Net.Device().State()
			pws, err := UserPasswords(ctx, r.s, r.entry.PID)
			if err != nil || len(pws) != len(testUsers) {
				t.Fatalf("UserPasswords: %d, %v", len(pws), err)
			}
			if len(st.Net.Users) != len(testUsers) {
				t.Fatalf("device has %d users, want %d", len(st.Net.Users), len(testUsers))
			}
			for i, u := range st.Net.Users {
				want := testUsers[i]
				if u.Username != want.Name || u.AccessPermission != uint32(want.Access) || len(u.Realms) != len(want.Realms) ||
					u.HA1 != wsman.DigestHA1(want.Name, r.m.Net.Realm(), wsman.Secret(pws[want.Name].Reveal())) {
					t.Errorf("device user %d: %+v", i, u)
				}
			}
			admin, err := AdminPassword(ctx, r.s, r.entry.PID)
			if err != nil || admin == "" || admin == pws["helpdesk"] {
				t.Errorf("AdminPassword: %v", err)
			}
			// Step 10: one entry drawn, consumed by this machine, committed
			// into the device.
			next, err := r.s.EntryOf(ctx, mustPID(t, st.PID))
			if err != nil || next.PID == r.entry.PID || next.State != store.StateConsumed || next.Machine != r.uuid || st.PPS.Reveal() != next.PPS.Reveal() {
				t.Fatalf("device PID %s: entry %+v, %v", st.PID, next, err)
			}
			if next.NewPassword != admin {
				t.Errorf("the next entry does not carry the machine's admin password")
			}
			status, err := r.s.Status(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range status.Counts {
				if c.State == store.StateFree && c.N != 2 || c.State == store.StateConsumed && c.N != 1 {
					t.Errorf("pool count %s = %d (one draw only)", c.State, c.N)
				}
			}
			h := r.history()
			for _, want := range []string{"step 8: users added: ", "step 10: next PID/PPS " + next.PID.String(), "step 10: SetTLSPSK sent next PID " + next.PID.String(), "next PID " + next.PID.String() + "; committing"} {
				if !strings.Contains(h, want) {
					t.Errorf("history lacks %q:\n%s", want, h)
				}
			}
			if tc.drop == amtsim.StepUsers && !strings.Contains(h, "present already (kept): helpdesk") {
				t.Errorf("rerun did not find the user added before:\n%s", h)
			}
			nh := historyOf(t, r.s, next.PID)
			if !strings.Contains(nh, "free→allocated") || !strings.Contains(nh, "allocated→consumed given to machine "+r.uuid) || !strings.Contains(nh, "committed holding this PID/PPS") {
				t.Errorf("next entry history:\n%s", nh)
			}
			all := logs.String() + h + nh
			for name, secret := range map[string]string{"admin": admin.Reveal(), "helpdesk": pws["helpdesk"].Reveal(), "inventory": pws["inventory"].Reveal(), "next PPS": next.PPS.Reveal()} {
				if strings.Contains(all, secret) {
					t.Errorf("the %s secret is in the logs or history", name)
				}
			}
		})
	}
}

// TestNextPSKEndToEnd: provisioned with next_psk on, the machine is
// partially unprovisioned; it keeps the admin ACL and the PSK committed by
// step 10, so its next hello carries the new PID, and the kiosk provisions
// it again through the normal path with that entry.
func TestNextPSKEndToEnd(t *testing.T) {
	r, _ := optionalRig(t, 2)
	ctx := t.Context()
	p := r.optionalProvisioner(nil, true)
	if res := p.Provision(ctx, r.job()); res.Outcome != OutcomeProvisioned {
		t.Fatalf("%+v %v\n%s", res, res.Failure, r.history())
	}
	admin, err := AdminPassword(ctx, r.s, r.entry.PID)
	if err != nil {
		t.Fatal(err)
	}
	// PartialUnprovision over TLS as the admin the kiosk set.
	tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}
	defer tr.CloseIdleConnections()
	c, err := wsman.NewClient(wsman.Options{Endpoint: "https://" + r.m.TLSAddr + "/wsman", Password: wsman.Secret(admin.Reveal()), HTTPClient: &http.Client{Transport: tr}})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.PartialUnprovision(ctx); err != nil {
		t.Fatal(err)
	}
	st := r.m.Net.Device().State()
	nextPID := mustPID(t, st.PID)
	if nextPID == r.entry.PID {
		t.Fatal("the device kept the old PID")
	}
	// The hello the machine now sends names nextPID (the simulator's hello
	// reads the same state); the kiosk provisions it by the normal path.
	j := r.job()
	j.PID = nextPID.String()
	var res Result
	ok := waitFor(5*time.Second, func() bool {
		res = p.Provision(ctx, j)
		return res.Outcome == OutcomeProvisioned || res.Failure == nil || res.Failure.Class != ClassUnreachable
	})
	if !ok || res.Outcome != OutcomeProvisioned {
		t.Fatalf("second provisioning: %+v %v\n%s", res, res.Failure, historyOf(t, r.s, nextPID))
	}
	if s, _ := r.s.State(ctx, nextPID); s != store.StateProvisioned {
		t.Errorf("next entry %s", s)
	}
	nh := historyOf(t, r.s, nextPID)
	for _, want := range []string{"allocated→consumed", "consumed→hello-seen", "hello-seen→provisioned", "step 10: next PID/PPS "} {
		if !strings.Contains(nh, want) {
			t.Errorf("next entry history lacks %q:\n%s", want, nh)
		}
	}
	// And it was handed yet another entry for the time after.
	if st2 := r.m.Net.Device().State(); st2.PID == nextPID.String() || st2.PID == r.entry.PID.String() {
		t.Errorf("device PID after the second run: %s", st2.PID)
	}
}

func mustPID(t *testing.T, s string) setupbin.PID {
	t.Helper()
	p, err := setupbin.ParsePID(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func waitFor(max time.Duration, try func() bool) bool {
	deadline := time.Now().Add(max)
	for {
		if try() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestCheckUsers(t *testing.T) {
	for _, us := range [][]User{
		{{Name: "", Realms: []wsman.Realm{2}}},
		{{Name: "admin", Realms: []wsman.Realm{2}}},
		{{Name: "a b", Realms: []wsman.Realm{2}}},
		{{Name: "abcdefghijklmnopq", Realms: []wsman.Realm{2}}},
		{{Name: "x", Realms: nil}},
		{{Name: "x", Realms: []wsman.Realm{1}}},
		{{Name: "x", Access: 3, Realms: []wsman.Realm{2}}},
		{{Name: "x", Realms: []wsman.Realm{2}}, {Name: "x", Realms: []wsman.Realm{2}}},
	} {
		if err := checkUsers(us); !errors.Is(err, ErrUsers) {
			t.Errorf("%+v: %v", us, err)
		}
	}
	if err := checkUsers(testUsers); err != nil {
		t.Error(err)
	}
}

func TestClassifyOptional(t *testing.T) {
	for _, tc := range []struct {
		step int
		st   wsman.Status
		want Class
	}{
		{StepUsers, wsman.StatusMaxLimitReached, ClassUserLimit},
		{StepUsers, wsman.StatusInvalidRealm, ClassUserRefused},
		{StepUsers, wsman.StatusInvalidName, ClassUserRefused},
		{StepUsers, wsman.StatusInvalidPassword, ClassPasswordRefused},
		{StepNextPSK, wsman.StatusInvalidPPSFormat, ClassNextPSKRefused},
		{StepNextPSK, wsman.StatusInvalidPIDFormat, ClassNextPSKRefused},
		{StepCert, wsman.StatusMaxLimitReached, ClassDevice},
	} {
		f := Classify(tc.step, &wsman.MethodError{Status: tc.st})
		if f.Class != tc.want || f.Class.Advice() == "" {
			t.Errorf("step %d status %d: %q, want %q", tc.step, tc.st, f.Class, tc.want)
		}
	}
}

// TestOptionalRefused: a device refusing a user or the next PID/PPS ends
// the run with the class that tells the technician what to do.
func TestOptionalRefused(t *testing.T) {
	r, _ := optionalRig(t, 1)
	r.m.Net.ForceReturn("AddUserAclEntryEx", wsman.StatusMaxLimitReached)
	r.m.Net.ForceReturn("SetTLSPSK", wsman.StatusInvalidPPSFormat)
	p := r.optionalProvisioner(testUsers, true)
	if res := p.Provision(t.Context(), r.job()); res.Outcome != OutcomeFailed || res.Failure.Class != ClassUserLimit || res.Failure.Step != StepUsers {
		t.Fatalf("users: %+v %v", res, res.Failure)
	}
	if res := p.Provision(t.Context(), r.job()); res.Outcome != OutcomeFailed || res.Failure.Class != ClassNextPSKRefused || res.Failure.Step != StepNextPSK {
		t.Fatalf("next PSK: %+v %v", res, res.Failure)
	}
	if h := r.history(); !strings.Contains(h, "user ACL full") || !strings.Contains(h, "next PID/PPS refused") {
		t.Errorf("history:\n%s", h)
	}
	// Pool exhausted: the one free entry is given already (to this
	// machine, kept for it); a second machine's run would find none, and
	// this one's rerun gets the same entry and succeeds.
	if res := p.Provision(t.Context(), r.job()); res.Outcome != OutcomeProvisioned {
		t.Fatalf("third run: %+v %v", res, res.Failure)
	}
}
