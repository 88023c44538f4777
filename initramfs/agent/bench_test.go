package agent

import (
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/provstick/provstick/internal/ledger"
)

// BenchmarkRun is the agent's whole run on a stick directory (on the
// host's disk, the ME simulator over a Unix socket, fake DMI, NIC and TPM
// readers): read the manifest, the ledger and setup.bin, ask the ME,
// append one line with fsync of file and directory. Its peer,
// BenchmarkAppendOnly, is the ledger append alone on the same kind of
// file: the ratio is what the rest of the agent costs on top of the
// write it exists for. scripts/bench-agent.sh prints both.
func BenchmarkRun(b *testing.B) {
	root, psks := stick(b, 3, true)
	consume(b, root, 1)
	addr, _ := simulator(b, inSetup(b, psks[0].PID.String()))
	cfg := config(b, root, addr)
	cfg.Logger = slog.New(slog.DiscardHandler)
	var me time.Duration
	for b.Loop() {
		res, err := Run(b.Context(), cfg)
		if err != nil {
			b.Fatal(err)
		}
		me += res.MEElapsed
	}
	b.ReportMetric(float64(me.Microseconds())/float64(b.N), "me-µs/op")
}

func BenchmarkAppendOnly(b *testing.B) {
	name := filepath.Join(b.TempDir(), "ledger.jsonl")
	rec := &ledger.Record{Stick: "test-0001", Case: ledger.CaseNormal, Consumed: 1, Record: 11, PID: "0000-037M",
		AMT: &ledger.AMT{UUID: "4b529b93-d413-181d-e487-1c697a6b7a2b", AMTVersion: "11.8.50"}, Agent: Version, Time: time.Now()}
	var seq uint64
	for b.Loop() {
		seq++
		rec.Seq = seq
		if err := ledger.Append(name, rec); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRunActivate is BenchmarkRun on a PKI stick with host-based
// activation (derived password) before the append, each run on a fresh
// simulated machine in setup (started outside the timer). Its
// peer is BenchmarkRunPKI, the same run without activation: the ratio is
// what activation adds to a boot (Digest-authenticated WS-Man over the
// LME client plus the AMTHI checks).
func BenchmarkRunActivate(b *testing.B) { benchRunPKI(b, true) }

// BenchmarkRunPKI: the peer of BenchmarkRunActivate.
func BenchmarkRunPKI(b *testing.B) { benchRunPKI(b, false) }

func benchRunPKI(b *testing.B, activate bool) {
	root, ps := pkiStick(b, 3)
	consume(b, root, 1)
	initial := pkiMachine(b, ps[0])
	cfg := config(b, root, "")
	cfg.Logger = slog.New(slog.DiscardHandler)
	if activate {
		cfg.Activate = (&Conf{Activate: &ActivateConf{Mode: ModeClientControl, Password: PasswordDerived, Secret: siteSecret}}).Activation()
	}
	for b.Loop() {
		b.StopTimer()
		cfg.MEAddress, _ = simulatorLME(b, initial)
		b.StartTimer()
		res, err := Run(b.Context(), cfg)
		if err != nil {
			b.Fatal(err)
		}
		if a := res.Record.Activation; activate && (a == nil || a.Result != ledger.ActivationActivated) {
			b.Fatalf("activation %+v", a)
		}
	}
}
