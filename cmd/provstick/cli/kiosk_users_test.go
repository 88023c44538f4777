package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/provstick/provstick/internal/wsman"
	"github.com/spf13/cobra"
)

func TestKioskUsers(t *testing.T) {
	us, err := kioskUsers([]KioskUserConfig{{Name: "helpdesk", Access: "network", Realms: []string{"redirection", "remote-control", "5"}}})
	if err != nil || len(us) != 1 || us[0].Access != wsman.AccessNetwork || len(us[0].Realms) != 3 || us[0].Realms[1] != wsman.RealmRemoteControl {
		t.Fatalf("kioskUsers = %+v, %v", us, err)
	}
	for _, tc := range []struct {
		c    KioskUserConfig
		want string
	}{
		{KioskUserConfig{Name: "x", Access: "everywhere", Realms: []string{"redirection"}}, "kiosk.users[0].access"},
		{KioskUserConfig{Name: "x", Access: "any", Realms: []string{"nope"}}, "kiosk.users[0].realms[0]"},
		{KioskUserConfig{Name: "admin", Access: "any", Realms: []string{"storage"}}, "kiosk.users"},
	} {
		if _, err := kioskUsers([]KioskUserConfig{tc.c}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want it to name %s", tc.c, err, tc.want)
		}
	}
}

// TestKioskUsersConfig: kiosk.users and kiosk.next_psk decode strictly from
// a file, and the example configuration still loads.
func TestKioskUsersConfig(t *testing.T) {
	if _, _, err := loadConfig(&cobra.Command{}, filepath.Join("..", "..", "..", "configs", "provstick.yaml")); err != nil {
		t.Fatalf("example configuration: %v", err)
	}
	f := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(f, []byte(`version: 1
kiosk:
  next_psk: true
  users:
    - name: helpdesk
      access: network
      realms: [redirection, remote-control]
    - name: inventory
      access: any
      realms: [hardware-asset]
`), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, _, err := loadConfig(&cobra.Command{}, f)
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.Kiosk.NextPSK || len(cfg.Kiosk.Users) != 2 || cfg.Kiosk.Users[0].Name != "helpdesk" || len(cfg.Kiosk.Users[0].Realms) != 2 {
		t.Fatalf("decoded %+v", cfg.Kiosk)
	}
	if _, err := kioskUsers(cfg.Kiosk.Users); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f, []byte("version: 1\nkiosk:\n  users:\n    - name: x\n      acess: any\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := loadConfig(&cobra.Command{}, f); err == nil || !strings.Contains(err.Error(), "acess") {
		t.Errorf("misspelt key: %v", err)
	}
}
