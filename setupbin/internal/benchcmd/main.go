// Command benchcmd times setupbin's encoder and decoder on N PSK records
// for scripts/bench-setupbin.sh, which runs MeshCentral's on the same
// records in the same run. It writes the file it encoded to -o and prints
// one line: "<records> <bytes> <encode seconds> <decode seconds>", each
// the best of -runs runs.
//
//	go run ./setupbin/internal/benchcmd -n 100000 -runs 3 -o /tmp/setup.bin
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/provstick/provstick/setupbin"
	"github.com/provstick/provstick/setupbin/setupbintest"
)

func main() {
	n := flag.Int("n", 100_000, "records")
	runs := flag.Int("runs", 3, "runs; the best is reported")
	out := flag.String("o", "", "write the encoded file here")
	flag.Parse()
	if err := run(*n, *runs, *out); err != nil {
		fmt.Fprintln(os.Stderr, "benchcmd:", err)
		os.Exit(1)
	}
}

func run(n, runs int, out string) error {
	psks, err := setupbintest.PSKs(1, n)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	buf.Grow((1 + n) * setupbin.ChunkSize)
	best := func(f func() error) (time.Duration, error) {
		var b time.Duration
		for i := 0; i < runs; i++ {
			t0 := time.Now()
			if err := f(); err != nil {
				return 0, err
			}
			if d := time.Since(t0); i == 0 || d < b {
				b = d
			}
		}
		return b, nil
	}
	enc, err := best(func() error {
		buf.Reset()
		w, err := setupbin.NewWriter(&buf, setupbin.WriterOptions{Version: setupbin.V4_0, Profile: setupbin.ProfileAMT6to10, Records: uint32(n)})
		if err != nil {
			return err
		}
		for i := range psks {
			rec, err := psks[i].Record(setupbin.ProfileAMT6to10)
			if err != nil {
				return err
			}
			if err := w.AddRecord(rec); err != nil {
				return err
			}
		}
		return w.Close()
	})
	if err != nil {
		return fmt.Errorf("encoding: %w", err)
	}
	data := buf.Bytes()
	dec, err := best(func() error {
		r, err := setupbin.NewReader(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			return err
		}
		if len(r.Records) != n || r.HasErrors() {
			return fmt.Errorf("decoded %d records, findings %v", len(r.Records), r.Findings)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("decoding: %w", err)
	}
	if out != "" {
		if err := os.WriteFile(out, data, 0o600); err != nil {
			return err
		}
	}
	fmt.Printf("%d %d %.6f %.6f\n", n, len(data), enc.Seconds(), dec.Seconds())
	return nil
}
