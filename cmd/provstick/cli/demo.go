package cli

import (
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

  1. make a setup.bin with N PSK records (and its secrets file);
  2. let M machines take a record each, as their BIOS would;
  3. show what the stick holds now, and check it;
  4. rewind the last record, as you would for a test stick.

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
	secrets := filepath.Join(dir, "secrets.json")
	fmt.Fprintf(e.stdout, "provstick demo in %s\n", dir)

	step := func(title string, args ...string) error {
		fmt.Fprintf(e.stdout, "\n==> %s\n$ provstick %s\n", title, strings.Join(args, " "))
		if code := run(cmd.Context(), append(globalArgs(e), args...), e.stdin, e.stdout, e.stdout); code != 0 {
			return &exitError{code: code, err: fmt.Errorf("demo step %q failed", title)}
		}
		return nil
	}
	steps := [][]string{
		{"1. A provisioning file with " + fmt.Sprint(f.records) + " PSK records for AMT 6-10 machines",
			"setupbin", "create", "--generate", fmt.Sprint(f.records), "--profile", "amt6-10", "--version", "4", "-o", stick, "--secrets", secrets},
		{"What the stick holds (secrets masked)", "setupbin", "view", stick},
	}
	for i := 1; i <= f.machines; i++ {
		steps = append(steps, []string{fmt.Sprintf("2.%d. Machine %d powers on with the stick: its BIOS takes the next record", i, i), "setupbin", "consume", stick})
	}
	steps = append(steps,
		[]string{"3. What is left on the stick", "setupbin", "summary", stick},
		[]string{"   Every rule checked", "setupbin", "verify", "--profile", "amt6-10", stick},
		[]string{"4. A test stick is rewound from its secrets file", "setupbin", "unconsume", stick, "--secrets", secrets},
		[]string{"   And shown once more", "setupbin", "view", stick},
	)
	for _, s := range steps {
		if err := step(s[0], s[1:]...); err != nil {
			return err
		}
	}
	fmt.Fprintf(e.stdout, "\nDone. The files are in %s; %s holds the secrets (mode 0600).\n", dir, secrets)
	return nil
}

// globalArgs passes the demo's own logging choices on to each step.
func globalArgs(e *env) []string {
	args := []string{"--log-level", e.cfg.Log.Level, "--log-format", e.cfg.Log.Format}
	if e.configUsed != "" {
		args = append(args, "--config", e.configUsed)
	}
	return args
}
