package cli

import (
	"path/filepath"
	"runtime"
	"testing"

	"github.com/spf13/cobra"
)

// TestExampleConfigs loads every example configuration users copy, so they
// cannot rot.
func TestExampleConfigs(t *testing.T) {
	_, file, _, _ := runtime.Caller(0)
	matches, err := filepath.Glob(filepath.Join(filepath.Dir(file), "..", "..", "..", "configs", "provstick*.yaml"))
	if err != nil || len(matches) == 0 {
		t.Fatalf("no example configurations found: %v", err)
	}
	for _, m := range matches {
		t.Run(filepath.Base(m), func(t *testing.T) {
			cmd := &cobra.Command{}
			cfg, used, err := loadConfig(cmd, m)
			if err != nil {
				t.Fatal(err)
			}
			if used != m || cfg.Version != ConfigVersion {
				t.Errorf("loaded %q version %d", used, cfg.Version)
			}
		})
	}
}
