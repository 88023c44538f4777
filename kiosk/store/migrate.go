package store

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strconv"
	"strings"
)

//go:embed migrations
var migrationFS embed.FS

// Migration is one embedded schema change.
type Migration struct {
	Version int    // from the file name, 0001_init.sql → 1
	Name    string // "init"
	SQL     string
	Applied bool // recorded in schema_migrations
}

// loadMigrations returns the dialect's migrations in version order.
func loadMigrations(d dialect) ([]Migration, error) {
	ents, err := fs.ReadDir(migrationFS, d.migrationDir())
	if err != nil {
		return nil, fmt.Errorf("reading embedded migrations: %w", err)
	}
	var ms []Migration
	for _, e := range ents {
		name := e.Name()
		base, ok := strings.CutSuffix(name, ".sql")
		if !ok {
			continue
		}
		num, label, ok := strings.Cut(base, "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("embedded migration %s: name must be NNNN_label.sql", name)
		}
		b, err := fs.ReadFile(migrationFS, path.Join(d.migrationDir(), name))
		if err != nil {
			return nil, fmt.Errorf("reading embedded migration %s: %w", name, err)
		}
		ms = append(ms, Migration{Version: v, Name: label, SQL: string(b)})
	}
	slices.SortFunc(ms, func(a, b Migration) int { return a.Version - b.Version })
	for i, m := range ms {
		if m.Version != i+1 {
			return nil, fmt.Errorf("embedded migrations: version %d missing", i+1)
		}
	}
	return ms, nil
}

const createSchemaTable = `CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT    NOT NULL,
    applied_at BIGINT  NOT NULL
)`

// appliedVersions reads schema_migrations (nil when it does not exist).
func appliedVersions(ctx context.Context, q interface {
	QueryContext(context.Context, string, ...any) (*sql.Rows, error)
}) (map[int]bool, error) {
	rows, err := q.QueryContext(ctx, "SELECT version FROM schema_migrations")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	got := map[int]bool{}
	for rows.Next() {
		var v int
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		got[v] = true
	}
	return got, rows.Err()
}

// Migrations lists the embedded migrations for the engine dsn selects and
// whether each is applied to that database, without changing it: what
// "provstick store migrate --dry-run" prints. A database that does not
// exist yet is not created (SQLite) and lists every migration as pending.
func Migrations(ctx context.Context, dsn string) ([]Migration, error) {
	if EngineOf(dsn) == SQLite {
		if _, err := statFile(dsn); err != nil {
			ms, lerr := loadMigrations(sqliteDialect{})
			if lerr != nil {
				return nil, lerr
			}
			return ms, nil
		}
	}
	d, db, err := openDB(ctx, dsn)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	ms, err := loadMigrations(d)
	if err != nil {
		return nil, err
	}
	ok, err := d.tableExists(ctx, db, "schema_migrations")
	if err != nil {
		return nil, fmt.Errorf("reading the schema version: %w", err)
	}
	if !ok {
		return ms, nil
	}
	got, err := appliedVersions(ctx, db)
	if err != nil {
		return nil, fmt.Errorf("reading the schema version: %w", err)
	}
	for i := range ms {
		ms[i].Applied = got[ms[i].Version]
	}
	return ms, nil
}

// migrate applies every pending migration in one transaction, recording
// each in schema_migrations, and refuses a database from a newer build.
func (s *Store) migrate(ctx context.Context) error {
	ms, err := loadMigrations(s.d)
	if err != nil {
		return err
	}
	return s.withTx(ctx, func(tx *sql.Tx, _ *sql.Conn) error {
		if err := s.d.lockMigrations(ctx, tx); err != nil {
			return fmt.Errorf("locking the schema: %w", err)
		}
		if _, err := tx.ExecContext(ctx, createSchemaTable); err != nil {
			return fmt.Errorf("creating schema_migrations: %w", err)
		}
		got, err := appliedVersions(ctx, tx)
		if err != nil {
			return fmt.Errorf("reading the schema version: %w", err)
		}
		for v := range got {
			if v > len(ms) {
				return fmt.Errorf("database schema version %d is newer than this build knows (%d): %w", v, len(ms), ErrSchema)
			}
		}
		for _, m := range ms {
			if got[m.Version] {
				continue
			}
			if _, err := tx.ExecContext(ctx, m.SQL); err != nil {
				return fmt.Errorf("applying migration %04d_%s: %w", m.Version, m.Name, err)
			}
			if _, err := tx.ExecContext(ctx, s.q("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)"), m.Version, m.Name, now()); err != nil {
				return fmt.Errorf("recording migration %04d_%s: %w", m.Version, m.Name, err)
			}
			s.log.Info("store migration applied", "version", m.Version, "name", m.Name)
		}
		return nil
	})
}
