package cli

import (
	"errors"
	"fmt"
	"log/slog"
	"text/tabwriter"

	"github.com/provstick/provstick/kiosk/store"
	"github.com/spf13/cobra"
)

func init() { register(newStoreCmd) }

// newStoreCmd is "provstick store": the database itself (schema and keys).
func newStoreCmd(e *env) *cobra.Command {
	var sf storeFlags
	cmd := &cobra.Command{
		Use:   "store",
		Short: "Maintain the store: schema migrations and key rotation",
		Long: `The store (store.dsn: a SQLite file or a postgres:// URL) holds the pool,
sticks, machines and the event history. Its schema migrations are built into
provstick and applied whenever it opens the store; "store migrate" applies
them explicitly or, with --dry-run, lists them. "store rekey" changes the
passphrase or key file that unlocks the secrets.`,
	}
	sf.register(cmd)
	cmd.AddCommand(newStoreMigrateCmd(e, &sf), newStoreRekeyCmd(e, &sf))
	return cmd
}

func newStoreMigrateCmd(e *env, sf *storeFlags) *cobra.Command {
	var dryRun bool
	cmd := &cobra.Command{
		Use:   "migrate [--dry-run]",
		Short: "Apply pending schema migrations (or list them)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if !dryRun {
				s, err := openStore(ctx, e, sf, false)
				if err != nil {
					return err
				}
				s.Close()
			}
			ms, err := store.Migrations(ctx, e.cfg.Store.DSN)
			if err != nil {
				return fmt.Errorf("listing migrations: %w", err)
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "VERSION\tNAME\tSTATE")
			pending := 0
			for _, m := range ms {
				state := "applied"
				if !m.Applied {
					state, pending = "pending", pending+1
				}
				fmt.Fprintf(tw, "%04d\t%s\t%s\n", m.Version, m.Name, state)
			}
			tw.Flush()
			if dryRun {
				fmt.Fprintf(e.stdout, "%d pending (dry run: nothing applied)\n", pending)
				if e.log.Enabled(ctx, slog.LevelDebug) {
					for _, m := range ms {
						if !m.Applied {
							e.log.Debug("pending migration", "version", m.Version, "name", m.Name, "sql", m.SQL)
						}
					}
				}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "list the migrations and whether each is applied; change nothing")
	return cmd
}

func newStoreRekeyCmd(e *env, sf *storeFlags) *cobra.Command {
	var newPassFile, newKeyFile string
	cmd := &cobra.Command{
		Use:   "rekey",
		Short: "Change the passphrase or key file that unlocks the secrets",
		Long: `Rekey unlocks the store with the current passphrase or key file, then wraps
its data key under the new one (--new-passphrase-file,
$PROVSTICK_STORE_NEW_PASSPHRASE, the terminal, or --new-key-file), in one
transaction. The entries stay encrypted under the same data key; the old
passphrase no longer opens the store.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if newPassFile != "" && newKeyFile != "" {
				return errors.New("flags --new-passphrase-file and --new-key-file: choose one")
			}
			s, err := openStore(cmd.Context(), e, sf, true)
			if err != nil {
				return err
			}
			defer s.Close()
			var k *store.Key
			if newKeyFile != "" {
				if k, err = store.ReadKeyFile(newKeyFile); err != nil {
					return err
				}
			} else {
				p, err := secretFrom(e, newPassFile, envStoreNewPassphrase, "new store passphrase", true)
				if err != nil {
					return err
				}
				k = store.Passphrase(p)
			}
			if err := s.Rekey(cmd.Context(), k); err != nil {
				return err
			}
			fmt.Fprintln(e.stdout, "store rekeyed: the old passphrase or key file no longer opens it")
			return nil
		},
	}
	cmd.Flags().StringVar(&newPassFile, "new-passphrase-file", "", "file holding the new passphrase")
	cmd.Flags().StringVar(&newKeyFile, "new-key-file", "", "file holding a new 32-byte key (instead of a passphrase)")
	return cmd
}
