package hostbased

import (
	"errors"
	"testing"

	"github.com/provstick/provstick/initramfs/heci"
	"github.com/provstick/provstick/initramfs/heci/amthi"
	"github.com/provstick/provstick/internal/amtsim"
	"github.com/provstick/provstick/internal/wsman"
	"github.com/provstick/provstick/setupbin"
)

func TestActivate(t *testing.T) {
	for _, tc := range []struct {
		name  string
		state func(*amtsim.State)
		lme   bool
		want  error
	}{
		{"pre-provisioning", nil, true, nil},
		{"in setup (stick consumed)", func(s *amtsim.State) { s.ProvisioningState, s.TLSMode = amthi.StateIn, amthi.TLSModePKI }, true, nil},
		{"already provisioned", func(s *amtsim.State) { s.ProvisioningState, s.ControlMode = amthi.StatePost, amthi.ControlAdmin }, true, ErrAlreadyProvisioned},
		{"no LME client", nil, false, ErrNoLocalInterface},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := amtsim.DefaultState()
			if tc.state != nil {
				tc.state(&st)
			}
			dev := amtsim.NewDevice(st)
			me := amtsim.NewMEServer(dev, &amtsim.MEOptions{LME: tc.lme})
			defer me.Close()
			hd := me.Pipe(t.Context(), &heci.Options{})
			defer hd.Close()
			res, err := Activate(t.Context(), hd, "Client-Mode-Pw1!", nil)
			if tc.want != nil {
				if !errors.Is(err, tc.want) {
					t.Fatalf("err %v, want %v", err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := dev.State()
			if res.ControlMode != amthi.ControlClient || res.State != amthi.StatePost || got.ControlMode != amthi.ControlClient {
				t.Fatalf("result %+v, device %v", res, got.ControlMode)
			}
			if got.Net.AdminHA1 != wsman.DigestHA1("admin", res.Realm, "Client-Mode-Pw1!") || res.LocalUser != st.LocalUser {
				t.Error("admin password or local user differ")
			}
			// A second activation is refused: the machine is provisioned.
			if _, err := Activate(t.Context(), hd, "Client-Mode-Pw1!", nil); !errors.Is(err, ErrAlreadyProvisioned) {
				t.Errorf("second Activate: %v", err)
			}
		})
	}
}

func TestSetupErrorRedaction(t *testing.T) {
	e := &SetupError{ReturnValue: 5}
	if !errors.Is(e, ErrRefused) || e.Error() != "hostbased: IPS_HostBasedSetupService.Setup returned 5 (authentication failed)" {
		t.Errorf("%v", e)
	}
	if s := Password("x").String(); s != "REDACTED" {
		t.Error(s)
	}
}

func TestDerivePassword(t *testing.T) {
	secret := []byte("0123456789abcdef-site-secret")
	a, err := DerivePassword(secret, "8A4F2B1C-0000-4000-8000-00163E000001")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := DerivePassword(secret, "8a4f2b1c-0000-4000-8000-00163e000001")
	c, _ := DerivePassword(secret, "8a4f2b1c-0000-4000-8000-00163e000002")
	d, _ := DerivePassword([]byte("another-site-secret-16"), "8a4f2b1c-0000-4000-8000-00163e000001")
	if a != b || a == c || a == d {
		t.Error("derivation: same UUID in any case must give the same password, another UUID or secret another")
	}
	for _, p := range []Password{a, c, d} {
		if len(p) != 28 {
			t.Errorf("length %d", len(p))
		}
		if err := setupbin.ValidateMEBxPassword(setupbin.Password(p)); err != nil {
			t.Errorf("derived password breaks AMT's rules: %v", err)
		}
	}
	// A fixed vector: the kiosk's implementation must agree.
	if a != "tdwaSPOGgLcxtq5IQ7We9l0C#a7Z" || KeyID(secret) != "c6b5b67d" {
		t.Errorf("fixed vector changed: the kiosk recomputes these passwords; keep the derivation stable")
	}
	if _, err := DerivePassword([]byte("short"), "x"); !errors.Is(err, ErrWeakSecret) {
		t.Errorf("short secret: %v", err)
	}
	if _, err := DerivePassword(secret, ""); err == nil {
		t.Error("empty UUID accepted")
	}
	if k := KeyID(secret); len(k) != 8 || k == KeyID([]byte("another-site-secret-16")) {
		t.Errorf("KeyID %q", k)
	}
}
