package builder

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/provstick/provstick/initramfs/hostbased"
)

const activationYAML = "version: 1\nname: a\nsize: 128MiB\nboot: {bios: syslinux}\nkernel: {modules: [vfat]}\n"

func TestAgentActivationRecipe(t *testing.T) {
	for _, tc := range []struct{ name, agent, want string }{
		{"me_wait", "agent: {me_wait: 601}\n", "agent.me_wait"},
		{"activate", "agent: {activate: admin-control}\n", `agent.activate: "admin-control"`},
		{"password without activation", "agent: {amt_password_from: env:X}\n", "only with activate: client-control"},
		{"no source", "agent: {activate: client-control}\n", "agent.amt_password_from"},
		{"value in recipe", "agent: {activate: client-control, amt_password_from: Secret-Pw1!}\n", `want "env:NAME" or "file:PATH"`},
		{"bad env name", "agent: {activate: client-control, amt_password_from: \"env:1X\"}\n", "agent.amt_password_from"},
		{"password kind", "agent: {activate: client-control, amt_password: random, amt_password_from: env:X}\n", "agent.amt_password"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseRecipe(strings.NewReader(activationYAML+tc.agent), "x.yaml")
			if !errors.Is(err, ErrRecipe) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want ErrRecipe mentioning %q", err, tc.want)
			}
		})
	}
	_, err := ParseRecipe(strings.NewReader("version: 1\nname: a\nsize: 128MiB\nagent: {activate: client-control, amt_password_from: env:X}\n"), "x.yaml")
	if !errors.Is(err, ErrRecipe) || !strings.Contains(err.Error(), "bootable") {
		t.Errorf("activation on a setup.bin-only stick: %v", err)
	}
	r, err := LoadRecipe("../images/pki.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if r.Agent.Activate != ActivateClientControl || r.Agent.AMTPassword != AMTPasswordDerived || r.Agent.MEWait != 60 {
		t.Errorf("pki recipe agent %+v", r.Agent)
	}
}

func TestActivationSecret(t *testing.T) {
	dir := t.TempDir()
	write := func(name, v string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	secret := "a-site-secret-of-32-bytes-000000"
	t.Setenv("PROVSTICK_TEST_SECRET", secret)
	t.Setenv("PROVSTICK_TEST_SHORT", "short-secret")
	for _, tc := range []struct{ password, from, want, err string }{
		{AMTPasswordDerived, "env:PROVSTICK_TEST_SECRET", secret, ""},
		{AMTPasswordDerived, "file:" + write("s", secret+"\n"), secret, ""},
		{AMTPasswordFixed, "file:" + write("p", "Site-Admin-Pw1!\r\n"), "Site-Admin-Pw1!", ""},
		{AMTPasswordDerived, "env:PROVSTICK_TEST_SHORT", "", "has 12 bytes, want at least 16"},
		{AMTPasswordDerived, "env:PROVSTICK_TEST_UNSET", "", "not set"},
		{AMTPasswordDerived, "file:" + filepath.Join(dir, "none"), "", "reading the file: no such file"},
		{AMTPasswordDerived, "file:" + write("big", strings.Repeat("x", 5000)), "", "larger than 4 KiB"},
		{AMTPasswordFixed, "env:PROVSTICK_TEST_SHORT", "", "not a password AMT accepts"},
	} {
		a := Agent{Activate: ActivateClientControl, AMTPassword: tc.password, AMTPasswordFrom: tc.from}
		v, err := a.ActivationSecret()
		if tc.err != "" {
			if !errors.Is(err, ErrRecipe) || !strings.Contains(err.Error(), tc.err) || strings.Contains(err.Error(), "short-secret") {
				t.Errorf("%s: %v, want %q (and no value in it)", tc.from, err, tc.err)
			}
			continue
		}
		if err != nil || string(v) != tc.want {
			t.Errorf("%s: %q %v", tc.from, v, err)
		}
	}
}

// TestAgentConfActivation: the builder writes me_wait and the activate
// member (secret base64, key id) into provstick/agent.json; without
// activation there is no activate member.
func TestAgentConfActivation(t *testing.T) {
	const secret = "a-site-secret-of-32-bytes-000000"
	t.Setenv("PROVSTICK_AMT_SITE_SECRET", secret)
	r, err := LoadRecipe("../images/pki.yaml")
	if err != nil {
		t.Fatal(err)
	}
	conf := func(r *Recipe) map[string]any {
		t.Helper()
		b, err := New(r, &Options{})
		if err != nil {
			t.Fatal(err)
		}
		files, _, err := b.layoutFor(Stick{ID: "pki-0001", SetupBin: testSetupBin(t, 2)}, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			if f.path == AgentConfPath {
				var m map[string]any
				if err := json.Unmarshal(f.data, &m); err != nil {
					t.Fatal(err)
				}
				if strings.Contains(string(f.data), secret) {
					t.Error("agent.json holds the secret in plain text")
				}
				return m
			}
		}
		t.Fatal("no agent.json")
		return nil
	}
	m := conf(r)
	act, _ := m["activate"].(map[string]any)
	if m["me_wait"] != 60.0 || act == nil || act["mode"] != "client-control" || act["password"] != "derived" ||
		act["secret"] != base64.StdEncoding.EncodeToString([]byte(secret)) || act["key_id"] != hostbased.KeyID([]byte(secret)) {
		t.Errorf("agent.json %v", m)
	}
	t.Setenv("PROVSTICK_AMT_SITE_SECRET", "")
	b, _ := New(r, &Options{})
	if _, _, err := b.layoutFor(Stick{ID: "pki-0002", SetupBin: testSetupBin(t, 2)}, nil); !errors.Is(err, ErrRecipe) || !strings.Contains(err.Error(), "PROVSTICK_AMT_SITE_SECRET") {
		t.Errorf("build without the secret: %v", err)
	}
	m = conf(defaultRecipe(t))
	if _, ok := m["activate"]; ok {
		t.Errorf("default recipe's agent.json has activate: %v", m)
	}
	if _, ok := m["me_wait"]; ok {
		t.Errorf("default recipe's agent.json has me_wait: %v", m)
	}
	if _, ok := m["qr"]; ok {
		t.Errorf("default recipe's agent.json has qr: %v", m)
	}
	d := defaultRecipe(t)
	d.Agent.QR = true
	if m = conf(d); m["qr"] != true {
		t.Errorf("agent: {qr: true} gives agent.json %v", m)
	}
}
