package store

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/provstick/provstick/setupbin"
)

func parseFile(t *testing.T, name string) ([]ImportEntry, error) {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return ParseImport(f)
}

func TestParseImport(t *testing.T) {
	for _, tc := range []struct {
		name      string
		wantN     int
		wantLines []int
		wantErr   error
		errLine   int
	}{
		{name: "import-ok.csv", wantN: 2, wantLines: []int{3, 4}},
		{name: "import-header.csv", wantN: 1, wantLines: []int{2}},
		{name: "import-ok.json", wantN: 2, wantLines: []int{2, 3}},
		{name: "import-dup.csv", wantN: 3}, // duplicates are Import's business
		{name: "import-badcheck.csv", wantErr: setupbin.ErrCheckChar, errLine: 2},
		{name: "import-allocated.csv", wantErr: ErrImportFormat, errLine: 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			es, err := parseFile(t, tc.name)
			if tc.wantErr != nil {
				ie, ok := errors.AsType[*ImportError](err)
				if !errors.Is(err, tc.wantErr) || !ok || ie.Line != tc.errLine {
					t.Fatalf("got %v, want %v at line %d", err, tc.wantErr, tc.errLine)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(es) != tc.wantN {
				t.Fatalf("got %d entries, want %d", len(es), tc.wantN)
			}
			for i, l := range tc.wantLines {
				if es[i].Line != l {
					t.Errorf("entry %d: line %d, want %d", i, es[i].Line, l)
				}
			}
		})
	}
}

func TestParseImportErrorsHideSecrets(t *testing.T) {
	const secret = "NKLD-G5DC-RRNQ-E9YZ-ZIJL-7LFL-VJED-69XK" // wrong last check character
	for _, in := range []string{
		"0000-037M," + secret + "\n",
		"0000-037M,NKLD-G5DC-RRNQ-E9YZ-ZIJL-7LFL-VJED-69XJ,weakpassword\n",
		`[{"pid": "0000-037M", "pps": "` + secret + `"}]`,
		`[{"pid": "0000-037M", "pps": 12345, "x": "` + secret + `"}]`,
		`[{"pid": "0000-037M", "pps": "` + secret + `", }]`,
	} {
		_, err := ParseImport(strings.NewReader(in))
		if err == nil {
			t.Errorf("%q: no error", in)
			continue
		}
		for _, s := range []string{secret, strings.ReplaceAll(secret, "-", ""), "weakpassword"} {
			if strings.Contains(err.Error(), s) {
				t.Errorf("error %q carries a secret", err)
			}
		}
	}
}

func TestImport(t *testing.T) {
	forEngines(t, func(t *testing.T, dsn string) {
		ctx := t.Context()
		s := openT(t, dsn, pass("imp"))
		es, err := parseFile(t, "import-ok.csv")
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Import(ctx, es, ImportSpec{Profile: "amt6-10", Source: "import-ok.csv"}); err != nil {
			t.Fatal(err)
		}
		// Within the file: line 3 repeats line 1.
		dup, err := parseFile(t, "import-dup.csv")
		if err != nil {
			t.Fatal(err)
		}
		err = s.Import(ctx, dup, ImportSpec{Profile: "amt6-10"})
		if de, ok := errors.AsType[*DuplicateError](err); !ok || de.Line != 3 || de.OtherLine != 1 {
			t.Fatalf("duplicate in file: got %v", err)
		}
		// Against the pool: the JSON's line 3 repeats an entry imported above;
		// its line 2 is new but must not be imported either.
		js, err := parseFile(t, "import-ok.json")
		if err != nil {
			t.Fatal(err)
		}
		err = s.Import(ctx, js, ImportSpec{Profile: "amt6-10"})
		if de, ok := errors.AsType[*DuplicateError](err); !ok || de.Line != 3 || de.OtherLine != 0 || !errors.Is(err, ErrDuplicate) {
			t.Fatalf("duplicate in pool: got %v", err)
		}
		if _, err := s.State(ctx, js[0].PID); !errors.Is(err, ErrNotFound) {
			t.Errorf("a failed import left entry %s behind (%v)", js[0].PID, err)
		}
		hdr, err := parseFile(t, "import-header.csv")
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Import(ctx, hdr, ImportSpec{Profile: "amt6-10"}); err != nil {
			t.Fatal(err)
		}
		st, _ := s.Status(ctx)
		want := []Count{{"amt2-5", StateFree, 1}, {"amt6-10", StateFree, 2}}
		if len(st.Counts) != 2 || st.Counts[0] != want[0] || st.Counts[1] != want[1] {
			t.Errorf("counts: got %v, want %v", st.Counts, want)
		}
		_, got, err := s.AllocateStick(ctx, StickSpec{Label: "i", Count: 2, Profile: "amt6-10"})
		if err != nil {
			t.Fatal(err)
		}
		if got[0].PPS.RevealDisplay() != "NKLD-G5DC-RRNQ-E9YZ-ZIJL-7LFL-VJED-69XJ" || got[1].NewPassword != "Imp0rt#Pass" || got[0].CurrentPassword != "admin" {
			t.Errorf("imported secrets did not come back")
		}
		checkInvariants(t, s)
	})
}

func TestExportRoundTrip(t *testing.T) {
	forEngines(t, func(t *testing.T, dsn string) {
		ctx := t.Context()
		s := openT(t, dsn, pass("exp"))
		if _, err := s.Generate(ctx, GenerateSpec{Count: 20, Profile: "amt6-10"}); err != nil {
			t.Fatal(err)
		}
		if _, _, err := s.AllocateStick(ctx, StickSpec{Label: "e", Count: 5, Profile: "amt6-10"}); err != nil {
			t.Fatal(err)
		}
		var all, free bytes.Buffer
		if n, err := s.Export(ctx, &all); err != nil || n != 20 {
			t.Fatalf("export all: %d, %v", n, err)
		}
		if n, err := s.Export(ctx, &free, StateFree); err != nil || n != 15 {
			t.Fatalf("export free: %d, %v", n, err)
		}
		if _, err := ParseImport(&all); !errors.Is(err, ErrImportFormat) {
			t.Errorf("importing allocated entries: got %v, want ErrImportFormat", err)
		}
		es, err := ParseImport(&free)
		if err != nil {
			t.Fatal(err)
		}
		other := openT(t, filepath.Join(t.TempDir(), "other.db"), pass("other"))
		if err := other.Import(ctx, es, ImportSpec{}); err != nil {
			t.Fatal(err)
		}
		_, a, err := other.AllocateStick(ctx, StickSpec{Label: "o", Count: 15, Profile: "amt6-10"})
		if err != nil {
			t.Fatal(err)
		}
		var back bytes.Buffer
		other.Export(ctx, &back)
		if !strings.Contains(back.String(), a[14].PPS.RevealDisplay()+",admin,"+a[14].NewPassword.Reveal()) {
			t.Error("secrets changed on the way")
		}
	})
}
