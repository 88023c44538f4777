package atomicfile

import (
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

func TestWriteFile(t *testing.T) {
	dir := t.TempDir()
	name := filepath.Join(dir, "f")
	if err := WriteFile(name, []byte("one"), 0o600, true); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(name, []byte("two"), 0o600, true); !errors.Is(err, ErrExists) {
		t.Fatalf("second no-replace write: err = %v, want ErrExists", err)
	}
	if b, _ := os.ReadFile(name); string(b) != "one" {
		t.Fatalf("contents %q after refused write, want %q", b, "one")
	}
	if err := WriteFile(name, []byte("three"), 0o644, false); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(name)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(name); string(b) != "three" || fi.Mode().Perm() != 0o644 {
		t.Fatalf("got %q mode %v", b, fi.Mode().Perm())
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("directory holds %d entries, want 1 (temporary files left behind?)", len(ents))
	}
}

func TestAbort(t *testing.T) {
	dir := t.TempDir()
	f, err := Create(filepath.Join(dir, "f"), 0o600, true)
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte("x"))
	f.Abort()
	f.Abort()
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("abort left %d entries", len(ents))
	}
}

// TestKilledWriter kills a child process that rewrites a file in a loop and
// checks the file always holds one whole version.
func TestKilledWriter(t *testing.T) {
	if os.Getenv("ATOMICFILE_CHILD") != "" {
		name := os.Getenv("ATOMICFILE_CHILD")
		for i := 0; ; i++ {
			data := make([]byte, 1<<16)
			for j := range data {
				data[j] = byte('a' + i%26)
			}
			if err := WriteFile(name, data, 0o600, false); err != nil {
				os.Exit(2)
			}
		}
	}
	name := filepath.Join(t.TempDir(), "f")
	if err := WriteFile(name, make([]byte, 1<<16), 0o600, false); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10; i++ {
		cmd := exec.Command(os.Args[0], "-test.run=^TestKilledWriter$")
		cmd.Env = append(os.Environ(), "ATOMICFILE_CHILD="+name)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Let it write for a while, then kill it without warning.
		time.Sleep(time.Duration(20+rand.IntN(80)) * time.Millisecond)
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) != 1<<16 {
			t.Fatalf("iteration %d: file has %d bytes, want %d", i, len(b), 1<<16)
		}
		for j := range b {
			if b[j] != b[0] {
				t.Fatalf("iteration %d: torn file: byte %d is %q, byte 0 is %q", i, j, b[j], b[0])
			}
		}
		t.Logf("iteration %d: whole version %s", i, strconv.QuoteRune(rune(b[0])))
	}
}
