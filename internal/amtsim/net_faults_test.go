package amtsim

import (
	"errors"
	"testing"
	"time"

	"github.com/provstick/provstick/initramfs/heci/amthi"
	"github.com/provstick/provstick/internal/tlspsk"
	"github.com/provstick/provstick/internal/wsman"
)

func TestFaultWrongPPS(t *testing.T) {
	n := startNet(t, inSetup(t), nil)
	n.srv.StoreWrongPPS()
	_, err := n.pskClient(t, testPPS, testMEBx, tlspsk.KeyPPSASCII, wsman.PSKText).GetGeneralSettings(t.Context())
	if !errors.Is(err, tlspsk.ErrBadKey) {
		t.Errorf("err = %v, want tlspsk.ErrBadKey", err)
	}
	// The other key form is a mismatch too (the switch matters).
	n2 := startNet(t, inSetup(t), nil)
	_, err = n2.pskClient(t, testPPS, testMEBx, tlspsk.KeyPPSDashed, wsman.PSKText).GetGeneralSettings(t.Context())
	if !errors.Is(err, tlspsk.ErrBadKey) {
		t.Errorf("dashed key against an ASCII device: err = %v, want tlspsk.ErrBadKey", err)
	}
}

// TestFaultDropAtStep drops the connection at each step of spec §6,
// before and after the call takes effect; the kiosk's retry must then
// find the device in the state the fault left.
func TestFaultDropAtStep(t *testing.T) {
	for _, tc := range []struct {
		name  string
		step  int
		after bool
		call  func(c *wsman.Client) error
		check func(t *testing.T, st State)
	}{
		{"read-state", StepReadState, false, func(c *wsman.Client) error { _, err := c.GetGeneralSettings(t.Context()); return err }, nil},
		{"key-after", StepKey, true, func(c *wsman.Client) error { _, err := c.GenerateKeyPair(t.Context(), 2048); return err },
			func(t *testing.T, st State) {
				if len(st.Net.Keys) != 1 {
					t.Errorf("keys %d, want 1 (the call took effect)", len(st.Net.Keys))
				}
			}},
		{"mebx-before", StepMEBx, false, func(c *wsman.Client) error { return c.SetMEBxPassword(t.Context(), "Mebx-Pass-7!") },
			func(t *testing.T, st State) {
				if !st.Net.pend.mebx.IsZero() {
					t.Errorf("MEBx password staged although dropped before")
				}
			}},
		{"commit-after", StepCommit, true, func(c *wsman.Client) error { return c.CommitChanges(t.Context()) },
			func(t *testing.T, st State) {
				if st.ProvisioningState != amthi.StatePost {
					t.Errorf("state %v, want post (the reply was lost, not the commit)", st.ProvisioningState)
				}
			}},
		{"enable-tls-before", StepEnableTLS, false, func(c *wsman.Client) error {
			_, err := c.GetTLSSettingData(t.Context(), wsman.TLSSettingsNetwork)
			return err
		}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := startNet(t, inSetup(t), nil)
			c := n.httpClient(t, "admin", testMEBx)
			if _, err := c.GetUuid(t.Context()); err != nil { // a session first
				t.Fatal(err)
			}
			n.srv.DropAtStep(tc.step, tc.after, 1)
			if err := tc.call(c); err == nil {
				t.Fatalf("call succeeded despite the drop")
			}
			if tc.check != nil {
				tc.check(t, n.srv.Device().State())
			}
			// Other steps and a second try go through.
			if _, err := c.GetUuid(t.Context()); err != nil {
				t.Errorf("after the drop: %v", err)
			}
		})
	}
}

func TestFaultForcedReturns(t *testing.T) {
	n := startNet(t, inSetup(t), nil)
	ctx := t.Context()
	c := n.pskClient(t, testPPS, testMEBx, tlspsk.KeyPPSASCII, wsman.PSKText)
	n.srv.ForceReturn("CommitChanges", wsman.StatusFlashWriteLimitExceeded, wsman.StatusDataMissing, wsman.StatusInternalError)
	n.srv.ForceReturn("SetMEBxPassword", wsman.StatusInvalidPassword)
	n.srv.ForceReturn("SetAdminAclEntryEx", wsman.StatusInvalidPassword)
	if err := c.SetMEBxPassword(ctx, "Mebx-Pass-7!"); !errors.Is(err, wsman.StatusInvalidPassword) {
		t.Errorf("SetMEBxPassword: %v, want 2054", err)
	}
	if err := c.SetAdminAclEntryEx(ctx, "admin", n.srv.Realm(), "Admin-Pass-8!"); !errors.Is(err, wsman.StatusInvalidPassword) {
		t.Errorf("SetAdminAclEntryEx: %v, want 2054", err)
	}
	for _, want := range []wsman.Status{38, 2057, 1} {
		err := c.CommitChanges(ctx)
		if me, ok := errors.AsType[*wsman.MethodError](err); !ok || me.Status != want {
			t.Errorf("CommitChanges: %v, want %d", err, want)
		}
	}
	if n.srv.Device().State().ProvisioningState != amthi.StateIn {
		t.Errorf("a forced failure changed the state")
	}
	if err := c.CommitChanges(ctx); err != nil {
		t.Errorf("CommitChanges after the faults: %v", err)
	}
}

func TestFaultSlowResponses(t *testing.T) {
	n := startNet(t, inSetup(t), nil)
	c := n.httpClient(t, "admin", testMEBx)
	if _, err := c.GetUuid(t.Context()); err != nil {
		t.Fatal(err)
	}
	n.srv.SlowResponses(300 * time.Millisecond)
	start := time.Now()
	if _, err := c.GetUuid(t.Context()); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Errorf("slow reply took %v", d)
	}
	n.srv.SlowResponses(0)
}

// TestFaultRealmChange: the Digest client follows a new realm with the
// MEBx password; an admin entry set for the old realm stops working.
func TestFaultRealmChange(t *testing.T) {
	n := startNet(t, inSetup(t), nil)
	ctx := t.Context()
	c := n.httpClient(t, "admin", testMEBx)
	old := n.srv.Realm()
	if _, err := c.GetUuid(ctx); err != nil {
		t.Fatal(err)
	}
	const realm = "Digest:00112233445566778899AABBCCDDEEFF"
	n.srv.ChangeRealm(realm)
	g, err := c.GetGeneralSettings(ctx)
	if err != nil {
		t.Fatalf("after the realm change: %v", err)
	}
	if g.DigestRealm != realm || c.Realm() != realm {
		t.Errorf("realm %q (client %q), want %q", g.DigestRealm, c.Realm(), realm)
	}
	// Admin set for the old realm, committed: it no longer matches.
	if err := c.SetAdminAclEntryEx(ctx, "admin", old, "Admin-Pass-8!"); err != nil {
		t.Fatal(err)
	}
	if err := c.CommitChanges(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := n.httpClient(t, "admin", "Admin-Pass-8!").GetUuid(ctx); !errors.Is(err, wsman.ErrUnauthorized) {
		t.Errorf("HA1 of the old realm: %v, want ErrUnauthorized", err)
	}
}
