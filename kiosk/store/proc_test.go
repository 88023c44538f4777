package store

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/provstick/provstick/internal/soak"
	"github.com/provstick/provstick/setupbin"
)

// childEnv, when set, makes the test binary a child process for the
// concurrency and crash tests instead of running tests; its value is a
// JSON childSpec.
const childEnv = "STORE_TEST_CHILD"

type childSpec struct {
	Mode       string // "hammer", "crash-alloc", "crash-import"
	DSN        string
	Name       string // prefix of the stick labels this child makes
	Goroutines int
}

// runChild is the child's main. Hammer prints one line per allocated entry
// ("PID label record") and exits 0; the crash modes print "ready" once
// open, then "ok" after each committed operation, until killed.
func runChild(specJSON string) int {
	var spec childSpec
	if err := json.Unmarshal([]byte(specJSON), &spec); err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 2
	}
	ctx := context.Background()
	s, err := Open(ctx, spec.DSN, &Options{Key: pass("proc"), KDF: testKDF, Station: spec.Name})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child: open:", err)
		return 2
	}
	defer s.Close()
	switch spec.Mode {
	case "hammer":
		return hammer(ctx, s, spec)
	case "crash-alloc":
		fmt.Println("ready")
		for i := 0; ; i++ {
			_, _, err := s.AllocateStick(ctx, StickSpec{Label: fmt.Sprintf("%s-%d", spec.Name, i), Count: 25, Profile: "amt6-10"})
			if errors.Is(err, ErrPoolExhausted) {
				_, err = s.Generate(ctx, GenerateSpec{Count: 500, Profile: "amt6-10"})
			}
			if err != nil {
				fmt.Fprintln(os.Stderr, "child:", err)
				return 1
			}
			fmt.Println("ok")
		}
	case "crash-import":
		fmt.Println("ready")
		for {
			es := make([]ImportEntry, 1000)
			for i := range es {
				es[i].Line = i + 1
				es[i].PID, _ = setupbin.GeneratePID(nil)
				es[i].PPS, _ = setupbin.GeneratePPS(nil)
			}
			err := s.Import(ctx, es, ImportSpec{Profile: "amt6-10", NewPassword: "Crash#Test1"})
			if err != nil && !errors.Is(err, ErrDuplicate) {
				fmt.Fprintln(os.Stderr, "child:", err)
				return 1
			}
			fmt.Println("ok")
		}
	}
	fmt.Fprintln(os.Stderr, "child: unknown mode", spec.Mode)
	return 2
}

func hammer(ctx context.Context, s *Store, spec childSpec) int {
	var mu sync.Mutex
	out := bufio.NewWriter(os.Stdout)
	var wg sync.WaitGroup
	errs := make(chan error, spec.Goroutines)
	for g := 0; g < spec.Goroutines; g++ {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(os.Getpid()), uint64(g)))
			count := 1 + rng.IntN(20)
			for i := 0; ; i++ {
				label := fmt.Sprintf("%s-g%d-%d", spec.Name, g, i)
				st, es, err := s.AllocateStick(ctx, StickSpec{Label: label, Count: count, Profile: "amt6-10"})
				if errors.Is(err, ErrPoolExhausted) {
					if count == 1 {
						return
					}
					count = 1
					continue
				}
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				for _, e := range es {
					fmt.Fprintf(out, "%s %s %d\n", e.PID, st.Label, e.Record)
				}
				mu.Unlock()
				count = 1 + rng.IntN(20)
			}
		})
	}
	wg.Wait()
	close(errs)
	out.Flush()
	code := 0
	for err := range errs {
		fmt.Fprintln(os.Stderr, "child:", err)
		code = 1
	}
	return code
}

func childCmd(t *testing.T, spec childSpec) *exec.Cmd {
	b, _ := json.Marshal(spec)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+string(b))
	return cmd
}

// TestConcurrentAllocation runs two processes × 8 goroutines drawing sticks
// from one pool until it is empty, then checks that no PID was handed out
// twice and none vanished.
func TestConcurrentAllocation(t *testing.T) {
	const generated = 800
	forEngines(t, func(t *testing.T, dsn string) {
		ctx := t.Context()
		s := openT(t, dsn, pass("proc"))
		if _, err := s.Generate(ctx, GenerateSpec{Count: generated, Profile: "amt6-10"}); err != nil {
			t.Fatal(err)
		}
		type result struct {
			out []byte
			err error
		}
		res := make([]result, 2)
		var wg sync.WaitGroup
		for p := range res {
			wg.Go(func() {
				cmd := childCmd(t, childSpec{Mode: "hammer", DSN: dsn, Name: fmt.Sprintf("p%d", p), Goroutines: 8})
				var stderr strings.Builder
				cmd.Stderr = &stderr
				out, err := cmd.Output()
				if err != nil {
					err = fmt.Errorf("%w: %s", err, stderr.String())
				}
				res[p] = result{out, err}
			})
		}
		wg.Wait()
		seen := map[string]string{}
		for p, r := range res {
			if r.err != nil {
				t.Fatalf("process %d: %v", p, r.err)
			}
			for line := range strings.Lines(string(r.out)) {
				f := strings.Fields(line)
				if len(f) != 3 {
					t.Fatalf("process %d: bad line %q", p, line)
				}
				where := f[1] + " record " + f[2]
				if prev, dup := seen[f[0]]; dup {
					t.Errorf("PID %s allocated twice: %s and %s", f[0], prev, where)
				}
				seen[f[0]] = where
			}
		}
		var free, allocated, total int
		for _, q := range []struct {
			sql string
			n   *int
		}{
			{"SELECT count(*) FROM entries WHERE state = 'free'", &free},
			{"SELECT count(*) FROM entries WHERE state = 'allocated'", &allocated},
			{"SELECT count(*) FROM entries", &total},
		} {
			if err := s.db.QueryRowContext(ctx, q.sql).Scan(q.n); err != nil {
				t.Fatal(err)
			}
		}
		if free+allocated != generated || total != generated {
			t.Errorf("free %d + allocated %d = %d, total %d; want %d", free, allocated, free+allocated, total, generated)
		}
		if allocated != len(seen) {
			t.Errorf("store has %d allocated entries, processes reported %d", allocated, len(seen))
		}
		// Every reported allocation is what the store recorded.
		rows, err := s.db.QueryContext(ctx, "SELECT e.pid, s.label, e.record FROM entries e JOIN sticks s ON s.id = e.stick_id")
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		for rows.Next() {
			var pid, label string
			var rec int
			if err := rows.Scan(&pid, &label, &rec); err != nil {
				t.Fatal(err)
			}
			if got, want := seen[pid], label+" record "+strconv.Itoa(rec); got != want {
				t.Errorf("PID %s: store says %s, process said %q", pid, want, got)
			}
		}
		t.Logf("%d of %d entries allocated by 2 processes × 8 goroutines, %d left free", allocated, generated, free)
		checkInvariants(t, s)
	})
}

// pids is the set of PIDs in the store.
func pids(t *testing.T, s *Store) map[string]bool {
	t.Helper()
	rows, err := s.db.QueryContext(t.Context(), "SELECT pid FROM entries")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	m := map[string]bool{}
	for rows.Next() {
		var p string
		if err := rows.Scan(&p); err != nil {
			t.Fatal(err)
		}
		m[p] = true
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestCrashSafety kills a child process with SIGKILL at a random moment
// while it allocates sticks or imports entries, 20 times per engine, and
// checks after each kill that the store opens cleanly and nothing is
// half-done.
func TestCrashSafety(t *testing.T) {
	iterations := soak.Runs(20) // make soak runs more
	forEngines(t, func(t *testing.T, dsn string) {
		ctx := t.Context()
		s := openT(t, dsn, pass("proc"))
		if _, err := s.Generate(ctx, GenerateSpec{Count: 500, Profile: "amt6-10"}); err != nil {
			t.Fatal(err)
		}
		before := pids(t, s)
		s.Close()
		rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
		totalCommits := 0
		for i := 0; i < iterations; i++ {
			mode := []string{"crash-alloc", "crash-import"}[i%2]
			cmd := childCmd(t, childSpec{Mode: mode, DSN: dsn, Name: fmt.Sprintf("k%d", i)})
			var stderr strings.Builder
			cmd.Stderr = &stderr
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			br := bufio.NewReader(stdout)
			line, err := br.ReadString('\n')
			if err != nil || line != "ready\n" {
				cmd.Process.Kill()
				cmd.Wait()
				t.Fatalf("iteration %d: child did not start: %q %v: %s", i, line, err, stderr.String())
			}
			commits := make(chan int, 1)
			go func() {
				n := 0
				for {
					if _, err := br.ReadString('\n'); err != nil {
						commits <- n
						return
					}
					n++
				}
			}()
			delay := time.Duration(rng.IntN(400)) * time.Millisecond
			time.Sleep(delay)
			if err := cmd.Process.Kill(); err != nil {
				t.Fatal(err)
			}
			done := <-commits
			totalCommits += done
			err = cmd.Wait()
			if ee, ok := errors.AsType[*exec.ExitError](err); !ok || ee.ExitCode() != -1 {
				t.Fatalf("iteration %d (%s): child ended by itself before the kill: %v: %s", i, mode, err, stderr.String())
			}
			s, err := Open(ctx, dsn, &Options{Key: pass("proc"), KDF: testKDF})
			if err != nil {
				t.Fatalf("iteration %d (%s, killed after %v): reopening: %v", i, mode, delay, err)
			}
			checkInvariants(t, s)
			var n int
			s.db.QueryRowContext(ctx, "SELECT count(*) FROM entries").Scan(&n)
			s.Close()
			if t.Failed() {
				t.Fatalf("iteration %d (%s, killed after %v): invariants broken", i, mode, delay)
			}
			t.Logf("iteration %d: %s killed after %v and %d commits; %d entries, invariants hold", i, mode, delay, done, n)
		}
		if totalCommits == 0 {
			t.Errorf("no child committed anything before its kill: the test proves little")
		}
		// For make soak: the 500 generated entries must all be there, and no
		// PID twice.
		s = openT(t, dsn, pass("proc"))
		defer s.Close()
		var all, distinct int
		s.db.QueryRowContext(ctx, "SELECT count(*), count(DISTINCT pid) FROM entries").Scan(&all, &distinct)
		after := pids(t, s)
		lost := 0
		for p := range before {
			if !after[p] {
				lost++
			}
		}
		if lost > 0 || all != distinct {
			t.Errorf("%d generated entries lost, %d duplicate PIDs", lost, all-distinct)
		}
		engine := "sqlite"
		if strings.HasPrefix(dsn, "postgres") {
			engine = "postgresql"
		}
		if err := soak.Report(soak.Result{Loop: "store kill -9 (" + engine + ")", Runs: iterations, Faults: iterations,
			Lost: lost, Duplicates: all - distinct,
			Note: fmt.Sprintf("%d commits before the kills", totalCommits)}); err != nil {
			t.Error(err)
		}
	})
}
