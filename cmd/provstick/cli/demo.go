package cli

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

func init() { register(newDemoCmd) }

type demoFlags struct {
	dir      string
	records  int
	machines int
}

// newDemoCmd is "provstick demo": the whole story a newcomer can run on one
// machine. Each step runs the same command a user would type, printed
// before it runs, in a fresh directory.
func newDemoCmd(e *env) *cobra.Command {
	var f demoFlags
	c := &cobra.Command{
		Use:   "demo",
		Short: "Run the provisioning story end to end on this machine",
		Long: `demo runs, in a new directory, the steps a site goes through, printing each
command before it runs so that you can repeat any of them by hand:

  1. fill a pool store with fresh PID/PPS entries (SQLite, encrypted at rest,
     with a demo passphrase written next to it);
  2. draw N records from the pool for a stick's setup.bin;
  3. let M machines take a record each, as their BIOS would;
  4. show what the stick and the pool hold now, and check the stick;
  5. make a second, self-contained setup.bin with its own secrets file, and
     rewind a record, as you would for a test stick.

Later releases extend it to building a bootable stick, booting it in QEMU and
provisioning simulated machines through the kiosk.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runDemo(cmd, e, &f) },
	}
	c.Flags().StringVar(&f.dir, "dir", "demo", "directory under which each run gets a new folder")
	c.Flags().IntVar(&f.records, "records", 10, "records on the demo stick")
	c.Flags().IntVar(&f.machines, "machines", 3, "machines that take a record")
	return c
}

func runDemo(cmd *cobra.Command, e *env, f *demoFlags) error {
	if f.machines < 1 || f.machines > f.records {
		return fmt.Errorf("flag --machines: invalid value %d (want 1 to --records %d)", f.machines, f.records)
	}
	dir := filepath.Join(f.dir, "run-"+time.Now().UTC().Format("20060102-150405.000"))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("making the demo directory: %w", err)
	}
	stick := filepath.Join(dir, "setup.bin")
	testStick := filepath.Join(dir, "test-setup.bin")
	secrets := filepath.Join(dir, "test-secrets.json")
	// The demo's own configuration: a pool next to it, unlocked by a
	// passphrase file. A real site keeps its passphrase elsewhere.
	cfgFile := filepath.Join(dir, "provstick.yaml")
	cfg := "version: 1\nstore:\n  dsn: pool.db\n  passphrase_file: demo-passphrase\n  station: demo\n"
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
		return fmt.Errorf("writing the demo configuration: %w", err)
	}
	pass := make([]byte, 18)
	if _, err := rand.Read(pass); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "demo-passphrase"), []byte(base64.RawURLEncoding.EncodeToString(pass)+"\n"), 0o600); err != nil {
		return fmt.Errorf("writing the demo passphrase: %w", err)
	}
	fmt.Fprintf(e.stdout, "provstick demo in %s (configuration %s)\n", dir, cfgFile)

	step := func(title string, args ...string) error {
		fmt.Fprintf(e.stdout, "\n==> %s\n$ provstick --config %s %s\n", title, cfgFile, strings.Join(args, " "))
		full := append([]string{"--config", cfgFile, "--log-level", e.cfg.Log.Level, "--log-format", e.cfg.Log.Format}, args...)
		if code := run(cmd.Context(), full, e.stdin, e.stdout, e.stdout); code != 0 {
			return &exitError{code: code, err: fmt.Errorf("demo step %q failed", title)}
		}
		return nil
	}
	label := "demo-stick-1"
	steps := [][]string{
		{fmt.Sprintf("1. A pool of %d fresh PID/PPS entries for AMT 6-10 machines", 2*f.records),
			"pool", "generate", "--count", fmt.Sprint(2 * f.records), "--profile", "amt6-10"},
		{fmt.Sprintf("2. Stick %s: %d records drawn from the pool", label, f.records),
			"setupbin", "create", "--from-pool", "--stick", label, "--records", fmt.Sprint(f.records), "--profile", "amt6-10", "--version", "4", "-o", stick},
		{"   What the stick holds (secrets masked)", "setupbin", "view", stick},
	}
	for i := 1; i <= f.machines; i++ {
		steps = append(steps, []string{fmt.Sprintf("3.%d. Machine %d powers on with the stick: its BIOS takes the next record", i, i), "setupbin", "consume", stick})
	}
	steps = append(steps,
		[]string{"4. What is left on the stick", "setupbin", "summary", stick},
		[]string{"   Every rule checked", "setupbin", "verify", "--profile", "amt6-10", stick},
		[]string{"   The pool: entries by state, and sticks running low", "pool", "status"},
		[]string{"5. A self-contained test stick with its own secrets file", "setupbin", "create", "--generate", "3", "--version", "4", "-o", testStick, "--secrets", secrets},
		[]string{"   One machine takes a record", "setupbin", "consume", testStick},
		[]string{"   And the test stick is rewound from its secrets file", "setupbin", "unconsume", testStick, "--secrets", secrets},
		[]string{"   Shown once more", "setupbin", "view", testStick},
	)
	for _, s := range steps {
		if err := step(s[0], s[1:]...); err != nil {
			return err
		}
	}
	fmt.Fprintf(e.stdout, "\nDone. The files are in %s: the pool (pool.db, its secrets encrypted with demo-passphrase), the stick's setup.bin, and a test stick with its secrets file.\n", dir)
	return nil
}
