// Package storetest runs the store's tests against a real PostgreSQL: a
// throwaway cluster in a temporary directory, listening on a free loopback
// port (127.0.0.1 only) and a Unix socket in that directory, started at most
// once per test binary and stopped by Main.
//
// It needs the PostgreSQL server binaries (initdb, pg_ctl; Debian package
// postgresql). It never skips: without them it fails and says to run
// scripts/install-deps.sh. When running as root it runs the server as the
// "postgres" OS user, since initdb refuses root.
//
//	func TestMain(m *testing.M) { os.Exit(storetest.Main(m)) }
//
//	dsn := storetest.PostgresDSN(t) // a fresh, empty database
package storetest

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"
)

// Cluster is a running throwaway PostgreSQL cluster.
type Cluster struct {
	Dir  string // temporary directory: data/, the socket, server.log
	Port int
	bin  string
	as   *osUser // nil: run as the current user
	n    atomic.Int64
}

var (
	once    sync.Once
	shared  *Cluster
	sharedE error
)

// Main runs the tests and stops the shared cluster, if one was started.
func Main(m *testing.M) int {
	code := m.Run()
	if shared != nil {
		if err := shared.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "storetest:", err)
		}
	}
	return code
}

// Shared returns the test binary's cluster, starting it on first use.
func Shared() (*Cluster, error) {
	once.Do(func() { shared, sharedE = Start() })
	return shared, sharedE
}

// PostgresDSN returns the URL of a new empty database in the shared
// cluster. It fails the test (never skips) when PostgreSQL cannot start.
func PostgresDSN(t testing.TB) string {
	t.Helper()
	c, err := Shared()
	if err != nil {
		t.Fatalf("storetest: %v", err)
	}
	dsn, err := c.NewDatabase(t.Context())
	if err != nil {
		t.Fatalf("storetest: %v", err)
	}
	return dsn
}

// binDir finds the directory of initdb and pg_ctl: $PATH, then the Debian
// layout /usr/lib/postgresql/<version>/bin (newest version first).
func binDir() (string, error) {
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p), nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	slices.SortFunc(dirs, func(a, b string) int {
		va, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(a))))
		vb, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(b))))
		return vb - va
	})
	if len(dirs) > 0 {
		return filepath.Dir(dirs[0]), nil
	}
	return "", errors.New("PostgreSQL server binaries (initdb, pg_ctl) not found in $PATH or /usr/lib/postgresql/*/bin: run scripts/install-deps.sh (Debian package postgresql)")
}

// Start initialises and starts a new cluster. Stop removes it.
func Start() (*Cluster, error) {
	bin, err := binDir()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "storetest-pg-")
	if err != nil {
		return nil, fmt.Errorf("creating the cluster directory: %w", err)
	}
	c := &Cluster{Dir: dir, bin: bin}
	if os.Geteuid() == 0 {
		u, err := lookupPostgresUser()
		if err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("running as root, initdb needs the postgres OS user: %w (run scripts/install-deps.sh)", err)
		}
		if err := os.Chown(dir, u.uid, u.gid); err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("handing the cluster directory to postgres: %w", err)
		}
		c.as = u
	}
	if out, err := c.run("initdb", "-D", filepath.Join(dir, "data"), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync", "--no-instructions"); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("initdb: %w\n%s", err, out)
	}
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		port, err := freePort()
		if err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		c.Port = port
		opts := fmt.Sprintf("-c listen_addresses=127.0.0.1 -p %d -c unix_socket_directories=%s -c max_connections=200 -c shared_buffers=64MB", port, dir)
		out, err := c.run("pg_ctl", "start", "-w", "-t", "60", "-D", filepath.Join(dir, "data"), "-l", filepath.Join(dir, "server.log"), "-o", opts)
		if err == nil {
			return c, nil
		}
		log, _ := os.ReadFile(filepath.Join(dir, "server.log"))
		lastErr = fmt.Errorf("pg_ctl start: %w\n%s\n%s", err, out, log)
	}
	os.RemoveAll(dir)
	return nil, lastErr
}

func (c *Cluster) run(tool string, args ...string) ([]byte, error) {
	cmd := exec.Command(filepath.Join(c.bin, tool), args...)
	cmd.Dir = c.Dir
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	if c.as != nil {
		runAs(cmd, c.as)
	}
	return cmd.CombinedOutput()
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free loopback port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// URL returns the URL of database db.
func (c *Cluster) URL(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", c.Port, db)
}

// NewDatabase creates an empty database and returns its URL.
func (c *Cluster) NewDatabase(ctx context.Context) (string, error) {
	name := fmt.Sprintf("t%d_%d", os.Getpid(), c.n.Add(1))
	db, err := sql.Open("pgx", c.URL("postgres"))
	if err != nil {
		return "", err
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := db.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		return "", fmt.Errorf("creating database %s: %w", name, err)
	}
	return c.URL(name), nil
}

// Stop stops the server at once (-m immediate) and removes the directory.
func (c *Cluster) Stop() error {
	out, err := c.run("pg_ctl", "stop", "-m", "immediate", "-D", filepath.Join(c.Dir, "data"))
	rmErr := os.RemoveAll(c.Dir)
	if err != nil {
		return fmt.Errorf("pg_ctl stop: %w\n%s", err, strings.TrimSpace(string(out)))
	}
	return rmErr
}
