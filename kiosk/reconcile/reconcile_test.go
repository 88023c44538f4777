package reconcile

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/provstick/provstick/internal/ledger"
	"github.com/provstick/provstick/kiosk/store"
	"github.com/provstick/provstick/kiosk/store/storetest"
	"github.com/provstick/provstick/setupbin"
)

var update = flag.Bool("update", false, "rewrite the golden ledgers in testdata")

var testKDF = store.KDFParams{Time: 1, Memory: 1024, Threads: 1}

// base is when the golden ledgers' machines booted the stick.
var base = time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)

// pool is a store with two sticks of five records, site-0001 and
// site-0002, drawn from ten entries whose PIDs come from a fixed seed (so
// the golden ledgers name them).
type pool struct {
	s    *store.Store
	pids []setupbin.PID // record order: site-0001 #1..5, then site-0002 #1..5
}

func fixedEntries(t testing.TB) []store.ImportEntry {
	r := rand.NewChaCha8([32]byte{'p', 'r', 'o', 'v', 's', 't', 'i', 'c', 'k'})
	var es []store.ImportEntry
	for i := range 10 {
		pid, err := setupbin.GeneratePID(r)
		if err != nil {
			t.Fatal(err)
		}
		pps, err := setupbin.GeneratePPS(r)
		if err != nil {
			t.Fatal(err)
		}
		es = append(es, store.ImportEntry{Line: i + 1, PID: pid, PPS: pps, NewPassword: "P@ssw0rd-Test1"})
	}
	return es
}

func newPool(t testing.TB) *pool { return newPoolAt(t, filepath.Join(t.TempDir(), "pool.db")) }

func newPoolAt(t testing.TB, dsn string) *pool {
	t.Helper()
	ctx := context.Background()
	s, err := store.Open(ctx, dsn, &store.Options{Key: store.Passphrase([]byte("test")), KDF: testKDF, Station: "test", Actor: "tester"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if err := s.Import(ctx, fixedEntries(t), store.ImportSpec{Profile: "amt6-10", Source: "test"}); err != nil {
		t.Fatal(err)
	}
	p := &pool{s: s}
	for _, label := range []string{"site-0001", "site-0002"} {
		_, es, err := s.AllocateStick(ctx, store.StickSpec{Label: label, Recipe: "test", Count: 5, Profile: "amt6-10"})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range es {
			p.pids = append(p.pids, e.PID)
		}
	}
	return p
}

func uuidN(n int) string { return fmt.Sprintf("00000000-0000-4000-8000-%012d", n) }

// rec is ledger record seq of stick label attributing record k (1-based)
// to machine uuidN(machine).
func rec(label string, seq uint64, k int, pid setupbin.PID, machine int) *ledger.Record {
	prev := uint32(seq - 1)
	r := &ledger.Record{Seq: seq, Time: base.Add(time.Duration(seq) * time.Hour), Stick: label, Case: ledger.CaseNormal,
		Consumed: uint32(k), Record: k, Index: k - 1, PID: pid.Display(),
		AMT:  &ledger.AMT{UUID: uuidN(machine), AMTVersion: "9.1.2"},
		DMI:  &ledger.DMI{Vendor: "Acme", Model: "Box 9", Serial: fmt.Sprintf("SN%04d", machine)},
		MACs: []string{fmt.Sprintf("02:00:00:00:00:%02x", machine)}, Agent: "test"}
	if seq > 1 {
		r.PrevConsumed = &prev
	}
	return r
}

func lines(t testing.TB, rs ...*ledger.Record) []byte {
	var b []byte
	for _, r := range rs {
		l, err := ledger.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		b = append(b, l...)
	}
	return b
}

// goldens builds every golden ledger from the fixed pool.
func goldens(t testing.TB) map[string][]byte {
	p := fixedEntries(t)
	pid := func(i int) setupbin.PID { return p[i].PID }
	good := lines(t, rec("site-0001", 1, 1, pid(0), 1), rec("site-0001", 2, 2, pid(1), 2), rec("site-0001", 3, 3, pid(2), 3))
	badsum := bytes.Replace(good, []byte("SN0002"), []byte("SN0009"), 1)
	torn := append(bytes.Clone(good), lines(t, rec("site-0001", 4, 4, pid(3), 4))[:90]...)
	rb := rec("site-0001", 4, 1, setupbin.PID{}, 9)
	rb.Case, rb.Record, rb.PID, rb.AMT = ledger.CaseRollback, 0, "", &ledger.AMT{UUID: uuidN(9)}
	rollback := append(bytes.Clone(good), lines(t, rb)...)
	copied := lines(t, rec("site-0001", 1, 1, pid(0), 7), rec("site-0001", 2, 2, pid(1), 8))
	older := lines(t, rec("site-0001", 1, 1, pid(0), 1))
	foreign := lines(t, rec("other-0001", 1, 1, pid(5), 5))
	mismatch := lines(t, rec("site-0002", 1, 1, pid(0), 6)) // site-0001's first PID on site-0002
	pki1, pki2 := rec("pki-0001", 1, 1, setupbin.PID{}, 11), rec("pki-0001", 2, 2, setupbin.PID{}, 12)
	pki1.PID, pki2.PID, pki1.Kind, pki2.Kind = "", "", "pki", "pki"
	pki := lines(t, pki1, pki2)
	return map[string][]byte{
		"pki.jsonl":  pki,
		"good.jsonl": good, "badsum.jsonl": badsum, "torn.jsonl": torn, "rollback.jsonl": rollback,
		"copied.jsonl": copied, "older.jsonl": older, "foreign.jsonl": foreign, "mismatch.jsonl": mismatch,
		"truncated.jsonl": good[:len(good)/2],
	}
}

func TestGoldenLedgers(t *testing.T) {
	for name, want := range goldens(t) {
		path := filepath.Join("testdata", name)
		if *update {
			if err := os.WriteFile(path, want, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v (run with -update)", err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s: got %q, want %q (run with -update)", name, got, want)
		}
	}
}

func golden(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (p *pool) imp(t testing.TB, name string, now time.Time) *Report {
	t.Helper()
	rep, err := Import(context.Background(), p.s, name, bytes.NewReader(golden(t, name)), Options{Now: func() time.Time { return now }})
	if err != nil {
		t.Fatalf("Import %s: %v", name, err)
	}
	return rep
}

func kinds(ds []Discrepancy) map[Kind]int {
	m := map[Kind]int{}
	for _, d := range ds {
		m[d.Kind]++
	}
	return m
}

func (p *pool) state(t testing.TB, i int) store.State {
	t.Helper()
	st, err := p.s.State(context.Background(), p.pids[i])
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestImportGoodAndIdempotent(t *testing.T) { testImportGood(t, newPool(t)) }

// TestPostgres runs the import and the discrepancy queries on PostgreSQL
// (a throwaway cluster; the test fails if PostgreSQL cannot start).
func TestPostgres(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: no PostgreSQL cluster")
	}
	t.Run("import", func(t *testing.T) { testImportGood(t, newPoolAt(t, storetest.PostgresDSN(t))) })
	t.Run("hellos", func(t *testing.T) { testDiscrepanciesFromHellos(t, newPoolAt(t, storetest.PostgresDSN(t))) })
	t.Run("copies", func(t *testing.T) {
		p := newPoolAt(t, storetest.PostgresDSN(t))
		p.imp(t, "good.jsonl", base)
		if rep := p.imp(t, "copied.jsonl", base); rep.Alarms() != 4 {
			t.Errorf("%+v", rep.Discrepancies)
		}
	})
}

func testImportGood(t *testing.T, p *pool) {
	ctx := t.Context()
	now := base.Add(4 * time.Hour)
	rep := p.imp(t, "good.jsonl", now)
	if rep.Stick != "site-0001" || !rep.Known || rep.Records != 3 || rep.Consumed != 3 || rep.NewRecords != 3 || rep.Damaged != 0 || rep.Repeat {
		t.Fatalf("first import: %+v", rep)
	}
	if len(rep.Discrepancies) != 0 {
		t.Errorf("discrepancies: %+v", rep.Discrepancies)
	}
	for i := range 3 {
		if st := p.state(t, i); st != store.StateConsumed {
			t.Errorf("record %d: %s, want consumed", i+1, st)
		}
	}
	if st := p.state(t, 3); st != store.StateAllocated {
		t.Errorf("record 4: %s, want allocated", st)
	}
	m, err := p.s.Machine(ctx, uuidN(2))
	if err != nil {
		t.Fatal(err)
	}
	if m.DMISerial != "SN0002" || m.PID != p.pids[1].String() || len(m.MACs) != 1 {
		t.Errorf("machine 2: %+v", m)
	}
	stick, err := p.s.Stick(ctx, "site-0001")
	if err != nil {
		t.Fatal(err)
	}
	if !stick.LedgerImportedAt.Equal(now) || stick.Unconsumed != 2 {
		t.Errorf("stick: imported %v unconsumed %d", stick.LedgerImportedAt, stick.Unconsumed)
	}
	h1, _ := p.s.History(ctx, p.pids[0])

	rep = p.imp(t, "good.jsonl", now.Add(time.Minute))
	if rep.Consumed != 0 || rep.Matched != 3 || rep.NewRecords != 0 || !rep.Repeat || len(rep.Discrepancies) != 0 {
		t.Fatalf("second import: %+v", rep)
	}
	h2, _ := p.s.History(ctx, p.pids[0])
	if len(h1) != len(h2) {
		t.Errorf("re-import wrote %d events", len(h2)-len(h1))
	}
	ds, err := Discrepancies(ctx, p.s, now)
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != 0 {
		t.Errorf("discrepancies within the hello window: %+v", ds)
	}
	// Seven hours after the boots, none of the three has said hello.
	ds, err = Discrepancies(ctx, p.s, base.Add(10*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if k := kinds(ds); k[KindNoHello] != 3 || len(ds) != 3 {
		t.Errorf("after the window: %v", k)
	}
	if !strings.Contains(ds[0].Advice, "power the machine on again") {
		t.Errorf("advice: %q", ds[0].Advice)
	}
}

func TestImportMalformed(t *testing.T) {
	for _, tc := range []struct {
		name              string
		consumed, damaged int
		kind              Kind
		sev               Severity
	}{
		{"badsum.jsonl", 2, 1, KindMalformed, SeverityWarning},
		{"torn.jsonl", 3, 1, KindMalformed, SeverityInfo},
		{"truncated.jsonl", 1, 1, KindMalformed, SeverityInfo},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newPool(t)
			rep := p.imp(t, tc.name, base)
			if rep.Consumed != tc.consumed || rep.Damaged != tc.damaged {
				t.Errorf("consumed %d damaged %d, want %d %d: %+v", rep.Consumed, rep.Damaged, tc.consumed, tc.damaged, rep)
			}
			if len(rep.Discrepancies) != 1 || rep.Discrepancies[0].Kind != tc.kind || rep.Discrepancies[0].Severity != tc.sev {
				t.Errorf("discrepancies: %+v", rep.Discrepancies)
			}
			// Kept: the report lists it, once even after a second import.
			p.imp(t, tc.name, base)
			ds, err := Discrepancies(t.Context(), p.s, base)
			if err != nil {
				t.Fatal(err)
			}
			if k := kinds(ds); k[tc.kind] != 1 {
				t.Errorf("kept: %+v", ds)
			}
		})
	}
}

func TestImportForeignStick(t *testing.T) {
	p := newPool(t)
	rep := p.imp(t, "foreign.jsonl", base)
	if rep.Known || rep.Consumed != 0 || rep.Stick != "other-0001" {
		t.Fatalf("%+v", rep)
	}
	if k := kinds(rep.Discrepancies); k[KindForeignStick] != 1 {
		t.Errorf("%+v", rep.Discrepancies)
	}
	for i := range p.pids {
		if st := p.state(t, i); st != store.StateAllocated {
			t.Errorf("entry %d: %s", i, st)
		}
	}
	recs, err := p.s.LedgerRecords(t.Context(), "")
	if err != nil || len(recs) != 0 {
		t.Errorf("kept records %v, %v", recs, err)
	}
}

// TestImportPKIStick: a PKI stick (setupbin pki: a site root hash, no
// PID/PPS) is not drawn from the pool; its ledger records the machines and
// says what the stick was, with no foreign-stick warning.
func TestImportPKIStick(t *testing.T) {
	p := newPool(t)
	rep := p.imp(t, "pki.jsonl", base)
	if rep.Known || rep.Consumed != 0 || rep.Stick != "pki-0001" || rep.Records != 2 {
		t.Fatalf("%+v", rep)
	}
	if len(rep.Discrepancies) != 1 || rep.Discrepancies[0].Kind != KindPKIStick || rep.Discrepancies[0].Severity != SeverityInfo ||
		!strings.Contains(rep.Discrepancies[0].Detail, "2 machines recorded") {
		t.Errorf("%+v", rep.Discrepancies)
	}
	m, err := p.s.Machine(t.Context(), uuidN(12))
	if err != nil || m.DMISerial != "SN0012" || m.AMTVersion != "9.1.2" {
		t.Errorf("machine 12: %+v, %v", m, err)
	}
	for i := range p.pids {
		if st := p.state(t, i); st != store.StateAllocated {
			t.Errorf("entry %d: %s", i, st)
		}
	}
	// Information only: nothing is kept as a discrepancy.
	ds, err := Discrepancies(t.Context(), p.s, base)
	if err != nil {
		t.Fatal(err)
	}
	if k := kinds(ds); k[KindPKIStick] != 0 || k[KindForeignStick] != 0 {
		t.Errorf("kept: %+v", ds)
	}
}

func TestImportCopiesAndCounters(t *testing.T) {
	p := newPool(t)
	p.imp(t, "good.jsonl", base)
	// A copy of the stick used on other machines: same seq, other lines.
	rep := p.imp(t, "copied.jsonl", base)
	k := kinds(rep.Discrepancies)
	if k[KindLedgerConflict] != 2 || k[KindCopiedStick] != 2 || rep.Alarms() != 4 {
		t.Errorf("copied: %v", k)
	}
	// An older read of the same stick lacks lines: nothing wrong.
	rep = p.imp(t, "older.jsonl", base)
	if len(rep.Discrepancies) != 0 {
		t.Errorf("older: %+v", rep.Discrepancies)
	}
	// A stick written back from an older image and booted again: seq 4
	// shows a counter below what seq 3 showed.
	back := rec("site-0001", 4, 2, p.pids[1], 9)
	rep, err := Import(t.Context(), p.s, "restored", bytes.NewReader(lines(t, back)), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if k := kinds(rep.Discrepancies); k[KindCounterBackwards] != 1 || k[KindCopiedStick] != 1 {
		t.Errorf("restored: %+v", rep.Discrepancies)
	}
	rep = p.imp(t, "rollback.jsonl", base)
	if k := kinds(rep.Discrepancies); k[KindCounterBackwards] != 1 {
		t.Errorf("rollback: %+v", rep.Discrepancies)
	}
	ds, err := Discrepancies(t.Context(), p.s, base)
	if err != nil {
		t.Fatal(err)
	}
	if ds[0].Severity != SeverityAlarm {
		t.Errorf("alarms first: %+v", ds[0])
	}
	if k := kinds(ds); k[KindCopiedStick] < 2 {
		t.Errorf("kept: %v", k)
	}
	// The consumed entries still belong to the first machines.
	m, err := p.s.Machine(t.Context(), uuidN(1))
	if err != nil || m.PID != p.pids[0].String() {
		t.Errorf("machine 1: %+v %v", m, err)
	}
}

func TestImportRecordMismatch(t *testing.T) {
	p := newPool(t)
	rep := p.imp(t, "mismatch.jsonl", base)
	if k := kinds(rep.Discrepancies); k[KindRecordMismatch] != 1 || rep.Alarms() != 1 || rep.Consumed != 0 {
		t.Errorf("%+v", rep)
	}
}

func TestDiscrepanciesFromHellos(t *testing.T) { testDiscrepanciesFromHellos(t, newPool(t)) }

func testDiscrepanciesFromHellos(t *testing.T, p *pool) {
	ctx := t.Context()
	p.imp(t, "good.jsonl", base)
	now := base.Add(time.Hour)
	// Record 4 of site-0001 says hello before its ledger line is imported,
	// and the kiosk consumes it from the hello (as package kiosk does).
	if err := p.s.Consume(ctx, p.pids[3], store.Machine{UUID: uuidN(4)}, "consumed: inferred from a hello"); err != nil {
		t.Fatal(err)
	}
	if err := p.s.HelloSeen(ctx, p.pids[3]); err != nil {
		t.Fatal(err)
	}
	// Record 1 of site-0002 too (its stick has not come back).
	if err := p.s.Consume(ctx, p.pids[5], store.Machine{UUID: uuidN(6)}, "consumed: inferred from a hello"); err != nil {
		t.Fatal(err)
	}
	if err := p.s.HelloSeen(ctx, p.pids[5]); err != nil {
		t.Fatal(err)
	}
	hs := []store.HelloRecord{
		{At: now, Peer: "10.0.0.4:1000", UUID: uuidN(4), PID: p.pids[3].String(), Version: 2, Outcome: "queued"},
		{At: now, Peer: "10.0.0.6:1000", UUID: uuidN(6), PID: p.pids[5].String(), Version: 2, Outcome: "queued"},
		{At: now, Peer: "10.0.0.1:1000", UUID: uuidN(1), PID: p.pids[0].String(), Version: 2, Outcome: "queued"},
		{At: now, Peer: "10.0.0.7:1000", UUID: uuidN(7), PID: p.pids[0].String(), Version: 2, Outcome: "folded"},
		{At: now, Peer: "10.0.0.9:1000", UUID: uuidN(9), PID: "0000037M", Version: 2, Outcome: "unknown-pid: PID not in this pool"},
	}
	if err := p.s.RecordHellos(ctx, hs); err != nil {
		t.Fatal(err)
	}
	if err := p.s.MarkStickLost(ctx, "site-0002", true); err != nil {
		t.Fatal(err)
	}
	ds, err := Discrepancies(ctx, p.s, now)
	if err != nil {
		t.Fatal(err)
	}
	k := kinds(ds)
	want := map[Kind]int{KindCopiedStick: 1, KindNotInLedger: 2, KindUnknownPID: 1, KindLostStick: 1}
	for kind, n := range want {
		if k[kind] != n {
			t.Errorf("%s: %d, want %d (all: %v)", kind, k[kind], n, k)
		}
	}
	for _, d := range ds {
		switch {
		case d.Kind == KindNotInLedger && d.Subject == "stick site-0001" && d.Severity != SeverityWarning,
			d.Kind == KindNotInLedger && d.Subject == "stick site-0002" && (d.Severity != SeverityInfo || !strings.Contains(d.Advice, "not come back")),
			d.Kind == KindLostStick && !strings.Contains(d.Detail, "4 entries"):
			t.Errorf("%+v", d)
		}
	}
	// The stick's ledger comes back with line 4: record 4 is matched.
	rep, err := Import(ctx, p.s, "site-0001 full", bytes.NewReader(append(golden(t, "good.jsonl"), lines(t, rec("site-0001", 4, 4, p.pids[3], 4))...)), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Matched != 4 || rep.NewRecords != 1 {
		t.Errorf("%+v", rep)
	}
	ds, err = Discrepancies(ctx, p.s, now)
	if err != nil {
		t.Fatal(err)
	}
	if k := kinds(ds); k[KindNotInLedger] != 1 {
		t.Errorf("after the import: %v", k)
	}
	// Voiding the lost stick's entries clears its discrepancy.
	if n, err := p.s.VoidStick(ctx, "site-0002", "stick lost"); err != nil || n != 4 {
		t.Fatalf("VoidStick: %d, %v", n, err)
	}
	ds, err = Discrepancies(ctx, p.s, now)
	if err != nil {
		t.Fatal(err)
	}
	if k := kinds(ds); k[KindLostStick] != 0 {
		t.Errorf("after voiding: %v", k)
	}
}

func TestImportTooLarge(t *testing.T) {
	p := newPool(t)
	rep, err := Import(t.Context(), p.s, "big", bytes.NewReader(golden(t, "good.jsonl")), Options{MaxSize: 100})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Consumed != 0 || len(rep.Discrepancies) != 1 || rep.Discrepancies[0].Kind != KindMalformed {
		t.Errorf("%+v", rep)
	}
}

func TestReadSource(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "provstick"), 0o755); err != nil {
		t.Fatal(err)
	}
	want := golden(t, "good.jsonl")
	if err := os.WriteFile(filepath.Join(dir, "provstick", "ledger.jsonl"), want, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{dir, filepath.Join(dir, "provstick", "ledger.jsonl")} {
		got, where, err := ReadSource(name)
		if err != nil || !bytes.Equal(got, want) || !strings.HasSuffix(where, "ledger.jsonl") {
			t.Errorf("%s: %q %v", name, where, err)
		}
	}
	if _, _, err := ReadSource(t.TempDir()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("empty dir: %v", err)
	}
}

// TestMain stops the PostgreSQL cluster TestPostgres starts.
func TestMain(m *testing.M) { os.Exit(storetest.Main(m)) }

// TestImportKioskCheck: a ledger line whose agent found the kiosk
// unreachable at the PC is reported (and kept) while its PID has not said
// hello, with what the check found; a machine that did say hello, or
// whose check passed, is not; a check that could not run is information.
func TestImportKioskCheck(t *testing.T) {
	p := newPool(t)
	ctx := t.Context()
	r1 := rec("site-0001", 1, 1, p.pids[0], 1)
	r1.KioskCheck = &ledger.KioskCheck{Result: ledger.KioskRefused, Static: "setup.bin record 2", Kiosk: "10.77.0.9:9971",
		Error: "connecting to 10.77.0.9:9971: connection refused"}
	r2 := rec("site-0001", 2, 2, p.pids[1], 2)
	r2.KioskCheck = &ledger.KioskCheck{Result: ledger.KioskTimeout, Name: "provisionserver.lab.example", Kiosk: "10.77.0.1:9971"}
	r3 := rec("site-0001", 3, 3, p.pids[2], 3)
	r3.KioskCheck = &ledger.KioskCheck{Result: ledger.KioskReachable, Name: "provisionserver.lab.example", Kiosk: "10.77.0.1:9971"}
	r4 := rec("site-0001", 4, 4, p.pids[3], 4)
	r4.KioskCheck = &ledger.KioskCheck{Result: ledger.KioskNoNIC, Error: "no wired interface"}
	// Machine 2 has said hello: its check's failure is history.
	if err := p.s.RecordHellos(ctx, []store.HelloRecord{{At: base, Peer: "10.0.0.2:1000", UUID: uuidN(2), PID: p.pids[1].String(), Version: 2, Outcome: "queued"}}); err != nil {
		t.Fatal(err)
	}
	rep, err := Import(ctx, p.s, "kiosk.jsonl", bytes.NewReader(lines(t, r1, r2, r3, r4)), Options{Now: func() time.Time { return base }})
	if err != nil {
		t.Fatal(err)
	}
	var got []Discrepancy
	for _, d := range rep.Discrepancies {
		if d.Kind == KindKioskUnreachable {
			got = append(got, d)
		}
	}
	if len(got) != 2 {
		t.Fatalf("kiosk-unreachable discrepancies: %+v (all: %+v)", got, rep.Discrepancies)
	}
	d := got[0]
	if d.Severity != SeverityWarning || d.Subject != "PID "+p.pids[0].Display() ||
		!strings.Contains(d.Detail, "refused, the static address in setup.bin record 2 → 10.77.0.9:9971: connecting to 10.77.0.9:9971: connection refused") ||
		!strings.Contains(d.Detail, uuidN(1)) || !strings.Contains(d.Advice, "power the machine on again") {
		t.Errorf("refused: %+v", d)
	}
	if d := got[1]; d.Severity != SeverityInfo || d.Subject != "PID "+p.pids[3].Display() || !strings.Contains(d.Advice, "check_kiosk.modules") {
		t.Errorf("no NIC: %+v", d)
	}
	ds, err := Discrepancies(ctx, p.s, base)
	if err != nil {
		t.Fatal(err)
	}
	if k := kinds(ds); k[KindKioskUnreachable] != 2 {
		t.Errorf("kept: %v", k)
	}
}

// TestKioskCheckMootAfterHello: the kept kiosk-unreachable discrepancy of
// a machine goes from the list once its PID says hello.
func TestKioskCheckMootAfterHello(t *testing.T) {
	p := newPool(t)
	ctx := t.Context()
	r1 := rec("site-0001", 1, 1, p.pids[0], 1)
	r1.KioskCheck = &ledger.KioskCheck{Result: ledger.KioskNoDHCP, Error: "no DHCP answer"}
	if _, err := Import(ctx, p.s, "kiosk.jsonl", bytes.NewReader(lines(t, r1)), Options{Now: func() time.Time { return base }}); err != nil {
		t.Fatal(err)
	}
	count := func() int {
		ds, err := Discrepancies(ctx, p.s, base)
		if err != nil {
			t.Fatal(err)
		}
		return kinds(ds)[KindKioskUnreachable]
	}
	if n := count(); n != 1 {
		t.Fatalf("before the hello: %d", n)
	}
	if err := p.s.RecordHellos(ctx, []store.HelloRecord{{At: base.Add(time.Hour), Peer: "10.0.0.1:1000", UUID: uuidN(1), PID: p.pids[0].String(), Version: 2, Outcome: "queued"}}); err != nil {
		t.Fatal(err)
	}
	if n := count(); n != 0 {
		t.Errorf("after the hello: %d", n)
	}
}
