package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/provstick/provstick/builder"
	"github.com/spf13/cobra"
)

func init() { register(newWriteCmd) }

type writeFlags struct {
	yes       bool
	force     bool
	noVerify  bool
	blockSize int
}

// newWriteCmd is "provstick write": an image onto sticks.
func newWriteCmd(e *env) *cobra.Command {
	var f writeFlags
	c := &cobra.Command{
		Use:   "write stick.img DEVICE...",
		Short: "Write a stick image to one or many devices at once",
		Long: `write copies an image (from provstick build) to each device in parallel,
bypassing the page cache (O_DIRECT) and flushing at the end, then reads every
device back and compares SHA-256 hashes with the image. Progress is shown
per device. A failure on one device does not stop the others; the summary
says which sticks are good, and the exit status is 1 if any failed.

It refuses devices that are mounted (or held by device-mapper/md), disks
that are not removable (not USB, removable flag clear) and devices smaller
than the image, unless --force. It asks before writing unless --yes.

A target that is a regular file (or does not exist) is written as a file.
Writing to a device needs permission to open it, nothing more.`,
		Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runWrite(cmd.Context(), e, &f, args[0], args[1:])
		},
	}
	fl := c.Flags()
	fl.BoolVarP(&f.yes, "yes", "y", false, "do not ask for confirmation")
	fl.BoolVar(&f.force, "force", false, "write even to mounted, non-removable or too small devices")
	fl.BoolVar(&f.noVerify, "no-verify", false, "skip reading the devices back")
	fl.IntVar(&f.blockSize, "block-size", 4<<20, "bytes per write (a multiple of 4096)")
	return c
}

func runWrite(ctx context.Context, e *env, f *writeFlags, image string, targets []string) error {
	st, err := os.Stat(image)
	if err != nil {
		return fmt.Errorf("reading the image: %w", err)
	}
	size := st.Size()
	// Say what will be overwritten, and stop early on what would be
	// refused anyway.
	var refused []string
	for _, t := range targets {
		tg, err := builder.Inspect(t)
		switch {
		case errors.Is(err, os.ErrNotExist):
			fmt.Fprintf(e.stderr, "  %s: new file\n", t)
			continue
		case err != nil:
			return err
		}
		desc := "file"
		if tg.Device {
			desc = fmt.Sprintf("%d MiB", tg.Size>>20)
			if tg.Model != "" {
				desc += ", " + tg.Model
			}
		}
		fmt.Fprintf(e.stderr, "  %s: %s\n", t, desc)
		if err := tg.Check(size); err != nil {
			if !f.force {
				refused = append(refused, err.Error())
			} else {
				fmt.Fprintf(e.stderr, "  %s: forced: %v\n", t, err)
			}
		}
	}
	if len(refused) > 0 {
		return fmt.Errorf("refusing to write (use --force to override):\n  %s", strings.Join(refused, "\n  "))
	}
	if !f.yes {
		fmt.Fprintf(e.stderr, "Write %s (%d MiB) to %d target(s)? Everything on them is lost. [y/N] ", image, size>>20, len(targets))
		line, _ := bufio.NewReader(e.stdin).ReadString('\n')
		if a := strings.ToLower(strings.TrimSpace(line)); a != "y" && a != "yes" {
			return errors.New("not confirmed: nothing written")
		}
	}

	var mu sync.Mutex
	last := map[string]time.Time{}
	progress := func(p builder.Progress) {
		mu.Lock()
		defer mu.Unlock()
		if p.Phase != builder.PhaseDone && p.Done != p.Total && time.Since(last[p.Target+string(p.Phase)]) < time.Second {
			return
		}
		last[p.Target+string(p.Phase)] = time.Now()
		rate, eta := 0.0, ""
		if s := p.Elapsed.Seconds(); s > 0 {
			rate = float64(p.Done) / s / (1 << 20)
			if rate > 0 && p.Done < p.Total {
				eta = fmt.Sprintf(", ETA %ds", int(float64(p.Total-p.Done)/(1<<20)/rate+0.5))
			}
		}
		if p.Phase == builder.PhaseDone {
			return
		}
		fmt.Fprintf(e.stderr, "%s: %s %d/%d MiB (%.0f%%), %.1f MiB/s%s\n", p.Target, p.Phase,
			p.Done>>20, p.Total>>20, 100*float64(p.Done)/float64(max(p.Total, 1)), rate, eta)
	}
	res, err := builder.Write(ctx, image, targets, &builder.WriteOptions{
		Force: f.force, NoVerify: f.noVerify, BlockSize: f.blockSize, Progress: progress, Logger: e.log,
	})
	if err != nil {
		return err
	}
	failed := 0
	for _, r := range res {
		if r.Err != nil {
			failed++
			fmt.Fprintf(e.stdout, "FAILED %s: %v\n", r.Target, r.Err)
			continue
		}
		rate := float64(r.Bytes) / max(r.WriteTime.Seconds(), 1e-9) / (1 << 20)
		verified := "not verified"
		if !f.noVerify {
			verified = fmt.Sprintf("verified in %.1f s", r.VerifyTime.Seconds())
		}
		fmt.Fprintf(e.stdout, "ok %s: %d MiB in %.1f s (%.1f MiB/s), %s\n", r.Target, r.Bytes>>20, r.WriteTime.Seconds(), rate, verified)
	}
	fmt.Fprintf(e.stdout, "%d of %d written\n", len(res)-failed, len(res))
	if failed > 0 {
		return &exitError{code: 1}
	}
	return nil
}
