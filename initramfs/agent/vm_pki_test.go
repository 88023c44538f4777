package agent

// TestVMAgentPKI boots a PKI stick (issue 12) twice under QEMU (TCG,
// SeaBIOS: the fastest firmware here), built with images/pki.yaml from a
// kiosk/pki site made in the test and `provstick setupbin pki`'s records:
//
//	boot 1: machine P1 consumed record 1; agent.json without activation →
//	        normal, kind pki, no PID (and none missing), amt.root_hashes
//	        holding the site root hash, AMT left in setup for the kiosk
//	boot 2: machine P2 consumed record 2; the builder's agent.json
//	        (activate: client-control, derived password) → the same, plus
//	        activation "activated", client control mode, post-provisioning;
//	        the simulated ME is in client control mode with the admin
//	        password the kiosk computes from the site secret and the UUID;
//	        the technician's screen says so (screenshot, OCR)
//
// Each machine is the ME simulator's state after "consuming" the record:
// amtsim.PKIState (no default hashes) with amtsim.PKISetupRecord applied;
// the simulator serves the LME client (MEOptions.LME) for boot 2. No TPM
// (the PSK test covers swtpm). Same needs as TestVMAgent; skipped with
// -short.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/provstick/provstick/builder"
	"github.com/provstick/provstick/initramfs/heci/amthi"
	"github.com/provstick/provstick/initramfs/hostbased"
	"github.com/provstick/provstick/internal/ledger"
	"github.com/provstick/provstick/internal/wsman"
	"github.com/provstick/provstick/setupbin"
)

func TestVMAgentPKI(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a VM twice under TCG; skipped with -short")
	}
	const secret = "vm-test-site-secret-0123456789ab"
	t.Setenv("PROVSTICK_AMT_SITE_SECRET", secret)
	st := site(t)
	s, records := buildPKIStick(t, t.TempDir(), 4, "provstick.mei=virtio:org.provstick.mei")
	builderConf := s.get(t, ConfPath)
	if !bytes.Contains(builderConf, []byte(`"activate"`)) {
		t.Fatalf("the builder's agent.json from images/pki.yaml has no activate member:\n%s", builderConf)
	}
	root := st.RootHashHex()
	var results []bootResult
	activateMS := map[string]int64{}
	var prev []byte
	for i, step := range []struct {
		name     string
		activate bool
		wantOCR  []string
	}{
		{name: "1-legacy-P1-pki"},
		{name: "2-legacy-P2-pki-activate", activate: true, wantOCR: []string{"DONE", "Record 2", "ACTIVATED in client control mode", "Powering off in"}},
	} {
		if !t.Run(step.name, func(t *testing.T) {
			s.consume(t, 1)
			ms := pkiMachine(t, records[i])
			ms.UUID[0], ms.UUID[15] = byte(0xC0+i), byte(0xC0+i)
			addr, dev := simulatorLME(t, ms)
			m := &machine{name: step.name, dev: dev, sock: strings.TrimPrefix(addr, "unix://")}
			conf := []byte(`{"format":"provstick-agent/1","after":"poweroff","countdown":0}`)
			if step.activate {
				// The builder's file as written, with a countdown long
				// enough for the screenshot (the test quits QEMU).
				var c map[string]any
				if err := json.Unmarshal(builderConf, &c); err != nil {
					t.Fatal(err)
				}
				c["countdown"] = 600
				conf, _ = json.Marshal(c)
			}
			s.put(t, ConfPath, conf)
			r := bootOnce(t, s.img, false, m, step.activate, step.wantOCR)
			r.name = step.name
			results = append(results, r)

			raw, l := readLedgerImage(t, s.img, false)
			if !bytes.HasPrefix(raw, prev) || len(l.Records) != i+1 || len(l.Findings) != 0 {
				t.Fatalf("ledger: %d records (want %d), findings %v, earlier lines kept %v\n%s", len(l.Records), i+1, l.Findings, bytes.HasPrefix(raw, prev), raw)
			}
			prev = raw
			rec := l.Last()
			t.Logf("ledger line: %s", strings.TrimSpace(string(raw[bytes.LastIndexByte(raw[:len(raw)-1], '\n')+1:])))
			if rec.Case != ledger.CaseNormal || rec.Record != i+1 || rec.Kind != KindPKI || rec.PID != "" || hasMissing(rec, "pid") {
				t.Errorf("case %s record %d kind %q PID %q missing %v; want normal, %d, pki, no PID", rec.Case, rec.Record, rec.Kind, rec.PID, rec.Missing, i+1)
			}
			if rec.AMT == nil || rec.AMT.UUID != m.uuid() || rec.AMT.ProvisioningState != "in" || rec.AMT.TLSMode != "PKI" {
				t.Fatalf("AMT %+v; want UUID %s in setup, TLS mode PKI", rec.AMT, m.uuid())
			}
			found := false
			for _, h := range rec.AMT.RootHashes {
				found = found || (h.Hash == root && h.Active && h.UserAdded && h.Algorithm == "SHA-256")
			}
			if !found {
				t.Errorf("amt.root_hashes %+v lacks the site root %s (active, user-added)", rec.AMT.RootHashes, root)
			}
			got := dev.State()
			if !step.activate {
				if rec.Activation != nil || got.ControlMode != amthi.ControlPre {
					t.Errorf("activation %+v, control mode %v; want none", rec.Activation, got.ControlMode)
				}
				return
			}
			a := rec.Activation
			if a != nil {
				activateMS[step.name] = a.ElapsedMS
			}
			key := hostbased.KeyID([]byte(secret))
			if a == nil || a.Result != ledger.ActivationActivated || a.ControlMode != "client" || a.ProvisioningState != "post" || a.Realm == "" || a.Password != "derived:"+key {
				t.Fatalf("activation %+v; want activated, client, post, derived:%s", a, key)
			}
			pw, err := hostbased.DerivePassword([]byte(secret), m.uuid())
			if err != nil {
				t.Fatal(err)
			}
			if got.ControlMode != amthi.ControlClient || got.Net.AdminHA1 != wsman.DigestHA1("admin", a.Realm, wsman.Secret(pw)) {
				t.Errorf("the simulated ME: control mode %v, admin password the site computes: %v", got.ControlMode, got.Net.AdminHA1 == wsman.DigestHA1("admin", a.Realm, wsman.Secret(pw)))
			}
			if bytes.Contains(raw, []byte(pw)) || bytes.Contains(raw, []byte(secret)) {
				t.Error("the ledger holds the password or the site secret")
			}
		}) {
			break
		}
	}
	for _, r := range results {
		t.Logf("%-26s QEMU start → ready %5.1f s, → ledger fsync %5.1f s, → exit %5.1f s; agent: %s", r.name, r.ready.Seconds(), r.ledgerAt.Seconds(), r.total.Seconds(), r.agentLine)
		fmt.Printf("BENCH boot=%s qemu_to_ready=%.2f qemu_to_fsync=%.2f agent_run=%.2f agent_me=%.2f agent_activate=%.3f\n", r.name,
			r.ready.Seconds(), r.ledgerAt.Seconds(), r.run.Seconds(), r.me.Seconds(), float64(activateMS[r.name])/1000)
	}
	t.Logf("load average: %s", loadAvg())
}

// buildPKIStick builds images/pki.yaml's image with n PKI records for the
// site and appends extra to the kernel command line.
func buildPKIStick(t *testing.T, dir string, n int, extra string) (*vmStick, []setupbin.PKI) {
	t.Helper()
	sb, records := pkiSetupBin(t, site(t), n)
	recipe, err := builder.LoadRecipe("../../images/pki.yaml")
	if err != nil {
		t.Fatal(err)
	}
	b, err := builder.New(recipe, &builder.Options{KernelDir: vmKernelDir(t), Agent: agentBinary(t), NoHash: true})
	if err != nil {
		t.Fatal(err)
	}
	s := &vmStick{img: filepath.Join(dir, "stick.img"), sb: sb, id: "vm-pki-0001"}
	if _, err := b.Build(t.Context(), s.img, builder.Stick{ID: s.id, SetupBin: sb, FirstRecord: 1}); err != nil {
		t.Fatal(err)
	}
	s.patchCmdline(t, extra)
	whole, err := os.ReadFile(s.img)
	if err != nil {
		t.Fatal(err)
	}
	at := bytes.Index(whole, sb[:setupbin.ChunkSize])
	if at < 0 {
		t.Fatal("setup.bin not found in the image")
	}
	s.sbOff = int64(at)
	return s, records
}
