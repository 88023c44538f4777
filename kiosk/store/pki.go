package store

// What the kiosk keeps from the PKI path (specs/pki.md): a machine
// provisioned to admin control mode has no pool entry (its stick record
// carries no PID), so its generated admin password is kept by UUID. It
// reuses table provisioning (migration 0002), whose key is free text: the
// row of a PKI machine is "pki:" + its UUID, the password sealed with the
// data key and the UUID as associated data. Such rows join no entry, so
// InProgress never lists them.

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/provstick/provstick/setupbin"
)

var adPKIAdmin = []byte("provstick store pki admin v1\x00")

// pkiKeyPrefix marks PKI machines' rows in table provisioning.
const pkiKeyPrefix = "pki:"

// PKIAdmin is what the kiosk keeps about a machine it set up to admin
// control mode on the PKI path.
type PKIAdmin struct {
	UUID     string            // canonical lower-case text form
	Password setupbin.Password // the admin (and MEBx) password AdminSetup set
	// AdminSet: AdminSetup answered success, so the machine is in admin
	// control mode with Password. False when the password is kept just
	// before AdminSetup is sent (the outcome not known yet): the machine
	// is then not recorded as in admin control mode.
	AdminSet bool
	// Provisioned: the whole run finished (TLS configured and verified);
	// false when a step after AdminSetup failed. Implies AdminSet.
	Provisioned bool
	// Detail says how the run ended (no secrets), e.g. the failure.
	Detail    string
	Runs      int // times it was saved (the kiosk saves before AdminSetup and again at the run's end)
	UpdatedAt time.Time
}

// pkiPublic is the public column of a PKI row.
type pkiPublic struct {
	UUID        string `json:"uuid"`
	AdminSet    bool   `json:"admin_set"`
	Provisioned bool   `json:"provisioned"`
	Detail      string `json:"detail,omitempty"`
}

// pkiUUID checks and canonicalises a machine UUID.
func pkiUUID(uuid string) (string, error) {
	u := strings.ToLower(strings.TrimSpace(uuid))
	if len(u) != 36 || strings.Count(u, "-") != 4 {
		return "", fmt.Errorf("machine UUID %q: want the canonical 36-character form: %w", uuid, ErrInvalid)
	}
	return u, nil
}

// SavePKIAdmin keeps the admin password a PKI run set on the machine,
// sealed, and records the machine as post-provisioning in admin control
// mode, in one transaction. A later save for the same UUID replaces the
// password (a machine unprovisioned and set up again).
func (s *Store) SavePKIAdmin(ctx context.Context, a PKIAdmin) error {
	u, err := pkiUUID(a.UUID)
	if err != nil {
		return fmt.Errorf("saving a PKI admin password: %w", err)
	}
	if s.keys == nil {
		return fmt.Errorf("saving the admin password of %s: %w", u, ErrLocked)
	}
	if a.Password == "" {
		return fmt.Errorf("saving the admin password of %s: empty password: %w", u, ErrInvalid)
	}
	sealed, err := s.keys.seal([]byte(a.Password), append(slices.Clip(adPKIAdmin), u...))
	if err != nil {
		return fmt.Errorf("sealing the admin password of %s: %w", u, err)
	}
	a.AdminSet = a.AdminSet || a.Provisioned
	pub, err := json.Marshal(pkiPublic{UUID: u, AdminSet: a.AdminSet, Provisioned: a.Provisioned, Detail: a.Detail})
	if err != nil {
		return fmt.Errorf("saving the admin password of %s: %w", u, err)
	}
	step := 7 // AdminSetup (specs/amt-psk.md §6 numbering, as the PKI run uses it)
	if a.Provisioned {
		step = 11
	}
	return s.withTx(ctx, func(tx *sql.Tx, _ *sql.Conn) error {
		m := &Machine{UUID: u}
		if a.AdminSet { // AdminSetup took the machine to post-provisioning in admin control mode
			m.ControlMode, m.ProvisioningState = "acm", "post"
		}
		if _, err := s.upsertMachine(ctx, tx, m); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, s.q(`INSERT INTO provisioning (pid, step, public, secret, attempts, updated_at) VALUES (?, ?, ?, ?, 1, ?)
			ON CONFLICT (pid) DO UPDATE SET step = excluded.step, public = excluded.public, secret = excluded.secret,
				attempts = provisioning.attempts + 1, updated_at = excluded.updated_at`),
			pkiKeyPrefix+u, step, pub, sealed, now())
		if err != nil {
			return fmt.Errorf("saving the admin password of %s: %w", u, err)
		}
		return nil
	})
}

// PKIAdminOf returns what SavePKIAdmin kept for the machine; ErrNotFound
// when the kiosk set up no such machine, ErrLocked without the key.
func (s *Store) PKIAdminOf(ctx context.Context, uuid string) (PKIAdmin, error) {
	u, err := pkiUUID(uuid)
	if err != nil {
		return PKIAdmin{}, fmt.Errorf("reading a PKI admin password: %w", err)
	}
	if s.keys == nil {
		return PKIAdmin{}, fmt.Errorf("reading the admin password of %s: %w", u, ErrLocked)
	}
	var pub, sealed []byte
	var runs, at int64
	err = s.db.QueryRowContext(ctx, s.q("SELECT public, secret, attempts, updated_at FROM provisioning WHERE pid = ?"), pkiKeyPrefix+u).
		Scan(&pub, &sealed, &runs, &at)
	if errors.Is(err, sql.ErrNoRows) {
		return PKIAdmin{}, fmt.Errorf("PKI admin password of %s: %w", u, ErrNotFound)
	}
	if err != nil {
		return PKIAdmin{}, fmt.Errorf("reading the admin password of %s: %w", u, err)
	}
	var p pkiPublic
	if err := json.Unmarshal(pub, &p); err != nil {
		return PKIAdmin{}, fmt.Errorf("PKI record of %s: %v: %w", u, err, ErrSchema)
	}
	pt, err := s.keys.open(sealed, append(slices.Clip(adPKIAdmin), u...))
	if err != nil {
		return PKIAdmin{}, fmt.Errorf("admin password of %s: %w", u, err)
	}
	return PKIAdmin{UUID: u, Password: setupbin.Password(pt), AdminSet: p.AdminSet || p.Provisioned, Provisioned: p.Provisioned, Detail: p.Detail, Runs: int(runs), UpdatedAt: fromMicros(at)}, nil
}
