package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/provstick/provstick/internal/atomicfile"
	"github.com/provstick/provstick/kiosk/store"
	"github.com/spf13/cobra"
	"golang.org/x/term"
)

// Environment variables that carry secrets. They are read directly rather
// than through viper so that a secret can never come from a configuration
// file key.
const (
	envStorePassphrase    = "PROVSTICK_STORE_PASSPHRASE"
	envStoreNewPassphrase = "PROVSTICK_STORE_NEW_PASSPHRASE"
	envExportPassphrase   = "PROVSTICK_EXPORT_PASSPHRASE"
	envNewPassword        = "PROVSTICK_NEW_PASSWORD"
)

// storeFlags are the flags every pool and store command shares; they
// override store.passphrase_file and store.key_file.
type storeFlags struct {
	passphraseFile string
	keyFile        string
}

func (f *storeFlags) register(cmd *cobra.Command) {
	pf := cmd.PersistentFlags()
	pf.StringVar(&f.passphraseFile, "passphrase-file", "", "file holding the store passphrase (overrides store.passphrase_file; else $"+envStorePassphrase+", else asked on the terminal)")
	pf.StringVar(&f.keyFile, "key-file", "", "file holding the store's 32-byte key instead of a passphrase (overrides store.key_file)")
}

// openStore opens the configured store; with needKey it unlocks the
// secrets (asking for the passphrase when needed).
func openStore(ctx context.Context, e *env, f *storeFlags, needKey bool) (*store.Store, error) {
	opts := &store.Options{Station: e.cfg.Store.Station, Logger: e.log}
	sc := e.cfg.Store
	if sc.KDFTime < 1 || sc.KDFTime > 100 {
		return nil, fmt.Errorf("configuration field store.kdf_time: invalid value %d (want 1 to 100)", sc.KDFTime)
	}
	if sc.KDFMemoryKiB < 64 || sc.KDFMemoryKiB > 4<<20 {
		return nil, fmt.Errorf("configuration field store.kdf_memory_kib: invalid value %d (want 64 to %d)", sc.KDFMemoryKiB, 4<<20)
	}
	opts.KDF = store.KDFParams{Time: uint32(sc.KDFTime), Memory: uint32(sc.KDFMemoryKiB), Threads: 4}
	if needKey {
		k, err := storeKey(e, f)
		if err != nil {
			return nil, err
		}
		opts.Key = k
	}
	s, err := store.Open(ctx, e.cfg.Store.DSN, opts)
	if err != nil {
		if errors.Is(err, store.ErrWrongKey) {
			return nil, fmt.Errorf("opening the store %s: %w", displayDSN(e.cfg.Store.DSN), err)
		}
		return nil, fmt.Errorf("opening the store: %w", err)
	}
	return s, nil
}

// displayDSN is the store's location without any password.
func displayDSN(dsn string) string {
	if store.EngineOf(dsn) == store.Postgres {
		return "(PostgreSQL)"
	}
	return dsn
}

// storeKey finds the key that unlocks the store: a key file (flag, then
// configuration), a passphrase file (flag, then configuration), the
// environment, or the terminal.
func storeKey(e *env, f *storeFlags) (*store.Key, error) {
	keyFile := firstNonEmpty(f.keyFile, e.cfg.Store.KeyFile)
	passFile := firstNonEmpty(f.passphraseFile, e.cfg.Store.PassphraseFile)
	if keyFile != "" && passFile != "" {
		return nil, errors.New("both a key file and a passphrase file are configured: choose one")
	}
	if keyFile != "" {
		return store.ReadKeyFile(keyFile)
	}
	p, err := secretFrom(e, passFile, envStorePassphrase, "store passphrase", false)
	if err != nil {
		return nil, err
	}
	return store.Passphrase(p), nil
}

// secretFrom reads a secret from a file (one trailing newline dropped), an
// environment variable, or the terminal (twice when confirm is set).
func secretFrom(e *env, file, envVar, what string, confirm bool) ([]byte, error) {
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("reading the %s: %w", what, err)
		}
		b = bytes.TrimSuffix(bytes.TrimSuffix(b, []byte("\n")), []byte("\r"))
		if len(b) == 0 {
			return nil, fmt.Errorf("the %s file %s is empty", what, file)
		}
		return b, nil
	}
	if v := os.Getenv(envVar); v != "" {
		return []byte(v), nil
	}
	in, ok := e.stdin.(*os.File)
	if !ok || !term.IsTerminal(int(in.Fd())) {
		return nil, fmt.Errorf("no %s: give a file with the flag or configuration, or set $%s (standard input is not a terminal to ask on)", what, envVar)
	}
	fmt.Fprintf(e.stderr, "%s: ", capitalize(what))
	p, err := term.ReadPassword(int(in.Fd()))
	fmt.Fprintln(e.stderr)
	if err != nil {
		return nil, fmt.Errorf("reading the %s from the terminal: %w", what, err)
	}
	if len(p) == 0 {
		return nil, fmt.Errorf("empty %s", what)
	}
	if confirm {
		fmt.Fprintf(e.stderr, "%s again: ", capitalize(what))
		q, err := term.ReadPassword(int(in.Fd()))
		fmt.Fprintln(e.stderr)
		if err != nil {
			return nil, fmt.Errorf("reading the %s from the terminal: %w", what, err)
		}
		if !bytes.Equal(p, q) {
			return nil, fmt.Errorf("the two %ss differ", what)
		}
	}
	return p, nil
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

func firstNonEmpty(ss ...string) string {
	for _, s := range ss {
		if s != "" {
			return s
		}
	}
	return ""
}

// writeFileAtomic writes name with mode 0600 through internal/atomicfile:
// a temporary file, fsynced, renamed into place, the directory fsynced.
func writeFileAtomic(name string, write func(w io.Writer) error) error {
	f, err := atomicfile.Create(name, 0o600, false)
	if err != nil {
		return err
	}
	defer f.Abort()
	if err := write(f); err != nil {
		return err
	}
	return f.Commit()
}
