package store

// The kiosk DHCP server's leases (kiosk/netsvc), table dhcp_leases of
// migration 0003.

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// DHCPLease is one address handed to one client MAC.
type DHCPLease struct {
	MAC      string // aa:bb:cc:dd:ee:ff
	IP       string
	Hostname string
	Expires  time.Time
}

// DHCPLeases returns every lease kept, by MAC.
func (s *Store) DHCPLeases(ctx context.Context) ([]DHCPLease, error) {
	rows, err := s.db.QueryContext(ctx, "SELECT mac, ip, hostname, expires_at FROM dhcp_leases ORDER BY mac")
	if err != nil {
		return nil, fmt.Errorf("reading DHCP leases: %w", err)
	}
	defer rows.Close()
	var out []DHCPLease
	for rows.Next() {
		var l DHCPLease
		var exp int64
		if err := rows.Scan(&l.MAC, &l.IP, &l.Hostname, &exp); err != nil {
			return nil, fmt.Errorf("reading DHCP leases: %w", err)
		}
		l.Expires = fromMicros(exp)
		out = append(out, l)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading DHCP leases: %w", err)
	}
	return out, nil
}

// SaveDHCPLease keeps l, replacing the lease of its MAC and any other
// MAC's lease of its IP, in one transaction.
func (s *Store) SaveDHCPLease(ctx context.Context, l DHCPLease) error {
	return s.withTx(ctx, func(tx *sql.Tx, _ *sql.Conn) error {
		if _, err := tx.ExecContext(ctx, s.q("DELETE FROM dhcp_leases WHERE ip = ? AND mac <> ?"), l.IP, l.MAC); err != nil {
			return fmt.Errorf("saving the DHCP lease of %s: %w", l.MAC, err)
		}
		_, err := tx.ExecContext(ctx, s.q(`INSERT INTO dhcp_leases (mac, ip, hostname, expires_at, updated_at) VALUES (?, ?, ?, ?, ?)
			ON CONFLICT (mac) DO UPDATE SET ip = excluded.ip, hostname = excluded.hostname, expires_at = excluded.expires_at, updated_at = excluded.updated_at`),
			l.MAC, l.IP, l.Hostname, l.Expires.UnixMicro(), now())
		if err != nil {
			return fmt.Errorf("saving the DHCP lease of %s: %w", l.MAC, err)
		}
		return nil
	})
}
