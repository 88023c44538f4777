package agent

import (
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/provstick/provstick/internal/ledger"
)

func TestWrap(t *testing.T) {
	for _, tc := range []struct {
		in    string
		width int
		want  []string
	}{
		{"", 10, nil},
		{"a b c", 10, []string{"a b c"}},
		{"Remove the stick; the machine", 10, []string{"Remove the", "stick; the", "machine"}},
		{"0123456789abc de", 5, []string{"01234", "56789", "abc", "de"}},
		{"Record 17 → this", 9, []string{"Record 17", "→ this"}},
	} {
		got := wrap(tc.in, tc.width)
		if strings.Join(got, "|") != strings.Join(tc.want, "|") {
			t.Errorf("wrap(%q, %d) = %q, want %q", tc.in, tc.width, got, tc.want)
		}
	}
}

func TestToConsole(t *testing.T) {
	got := toConsole("a\x1b[2Jb – “c” → é\x07")
	if want := "a[2Jb - \"c\" → ?"; got != want {
		t.Errorf("toConsole = %q, want %q", got, want)
	}
}

func TestScreenRender(t *testing.T) {
	res := &Result{OK: true, Record: &ledger.Record{Seq: 3, Stick: "s-1", Record: 17},
		Message: "Record 17 (PID 0000-037M) → this machine (UUID 4b529b93-d413-181d-e487-1c697a6b7a2b, AMT 8.1.40).\nRemove the stick; the machine will say hello to the kiosk.\n"}
	s := ResultScreen(res)
	if s.Kind != ScreenDone || !strings.Contains(s.Title, "REMOVE THE STICK") {
		t.Fatalf("screen %+v", s)
	}
	s.Footer = "Powering off in 9 s"
	out := string(s.Render(80, 25))
	for _, want := range []string{"\x1b[2J", "\x1b[0;30;42m", "Record 17 (PID 0000-037M) →", "Remove the stick;", "Stick: s-1", "\x1b[24;1H", "Powering off in 9 s"} {
		if !strings.Contains(out, want) {
			t.Errorf("rendered screen lacks %q:\n%q", want, out)
		}
	}
	// No text line is wider than the screen.
	for _, l := range strings.Split(out, "\r\n") {
		plain := stripSGR(l)
		if n := utf8.RuneCountInString(plain); n > 80 {
			t.Errorf("line of %d columns: %q", n, plain)
		}
	}
	// A long message is cut above the footer, never scrolled.
	long := Screen{Kind: ScreenProblem, Title: "PROBLEM", Lead: strings.Repeat("word ", 400), Footer: "x"}
	if n := strings.Count(string(long.Render(80, 25)), "\r\n"); n > 24 {
		t.Errorf("%d lines on a 25-row screen", n)
	}
	if ResultScreen(&Result{Message: "PROBLEM: x\n", Record: &ledger.Record{}}).Kind != ScreenProblem {
		t.Error("a result with no record is not a problem screen")
	}
}

func stripSGR(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == 0x1b {
			for i < len(s) && !(s[i] >= 'A' && s[i] <= 'z' && s[i] != '[') {
				i++
			}
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func TestClockPlausible(t *testing.T) {
	for _, tc := range []struct {
		s    string
		want bool
	}{{"2000-01-01T00:00:05Z", false}, {"2024-12-31T23:59:59Z", false}, {"2026-11-23T12:00:00Z", true}, {"2100-01-01T00:00:00Z", false}} {
		tm, _ := time.Parse(time.RFC3339, tc.s)
		if got := ClockPlausible(tm); got != tc.want {
			t.Errorf("ClockPlausible(%s) = %v", tc.s, got)
		}
	}
}

func TestRunClockWrong(t *testing.T) {
	root, psks := stick(t, 2, true)
	consume(t, root, 1)
	addr, _ := simulator(t, inSetup(t, psks[0].PID.String()))
	cfg := config(t, root, addr)
	cfg.Now = func() time.Time { return time.Date(2000, 1, 1, 0, 0, 5, 0, time.UTC) }
	res, err := Run(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !hasMissing(res.Record, "clock") || !res.OK {
		t.Errorf("a flat RTC: missing %v, OK %v; want clock named, still OK", res.Record.Missing, res.OK)
	}
}

// TestRunWithCollectedMachine: what CollectMachine gathered beforehand is
// what Run writes, without asking the sources again.
func TestRunWithCollectedMachine(t *testing.T) {
	root, psks := stick(t, 2, true)
	consume(t, root, 1)
	addr, dev := simulator(t, inSetup(t, psks[0].PID.String()))
	cfg := config(t, root, addr)
	m := CollectMachine(t.Context(), cfg)
	if m.AMT == nil || m.AMT.UUID != dev.State().UUID.String() || len(m.Phases) != 3 {
		t.Fatalf("collected %+v", m)
	}
	cfg.Machine = m
	cfg.MEAddress = "unix:///nonexistent" // not asked again
	cfg.TPM = nil
	res, err := Run(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if r := res.Record; r.AMT == nil || r.AMT.UUID != m.AMT.UUID || r.TPM == nil || hasMissing(r, "amt") || hasMissing(r, "tpm") || !res.OK {
		t.Errorf("record %+v, missing %v", r, r.Missing)
	}
}
