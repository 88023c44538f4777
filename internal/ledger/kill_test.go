package ledger

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestMain lets the test binary act as the appending child of TestKill9.
func TestMain(m *testing.M) {
	if name := os.Getenv("LEDGER_KILL_CHILD"); name != "" {
		appendForever(name)
		return
	}
	os.Exit(m.Run())
}

// appendForever appends records in small writes (so that a kill can tear
// one) and prints "ok SEQ" once each is fsynced.
func appendForever(name string) {
	writeChunk = 7
	l, err := ReadFile(name)
	if err != nil {
		fmt.Println("error", err)
		os.Exit(2)
	}
	seq := l.NextSeq()
	for range 10000 {
		if err := Append(name, sample(seq)); err != nil {
			fmt.Println("error", err)
			os.Exit(2)
		}
		fmt.Println("ok", seq)
		seq++
	}
	os.Exit(0)
}

// TestKill9 kills an appending child at random points, 20 times on one
// file, and checks after each kill that every line the child reported
// fsynced reads back intact, in order, with at most the last line torn.
func TestKill9(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	name := filepath.Join(t.TempDir(), "ledger.jsonl")
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 8))
	var synced []uint64 // every seq any child reported fsynced, in order
	torn := 0
	for run := range 20 {
		cmd := exec.Command(exe, "-test.run=^$")
		cmd.Env = append(os.Environ(), "LEDGER_KILL_CHILD="+name)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Let it run for a random number of appends plus a random delay
		// of up to 2 ms, then kill -9.
		want := 1 + rng.IntN(15)
		sc := bufio.NewScanner(out)
		for len(synced) < 1 || want > 0 {
			if !sc.Scan() {
				t.Fatalf("run %d: child stopped early: %v", run, sc.Err())
			}
			seq, ok := strings.CutPrefix(sc.Text(), "ok ")
			if !ok {
				t.Fatalf("run %d: child said %q", run, sc.Text())
			}
			n, _ := strconv.ParseUint(seq, 10, 64)
			synced = append(synced, n)
			want--
		}
		time.Sleep(time.Duration(rng.IntN(2000)) * time.Microsecond)
		cmd.Process.Kill()
		for sc.Scan() { // lines fsynced before the kill landed
			if seq, ok := strings.CutPrefix(sc.Text(), "ok "); ok {
				n, _ := strconv.ParseUint(seq, 10, 64)
				synced = append(synced, n)
			}
		}
		cmd.Wait()

		l, err := ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		got := map[uint64]bool{}
		var prev uint64
		for _, r := range l.Records {
			if r.Seq <= prev {
				t.Fatalf("run %d: seq %d after %d", run, r.Seq, prev)
			}
			prev = r.Seq
			got[r.Seq] = true
		}
		for _, s := range synced {
			if !got[s] {
				t.Fatalf("run %d: fsynced record seq %d is missing; findings %v", run, s, l.Findings)
			}
		}
		// Only the current tail may be torn; earlier torn tails became
		// damaged lines when the next child appended after them, one per run
		// at most.
		damaged := 0
		for _, f := range l.Findings {
			switch f.Code {
			case CodeTornTail:
				if f.Line != l.Lines {
					t.Fatalf("run %d: torn tail finding on line %d of %d", run, f.Line, l.Lines)
				}
			case CodeDamagedLine:
				damaged++
			default:
				t.Fatalf("run %d: unexpected finding %v", run, f)
			}
		}
		if damaged > run {
			t.Fatalf("run %d: %d damaged lines, more than earlier kills", run, damaged)
		}
		if l.TornTail {
			torn++
		}
	}
	t.Logf("20 kills, %d fsynced records, %d left a torn tail", len(synced), torn)
}
