package main

import (
	"encoding/json"
	"flag"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/provstick/provstick/cmd/provstick/cli"
	"github.com/rogpeppe/go-internal/testscript"
)

var update = flag.Bool("update", false, "rewrite the testscript files with the actual output")

func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"provstick": func() { os.Exit(cli.Main()) },
	})
}

// goEnv holds the go command's cache locations, read once.
var goEnv = func() map[string]string {
	m := map[string]string{}
	out, err := exec.Command("go", "env", "GOCACHE", "GOMODCACHE", "GOPATH").Output()
	if err != nil {
		return m
	}
	for i, v := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if i < 3 && v != "" {
			m[[]string{"GOCACHE", "GOMODCACHE", "GOPATH"}[i]] = v
		}
	}
	return m
}()

// vmKernelDir is where scripts/install-deps.sh unpacks the Debian kernel
// (VMTEST_KERNEL_DIR overrides it).
func vmKernelDir() string {
	if d := os.Getenv("VMTEST_KERNEL_DIR"); d != "" {
		return d
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		return ""
	}
	return filepath.Join(cache, "provstick", "vm-kernel")
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
			// waitlisten ADDR: wait (up to two minutes) until something
			// accepts TCP connections on ADDR — a kiosk started in the
			// background takes seconds to open its store on a loaded
			// machine, and a simulator started before it would say its
			// hellos to nobody.
			"waitlisten": func(ts *testscript.TestScript, neg bool, args []string) {
				if neg || len(args) != 1 {
					ts.Fatalf("usage: waitlisten ADDR")
				}
				deadline := time.Now().Add(2 * time.Minute)
				for {
					c, err := net.DialTimeout("tcp", args[0], time.Second)
					if err == nil {
						c.Close()
						return
					}
					if time.Now().After(deadline) {
						ts.Fatalf("nothing listens on %s after 2 minutes: %v", args[0], err)
					}
					time.Sleep(50 * time.Millisecond)
				}
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
			// Stories that build bootable sticks: the source tree (recipes,
			// the agent's package) and the Debian kernel that
			// scripts/install-deps.sh unpacked.
			// Kiosks in parallel stories: the web console on a free port.
			e.Setenv("PROVSTICK_KIOSK_WEB_LISTEN", "127.0.0.1:0")
			e.Setenv("REPO", root)
			e.Setenv("VM_KERNEL", vmKernelDir())
			// HOME moved: keep go's caches where they are.
			for k, v := range goEnv {
				e.Setenv(k, v)
			}
			return nil
		},
	})
}
