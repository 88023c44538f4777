package amtsim

import (
	"encoding/hex"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/provstick/provstick/initramfs/heci/amthi"
	"github.com/provstick/provstick/internal/wsman"
)

func TestLocalSetup(t *testing.T) {
	dev := NewDevice(DefaultState())
	srv := httptest.NewServer(NewLocalWSMan(dev))
	defer srv.Close()
	st := dev.State()
	client := func(user, pass string) *wsman.Client {
		c, err := wsman.NewClient(wsman.Options{Endpoint: srv.URL + "/wsman", Username: user, Password: wsman.Secret(pass), HTTPClient: &http.Client{}})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	ctx := t.Context()
	if _, err := client("admin", "admin").GetGeneralSettings(ctx); !errors.Is(err, wsman.ErrUnauthorized) {
		t.Fatalf("admin on the local interface: %v, want unauthorized", err)
	}
	c := client(st.LocalUser, st.LocalPass.Reveal())
	g, err := c.GetGeneralSettings(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ha1 := wsman.DigestHA1("admin", g.DigestRealm, "Client-Mode-Pw1!")
	in := setupInput{NetAdminPassEncryptionType: 2, NetworkAdminPassword: wsman.Secret(hex.EncodeToString(ha1[:]))}
	if err := c.Invoke(ctx, URIHostBasedSetupService, "Setup", nil, setupInput{NetAdminPassEncryptionType: 1, NetworkAdminPassword: "x"}, nil); err == nil {
		t.Fatal("Setup with encoding 1 accepted")
	}
	if err := c.Invoke(ctx, URIHostBasedSetupService, "Setup", nil, in, nil); err != nil {
		t.Fatal(err)
	}
	got := dev.State()
	if got.ProvisioningState != amthi.StatePost || got.ControlMode != amthi.ControlClient || got.Net.AdminHA1 != ha1 {
		t.Fatalf("after Setup: %v %v", got.ProvisioningState, got.ControlMode)
	}
	err = c.Invoke(ctx, URIHostBasedSetupService, "Setup", nil, in, nil)
	if me, ok := errors.AsType[*wsman.MethodError](err); !ok || me.Status != HBSInvalidState {
		t.Fatalf("second Setup: %v", err)
	}
}
