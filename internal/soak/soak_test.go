package soak

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRunsAndReport(t *testing.T) {
	t.Setenv("PROVSTICK_SOAK_SCALE", "")
	if Runs(20) != 20 {
		t.Errorf("Runs without a scale: %d", Runs(20))
	}
	t.Setenv("PROVSTICK_SOAK_SCALE", "3")
	if Runs(20) != 60 {
		t.Errorf("Runs with scale 3: %d", Runs(20))
	}
	t.Setenv("PROVSTICK_SOAK_SCALE", "x")
	if Runs(5) != 5 {
		t.Errorf("Runs with a bad scale: %d", Runs(5))
	}
	t.Setenv("PROVSTICK_SOAK_REPORT", "")
	if err := Report(Result{Loop: "x"}); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "r.jsonl")
	t.Setenv("PROVSTICK_SOAK_REPORT", p)
	Report(Result{Loop: "a", Runs: 2, Faults: 2})
	Report(Result{Loop: "b", Runs: 1, Lost: 1})
	b, _ := os.ReadFile(p)
	if got := strings.Count(string(b), "\n"); got != 2 || !strings.Contains(string(b), `"loop":"b","runs":1,"faults":0,"lost":1`) {
		t.Errorf("report file:\n%s", b)
	}
}
