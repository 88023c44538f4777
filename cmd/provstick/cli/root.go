// Package cli is the provstick command tree: cobra commands, viper
// configuration and slog set-up. It only wires configuration to the
// libraries; the work lives in setupbin, builder, kiosk and initramfs.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

// env is what every subcommand gets: the resolved configuration, a logger
// and the process's standard streams (replaced in tests).
type env struct {
	cfg    *Config
	log    *slog.Logger
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer

	// configFile is the --config flag; configUsed the file actually read.
	configFile string
	configUsed string
}

// commands are the constructors of the top-level subcommands. Each
// subcommand file adds itself in an init function with register, so that
// adding a command never edits this file.
var commands []func(*env) *cobra.Command

func register(f func(*env) *cobra.Command) { commands = append(commands, f) }

// exitError carries a specific exit status through cobra (for example
// "verify" exits 1 when findings are errors without printing a second
// message).
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}
func (e *exitError) Unwrap() error { return e.err }

// Main runs the command line and returns the process exit status.
func Main() int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	e := &env{stdin: stdin, stdout: stdout, stderr: stderr}
	root := newRootCmd(e)
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.err != nil {
			fmt.Fprintf(stderr, "provstick: %v\n", ee.err)
		}
		return ee.code
	}
	fmt.Fprintf(stderr, "provstick: %v\n", err)
	return 1
}

func newRootCmd(e *env) *cobra.Command {
	root := &cobra.Command{
		Use:   "provstick",
		Short: "Provision Intel AMT PCs from a USB stick, offline",
		Long: `provstick provisions Intel AMT (vPro) PCs from a USB stick with no network to
the outside world: it writes setup.bin files, keeps the pool of PID/PPS
pre-shared keys, builds bootable sticks and runs the provisioning kiosk.

Configuration comes from flags, then PROVSTICK_* environment variables
(PROVSTICK_LOG_LEVEL for log.level), then ./provstick.yaml or
$XDG_CONFIG_HOME/provstick/config.yaml (or the file given by --config).`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			cfg, used, err := loadConfig(cmd, e.configFile)
			if err != nil {
				return err
			}
			e.cfg, e.configUsed = cfg, used
			e.log, err = newLogger(e.stderr, cfg.Log)
			if err != nil {
				return err
			}
			if used != "" {
				e.log.Debug("configuration read", "file", used)
			}
			return nil
		},
	}
	pf := root.PersistentFlags()
	pf.StringVar(&e.configFile, "config", "", "configuration file (default ./provstick.yaml, then $XDG_CONFIG_HOME/provstick/config.yaml)")
	pf.String("log-level", "info", "log level: debug, info, warn, error")
	pf.String("log-format", "text", "log format: text or json")
	for _, f := range commands {
		root.AddCommand(f(e))
	}
	return root
}
