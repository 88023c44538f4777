package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/provstick/provstick/kiosk/store/storetest"
	"github.com/provstick/provstick/setupbin"
)

func TestMain(m *testing.M) {
	if child := os.Getenv(childEnv); child != "" {
		os.Exit(runChild(child))
	}
	os.Exit(storetest.Main(m))
}

// testKDF keeps argon2id cheap in tests; the default is exercised by the
// CLI tests and the benchmarks.
var testKDF = KDFParams{Time: 1, Memory: 1024, Threads: 1}

type engineCase struct {
	name string
	dsn  func(t testing.TB) string
}

var engines = []engineCase{
	{"sqlite", func(t testing.TB) string { return filepath.Join(t.TempDir(), "pool.db") }},
	{"postgres", func(t testing.TB) string { return storetest.PostgresDSN(t) }},
}

// forEngines runs f once per engine, each with a fresh database.
func forEngines(t *testing.T, f func(t *testing.T, dsn string)) {
	for _, e := range engines {
		t.Run(e.name, func(t *testing.T) { f(t, e.dsn(t)) })
	}
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func openT(t testing.TB, dsn string, key *Key) *Store {
	t.Helper()
	s, err := Open(t.Context(), dsn, &Options{Key: key, KDF: testKDF, Station: "test", Actor: "tester", Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func pass(s string) *Key { return Passphrase([]byte(s)) }

func TestOpenMigrations(t *testing.T) {
	forEngines(t, func(t *testing.T, dsn string) {
		ms, err := Migrations(t.Context(), dsn)
		if err != nil {
			t.Fatal(err)
		}
		if len(ms) == 0 || ms[0].Applied {
			t.Fatalf("before open: got %+v, want pending migrations", ms)
		}
		if EngineOf(dsn) == SQLite {
			if _, err := os.Stat(dsn); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("Migrations created the database file: %v", err)
			}
		}
		s := openT(t, dsn, nil)
		if s.Unlocked() {
			t.Fatal("opened without key but Unlocked")
		}
		s.Close()
		ms, err = Migrations(t.Context(), dsn)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range ms {
			if !m.Applied {
				t.Errorf("migration %d %s not applied after Open", m.Version, m.Name)
			}
		}
		// Reopening applies nothing and works.
		s = openT(t, dsn, pass("pw"))
		if !s.Unlocked() {
			t.Fatal("not unlocked")
		}
	})
}

func TestGenerateAllocate(t *testing.T) {
	forEngines(t, func(t *testing.T, dsn string) {
		ctx := t.Context()
		s := openT(t, dsn, pass("correct horse"))
		pids, err := s.Generate(ctx, GenerateSpec{Count: 50, Profile: "amt6-10"})
		if err != nil {
			t.Fatal(err)
		}
		if len(pids) != 50 {
			t.Fatalf("got %d PIDs, want 50", len(pids))
		}
		if _, err := s.Generate(ctx, GenerateSpec{Count: 5, Profile: "amt2-5", NewPassword: "Fixed#Pw1"}); err != nil {
			t.Fatal(err)
		}
		st, es, err := s.AllocateStick(ctx, StickSpec{Label: "s1", Recipe: "default", Count: 10, Profile: "amt6-10"})
		if err != nil {
			t.Fatal(err)
		}
		if st.Records != 10 || len(es) != 10 {
			t.Fatalf("got stick %+v with %d entries, want 10", st, len(es))
		}
		for i, e := range es {
			if e.Record != i+1 || e.Stick != "s1" || e.State != StateAllocated || e.Profile != "amt6-10" {
				t.Errorf("entry %d: got record %d stick %q state %s profile %s", i, e.Record, e.Stick, e.State, e.Profile)
			}
			if e.PID != pids[i] {
				t.Errorf("entry %d: got PID %s, want %s (oldest first)", i, e.PID, pids[i])
			}
			if !e.PPS.Valid() || e.CurrentPassword != setupbin.DefaultMEBxPassword || setupbin.ValidateMEBxPassword(e.NewPassword) != nil {
				t.Errorf("entry %d: secrets did not decrypt to valid values", i)
			}
		}
		_, es2, err := s.AllocateStick(ctx, StickSpec{Label: "s2", Count: 1, Profile: "amt2-5"})
		if err != nil {
			t.Fatal(err)
		}
		if es2[0].NewPassword != "Fixed#Pw1" {
			t.Error("fixed new password not kept")
		}
		if _, _, err := s.AllocateStick(ctx, StickSpec{Label: "s1", Count: 1, Profile: "amt6-10"}); !errors.Is(err, ErrDuplicate) {
			t.Errorf("same label again: got %v, want ErrDuplicate", err)
		}
		_, _, err = s.AllocateStick(ctx, StickSpec{Label: "s3", Count: 41, Profile: "amt6-10"})
		if ee, ok := errors.AsType[*ExhaustedError](err); !ok || ee.Free != 40 || ee.Want != 41 {
			t.Errorf("too many: got %v, want ExhaustedError 40 free", err)
		}
		stat, err := s.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		want := []Count{{"amt2-5", StateFree, 4}, {"amt2-5", StateAllocated, 1}, {"amt6-10", StateFree, 40}, {"amt6-10", StateAllocated, 10}}
		if !slices.Equal(stat.Counts, want) {
			t.Errorf("status counts: got %v, want %v", stat.Counts, want)
		}
		checkInvariants(t, s)
	})
}

func TestInvalidArgs(t *testing.T) {
	s := openT(t, filepath.Join(t.TempDir(), "p.db"), pass("x"))
	ctx := t.Context()
	for _, tc := range []struct {
		name string
		f    func() error
	}{
		{"zero count", func() error { _, err := s.Generate(ctx, GenerateSpec{Count: 0, Profile: "amt6-10"}); return err }},
		{"huge count", func() error {
			_, err := s.Generate(ctx, GenerateSpec{Count: MaxAdd + 1, Profile: "amt6-10"})
			return err
		}},
		{"bad profile", func() error { _, err := s.Generate(ctx, GenerateSpec{Count: 1, Profile: "amt99"}); return err }},
		{"weak password", func() error {
			_, err := s.Generate(ctx, GenerateSpec{Count: 1, Profile: "amt6-10", NewPassword: "weak"})
			return err
		}},
		{"empty label", func() error { _, _, err := s.AllocateStick(ctx, StickSpec{Count: 1, Profile: "amt6-10"}); return err }},
		{"huge stick", func() error {
			_, _, err := s.AllocateStick(ctx, StickSpec{Label: "x", Count: MaxRecords + 1, Profile: "amt6-10"})
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.f()
			if !errors.Is(err, ErrInvalid) && !errors.Is(err, setupbin.ErrValue) {
				t.Errorf("got %v, want ErrInvalid or setupbin.ErrValue", err)
			}
		})
	}
}

func TestStateMachine(t *testing.T) {
	forEngines(t, func(t *testing.T, dsn string) {
		ctx := t.Context()
		s := openT(t, dsn, pass("k"))
		pids, err := s.Generate(ctx, GenerateSpec{Count: 4, Profile: "amt6-10"})
		if err != nil {
			t.Fatal(err)
		}
		p := pids[0]
		// free → consumed is illegal, with a typed error.
		err = s.Consume(ctx, p, Machine{UUID: "12345678-1234-1234-1234-123456789abc"}, "ledger")
		if te, ok := errors.AsType[*TransitionError](err); !ok || te.From != StateFree || te.To != StateConsumed || !errors.Is(err, ErrIllegalTransition) {
			t.Fatalf("free → consumed: got %v, want TransitionError", err)
		}
		if _, _, err := s.AllocateStick(ctx, StickSpec{Label: "a", Count: 2, Profile: "amt6-10"}); err != nil {
			t.Fatal(err)
		}
		m := Machine{UUID: "12345678-1234-1234-1234-123456789ABC", DMISerial: "SN1", MACs: []string{"00:11:22:33:44:55"}}
		steps := []struct {
			f    func() error
			want State
		}{
			{func() error { return s.Consume(ctx, p, m, "ledger import") }, StateConsumed},
			{func() error { return s.HelloSeen(ctx, p) }, StateHelloSeen},
			{func() error { return s.Fail(ctx, p, "TLS handshake failed") }, StateFailed},
			{func() error { return s.HelloSeen(ctx, p) }, StateHelloSeen},
			{func() error { return s.Provisioned(ctx, p) }, StateProvisioned},
			{func() error { return s.Void(ctx, p, "machine scrapped") }, StateVoid},
		}
		for i, st := range steps {
			if err := st.f(); err != nil {
				t.Fatalf("step %d: %v", i, err)
			}
			got, err := s.State(ctx, p)
			if err != nil || got != st.want {
				t.Fatalf("step %d: state %s, %v; want %s", i, got, err, st.want)
			}
		}
		if err := s.Void(ctx, p, "again"); !errors.Is(err, ErrIllegalTransition) {
			t.Errorf("void twice: got %v", err)
		}
		if err := s.Void(ctx, pids[3], ""); !errors.Is(err, ErrInvalid) {
			t.Errorf("void without reason: got %v", err)
		}
		if err := s.Void(ctx, pids[3], "lost"); err != nil {
			t.Errorf("void free: %v", err)
		}
		var unknown setupbin.PID
		copy(unknown[:], "0000037M")
		if _, err := s.History(ctx, unknown); !errors.Is(err, ErrNotFound) {
			t.Errorf("unknown PID: got %v", err)
		}
		h, err := s.History(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		var path []State
		for _, ev := range h {
			path = append(path, ev.To)
			if ev.Station != "test" || ev.Actor != "tester" || ev.At.IsZero() {
				t.Errorf("event %+v: station/actor/time missing", ev)
			}
		}
		want := []State{StateFree, StateAllocated, StateConsumed, StateHelloSeen, StateFailed, StateHelloSeen, StateProvisioned, StateVoid}
		if !slices.Equal(path, want) {
			t.Errorf("history: got %v, want %v", path, want)
		}
		if h[1].Stick != "a" || h[1].Record != 1 || h[2].Machine != "12345678-1234-1234-1234-123456789abc" || h[7].Reason != "machine scrapped" {
			t.Errorf("history details: %+v", h)
		}
		got, err := s.Machine(ctx, m.UUID)
		if err != nil || got.DMISerial != "SN1" || got.PID != p.String() || len(got.MACs) != 1 {
			t.Errorf("machine: got %+v, %v", got, err)
		}
		built := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
		if err := s.MarkStick(ctx, "a", StickMark{BuiltAt: built, ImageHash: "sha256:00"}); err != nil {
			t.Fatal(err)
		}
		if err := s.MarkStick(ctx, "a", StickMark{WrittenAt: built.Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		if err := s.MarkStick(ctx, "nope", StickMark{WrittenAt: built}); !errors.Is(err, ErrNotFound) {
			t.Errorf("marking an unknown stick: got %v", err)
		}
		st, err := s.Stick(ctx, "a")
		if err != nil || st.Unconsumed != 1 || !st.BuiltAt.Equal(built) || !st.WrittenAt.Equal(built.Add(time.Hour)) || st.ImageHash != "sha256:00" || !st.LedgerImportedAt.IsZero() {
			t.Errorf("stick: got %+v, %v; want 1 unconsumed, built, written, hash", st, err)
		}
		checkInvariants(t, s)
	})
}

func TestWrongKeyRekey(t *testing.T) {
	forEngines(t, func(t *testing.T, dsn string) {
		ctx := t.Context()
		s := openT(t, dsn, pass("old"))
		if _, err := s.Generate(ctx, GenerateSpec{Count: 3, Profile: "amt6-10"}); err != nil {
			t.Fatal(err)
		}
		s.Close()
		before := snapshot(t, dsn)
		_, err := Open(ctx, dsn, &Options{Key: pass("wrong"), KDF: testKDF})
		if !errors.Is(err, ErrWrongKey) {
			t.Fatalf("wrong passphrase: got %v, want ErrWrongKey", err)
		}
		raw, _ := RawKey(make([]byte, 32))
		if _, err := Open(ctx, dsn, &Options{Key: raw}); !errors.Is(err, ErrWrongKey) {
			t.Fatalf("key file on a passphrase store: got %v, want ErrWrongKey", err)
		}
		if after := snapshot(t, dsn); after != before {
			t.Errorf("a wrong key changed the database:\nbefore %s\nafter  %s", before, after)
		}
		s = openT(t, dsn, pass("old"))
		key := make([]byte, 32)
		key[0] = 7
		newKey, _ := RawKey(key)
		if err := s.Rekey(ctx, newKey); err != nil {
			t.Fatal(err)
		}
		s.Close()
		if _, err := Open(ctx, dsn, &Options{Key: pass("old"), KDF: testKDF}); !errors.Is(err, ErrWrongKey) {
			t.Fatalf("old passphrase after rekey: got %v", err)
		}
		s = openT(t, dsn, newKey)
		if _, es, err := s.AllocateStick(ctx, StickSpec{Label: "x", Count: 3, Profile: "amt6-10"}); err != nil || !es[2].PPS.Valid() {
			t.Fatalf("allocating after rekey: %v", err)
		}
		if err := s.Rekey(ctx, pass("back")); err != nil {
			t.Fatal(err)
		}
		s.Close()
		openT(t, dsn, pass("back"))
	})
}

// snapshot summarises what a database holds, to detect writes.
func snapshot(t *testing.T, dsn string) string {
	t.Helper()
	s, err := Open(t.Context(), dsn, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var out string
	for _, q := range []string{"SELECT count(*) FROM schema_migrations", "SELECT count(*) FROM entries", "SELECT count(*) FROM events",
		"SELECT rotated_at FROM keyring", "SELECT max(updated_at) FROM entries"} {
		var v any
		if err := s.db.QueryRowContext(t.Context(), q).Scan(&v); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		out += q + "=" + fmtAny(v) + "; "
	}
	return out
}

func fmtAny(v any) string {
	switch x := v.(type) {
	case nil:
		return "NULL"
	case []byte:
		return string(x)
	default:
		return slog.AnyValue(x).String()
	}
}

// checkInvariants verifies what must hold after any sequence of committed
// (or killed) transactions: the counters match the entries, every
// allocated entry has its stick, every stick has as many entries as
// records, and the event count matches the entries' histories.
func checkInvariants(t testing.TB, s *Store) {
	t.Helper()
	ctx := context.Background()
	q := func(query string) int64 {
		var n int64
		if err := s.db.QueryRowContext(ctx, query).Scan(&n); err != nil {
			t.Fatalf("%s: %v", query, err)
		}
		return n
	}
	if n := q(`SELECT count(*) FROM (SELECT profile, state, count(*) AS n FROM entries GROUP BY profile, state) a
		FULL OUTER JOIN pool_counts c ON c.profile = a.profile AND c.state = a.state
		WHERE COALESCE(a.n, 0) <> COALESCE(c.n, 0)`); n != 0 && s.Engine() == Postgres {
		t.Errorf("%d pool counters disagree with the entries", n)
	}
	if s.Engine() == SQLite { // no FULL OUTER JOIN before SQLite 3.39 in every build; compare both ways
		if n := q(`SELECT count(*) FROM (SELECT profile, state, count(*) AS n FROM entries GROUP BY profile, state) a
			LEFT JOIN pool_counts c ON c.profile = a.profile AND c.state = a.state WHERE COALESCE(c.n, 0) <> a.n`) +
			q(`SELECT count(*) FROM pool_counts c WHERE c.n <> (SELECT count(*) FROM entries e WHERE e.profile = c.profile AND e.state = c.state)`); n != 0 {
			t.Errorf("%d pool counters disagree with the entries", n)
		}
	}
	if n := q(`SELECT count(*) FROM entries e LEFT JOIN sticks s ON s.id = e.stick_id WHERE e.state = 'allocated' AND s.id IS NULL`); n != 0 {
		t.Errorf("%d allocated entries without their stick", n)
	}
	if n := q(`SELECT count(*) FROM sticks s WHERE s.record_count <> (SELECT count(*) FROM entries e WHERE e.stick_id = s.id)
		OR s.record_count <> (SELECT count(DISTINCT e.record) FROM entries e WHERE e.stick_id = s.id AND e.record BETWEEN 1 AND s.record_count)`); n != 0 {
		t.Errorf("%d sticks whose entries do not fill records 1..N", n)
	}
	if n := q(`SELECT count(*) FROM sticks s WHERE s.unconsumed <> (SELECT count(*) FROM entries e WHERE e.stick_id = s.id AND e.state = 'allocated')`); n != 0 {
		t.Errorf("%d sticks whose unconsumed count is wrong", n)
	}
	if n := q(`SELECT count(*) FROM entries e WHERE NOT EXISTS (SELECT 1 FROM events v WHERE v.pid = e.pid AND v.to_state = e.state)`); n != 0 {
		t.Errorf("%d entries without an event for their state", n)
	}
	if n := q(`SELECT count(*) FROM entries e WHERE e.stick_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM events v WHERE v.pid = e.pid AND v.to_state = 'allocated')`); n != 0 {
		t.Errorf("%d allocated entries without an allocation event", n)
	}
	if n := q(`SELECT count(*) FROM events v WHERE v.from_state = '' AND NOT EXISTS (SELECT 1 FROM entries e WHERE e.pid = v.pid)`); n != 0 {
		t.Errorf("%d creation events without their entry", n)
	}
	if created, entries := q(`SELECT count(*) FROM events WHERE from_state = ''`), q(`SELECT count(*) FROM entries`); created != entries {
		t.Errorf("%d creation events for %d entries", created, entries)
	}
}

func TestSecretsRedacted(t *testing.T) {
	s := openT(t, filepath.Join(t.TempDir(), "p.db"), pass("the passphrase"))
	if _, err := s.Generate(t.Context(), GenerateSpec{Count: 1, Profile: "amt6-10", NewPassword: "Fixed#Pass1"}); err != nil {
		t.Fatal(err)
	}
	_, es, err := s.AllocateStick(t.Context(), StickSpec{Label: "r", Count: 1, Profile: "amt6-10"})
	if err != nil {
		t.Fatal(err)
	}
	e := es[0]
	k := pass("the passphrase")
	for _, verb := range []string{"%v", "%+v", "%#v", "%s"} {
		out := fmt.Sprintf(verb, e) + fmt.Sprintf(verb, k) + fmt.Sprintf(verb, *k)
		for _, secret := range []string{e.PPS.Reveal(), "Fixed#Pass1", "the passphrase"} {
			if strings.Contains(out, secret) {
				t.Errorf("%s prints a secret: %s", verb, out)
			}
		}
	}
}

func TestLowSticks(t *testing.T) {
	forEngines(t, func(t *testing.T, dsn string) {
		ctx := t.Context()
		s := openT(t, dsn, pass("low"))
		if _, err := s.Generate(ctx, GenerateSpec{Count: 40, Profile: "amt6-10"}); err != nil {
			t.Fatal(err)
		}
		_, a, _ := s.AllocateStick(ctx, StickSpec{Label: "a", Count: 20, Profile: "amt6-10"})
		if _, _, err := s.AllocateStick(ctx, StickSpec{Label: "b", Count: 20, Profile: "amt6-10"}); err != nil {
			t.Fatal(err)
		}
		// 18 of 20 consumed: 2 left is 10%, not under it.
		for i, e := range a[:18] {
			if err := s.Consume(ctx, e.PID, Machine{UUID: fmt.Sprintf("00000000-0000-0000-0000-%012d", i)}, ""); err != nil {
				t.Fatal(err)
			}
		}
		st, _ := s.Status(ctx)
		if len(st.Low) != 0 {
			t.Fatalf("2 of 20 left: got low %+v, want none", st.Low)
		}
		if err := s.Void(ctx, a[18].PID, "lost"); err != nil {
			t.Fatal(err)
		}
		st, _ = s.Status(ctx)
		if len(st.Low) != 1 || st.Low[0].Label != "a" || st.Low[0].Unconsumed != 1 || st.Low[0].Records != 20 {
			t.Fatalf("1 of 20 left: got low %+v, want stick a", st.Low)
		}
		checkInvariants(t, s)
	})
}

// TestSQLiteFileMode: a new SQLite store is readable by its owner only.
func TestSQLiteFileMode(t *testing.T) {
	dsn := filepath.Join(t.TempDir(), "pool.db")
	key, err := RawKey(make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	s, err := Open(t.Context(), dsn, &Options{Key: key})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, name := range []string{dsn, dsn + "-wal"} {
		fi, err := os.Stat(name)
		if err != nil {
			t.Fatal(err)
		}
		if perm := fi.Mode().Perm(); perm != 0o600 {
			t.Errorf("%s has mode %v, want 0600", filepath.Base(name), perm)
		}
	}
}
