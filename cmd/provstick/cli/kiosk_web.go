package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/provstick/provstick/internal/atomicfile"
	"github.com/provstick/provstick/kiosk"
	"github.com/provstick/provstick/kiosk/provision"
	"github.com/provstick/provstick/kiosk/reconcile"
	"github.com/provstick/provstick/kiosk/store"
	"github.com/provstick/provstick/kiosk/web"
	"github.com/spf13/cobra"
)

// webReconciler adapts kiosk/reconcile to the console's Reconciler.
type webReconciler struct {
	st  *store.Store
	log *slog.Logger
}

func (w webReconciler) Discrepancies(ctx context.Context) ([]web.Discrepancy, error) {
	ds, err := reconcile.Discrepancies(ctx, w.st, time.Now())
	if err != nil {
		return nil, err
	}
	out := make([]web.Discrepancy, 0, len(ds))
	for _, d := range ds {
		wd := web.Discrepancy{Kind: string(d.Kind), Severity: string(d.Severity), Summary: d.Subject, Detail: d.Detail, Advice: d.Advice, At: d.At}
		if d.ID > 0 {
			wd.ID = fmt.Sprintf("k-%d", d.ID)
		}
		if pid, ok := strings.CutPrefix(d.Subject, "PID "); ok {
			wd.PID = pid
		}
		if stick, ok := strings.CutPrefix(d.Subject, "stick "); ok {
			wd.Stick = stick
		}
		out = append(out, wd)
	}
	return out, nil
}

func (w webReconciler) ImportLedger(ctx context.Context, name string, r io.Reader) (web.ImportResult, error) {
	rep, err := reconcile.Import(ctx, w.st, name, r, reconcile.Options{Logger: w.log})
	if err != nil {
		return web.ImportResult{}, err
	}
	res := web.ImportResult{Source: rep.Source, Stick: rep.Stick, Records: rep.Records, New: rep.NewRecords,
		Damaged: rep.Damaged, Discrepancies: len(rep.Discrepancies)}
	if rep.QRTexts+rep.QRBad > 0 {
		res.Notes = append(res.Notes, fmt.Sprintf("%d QR texts decoded, %d unreadable", rep.QRTexts, rep.QRBad))
	}
	for _, f := range rep.Findings {
		res.Notes = append(res.Notes, fmt.Sprint(f))
	}
	return res, nil
}

// kioskConsole is the web console of a running kiosk.
type kioskConsole struct {
	srv *web.Server
	ln  net.Listener
	url string

	mu      sync.Mutex
	results map[string]uint64
}

// countResults wraps the provisioner's OnResult to count outcomes for the
// dashboard and /metrics.
func (c *kioskConsole) countResults(next func(provision.Result)) func(provision.Result) {
	return func(r provision.Result) {
		c.count(string(r.Outcome))
		if next != nil {
			next(r)
		}
	}
}

// count adds one finished run with this outcome ("pki-…" for PKI runs).
func (c *kioskConsole) count(outcome string) {
	c.mu.Lock()
	c.results[outcome]++
	c.mu.Unlock()
}

// newKioskConsole prepares the console (nil when kiosk.web.listen is "");
// start binds it to the kiosk once that exists.
func newKioskConsole(wc KioskWebConfig) *kioskConsole {
	if wc.Listen == "" {
		return nil
	}
	return &kioskConsole{results: map[string]uint64{}}
}

func (c *kioskConsole) start(ctx context.Context, e *env, wc KioskWebConfig, s *store.Store, k *kiosk.Kiosk, concurrency int) error {
	var err error
	c.srv, err = web.New(web.Options{
		Store: s, CA: k.CA(), Logger: e.log.With("component", "web"),
		Reconciler: webReconciler{st: s, log: e.log},
		Counters: func() web.Counters {
			h := k.HelloStats()
			_, dropped := k.HelloLogStats()
			c.mu.Lock()
			defer c.mu.Unlock()
			return web.Counters{HellosReceived: h.Connections, HellosPSK: h.PSK, HellosPKI: h.PKI,
				HellosMalformed: h.Malformed, HellosDropped: dropped, Workers: concurrency, Results: maps.Clone(c.results)}
		},
		Settings:  web.SettingsFrom(e.cfg),
		AdminUser: wc.AdminUser, AdminPasswordHash: wc.AdminPasswordHash, APITokenSHA256: wc.APITokenSHA256,
		Hosts: wc.Hosts, PlainHTTP: wc.PlainHTTP, SessionTTL: wc.SessionTTL,
		MaxLedgerBytes: wc.MaxLedgerBytes, PublicMetrics: wc.PublicMetrics,
	})
	if err != nil {
		return fmt.Errorf("configuration of the kiosk web console: %w", err)
	}
	lc := net.ListenConfig{}
	if c.ln, err = lc.Listen(ctx, "tcp", wc.Listen); err != nil {
		return fmt.Errorf("listening for the web console on %s: %w", wc.Listen, err)
	}
	scheme := "https"
	if wc.PlainHTTP {
		scheme = "http"
	}
	c.url = fmt.Sprintf("%s://%s/", scheme, c.ln.Addr())
	fmt.Fprintf(e.stdout, "kiosk: web console on %s\n", c.url)
	if pw := c.srv.InitialPassword(); pw != "" {
		user := orDefault(wc.AdminUser, "admin")
		// Shown once on the operator's terminal. When stdout is not a
		// terminal (a systemd journal, a pipe) it would end up in a log:
		// the password goes to a file only its owner can read instead.
		if isTerminal(e.stdout) {
			fmt.Fprintf(e.stdout, "kiosk: no kiosk.web.admin_password_hash set; user %s, password for this run only: %s\n", user, pw)
			return nil
		}
		name, err := filepath.Abs(initialPasswordFile)
		if err != nil {
			return err
		}
		if err := atomicfile.WriteFile(name, []byte(pw+"\n"), 0o600, false); err != nil {
			return fmt.Errorf("writing the console's one-run password: %w", err)
		}
		fmt.Fprintf(e.stdout, "kiosk: no kiosk.web.admin_password_hash set; user %s, password for this run only in %s (mode 0600)\n", user, name)
	}
	return nil
}

// initialPasswordFile receives the console's one-run password when stdout
// is not a terminal (relative to the working directory, the state
// directory under systemd).
const initialPasswordFile = "web-initial-password"

// isTerminal reports whether w is a character device (a terminal).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

// serve runs the kiosk and, when configured, the console beside it.
func (c *kioskConsole) serve(ctx context.Context, k *kiosk.Kiosk) error {
	if c == nil || c.srv == nil {
		return k.Serve(ctx)
	}
	wctx, wcancel := context.WithCancel(ctx)
	werr := make(chan error, 1)
	go func() { werr <- c.srv.Serve(wctx, c.ln) }()
	serr := k.Serve(ctx)
	wcancel()
	return errors.Join(serr, <-werr)
}

// newKioskHashPasswordCmd is "provstick kiosk hash-password": the argon2id
// string for kiosk.web.admin_password_hash, from a password read on stdin.
func newKioskHashPasswordCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "hash-password",
		Short: "Hash a web console password (read from stdin) for kiosk.web.admin_password_hash",
		Long: `hash-password reads one line from standard input and prints its argon2id
hash for the configuration key kiosk.web.admin_password_hash. The password
itself is never printed or stored.`,
		Example: `  read -rs pw && printf '%s\n' "$pw" | provstick kiosk hash-password`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			line, err := bufio.NewReader(e.stdin).ReadString('\n')
			if err != nil && line == "" {
				return errors.New("reading the password from stdin: nothing given")
			}
			pw := strings.TrimRight(line, "\r\n")
			if len(pw) < 12 {
				return errors.New("the password is shorter than 12 characters")
			}
			h, err := web.HashPassword(pw)
			if err != nil {
				return err
			}
			fmt.Fprintln(e.stdout, h)
			return nil
		},
	}
}
