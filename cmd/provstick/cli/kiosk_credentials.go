package cli

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/provstick/provstick/internal/atomicfile"
	"github.com/provstick/provstick/kiosk/provision"
	"github.com/provstick/provstick/kiosk/store"
	"github.com/provstick/provstick/setupbin"
)

type kioskCredentialsFlags struct {
	store storeFlags
	out   string
	json  bool
}

// credentials is what "kiosk credentials" shows for one machine.
type credentials struct {
	UUID    string            `json:"uuid,omitempty"`
	PID     string            `json:"pid,omitempty"`
	Path    string            `json:"path"` // "psk" or "pki"
	Admin   string            `json:"admin_user"`
	Pass    string            `json:"admin_password"`
	Users   map[string]string `json:"users,omitempty"` // step 8 users
	Control string            `json:"control_mode,omitempty"`
}

// newKioskCredentialsCmd is "provstick kiosk credentials".
func newKioskCredentialsCmd(e *env) *cobra.Command {
	var f kioskCredentialsFlags
	cmd := &cobra.Command{
		Use:   "credentials (UUID | PID)",
		Short: "Show the admin (and extra users') passwords the kiosk set on a machine",
		Long: `credentials shows the AMT admin password the kiosk generated and set on a
machine — and the passwords of the extra users of kiosk.users — so that a
technician or a management console can log in to it. The machine is named by
its AMT UUID or by the PID of the entry it was provisioned with; machines
provisioned to admin control mode on the PKI path are found by UUID.

The passwords are secrets: they are shown on a terminal, or written to the
file of -o (mode 0600, atomically); with standard output not a terminal (a
pipe, a log) and no -o the command refuses. Every use is an audit record
(without the passwords). Needs the store's passphrase.`,
		Example: `  provstick kiosk credentials 939b524b-13d4-1d18-e487-1c697a6b7a2b
  provstick kiosk credentials 0000-037M --json -o machine.json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if f.out == "" && !isTerminal(e.stdout) {
				return errors.New("credentials: standard output is not a terminal: give -o FILE (written with mode 0600) so that the passwords do not end up in a log")
			}
			s, err := openStore(cmd.Context(), e, &f.store, true)
			if err != nil {
				return err
			}
			defer s.Close()
			c, err := machineCredentials(cmd, s, args[0])
			if err != nil {
				return err
			}
			var b bytes.Buffer
			if f.json {
				enc := json.NewEncoder(&b)
				enc.SetIndent("", "  ")
				if err := enc.Encode(c); err != nil {
					return err
				}
			} else {
				fmt.Fprintf(&b, "machine:  %s\n", orDefault(c.UUID, "(not known yet)"))
				if c.PID != "" {
					fmt.Fprintf(&b, "entry:    %s\n", c.PID)
				}
				fmt.Fprintf(&b, "path:     %s", c.Path)
				if c.Control != "" {
					fmt.Fprintf(&b, ", %s", c.Control)
				}
				fmt.Fprintf(&b, "\nuser %s: %s\n", c.Admin, c.Pass)
				names := make([]string, 0, len(c.Users))
				for n := range c.Users {
					names = append(names, n)
				}
				slices.Sort(names)
				for _, n := range names {
					fmt.Fprintf(&b, "user %s: %s\n", n, c.Users[n])
				}
			}
			where := "the terminal"
			if f.out != "" {
				name, err := filepath.Abs(f.out)
				if err != nil {
					return err
				}
				if err := atomicfile.WriteFile(name, b.Bytes(), 0o600, false); err != nil {
					return fmt.Errorf("writing the credentials: %w", err)
				}
				where = f.out
			} else if _, err := e.stdout.Write(b.Bytes()); err != nil {
				return err
			}
			rec := store.AuditRecord{Action: "credentials.read", PID: c.PID, UUID: c.UUID, Outcome: "ok",
				Detail: fmt.Sprintf("admin password and %d user passwords given to the operator (%s)", len(c.Users), where)}
			if err := s.Audit(cmd.Context(), rec); err != nil {
				return fmt.Errorf("credentials given, but the audit record was not written: %w", err)
			}
			if f.out != "" {
				fmt.Fprintf(e.stderr, "wrote the credentials of %s to %s (mode 0600)\n", orDefault(c.UUID, c.PID), f.out)
			}
			return nil
		},
	}
	f.store.register(cmd)
	fl := cmd.Flags()
	fl.StringVarP(&f.out, "output", "o", "", "write to this `file` (mode 0600, atomically) instead of the terminal")
	fl.BoolVar(&f.json, "json", false, "JSON instead of text")
	return cmd
}

// machineCredentials finds the machine named by arg (an AMT UUID or a
// PID) and its passwords.
func machineCredentials(cmd *cobra.Command, s *store.Store, arg string) (credentials, error) {
	ctx := cmd.Context()
	arg = strings.TrimSpace(arg)
	c := credentials{Path: "psk", Admin: "admin"}
	var pid setupbin.PID
	if len(arg) == 36 && strings.Count(arg, "-") == 4 {
		c.UUID = strings.ToLower(arg)
		m, err := s.Machine(ctx, c.UUID)
		switch {
		case errors.Is(err, store.ErrNotFound):
			return c, fmt.Errorf("credentials: no machine %s in this store", c.UUID)
		case err != nil:
			return c, err
		}
		c.Control = m.ControlMode
		if a, err := s.PKIAdminOf(ctx, c.UUID); err == nil {
			if !a.AdminSet {
				return c, fmt.Errorf("credentials: %s: AdminSetup was sent and its outcome is not known (%s): the password below may not be set; run again after the machine's next hello", c.UUID, a.Detail)
			}
			c.Path, c.Pass = "pki", string(a.Password)
			return c, nil
		} else if !errors.Is(err, store.ErrNotFound) {
			return c, err
		}
		if m.PID == "" {
			return c, fmt.Errorf("credentials: machine %s holds no entry of this pool: the kiosk has not provisioned it", c.UUID)
		}
		if pid, err = setupbin.ParsePID(m.PID); err != nil {
			return c, fmt.Errorf("credentials: machine %s: entry %q: %w", c.UUID, m.PID, err)
		}
	} else {
		p, err := setupbin.ParsePID(arg)
		if err != nil {
			return c, fmt.Errorf("credentials: %q is neither an AMT UUID nor a PID: %w", arg, err)
		}
		pid = p
		if h, err := s.History(ctx, pid); err == nil {
			for _, ev := range h {
				if ev.Machine != "" {
					c.UUID = ev.Machine
				}
			}
		}
	}
	c.PID = pid.Display()
	pw, err := provision.AdminPassword(ctx, s, pid)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return c, fmt.Errorf("credentials: entry %s: the kiosk has set no admin password (not provisioned by this kiosk yet)", c.PID)
	case err != nil:
		return c, fmt.Errorf("credentials: entry %s: %w", c.PID, err)
	case pw == "":
		return c, fmt.Errorf("credentials: entry %s: provisioning started but no admin password was generated yet", c.PID)
	}
	c.Pass = string(pw)
	users, err := provision.UserPasswords(ctx, s, pid)
	if err != nil {
		return c, fmt.Errorf("credentials: entry %s: %w", c.PID, err)
	}
	if len(users) > 0 {
		c.Users = map[string]string{}
		for n, p := range users {
			c.Users[n] = string(p)
		}
	}
	return c, nil
}
