package main

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/provstick/provstick/cmd/provstick/cli"
	"github.com/rogpeppe/go-internal/testscript"
)

var update = flag.Bool("update", false, "rewrite the testscript files with the actual output")

func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"provstick": func() { os.Exit(cli.Main()) },
	})
}

// TestScript runs every user story in testdata/script against the real
// provstick binary (testscript re-executes this test binary as "provstick").
func TestScript(t *testing.T) {
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	testscript.Run(t, testscript.Params{
		Dir:                 "testdata/script",
		UpdateScripts:       *update,
		RequireExplicitExec: true,
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			// fixture NAME: copy setupbin/testdata/NAME into the script's
			// directory (binary fixtures cannot live in a txtar).
			"fixture": func(ts *testscript.TestScript, neg bool, args []string) {
				if neg || len(args) != 1 {
					ts.Fatalf("usage: fixture NAME")
				}
				b, err := os.ReadFile(filepath.Join(root, "setupbin", "testdata", args[0]))
				ts.Check(err)
				ts.Check(os.WriteFile(ts.MkAbs(args[0]), b, 0o644))
			},
			// nocommonpid A.json B.json: the two "setupbin view --json"
			// documents share no PID.
			"nocommonpid": func(ts *testscript.TestScript, neg bool, args []string) {
				if neg || len(args) != 2 {
					ts.Fatalf("usage: nocommonpid A.json B.json")
				}
				seen := map[string]string{}
				for _, name := range args {
					var doc struct {
						Records []struct {
							Entries []struct{ Name, Value string }
						}
					}
					ts.Check(json.Unmarshal([]byte(ts.ReadFile(name)), &doc))
					n := 0
					for _, r := range doc.Records {
						for _, e := range r.Entries {
							if !strings.HasPrefix(e.Name, "2/1 ") {
								continue
							}
							n++
							if other, ok := seen[e.Value]; ok {
								ts.Fatalf("PID %s is in %s and %s", e.Value, other, name)
							}
							seen[e.Value] = name
						}
					}
					if n == 0 {
						ts.Fatalf("%s holds no PID", name)
					}
				}
			},
		},
		Setup: func(e *testscript.Env) error {
			// Keep the user's real configuration out of the tests.
			e.Setenv("XDG_CONFIG_HOME", e.WorkDir+"/.config")
			e.Setenv("HOME", e.WorkDir)
			return nil
		},
	})
}
