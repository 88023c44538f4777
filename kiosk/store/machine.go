package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
)

// Machine is a target PC as the kiosk knows it.
type Machine struct {
	UUID              string   // AMT UUID, canonical lower-case text form
	DMISerial         string   // DMI system serial number
	DMIModel          string   // DMI product name
	DMIVendor         string   // DMI system manufacturer
	MACs              []string // MAC addresses, aa:bb:cc:dd:ee:ff
	EKHash            string   // SHA-256 of the TPM endorsement key's public part, hex
	AMTVersion        string
	ControlMode       string // "", "acm", "ccm"
	ProvisioningState string // "pre", "in", "post"
	PID               string // the entry it holds (read-only; set by Consume)
}

// upsertMachine creates or updates the machine by UUID and returns its id.
// Empty fields of m do not overwrite what is known.
func (s *Store) upsertMachine(ctx context.Context, tx *sql.Tx, m *Machine) (int64, error) {
	u := strings.ToLower(strings.TrimSpace(m.UUID))
	if len(u) != 36 || strings.Count(u, "-") != 4 {
		return 0, fmt.Errorf("machine UUID %q: want the canonical 36-character form: %w", m.UUID, ErrInvalid)
	}
	t := now()
	var id int64
	err := tx.QueryRowContext(ctx, s.q(`INSERT INTO machines (uuid, dmi_serial, dmi_model, dmi_vendor, macs, ek_hash, amt_version, control_mode, provisioning_state, created_at, updated_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (uuid) DO UPDATE SET
			dmi_serial = CASE WHEN excluded.dmi_serial <> '' THEN excluded.dmi_serial ELSE machines.dmi_serial END,
			dmi_model = CASE WHEN excluded.dmi_model <> '' THEN excluded.dmi_model ELSE machines.dmi_model END,
			dmi_vendor = CASE WHEN excluded.dmi_vendor <> '' THEN excluded.dmi_vendor ELSE machines.dmi_vendor END,
			macs = CASE WHEN excluded.macs <> '' THEN excluded.macs ELSE machines.macs END,
			ek_hash = CASE WHEN excluded.ek_hash <> '' THEN excluded.ek_hash ELSE machines.ek_hash END,
			amt_version = CASE WHEN excluded.amt_version <> '' THEN excluded.amt_version ELSE machines.amt_version END,
			control_mode = CASE WHEN excluded.control_mode <> '' THEN excluded.control_mode ELSE machines.control_mode END,
			provisioning_state = CASE WHEN excluded.provisioning_state <> '' THEN excluded.provisioning_state ELSE machines.provisioning_state END,
			updated_at = excluded.updated_at
		RETURNING id`),
		u, m.DMISerial, m.DMIModel, m.DMIVendor, strings.Join(m.MACs, ","), m.EKHash, m.AMTVersion, m.ControlMode, m.ProvisioningState, t, t).Scan(&id)
	if err != nil {
		return 0, fmt.Errorf("recording machine %s: %w", u, err)
	}
	return id, nil
}

// Machine returns the machine with the given AMT UUID.
func (s *Store) Machine(ctx context.Context, uuid string) (Machine, error) {
	u := strings.ToLower(strings.TrimSpace(uuid))
	var m Machine
	var macs string
	err := s.db.QueryRowContext(ctx, s.q(`SELECT m.uuid, m.dmi_serial, m.dmi_model, m.dmi_vendor, m.macs, m.ek_hash, m.amt_version, m.control_mode, m.provisioning_state,
			COALESCE((SELECT e.pid FROM entries e WHERE e.machine_id = m.id ORDER BY e.id DESC LIMIT 1), '')
		FROM machines m WHERE m.uuid = ?`), u).
		Scan(&m.UUID, &m.DMISerial, &m.DMIModel, &m.DMIVendor, &macs, &m.EKHash, &m.AMTVersion, &m.ControlMode, &m.ProvisioningState, &m.PID)
	if errors.Is(err, sql.ErrNoRows) {
		return Machine{}, fmt.Errorf("machine %s: %w", u, ErrNotFound)
	}
	if err != nil {
		return Machine{}, fmt.Errorf("reading machine %s: %w", u, err)
	}
	if macs != "" {
		m.MACs = strings.Split(macs, ",")
	}
	return m, nil
}
