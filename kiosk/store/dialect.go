package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
	sqlite "modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// dialect is what differs between the engines. Everything else — the SQL
// of the state machine, events and counters — is shared.
type dialect interface {
	engine() Engine
	// rebind rewrites ? placeholders ($1, $2, ... for PostgreSQL).
	rebind(q string) string
	// forUpdate is appended to a SELECT that reads rows the transaction
	// will change: " FOR UPDATE" on PostgreSQL, "" on SQLite, where BEGIN
	// IMMEDIATE already holds the database's write lock.
	forUpdate() string
	// skipLocked is appended to the allocation SELECT: rows another
	// station has locked are skipped rather than waited for.
	skipLocked() string
	// bulkInsert inserts rows into table inside tx (which runs on conn).
	bulkInsert(ctx context.Context, conn *sql.Conn, tx *sql.Tx, table string, cols []string, rows [][]any) error
	// lockMigrations serialises schema changes between processes.
	lockMigrations(ctx context.Context, tx *sql.Tx) error
	// tableExists reports whether a table exists (outside a transaction).
	tableExists(ctx context.Context, db *sql.DB, name string) (bool, error)
	// isUnique reports whether err is a unique-constraint violation.
	isUnique(err error) bool
	// migrationDir names the directory of migrations for this engine.
	migrationDir() string
	// afterBulk runs after a large insert has committed.
	afterBulk(ctx context.Context, db *sql.DB) error
}

// openDB opens the database a DSN names, with the engine's settings.
func openDB(ctx context.Context, dsn string) (dialect, *sql.DB, error) {
	if EngineOf(dsn) == Postgres {
		cfg, err := pgx.ParseConfig(dsn)
		if err != nil {
			// pgx errors may quote the DSN, password included.
			return nil, nil, fmt.Errorf("parsing the PostgreSQL URL %s: invalid URL", redactDSN(dsn))
		}
		db := stdlib.OpenDB(*cfg)
		if err := db.PingContext(ctx); err != nil {
			db.Close()
			return nil, nil, fmt.Errorf("connecting to PostgreSQL %s: %w", redactDSN(dsn), err)
		}
		return postgresDialect{}, db, nil
	}
	if dsn == "" {
		return nil, nil, fmt.Errorf("opening the store: empty DSN: %w", ErrInvalid)
	}
	// synchronous=FULL for every table: the entries are the point of the
	// database, and the other tables change in the same transactions.
	v := url.Values{}
	v.Add("_pragma", "busy_timeout(60000)")
	v.Add("_pragma", "journal_mode(WAL)")
	v.Add("_pragma", "synchronous(FULL)")
	v.Add("_pragma", "foreign_keys(1)")
	// Statement journals and the page cache in memory: a bulk insert
	// otherwise writes every page twice through temporary files.
	v.Add("_pragma", "temp_store(MEMORY)")
	v.Add("_pragma", "cache_size(-65536)")
	v.Set("_txlock", "immediate")
	// Create a new store file readable by its owner only: the secrets are
	// encrypted, but PIDs, machines and history are nobody else's
	// business. SQLite gives its -wal and -shm files the same mode.
	if f, err := os.OpenFile(dsn, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600); err == nil {
		f.Close()
	} else if !errors.Is(err, fs.ErrExist) {
		return nil, nil, fmt.Errorf("opening SQLite store %s: %w", dsn, err)
	}
	db, err := sql.Open("sqlite", "file:"+escapePath(dsn)+"?"+v.Encode())
	if err != nil {
		return nil, nil, fmt.Errorf("opening SQLite store %s: %w", dsn, err)
	}
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, nil, fmt.Errorf("opening SQLite store %s: %w", dsn, err)
	}
	return sqliteDialect{}, db, nil
}

// escapePath keeps a file name with ? or # from being read as URI syntax.
func escapePath(p string) string {
	return strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23").Replace(p)
}

// redactDSN returns the DSN without a password, safe to log.
func redactDSN(dsn string) string {
	if EngineOf(dsn) != Postgres {
		return dsn
	}
	u, err := url.Parse(dsn)
	if err != nil {
		return "postgres://(unparsable URL)"
	}
	if u.User != nil {
		if _, ok := u.User.Password(); ok {
			u.User = url.UserPassword(u.User.Username(), "REDACTED")
		}
	}
	q := u.Query()
	if q.Has("password") {
		q.Set("password", "REDACTED")
		u.RawQuery = q.Encode()
	}
	return u.String()
}

type sqliteDialect struct{}

func (sqliteDialect) engine() Engine         { return SQLite }
func (sqliteDialect) rebind(q string) string { return q }
func (sqliteDialect) forUpdate() string      { return "" }
func (sqliteDialect) skipLocked() string     { return "" }
func (sqliteDialect) migrationDir() string   { return "migrations/sqlite" }

// afterBulk does nothing: SQLite's planner needs no statistics to use
// entries_free for the allocation query.
func (sqliteDialect) afterBulk(context.Context, *sql.DB) error { return nil }

func (sqliteDialect) lockMigrations(context.Context, *sql.Tx) error {
	return nil // BEGIN IMMEDIATE holds the write lock
}

func (sqliteDialect) tableExists(ctx context.Context, db *sql.DB, name string) (bool, error) {
	var n int
	err := db.QueryRowContext(ctx, "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?", name).Scan(&n)
	return n > 0, err
}

func (sqliteDialect) isUnique(err error) bool {
	var se *sqlite.Error
	if errors.As(err, &se) {
		return se.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE || se.Code() == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
	}
	return false
}

// bulkInsert uses multi-row INSERT statements, prepared once per batch
// size: one statement per row is several times slower with modernc.
func (sqliteDialect) bulkInsert(ctx context.Context, _ *sql.Conn, tx *sql.Tx, table string, cols []string, rows [][]any) error {
	const batch = 128
	var stmt *sql.Stmt
	stmtRows := 0
	defer func() {
		if stmt != nil {
			stmt.Close()
		}
	}()
	args := make([]any, 0, batch*len(cols))
	for start := 0; start < len(rows); start += batch {
		end := min(start+batch, len(rows))
		if n := end - start; n != stmtRows {
			if stmt != nil {
				stmt.Close()
			}
			var err error
			stmt, err = tx.PrepareContext(ctx, insertSQL(table, cols, n, false))
			if err != nil {
				return fmt.Errorf("preparing insert into %s: %w", table, err)
			}
			stmtRows = n
		}
		args = args[:0]
		for _, r := range rows[start:end] {
			args = append(args, r...)
		}
		if _, err := stmt.ExecContext(ctx, args...); err != nil {
			return fmt.Errorf("inserting into %s: %w", table, err)
		}
	}
	return nil
}

// insertSQL builds INSERT INTO table (cols) VALUES (?, ...), ... for n rows.
func insertSQL(table string, cols []string, n int, dollar bool) string {
	var b strings.Builder
	b.WriteString("INSERT INTO " + table + " (" + strings.Join(cols, ", ") + ") VALUES ")
	k := 0
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteByte('(')
		for j := range cols {
			if j > 0 {
				b.WriteString(", ")
			}
			k++
			if dollar {
				b.WriteString("$" + strconv.Itoa(k))
			} else {
				b.WriteByte('?')
			}
		}
		b.WriteByte(')')
	}
	return b.String()
}

type postgresDialect struct{}

func (postgresDialect) engine() Engine       { return Postgres }
func (postgresDialect) forUpdate() string    { return " FOR UPDATE" }
func (postgresDialect) skipLocked() string   { return " FOR UPDATE SKIP LOCKED" }
func (postgresDialect) migrationDir() string { return "migrations/postgres" }

// rebind numbers the ? placeholders. Our SQL never has ? inside a literal.
func (postgresDialect) rebind(q string) string {
	if !strings.Contains(q, "?") {
		return q
	}
	var b strings.Builder
	n := 0
	for i := 0; i < len(q); i++ {
		if q[i] == '?' {
			n++
			b.WriteString("$" + strconv.Itoa(n))
			continue
		}
		b.WriteByte(q[i])
	}
	return b.String()
}

// migrationLockID is an arbitrary constant naming provstick's advisory lock.
const migrationLockID = 0x70726f76 // "prov"

// afterBulk refreshes the planner's statistics: right after a bulk load
// into a new table PostgreSQL believes entries holds a handful of rows and
// answers the allocation query with a bitmap scan and a sort of every free
// entry (300 ms for 100,000) instead of walking entries_free in order.
func (postgresDialect) afterBulk(ctx context.Context, db *sql.DB) error {
	_, err := db.ExecContext(ctx, "ANALYZE entries")
	return err
}

func (postgresDialect) lockMigrations(ctx context.Context, tx *sql.Tx) error {
	_, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock($1)", migrationLockID)
	return err
}

func (postgresDialect) tableExists(ctx context.Context, db *sql.DB, name string) (bool, error) {
	var ok bool
	err := db.QueryRowContext(ctx, "SELECT to_regclass($1) IS NOT NULL", name).Scan(&ok)
	return ok, err
}

func (postgresDialect) isUnique(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23505"
}

// bulkInsert uses COPY on the connection the transaction runs on, so the
// rows belong to the transaction.
func (postgresDialect) bulkInsert(ctx context.Context, conn *sql.Conn, _ *sql.Tx, table string, cols []string, rows [][]any) error {
	err := conn.Raw(func(dc any) error {
		c, ok := dc.(*stdlib.Conn)
		if !ok {
			return fmt.Errorf("unexpected driver connection %T", dc)
		}
		n, err := c.Conn().CopyFrom(ctx, pgx.Identifier{table}, cols, pgx.CopyFromRows(rows))
		if err != nil {
			return err
		}
		if n != int64(len(rows)) {
			return fmt.Errorf("copied %d rows, want %d", n, len(rows))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("copying into %s: %w", table, err)
	}
	return nil
}
