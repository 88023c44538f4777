package main

import (
	"flag"
	"os"
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
	testscript.Run(t, testscript.Params{
		Dir:                 "testdata/script",
		UpdateScripts:       *update,
		RequireExplicitExec: true,
		Setup: func(e *testscript.Env) error {
			// Keep the user's real configuration out of the tests.
			e.Setenv("XDG_CONFIG_HOME", e.WorkDir+"/.config")
			e.Setenv("HOME", e.WorkDir)
			return nil
		},
	})
}
