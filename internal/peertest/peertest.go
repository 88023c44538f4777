// Package peertest finds the independent peers the tests run against —
// programs we did not write, installed by scripts/install-deps.sh — and
// applies one rule to all of them: a missing peer fails the test, except
// node outside CI (CI != "true"), where the test skips with a message.
package peertest

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// MeshCentralVersion is the npm package version scripts/install-deps.sh
// unpacks under <module root>/.cache/meshcentral/<version>.
const MeshCentralVersion = "1.1.55"

// MeshCentralAMT returns the node binary and MeshCentral's amt/ folder
// ($PROVSTICK_MESHCENTRAL_DIR/amt, else <module root>/.cache/meshcentral/
// <version>/amt), failing the test unless each of files is there.
func MeshCentralAMT(t testing.TB, files ...string) (node, amtDir string) {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("node not on PATH under CI=true: scripts/install-deps.sh installs it")
		}
		t.Skip("node not on PATH: MeshCentral interop not run (scripts/install-deps.sh installs node; CI runs it)")
	}
	dir := os.Getenv("PROVSTICK_MESHCENTRAL_DIR")
	if dir == "" {
		root, err := ModuleRoot()
		if err != nil {
			t.Fatal(err)
		}
		dir = filepath.Join(root, ".cache", "meshcentral", MeshCentralVersion)
	}
	amtDir = filepath.Join(dir, "amt")
	for _, f := range files {
		if _, err := os.Stat(filepath.Join(amtDir, f)); err != nil {
			t.Fatalf("MeshCentral's amt/%s not found under %s (%v): run scripts/install-deps.sh, or set PROVSTICK_MESHCENTRAL_DIR", f, dir, err)
		}
	}
	return node, amtDir
}

var root struct {
	once sync.Once
	dir  string
	err  error
}

// ModuleRoot returns the directory holding go.mod above the working
// directory (a test's working directory is its package's).
func ModuleRoot() (string, error) {
	root.once.Do(func() {
		dir, err := os.Getwd()
		if err != nil {
			root.err = err
			return
		}
		for {
			if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
				root.dir = dir
				return
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				root.err = errors.New("go.mod not found above the test's directory")
				return
			}
			dir = parent
		}
	})
	return root.dir, root.err
}
