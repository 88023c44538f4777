package hostbased

import (
	"errors"
	"testing"

	"github.com/provstick/provstick/initramfs/heci"
	"github.com/provstick/provstick/initramfs/heci/amthi"
	"github.com/provstick/provstick/internal/amtsim"
	"github.com/provstick/provstick/internal/wsman"
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
