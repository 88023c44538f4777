package main

import (
	"flag"
	"os"
	"path/filepath"
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
		},
		Setup: func(e *testscript.Env) error {
			// Keep the user's real configuration out of the tests.
			e.Setenv("XDG_CONFIG_HOME", e.WorkDir+"/.config")
			e.Setenv("HOME", e.WorkDir)
			return nil
		},
	})
}
