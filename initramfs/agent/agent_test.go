package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/provstick/provstick/initramfs/heci/amthi"
	"github.com/provstick/provstick/internal/amtsim"
	"github.com/provstick/provstick/internal/ledger"
	"github.com/provstick/provstick/setupbin"
	"github.com/provstick/provstick/setupbin/setupbintest"
)

// stick makes a temporary directory that looks like a mounted stick with
// n records and returns it with the records' PSKs.
func stick(t testing.TB, n int, pidsFile bool) (string, []setupbin.PSK) {
	t.Helper()
	root := t.TempDir()
	data, psks := setupbintest.File(t, setupbintest.Options{Records: n, Seed: 7})
	if err := os.WriteFile(filepath.Join(root, SetupBinName), data, 0o644); err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(root, "provstick"), 0o755)
	man := fmt.Sprintf(`{"format":"provstick-stick/1","stick":"test-0001","recipe":"default","setup_bin":{"records":%d,"first_record":11}}`, n)
	if err := os.WriteFile(filepath.Join(root, ManifestPath), []byte(man), 0o644); err != nil {
		t.Fatal(err)
	}
	if pidsFile {
		var l pidList
		l.Format = pidsFormat
		for _, p := range psks {
			l.PIDs = append(l.PIDs, p.PID.String())
		}
		b, _ := json.Marshal(l)
		os.WriteFile(filepath.Join(root, PIDsPath), b, 0o644)
	}
	return root, psks
}

func consume(t testing.TB, root string, n int) {
	t.Helper()
	for range n {
		if _, err := setupbin.ConsumeFile(filepath.Join(root, SetupBinName)); err != nil {
			t.Fatal(err)
		}
	}
}

// simulator serves one simulated machine on a Unix socket and returns its
// heci address.
func simulator(t testing.TB, st amtsim.State) (string, *amtsim.Device) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "me.sock")
	ln, err := amtsim.Listen("unix://" + sock)
	if err != nil {
		t.Fatal(err)
	}
	dev := amtsim.NewDevice(st)
	srv := amtsim.NewMEServer(dev, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { srv.Serve(ctx, ln); close(done) }()
	t.Cleanup(func() { cancel(); ln.Close(); srv.Close(); <-done })
	return "unix://" + sock, dev
}

type fakeDMI struct {
	d   *ledger.DMI
	err error
}

func (f fakeDMI) ReadDMI() (*ledger.DMI, error) { return f.d, f.err }

type fakeNICs []string

func (f fakeNICs) MACs() ([]string, error) {
	if len(f) == 0 {
		return nil, errors.New("no NIC")
	}
	return f, nil
}

type fakeTPM struct{ t *ledger.TPM }

func (f fakeTPM) ReadEK(context.Context) (*ledger.TPM, error) {
	if f.t == nil {
		return nil, fmt.Errorf("opening /dev/tpm0: %w", ErrNoTPM)
	}
	return f.t, nil
}

func config(t testing.TB, root, addr string) Config {
	return Config{
		Root: root, MEAddress: addr, METimeout: 5 * time.Second,
		DMI:    fakeDMI{d: &ledger.DMI{Vendor: "LENOVO", Model: "M92p", Serial: "MJ01", SystemUUID: "4b529b93-d413-181d-e487-1c697a6b7a2b"}},
		NICs:   fakeNICs{"02:16:3e:00:00:01"},
		TPM:    fakeTPM{&ledger.TPM{EKSHA256: strings.Repeat("0f", 32), EKCert: true}},
		Now:    func() time.Time { return time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC) },
		Logger: slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
}

// inSetup is the simulator after the BIOS applied a record.
func inSetup(t testing.TB, pid string) amtsim.State {
	st := amtsim.DefaultState()
	st.ProvisioningState = amthi.StateIn
	st.PID = pid
	return st
}

func readLedger(t *testing.T, root string) *ledger.Log {
	t.Helper()
	l, err := ledger.ReadFile(filepath.Join(root, ledger.FileName))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestRunNormal(t *testing.T) {
	root, psks := stick(t, 5, false)
	consume(t, root, 1)
	addr, dev := simulator(t, inSetup(t, psks[0].PID.String()))
	res, err := Run(t.Context(), config(t, root, addr))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("start → ledger fsync %v (ME %v)\n%s", res.Elapsed, res.MEElapsed, res.Message)
	r := res.Record
	uuid := dev.State().UUID.String()
	if r.Case != ledger.CaseNormal || r.Record != 11 || r.Index != 0 || r.Seq != 1 || r.Consumed != 1 || r.PrevConsumed != nil {
		t.Errorf("record: %+v", r)
	}
	// The BIOS zeroed record 1's body and there is no pids.json: the PID
	// is missing, the next one is noted.
	if r.PID != "" || r.NextPID != psks[1].PID.Display() || !hasMissing(r, "pid") {
		t.Errorf("PID %q next %q missing %v", r.PID, r.NextPID, r.Missing)
	}
	if r.AMT == nil || r.AMT.UUID != uuid || r.AMT.AMTVersion != "11.8.50" || r.AMT.ProvisioningState != "in" || r.AMT.WiredMAC != "02:16:3e:00:00:01" {
		t.Errorf("AMT: %+v, want UUID %s", r.AMT, uuid)
	}
	if !res.OK || !strings.Contains(res.Message, "Record 11 (PID unknown) → this machine (UUID "+uuid+", AMT 11.8.50).") {
		t.Errorf("message:\n%s", res.Message)
	}
	l := readLedger(t, root)
	if len(l.Records) != 1 || len(l.Findings) != 0 || l.Records[0].AMT.UUID != uuid {
		t.Fatalf("ledger: %+v", l)
	}

	// The next machine: the previous line's next_pid names its record.
	consume(t, root, 1)
	addr2, _ := simulator(t, inSetup(t, psks[1].PID.String()))
	res, err = Run(t.Context(), config(t, root, addr2))
	if err != nil {
		t.Fatal(err)
	}
	r = res.Record
	if r.Case != ledger.CaseNormal || r.Record != 12 || r.PID != psks[1].PID.Display() || r.Seq != 2 || *r.PrevConsumed != 1 || !res.OK {
		t.Errorf("second boot: %+v\n%s", r, res.Message)
	}
	if want := fmt.Sprintf("Record 12 (PID %s) → this machine", psks[1].PID.Display()); !strings.Contains(res.Message, want) {
		t.Errorf("message lacks %q:\n%s", want, res.Message)
	}
	line, _ := os.ReadFile(filepath.Join(root, ledger.FileName))
	for _, p := range psks {
		if strings.Contains(string(line), string(p.PPS[:])) || strings.Contains(string(line), string(p.NewPassword)) {
			t.Fatal("a secret reached the ledger")
		}
	}
}

func hasMissing(r *ledger.Record, src string) bool {
	for _, m := range r.Missing {
		if m.Source == src {
			return true
		}
	}
	return false
}

func TestRunCases(t *testing.T) {
	for _, tc := range []struct {
		name       string
		records    int
		before     int // consumed before a first (normal) boot; -1: no first boot
		between    int // consumed between the boots
		rollback   bool
		state      amthi.ProvisioningState
		noME       bool
		wantCase   ledger.Case
		wantRecord int
		wantOK     bool
		wantText   []string
	}{
		{name: "normal with pids.json", records: 3, before: -1, between: 1, state: amthi.StateIn, wantCase: ledger.CaseNormal, wantRecord: 11, wantOK: true,
			wantText: []string{"Remove the stick; the machine will say hello to the kiosk."}},
		{name: "multiple", records: 5, before: 1, between: 3, state: amthi.StateIn, wantCase: ledger.CaseMultiple, wantRecord: 14,
			wantText: []string{"3 records were consumed", "records 12–13 went to machines"}},
		{name: "nothing consumed", records: 3, before: 1, between: 0, state: amthi.StatePre, wantCase: ledger.CaseNone,
			wantText: []string{"No record was consumed", "Enable USB provisioning"}},
		{name: "out of records", records: 2, before: 1, between: 1, state: amthi.StateIn, wantCase: ledger.CaseNormal, wantRecord: 12, wantOK: true},
		{name: "rollback", records: 3, before: 2, between: 0, rollback: true, state: amthi.StateIn, wantCase: ledger.CaseRollback,
			wantText: []string{"LOWER than the ledger's (2)", "Nothing was attributed"}},
		{name: "not in setup mode", records: 3, before: -1, between: 1, state: amthi.StatePre, wantCase: ledger.CaseNormal, wantRecord: 11,
			wantText: []string{"AMT is not in setup mode", "USB provisioning"}},
		{name: "already provisioned", records: 3, before: -1, between: 1, state: amthi.StatePost, wantCase: ledger.CaseNormal, wantRecord: 11,
			wantText: []string{"already provisioned"}},
		{name: "no ME", records: 3, before: -1, between: 1, noME: true, wantCase: ledger.CaseNormal, wantRecord: 11,
			wantText: []string{"Management Engine did not answer", "Not available on this machine: amt"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root, psks := stick(t, tc.records, true)
			var saved []byte
			if tc.before >= 0 {
				saved, _ = os.ReadFile(filepath.Join(root, SetupBinName))
				consume(t, root, tc.before)
				addr, _ := simulator(t, inSetup(t, ""))
				if _, err := Run(t.Context(), config(t, root, addr)); err != nil {
					t.Fatal(err)
				}
			}
			if tc.rollback {
				os.WriteFile(filepath.Join(root, SetupBinName), saved, 0o644)
				consume(t, root, 1)
			}
			consume(t, root, tc.between)
			st := inSetup(t, "")
			st.ProvisioningState = tc.state
			if tc.state == amthi.StatePost {
				st.ControlMode = amthi.ControlAdmin
			}
			addr, _ := simulator(t, st)
			cfg := config(t, root, addr)
			if tc.noME {
				cfg.MEAddress = "unix://" + filepath.Join(t.TempDir(), "nothing.sock")
				cfg.METimeout = 300 * time.Millisecond
			}
			res, err := Run(t.Context(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("\n%s", res.Message)
			r := res.Record
			if r.Case != tc.wantCase || r.Record != tc.wantRecord || res.OK != tc.wantOK {
				t.Errorf("case %s record %d ok %v, want %s %d %v", r.Case, r.Record, res.OK, tc.wantCase, tc.wantRecord, tc.wantOK)
			}
			if tc.wantRecord > 0 && r.PID != psks[tc.wantRecord-11].PID.Display() {
				t.Errorf("PID %q, want %q", r.PID, psks[tc.wantRecord-11].PID.Display())
			}
			for _, w := range tc.wantText {
				if !strings.Contains(res.Message, w) {
					t.Errorf("message lacks %q", w)
				}
			}
			l := readLedger(t, root)
			if len(l.Findings) != 0 || l.Last().Case != tc.wantCase {
				t.Errorf("ledger findings %v, last %+v", l.Findings, l.Last())
			}
		})
	}
}

func TestRunMissingSources(t *testing.T) {
	root, _ := stick(t, 2, true)
	consume(t, root, 1)
	addr, _ := simulator(t, inSetup(t, ""))
	cfg := config(t, root, addr)
	cfg.DMI = fakeDMI{err: errors.New("reading DMI: no readable field")}
	cfg.NICs = fakeNICs{}
	cfg.TPM = fakeTPM{}
	res, err := Run(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, src := range []string{"dmi", "nic", "tpm"} {
		if !hasMissing(res.Record, src) {
			t.Errorf("missing %s not recorded: %v", src, res.Record.Missing)
		}
	}
	if !strings.Contains(res.Message, "Not available on this machine: dmi, nic, tpm.") {
		t.Errorf("message:\n%s", res.Message)
	}
}

func TestRunTornLedger(t *testing.T) {
	root, _ := stick(t, 3, true)
	consume(t, root, 1)
	addr, _ := simulator(t, inSetup(t, ""))
	if _, err := Run(t.Context(), config(t, root, addr)); err != nil {
		t.Fatal(err)
	}
	f, _ := os.OpenFile(filepath.Join(root, ledger.FileName), os.O_WRONLY|os.O_APPEND, 0)
	f.WriteString(`{"v":1,"seq":2,"time":"2026-`)
	f.Close()
	consume(t, root, 1)
	res, err := Run(t.Context(), config(t, root, addr))
	if err != nil {
		t.Fatal(err)
	}
	if res.Record.Seq != 2 || res.Record.Case != ledger.CaseNormal || res.Record.Record != 12 || !strings.Contains(res.Message, "torn line") {
		t.Errorf("%+v\n%s", res.Record, res.Message)
	}
	l := readLedger(t, root)
	if len(l.Records) != 2 || len(l.Findings) != 1 || l.Findings[0].Code != ledger.CodeDamagedLine {
		t.Errorf("ledger: %d records, findings %v", len(l.Records), l.Findings)
	}
}

func TestRunNotAStick(t *testing.T) {
	if _, err := Run(t.Context(), Config{Root: t.TempDir()}); !errors.Is(err, ErrNotOurStick) {
		t.Errorf("Run on an empty directory: %v", err)
	}
}

func TestSysSources(t *testing.T) {
	sys := t.TempDir()
	write := func(p, s string) {
		os.MkdirAll(filepath.Dir(filepath.Join(sys, p)), 0o755)
		os.WriteFile(filepath.Join(sys, p), []byte(s), 0o644)
	}
	write("class/dmi/id/sys_vendor", "LENOVO\n")
	write("class/dmi/id/product_name", "10B5S0CA00\n")
	write("class/dmi/id/product_uuid", "4B529B93-D413-181D-E487-1C697A6B7A2B\n")
	write("class/net/lo/address", "00:00:00:00:00:00\n")
	write("class/net/eth0/address", "02:16:3E:00:00:01\n")
	write("class/net/wlan0/address", "02:16:3e:00:00:02\n")
	d, err := SysDMI{Root: sys}.ReadDMI()
	if err != nil || d.Vendor != "LENOVO" || d.Model != "10B5S0CA00" || d.Serial != "" || d.SystemUUID != "4b529b93-d413-181d-e487-1c697a6b7a2b" {
		t.Errorf("DMI %+v, %v", d, err)
	}
	m, err := SysNICs{Root: sys}.MACs()
	if err != nil || strings.Join(m, ",") != "02:16:3e:00:00:01,02:16:3e:00:00:02" {
		t.Errorf("MACs %v, %v", m, err)
	}
	if _, err := (SysDMI{Root: t.TempDir()}).ReadDMI(); err == nil {
		t.Error("DMI from an empty tree: no error")
	}
}

func TestRanges(t *testing.T) {
	if got := ranges([]int{3, 4, 5, 9, 11, 12}); got != "3–5, 9, 11–12" {
		t.Errorf("ranges = %q", got)
	}
}

// TestStaticSCS: the static SCS address of the record a machine took. The
// BIOS zeroes the taken record's body, so the other records say it (a
// stick's records share their network settings); no address, or no record
// taken, gives none.
func TestStaticSCS(t *testing.T) {
	open := func(t *testing.T, o setupbintest.Options) *setupbin.Reader {
		data, _ := setupbintest.File(t, o)
		root := t.TempDir()
		if err := os.WriteFile(filepath.Join(root, SetupBinName), data, 0o644); err != nil {
			t.Fatal(err)
		}
		sb, err := openSetupBin(root)
		if err != nil {
			t.Fatal(err)
		}
		return sb
	}
	scs := netip.MustParseAddr("10.77.0.9")
	sb := open(t, setupbintest.Options{Records: 3, Seed: 7, Server: scs, Consumed: 1})
	if got, want := staticSCS(sb, 0, 11), (StaticSCS{Addr: scs, Port: 9971, Record: 12}); got != want {
		t.Errorf("taken record zeroed: %+v, want %+v", got, want)
	}
	if got, want := staticSCS(sb, 1, 11), (StaticSCS{Addr: scs, Port: 9971, Record: 12}); got != want {
		t.Errorf("taken record still there: %+v, want %+v", got, want)
	}
	if got := staticSCS(sb, -1, 11); got.Addr.IsValid() {
		t.Errorf("no record taken: %+v", got)
	}
	if got := staticSCS(open(t, setupbintest.Options{Records: 3, Seed: 7, Consumed: 1}), 0, 11); got.Addr.IsValid() {
		t.Errorf("no address in the records: %+v", got)
	}
}
