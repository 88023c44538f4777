package agent

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/provstick/provstick/initramfs/heci/amthi"
	"github.com/provstick/provstick/initramfs/hostbased"
	"github.com/provstick/provstick/internal/amtsim"
	"github.com/provstick/provstick/internal/ledger"
	"github.com/provstick/provstick/internal/wsman"
	"github.com/provstick/provstick/kiosk/pki"
	"github.com/provstick/provstick/setupbin"
)

// siteSecret is the test site's activation secret (derived passwords).
var siteSecret = []byte("test-site-secret-0123456789")

// testSite is one kiosk/pki site per test binary (RSA generation is the
// slow part).
var testSite = sync.OnceValues(func() (*pki.Site, error) { return pki.Generate(pki.Options{Suffix: "site.example"}) })

func site(t testing.TB) *pki.Site {
	t.Helper()
	s, err := testSite()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// pkiSetupBin is a setup.bin of n PKI records for s (profile amt11+),
// what `provstick setupbin pki` writes, and the records' content.
func pkiSetupBin(t testing.TB, s *pki.Site, n int) ([]byte, []setupbin.PKI) {
	t.Helper()
	prof, err := setupbin.ProfileByName("amt11+")
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	w, err := setupbin.NewWriter(&buf, setupbin.WriterOptions{Profile: prof, Records: uint32(n)})
	if err != nil {
		t.Fatal(err)
	}
	h := s.RootHash()
	var ps []setupbin.PKI
	for i := range n {
		p := setupbin.PKI{NewPassword: setupbin.Password(fmt.Sprintf("Mebx-Pw%02d!x", i)), RootHash: h[:], Suffix: "site.example"}
		rec, err := p.Record(prof)
		if err != nil {
			t.Fatal(err)
		}
		if err := w.AddRecord(rec); err != nil {
			t.Fatal(err)
		}
		ps = append(ps, p)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), ps
}

// pkiMachine is the simulator's state after the BIOS consumed record p:
// a PKI machine (no default hashes) trusting the site root, in setup.
func pkiMachine(t testing.TB, p setupbin.PKI) amtsim.State {
	t.Helper()
	d := amtsim.NewDevice(amtsim.PKIState())
	if err := d.ApplySetupRecord(amtsim.PKISetupRecord(p)); err != nil {
		t.Fatal(err)
	}
	return d.State()
}

// simulatorLME is simulator with the local WS-Man interface on the LME
// client (host-based activation).
func simulatorLME(t testing.TB, st amtsim.State) (string, *amtsim.Device) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "me.sock")
	ln, err := amtsim.Listen("unix://" + sock)
	if err != nil {
		t.Fatal(err)
	}
	dev := amtsim.NewDevice(st)
	srv := amtsim.NewMEServer(dev, &amtsim.MEOptions{LME: true})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { srv.Serve(ctx, ln); close(done) }()
	t.Cleanup(func() { cancel(); ln.Close(); srv.Close(); <-done })
	return "unix://" + sock, dev
}

// pkiStick is a stick directory with a PKI setup.bin of n records.
func pkiStick(t testing.TB, n int) (string, []setupbin.PKI) {
	t.Helper()
	root := t.TempDir()
	data, ps := pkiSetupBin(t, site(t), n)
	if err := os.WriteFile(filepath.Join(root, SetupBinName), data, 0o644); err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(root, "provstick"), 0o755)
	man := fmt.Sprintf(`{"format":"provstick-stick/1","stick":"pki-0001","recipe":"pki","setup_bin":{"records":%d,"first_record":1}}`, n)
	if err := os.WriteFile(filepath.Join(root, ManifestPath), []byte(man), 0o644); err != nil {
		t.Fatal(err)
	}
	return root, ps
}

// agentJSON is agent.json as the builder writes it with activation.
func agentJSON(password string, secret []byte) []byte {
	return fmt.Appendf(nil, `{"format":"provstick-agent/1","stick":"pki-0001","after":"poweroff","countdown":0,"me_wait":20,`+
		`"activate":{"mode":"client-control","password":%q,"secret":%q,"key_id":%q}}`,
		password, base64.StdEncoding.EncodeToString(secret), hostbased.KeyID(secret))
}

func TestRunPKIRecord(t *testing.T) {
	root, ps := pkiStick(t, 3)
	consume(t, root, 1)
	addr, _ := simulator(t, pkiMachine(t, ps[0]))
	res, err := Run(t.Context(), config(t, root, addr))
	if err != nil {
		t.Fatal(err)
	}
	r := res.Record
	t.Logf("%s", res.Message)
	if r.Case != ledger.CaseNormal || r.Record != 1 || r.Kind != KindPKI || r.PID != "" || hasMissing(r, "pid") || !res.OK {
		t.Errorf("case %s record %d kind %q pid %q missing %v ok %v", r.Case, r.Record, r.Kind, r.PID, r.Missing, res.OK)
	}
	want := site(t).RootHashHex()
	if r.AMT == nil || len(r.AMT.RootHashes) != 1 || r.AMT.RootHashes[0].Hash != want || !r.AMT.RootHashes[0].Active ||
		r.AMT.RootHashes[0].Algorithm != "SHA-256" || r.AMT.RootHashes[0].Name != setupbin.DefaultRootName {
		t.Errorf("root hashes %+v, want the site root %s", r.AMT, want)
	}
	if !strings.Contains(res.Message, "Record 1 (PKI, site root)") || r.Activation != nil {
		t.Errorf("message %q, activation %+v", res.Message, r.Activation)
	}
	// The next boot with the body zeroed (and no pids.json) still knows
	// the kind from the records left.
	consume(t, root, 1)
	res, err = Run(t.Context(), config(t, root, addr))
	if err != nil {
		t.Fatal(err)
	}
	if r := res.Record; r.Kind != KindPKI || hasMissing(r, "pid") {
		t.Errorf("second boot: kind %q missing %v", r.Kind, r.Missing)
	}
}

func TestRunActivate(t *testing.T) {
	for _, tc := range []struct {
		name     string
		state    func(t *testing.T, p setupbin.PKI) amtsim.State
		lme      bool
		password string
		secret   []byte
		want     string // ledger activation result
		wantErr  string
		ok       bool
	}{
		{"pki record, derived", func(t *testing.T, p setupbin.PKI) amtsim.State { return pkiMachine(t, p) }, true, PasswordDerived, siteSecret, ledger.ActivationActivated, "", true},
		{"pre-provisioning, fixed", func(*testing.T, setupbin.PKI) amtsim.State { return amtsim.DefaultState() }, true, PasswordFixed, []byte("Site-Admin-Pw1!"), ledger.ActivationActivated, "", true},
		{"already provisioned", func(*testing.T, setupbin.PKI) amtsim.State {
			st := amtsim.DefaultState()
			st.ProvisioningState, st.ControlMode = amthi.StatePost, amthi.ControlAdmin
			return st
		}, true, PasswordDerived, siteSecret, ledger.ActivationSkipped, "already provisioned (control mode admin)", false},
		{"no local interface", func(t *testing.T, p setupbin.PKI) amtsim.State { return pkiMachine(t, p) }, false, PasswordDerived, siteSecret, ledger.ActivationFailed, "no local manageability interface", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root, ps := pkiStick(t, 2)
			consume(t, root, 1)
			if err := os.WriteFile(filepath.Join(root, ConfPath), agentJSON(tc.password, tc.secret), 0o644); err != nil {
				t.Fatal(err)
			}
			var addr string
			var dev *amtsim.Device
			if tc.lme {
				addr, dev = simulatorLME(t, tc.state(t, ps[0]))
			} else {
				addr, dev = simulator(t, tc.state(t, ps[0]))
			}
			conf, err := ReadConf(root)
			if err != nil {
				t.Fatal(err)
			}
			cfg := config(t, root, addr)
			var logs bytes.Buffer
			cfg.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
			cfg.Activate = conf.Activation()
			res, err := Run(t.Context(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s", res.Message)
			a := res.Record.Activation
			if a == nil || a.Result != tc.want || !strings.Contains(a.Error, tc.wantErr) || a.Mode != ModeClientControl ||
				a.Password != tc.password+":"+hostbased.KeyID(tc.secret) || res.OK != tc.ok {
				t.Fatalf("activation %+v ok %v; want %s %q ok %v", a, res.OK, tc.want, tc.wantErr, tc.ok)
			}
			// The line on the stick says the same, and no password,
			// secret or digest is in it or in the log.
			raw, err := os.ReadFile(filepath.Join(root, ledger.FileName))
			if err != nil {
				t.Fatal(err)
			}
			l := readLedger(t, root)
			if got := l.Last().Activation; got == nil || *got != *a {
				t.Errorf("ledger line's activation %+v, want %+v", got, a)
			}
			st := dev.State()
			uuid := st.UUID.String()
			pw, _ := conf.Activation().Password(uuid)
			for _, secret := range []string{string(pw), string(tc.secret), base64.StdEncoding.EncodeToString(tc.secret),
				string(hostbased.DigestPassword("admin", a.Realm, pw))} {
				if bytes.Contains(raw, []byte(secret)) || strings.Contains(logs.String(), secret) || strings.Contains(res.Message, secret) {
					t.Errorf("a secret reached the ledger, the log or the screen")
				}
			}
			if tc.want != ledger.ActivationActivated {
				if strings.Contains(tc.wantErr, "no local") && !strings.Contains(res.Message, "activation to client control mode FAILED") {
					t.Errorf("message does not say the activation failed:\n%s", res.Message)
				}
				return
			}
			if a.ControlMode != "client" || a.ProvisioningState != "post" || a.Realm == "" || st.ControlMode != amthi.ControlClient {
				t.Errorf("activation %+v, device control mode %v", a, st.ControlMode)
			}
			if st.Net.AdminHA1 != wsman.DigestHA1("admin", a.Realm, wsman.Secret(pw)) {
				t.Error("the device's admin password is not the one the site can compute")
			}
			if tc.password == PasswordDerived {
				want, _ := hostbased.DerivePassword(siteSecret, strings.ToUpper(uuid))
				if want != pw {
					t.Error("derived password depends on the UUID's case")
				}
			}
			if !strings.Contains(res.Message, "ACTIVATED in client control mode") {
				t.Errorf("message:\n%s", res.Message)
			}
			// The ledger's amt block is the state at boot; activation's
			// is after.
			if res.Record.AMT.ControlMode != "none" {
				t.Errorf("amt.control_mode %q, want the state at boot (none)", res.Record.AMT.ControlMode)
			}
		})
	}
}

// TestRunActivateNoME: the ME never answered: activation is skipped and
// said so; a bad agent.json is named and nothing is activated.
func TestRunActivateNoME(t *testing.T) {
	root, _ := pkiStick(t, 2)
	consume(t, root, 1)
	cfg := config(t, root, "unix://"+filepath.Join(t.TempDir(), "nobody.sock"))
	cfg.METimeout = 500e6
	cfg.Activate = (&Conf{Activate: &ActivateConf{Mode: ModeClientControl, Password: PasswordDerived, Secret: siteSecret}}).Activation()
	res, err := Run(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if a := res.Record.Activation; a == nil || a.Result != ledger.ActivationSkipped || !strings.Contains(a.Error, "did not answer") {
		t.Errorf("activation %+v", a)
	}
	cfg.Activate, cfg.ConfErr = nil, fmt.Errorf("reading %s: %w: activate.mode %q", ConfPath, ErrConf, "admin")
	res, err = Run(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !hasMissing(res.Record, "agent-conf") || res.Record.Activation != nil {
		t.Errorf("missing %v activation %+v", res.Record.Missing, res.Record.Activation)
	}
}

func TestParseConf(t *testing.T) {
	good := agentJSON(PasswordDerived, siteSecret)
	c, err := ParseConf(good)
	if err != nil {
		t.Fatal(err)
	}
	if c.MEWaitDuration().Seconds() != 20 || c.CountdownSeconds() != 0 || c.Activation() == nil {
		t.Errorf("%+v", c)
	}
	if s := fmt.Sprintf("%v %+v %#v", c.Activate.Secret, *c.Activate, c.Activate.Secret); strings.Contains(s, string(siteSecret)) {
		t.Errorf("secret printed: %s", s)
	}
	var m map[string]any
	json.Unmarshal(good, &m)
	for _, tc := range []struct{ json, want string }{
		{``, "empty"},
		{`[1]`, "member"},
		{`{"format":"provstick-agent/9"}`, "format"},
		{`{"countdown":-1}`, "countdown"},
		{`{"me_wait":0}`, "me_wait"},
		{`{"me_wait":"x"}`, "member me_wait"},
		{`{"activate":{"mode":"admin-control"}}`, "activate.mode"},
		{`{"activate":{"mode":"client-control","password":"random"}}`, "activate.password"},
		{`{"activate":{"mode":"client-control","password":"derived","secret":"c2hvcnQ="}}`, "activate.secret: 5 bytes"},
		{`{"activate":{"mode":"client-control","password":"fixed","secret":"c2hvcnQ="}}`, "the fixed password"},
		{`{"activate":{"mode":"client-control","password":"derived","secret":"!!"}}`, "secret not base64"},
		{strings.Replace(string(good), hostbased.KeyID(siteSecret), "00000000", 1), "key_id"},
		{`{"check_kiosk":{"timeout":0}}`, "check_kiosk.timeout 0"},
		{`{"check_kiosk":{"timeout":301}}`, "check_kiosk.timeout 301"},
		{`{"check_kiosk":{"port":70000}}`, "check_kiosk.port 70000"},
		{`{"check_kiosk":{"domain":"-bad.example"}}`, "check_kiosk.domain"},
		{`{"check_kiosk":{"domain":"a..b"}}`, "check_kiosk.domain"},
		{`{"check_kiosk":{"domain":"a b"}}`, "check_kiosk.domain"},
		{`{"check_kiosk":true}`, "member check_kiosk"},
	} {
		_, err := ParseConf([]byte(tc.json))
		if !errors.Is(err, ErrConf) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.json, err, tc.want)
		}
	}
	k, err := ParseConf([]byte(`{"check_kiosk":{}}`))
	if err != nil || k.CheckKiosk == nil || k.CheckKiosk.TimeoutDuration() != DefaultKioskTimeout || k.CheckKiosk.PortNumber() != 9971 {
		t.Errorf("check_kiosk defaults: %+v %v", k, err)
	}
	k, err = ParseConf([]byte(`{"check_kiosk":{"timeout":5,"port":19971,"domain":"Line7.Example."}}`))
	if err != nil || k.CheckKiosk.TimeoutDuration() != 5*time.Second || k.CheckKiosk.PortNumber() != 19971 || k.CheckKiosk.Domain != "Line7.Example." {
		t.Errorf("check_kiosk: %+v %v", k, err)
	}
	if c, err := ReadConf(t.TempDir()); err != nil || c.Activation() != nil || c.CountdownSeconds() != 10 || c.MEWaitDuration().Seconds() != 30 {
		t.Errorf("no agent.json: %+v %v", c, err)
	}
}

// TestRunActivateRecovery: a power cut after Setup but before the ledger
// fsync leaves an activated machine and no line. The next boot of the
// stick on that machine attributes the record (the counter is still one
// ahead of the ledger), skips activation and says why.
func TestRunActivateRecovery(t *testing.T) {
	root, ps := pkiStick(t, 2)
	consume(t, root, 1)
	st := pkiMachine(t, ps[0])
	addr, dev := simulatorLME(t, st)
	act := (&Conf{Activate: &ActivateConf{Mode: ModeClientControl, Password: PasswordDerived, Secret: siteSecret}}).Activation()
	// The first boot's activation, its line lost.
	me := amtsim.NewMEServer(dev, &amtsim.MEOptions{LME: true})
	defer me.Close()
	pipe := me.Pipe(t.Context(), nil)
	pw, _ := act.Password(st.UUID.String())
	if _, err := hostbased.Activate(t.Context(), pipe, pw, nil); err != nil {
		t.Fatal(err)
	}
	pipe.Close()
	cfg := config(t, root, addr)
	cfg.Activate = act
	res, err := Run(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	r := res.Record
	t.Logf("%s", res.Message)
	if r.Case != ledger.CaseNormal || r.Record != 1 || r.Activation == nil || r.Activation.Result != ledger.ActivationSkipped ||
		r.Activation.ControlMode != "client" || res.OK || !strings.Contains(res.Message, "already in client control mode") {
		t.Errorf("case %s record %d activation %+v ok %v", r.Case, r.Record, r.Activation, res.OK)
	}
}
