package store

import (
	"bytes"
	"errors"
	"testing"
)

// TestPKIAdmin: a PKI machine's admin password is kept sealed by UUID,
// the machine recorded in admin control mode; the row is no pool entry's
// progress.
func TestPKIAdmin(t *testing.T) {
	forEngines(t, func(t *testing.T, dsn string) {
		ctx := t.Context()
		s := openT(t, dsn, pass("pw"))
		const uuid = "939B524B-13D4-1D18-E487-1C6900000001"
		if _, err := s.PKIAdminOf(ctx, uuid); !errors.Is(err, ErrNotFound) {
			t.Fatalf("before save: %v, want ErrNotFound", err)
		}
		if err := s.SavePKIAdmin(ctx, PKIAdmin{UUID: uuid, Password: "Pki-Admin-Pw1!", Detail: "AdminSetup sent"}); err != nil {
			t.Fatal(err)
		}
		a, err := s.PKIAdminOf(ctx, uuid)
		if err != nil {
			t.Fatal(err)
		}
		if a.Password != "Pki-Admin-Pw1!" || a.AdminSet || a.Provisioned || a.Runs != 1 || a.Detail != "AdminSetup sent" || a.UUID != "939b524b-13d4-1d18-e487-1c6900000001" {
			t.Errorf("got %+v", a)
		}
		// Kept before AdminSetup's answer: the machine is known, not yet
		// in admin control mode.
		if m, err := s.Machine(ctx, uuid); err != nil || m.ControlMode != "" || m.ProvisioningState != "" {
			t.Errorf("machine before AdminSetup's answer: %+v, %v", m, err)
		}
		if err := s.SavePKIAdmin(ctx, PKIAdmin{UUID: uuid, Password: "Pki-Admin-Pw2!", Provisioned: true}); err != nil {
			t.Fatal(err)
		}
		if a, err = s.PKIAdminOf(ctx, uuid); err != nil || a.Password != "Pki-Admin-Pw2!" || !a.Provisioned || !a.AdminSet || a.Runs != 2 {
			t.Errorf("after the second save: %+v, %v", a, err)
		}
		m, err := s.Machine(ctx, uuid)
		if err != nil || m.ControlMode != "acm" || m.ProvisioningState != "post" {
			t.Errorf("machine: %+v, %v", m, err)
		}
		var raw []byte
		if err := s.db.QueryRowContext(ctx, "SELECT secret FROM provisioning").Scan(&raw); err != nil || bytes.Contains(raw, []byte("Pki-Admin")) {
			t.Errorf("password stored in clear (err %v)", err)
		}
		if pids, err := s.InProgress(ctx); err != nil || len(pids) != 0 {
			t.Errorf("InProgress lists a PKI row: %v, %v", pids, err)
		}
		// Moved to another UUID, the sealed password does not open.
		const other = "939b524b-13d4-1d18-e487-1c6900000002"
		if _, err := s.db.ExecContext(ctx, s.q("UPDATE provisioning SET pid = ?"), pkiKeyPrefix+other); err != nil {
			t.Fatal(err)
		}
		if _, err := s.PKIAdminOf(ctx, other); !errors.Is(err, ErrSchema) {
			t.Errorf("moved row: %v, want ErrSchema", err)
		}
		for _, bad := range []PKIAdmin{{UUID: "nope", Password: "x"}, {UUID: uuid}} {
			if err := s.SavePKIAdmin(ctx, bad); !errors.Is(err, ErrInvalid) {
				t.Errorf("SavePKIAdmin(%q): %v, want ErrInvalid", bad.UUID, err)
			}
		}
		locked := openT(t, dsn, nil)
		if _, err := locked.PKIAdminOf(ctx, uuid); !errors.Is(err, ErrLocked) {
			t.Errorf("locked store: %v, want ErrLocked", err)
		}
	})
}
