package builder

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/provstick/provstick/initramfs/agent"
)

func TestCheckKioskRecipe(t *testing.T) {
	for _, tc := range []struct{ name, agent, want string }{
		{"unknown field", "agent: {check_kiosk: {enabled: true, tiemout: 5}}\n", "field tiemout not found"},
		{"timeout", "agent: {check_kiosk: {enabled: true, timeout: 301}}\n", "agent.check_kiosk.timeout: 301"},
		{"negative timeout", "agent: {check_kiosk: {enabled: true, timeout: -1}}\n", "agent.check_kiosk.timeout: -1"},
		{"port", "agent: {check_kiosk: {enabled: true, port: 65536}}\n", "agent.check_kiosk.port: 65536"},
		{"domain", "agent: {check_kiosk: {enabled: true, domain: \"-x.example\"}}\n", `agent.check_kiosk.domain: "-x.example"`},
		{"domain space", "agent: {check_kiosk: {enabled: true, domain: \"a b\"}}\n", "agent.check_kiosk.domain"},
		{"module", "agent: {check_kiosk: {enabled: true, modules: [\"e1000e/x\"]}}\n", "agent.check_kiosk.modules[0]"},
		{"settings while off", "agent: {check_kiosk: {port: 9971}}\n", "apply only with enabled: true"},
		{"not a map", "agent: {check_kiosk: true}\n", "line 6: cannot unmarshal"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseRecipe(strings.NewReader(activationYAML+tc.agent), "x.yaml")
			if !errors.Is(err, ErrRecipe) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want ErrRecipe mentioning %q", err, tc.want)
			}
		})
	}
	_, err := ParseRecipe(strings.NewReader("version: 1\nname: a\nsize: 128MiB\nagent: {check_kiosk: {enabled: true}}\n"), "x.yaml")
	if !errors.Is(err, ErrRecipe) || !strings.Contains(err.Error(), "bootable") {
		t.Errorf("the check on a setup.bin-only stick: %v", err)
	}
	r, err := LoadRecipe("../images/check-kiosk.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if ck := r.Agent.CheckKiosk; !ck.Enabled || ck.Timeout != 20 || ck.Port != 9971 || !slices.Equal(r.Agent.NICModules(), DefaultNICModules) {
		t.Errorf("check-kiosk recipe: %+v", ck)
	}
	if d := defaultRecipe(t); d.Agent.CheckKiosk.Enabled || d.Agent.NICModules() != nil {
		t.Errorf("the default recipe enables the check: %+v", d.Agent.CheckKiosk)
	}
}

// TestCheckKioskAgentConf: the builder writes check_kiosk into agent.json
// only when enabled, in the form the agent reads.
func TestCheckKioskAgentConf(t *testing.T) {
	conf := func(r *Recipe) []byte {
		t.Helper()
		b, err := New(r, &Options{})
		if err != nil {
			t.Fatal(err)
		}
		files, _, err := b.layoutFor(Stick{ID: "ck-0001", SetupBin: testSetupBin(t, 2)}, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			if f.path == AgentConfPath {
				return f.data
			}
		}
		t.Fatal("no agent.json")
		return nil
	}
	r, err := LoadRecipe("../images/check-kiosk.yaml")
	if err != nil {
		t.Fatal(err)
	}
	r.Agent.CheckKiosk.Domain = "line7.factory.example"
	c, err := agent.ParseConf(conf(r))
	if err != nil {
		t.Fatal(err)
	}
	if k := c.CheckKiosk; k == nil || k.TimeoutDuration().Seconds() != 20 || k.PortNumber() != 9971 || k.Domain != "line7.factory.example" {
		t.Errorf("agent.json check_kiosk %+v", k)
	}
	var m map[string]any
	json.Unmarshal(conf(defaultRecipe(t)), &m)
	if _, ok := m["check_kiosk"]; ok {
		t.Errorf("the default recipe's agent.json has check_kiosk: %v", m)
	}
}

// TestCheckKioskInitramfs builds the initramfs of the default recipe and
// of check-kiosk.yaml with the real kernel and agent: the NIC drivers and
// their dependencies are in only with the check, and the compressed
// initramfs stays within 6 MiB. It logs both sizes.
func TestCheckKioskInitramfs(t *testing.T) {
	size := func(r *Recipe) *InitramfsInfo {
		t.Helper()
		b, err := New(r, &Options{KernelDir: kernelDir(t), Agent: testAgent(t), NoHash: true})
		if err != nil {
			t.Fatal(err)
		}
		info, err := b.Prepare(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		return info
	}
	def := size(defaultRecipe(t))
	r, err := LoadRecipe("../images/check-kiosk.yaml")
	if err != nil {
		t.Fatal(err)
	}
	ck := size(r)
	t.Logf("initramfs: default %d bytes compressed (%d modules, %d bytes of modules); check-kiosk %d bytes (%d modules, %d bytes of modules): +%d",
		def.CompressedBytes, len(def.Modules), def.ModuleBytes, ck.CompressedBytes, len(ck.Modules), ck.ModuleBytes, ck.CompressedBytes-def.CompressedBytes)
	for _, m := range []string{"e1000e", "igb", "dca", "r8169", "libphy", "realtek", "e1000", "virtio_net", "net_failover"} {
		if slices.Contains(def.Modules, m) {
			t.Errorf("the default initramfs has %s", m)
		}
		if !slices.Contains(ck.Modules, m) {
			t.Errorf("the check-kiosk initramfs lacks %s (modules %v)", m, ck.Modules)
		}
	}
	if ck.CompressedBytes > 6<<20 {
		t.Errorf("check-kiosk initramfs is %d bytes compressed, more than 6 MiB", ck.CompressedBytes)
	}
}
