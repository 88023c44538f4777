package setupbin

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

// Intel's documented example pair, specs/setupbin.md §4.1.
const (
	intelPID = "0000-037M"
	intelPPS = "NKLD-G5DC-RRNQ-E9YZ-ZIJL-7LFL-VJED-69XJ"
)

func TestIntelExamplePair(t *testing.T) {
	pid, err := ParsePID(intelPID)
	if err != nil {
		t.Fatalf("ParsePID(%q): %v", intelPID, err)
	}
	if got, want := pid.String(), "0000037M"; got != want {
		t.Errorf("PID canonical = %q, want %q", got, want)
	}
	if got := pid.Display(); got != intelPID {
		t.Errorf("PID display = %q, want %q", got, intelPID)
	}
	pps, err := ParsePPS(intelPPS)
	if err != nil {
		t.Fatalf("ParsePPS: %v", err)
	}
	if got, want := pps.Reveal(), strings.ReplaceAll(intelPPS, "-", ""); got != want {
		t.Errorf("PPS canonical = %q, want %q", got, want)
	}
	if got := pps.RevealDisplay(); got != intelPPS {
		t.Errorf("PPS display = %q, want %q", got, intelPPS)
	}
	if _, err := ParsePPS(strings.ToLower(intelPPS)); err != nil {
		t.Errorf("lower-case PPS: %v", err)
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name, in string
		pps      bool
		want     error
		msg      string
	}{
		{"pid short", "0000037", false, ErrValue, "has 7 characters"},
		{"pid bad char", "0000-03_M", false, ErrValue, "not in 0-9A-Z"},
		{"pid misplaced dash", "000-0037M", false, ErrValue, "a dash may stand only after the 4th"},
		{"pid check", "0000037N", false, ErrCheckChar, `check character 'N' wrong, want 'M'`},
		{"pps group 5", "NKLDG5DCRRNQE9YZZIJK7LFLVJED69XJ", true, ErrCheckChar, "group 5 check character wrong"},
		{"pps length", "NKLD", true, ErrValue, "has 4 characters"},
		{"pps misplaced dash", "NKL-DG5DC-RRNQ-E9YZ-ZIJL-7LFL-VJED-69XJ", true, ErrValue, "dashes may stand only between groups"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var err error
			if tt.pps {
				_, err = ParsePPS(tt.in)
			} else {
				_, err = ParsePID(tt.in)
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("err = %q, want it to contain %q", err, tt.msg)
			}
			if tt.pps && strings.Contains(err.Error(), tt.in[:4]) {
				t.Errorf("PPS error %q carries the secret", err)
			}
		})
	}
}

func TestGenerate(t *testing.T) {
	seen := map[PID]bool{}
	for i := 0; i < 1000; i++ {
		pid, err := GeneratePID(nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ParsePID(pid.String()); err != nil {
			t.Fatalf("generated PID %s does not parse: %v", pid, err)
		}
		seen[pid] = true
		pps, err := GeneratePPS(nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ParsePPS(pps.Reveal()); err != nil {
			t.Fatalf("generated PPS does not parse: %v", err)
		}
		pw, err := GenerateMEBxPassword(nil, 16)
		if err != nil {
			t.Fatal(err)
		}
		if err := ValidateMEBxPassword(pw); err != nil {
			t.Fatalf("generated password invalid: %v", err)
		}
	}
	if len(seen) < 999 {
		t.Errorf("1000 generated PIDs hold only %d distinct values", len(seen))
	}
	// A short read from the randomness is an error, not a weak key.
	if _, err := GeneratePPS(bytes.NewReader(make([]byte, 10))); err == nil {
		t.Error("GeneratePPS with 10 random bytes succeeded")
	}
}

func TestSecretsRedacted(t *testing.T) {
	pps, _ := ParsePPS(intelPPS)
	pw := Password("S3cret!pass")
	var buf bytes.Buffer
	slog.New(slog.NewTextHandler(&buf, nil)).Info("x", "pps", pps, "pw", pw)
	out := buf.String() + fmt.Sprintf("%v %s %+v %#v %v %#v", pps, pps, pps, pps, pw, pw)
	for _, secret := range []string{"NKLD", "S3cret"} {
		if strings.Contains(out, secret) {
			t.Errorf("output %q carries a secret", out)
		}
	}
}

func TestValidateMEBxPassword(t *testing.T) {
	tests := []struct {
		pw   string
		want string // "" = valid
	}{
		{"P@ssw0rd", ""},
		{"Pa$$w0rdPa$$w0rdPa$$w0rdPa$$w0rd", ""},
		{"P@ssw0r", "has 7 characters"},
		{"Pa$$w0rdPa$$w0rdPa$$w0rdPa$$w0rdX", "has 33 characters"},
		{"p@ssw0rd", "upper-case"},
		{"P@SSW0RD", "lower-case"},
		{"P@ssword", "digit"},
		{"Passw0rd", "non-alphanumeric"},
		{"Pass w0rd!", "forbidden"},
		{"Pass_w0rd!", "forbidden"},
		{"Pass:w0rd!", "forbidden"},
		{"Pässw0rd!", "not printable"},
	}
	for _, tt := range tests {
		err := ValidateMEBxPassword(Password(tt.pw))
		if tt.want == "" {
			if err != nil {
				t.Errorf("%q: %v", tt.pw, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: err = %v, want %q", tt.pw, err, tt.want)
		}
		if err != nil && strings.Contains(err.Error(), tt.pw) {
			t.Errorf("error %q carries the password", err)
		}
	}
}
