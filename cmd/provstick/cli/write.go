package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/provstick/provstick/builder"
	"github.com/provstick/provstick/kiosk/store"
	"github.com/provstick/provstick/setupbin"
	"github.com/spf13/cobra"
)

func init() { register(newWriteCmd) }

type writeFlags struct {
	yes       bool
	force     bool
	noVerify  bool
	blockSize int
	depth     int
	// Factory line: each target gets its own stick from the pool.
	recordsPerStick int
	stickPrefix     string
	recipe          string
	profile         string
	batch           string
	kernelDir       string
	agent           string
	store           storeFlags
}

// newWriteCmd is "provstick write": an image onto sticks.
func newWriteCmd(e *env) *cobra.Command {
	var f writeFlags
	c := &cobra.Command{
		Use:   "write (stick.img | --records-per-stick N --stick-prefix P) DEVICE...",
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
Writing to a device needs permission to open it, nothing more.

Factory line: with --records-per-stick N --stick-prefix P (and --recipe,
as for build) there is no image argument; every DEVICE gets a stick of its
own: the next free label P-0001, P-0002, … in the store, N records drawn
from the pool for it, its own image (own setup.bin, pids.json and
manifest) built in a temporary directory, then all written in parallel.
The store records each stick as built and, once verified, written.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if f.recordsPerStick != 0 {
				return runWriteFactory(cmd.Context(), e, &f, args)
			}
			if len(args) < 2 {
				return errors.New("give the image and at least one device (or --records-per-stick N --stick-prefix P DEVICE...)")
			}
			return runWrite(cmd.Context(), e, &f, args[0], args[1:])
		},
	}
	fl := c.Flags()
	fl.BoolVarP(&f.yes, "yes", "y", false, "do not ask for confirmation")
	fl.BoolVar(&f.force, "force", false, "write even to mounted, non-removable or too small devices")
	fl.BoolVar(&f.noVerify, "no-verify", false, "skip reading the devices back")
	fl.IntVar(&f.blockSize, "block-size", 4<<20, "bytes per write (a multiple of 4096)")
	fl.IntVar(&f.depth, "queue-depth", 0, "writes kept outstanding per target, 1 to 64 (default: 1 for a block device, as dd, 4 for a file)")
	fl.IntVar(&f.recordsPerStick, "records-per-stick", 0, "factory line: build each device's own stick with N records drawn from the pool")
	fl.StringVar(&f.stickPrefix, "stick-prefix", "", "factory line: sticks are labelled PREFIX-0001, PREFIX-0002, … (next free in the store)")
	fl.StringVar(&f.recipe, "recipe", "default", "factory line: recipe `file` or name in ./images")
	fl.StringVar(&f.profile, "profile", setupbin.ProfileAMT6to10.Name, "factory line: firmware profile of the drawn records: "+profileNames())
	fl.StringVar(&f.batch, "batch", "", "factory line: batch name for the manifests")
	fl.StringVar(&f.kernelDir, "kernel-dir", "", "factory line: unpacked linux-image package (default: fetched into the cache)")
	fl.StringVar(&f.agent, "agent", "", "factory line: static agent binary (default provstick-agent next to provstick)")
	f.store.register(c)
	return c
}

func runWrite(ctx context.Context, e *env, f *writeFlags, image string, targets []string) error {
	st, err := os.Stat(image)
	if err != nil {
		return fmt.Errorf("reading the image: %w", err)
	}
	size := st.Size()
	if err := checkTargets(e, f, targets, size); err != nil {
		return err
	}
	if !f.yes {
		fmt.Fprintf(e.stderr, "Write %s (%d MiB) to %d target(s)? Everything on them is lost. [y/N] ", image, size>>20, len(targets))
		if err := confirm(e); err != nil {
			return err
		}
	}
	res, err := builder.Write(ctx, image, targets, &builder.WriteOptions{
		Force: f.force, NoVerify: f.noVerify, BlockSize: f.blockSize, Depth: f.depth, Progress: progressPrinter(e), Logger: e.log,
	})
	if err != nil {
		return err
	}
	failed := 0
	for _, r := range res {
		if !printWriteResult(e, f, r, "") {
			failed++
		}
	}
	fmt.Fprintf(e.stdout, "%d of %d written\n", len(res)-failed, len(res))
	if failed > 0 {
		return &exitError{code: 1}
	}
	return nil
}

func confirm(e *env) error {
	line, _ := bufio.NewReader(e.stdin).ReadString('\n')
	if a := strings.ToLower(strings.TrimSpace(line)); a != "y" && a != "yes" {
		return errors.New("not confirmed: nothing written")
	}
	return nil
}

// checkTargets says what will be overwritten, and stops early on what
// would be refused anyway.
func checkTargets(e *env, f *writeFlags, targets []string, size int64) error {
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
	return nil
}

// progressPrinter prints each target's progress at most once a second.
func progressPrinter(e *env) func(builder.Progress) {
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
	return progress
}

// printWriteResult prints one target's line of the summary and reports
// whether it is good. what names the stick in factory mode.
func printWriteResult(e *env, f *writeFlags, r builder.WriteResult, what string) bool {
	if r.Err != nil {
		fmt.Fprintf(e.stdout, "FAILED %s%s: %v\n", r.Target, what, r.Err)
		return false
	}
	rate := float64(r.Bytes) / max(r.WriteTime.Seconds(), 1e-9) / (1 << 20)
	verified := "not verified"
	if !f.noVerify {
		verified = fmt.Sprintf("verified in %.1f s", r.VerifyTime.Seconds())
	}
	fmt.Fprintf(e.stdout, "ok %s%s: %d MiB in %.3f s (%.0f MiB/s), %s\n", r.Target, what, r.Bytes>>20, r.WriteTime.Seconds(), rate, verified)
	return true
}

// factoryStick is one device's stick on the factory line.
type factoryStick struct {
	target string
	label  string
	image  string
	hash   string
	err    error
	res    builder.WriteResult
}

// runWriteFactory builds each target's own stick from the pool and
// writes them all in parallel. Drawing and building are sequential (one
// store transaction per stick); writing is parallel. A failure on one
// stick does not stop the others.
func runWriteFactory(ctx context.Context, e *env, f *writeFlags, targets []string) error {
	switch {
	case f.recordsPerStick < 0 || f.recordsPerStick > store.MaxRecords:
		return fmt.Errorf("flag --records-per-stick: invalid value %d (want 1 to %d)", f.recordsPerStick, store.MaxRecords)
	case f.stickPrefix == "" || !builder.ValidStickID(f.stickPrefix+"-0001"):
		return fmt.Errorf("flag --stick-prefix: invalid prefix %q (want 1 to 59 of A-Z a-z 0-9 . _ -)", f.stickPrefix)
	}
	seen := map[string]bool{}
	for _, t := range targets {
		if seen[t] {
			return fmt.Errorf("device %s is named twice", t)
		}
		seen[t] = true
	}
	recipe, b, err := prepareBuilder(ctx, e, f.recipe, f.kernelDir, f.agent)
	if err != nil {
		return err
	}
	if err := checkTargets(e, f, targets, int64(recipe.Size)); err != nil {
		return err
	}
	if !f.yes {
		fmt.Fprintf(e.stderr, "Draw %d records per stick from the pool and write %d stick(s) (%d MiB each)? Everything on them is lost. [y/N] ",
			f.recordsPerStick, len(targets), recipe.Size>>20)
		if err := confirm(e); err != nil {
			return err
		}
	}
	pool, err := openStore(ctx, e, &f.store, true)
	if err != nil {
		return err
	}
	defer pool.Close()
	dir, err := os.MkdirTemp("", "provstick-factory-")
	if err != nil {
		return fmt.Errorf("making a directory for the images: %w", err)
	}
	defer os.RemoveAll(dir)

	sticks := make([]*factoryStick, len(targets))
	next := 1
	for i, t := range targets {
		s := &factoryStick{target: t}
		sticks[i] = s
		if s.label, next, err = nextFreeLabel(ctx, pool, f.stickPrefix, next); err != nil {
			return err
		}
		sb, pids, err := drawSetupBin(ctx, pool, s.label, f.recordsPerStick, f.profile, recipe.Name)
		if err != nil {
			s.err = err
			continue
		}
		s.image = filepath.Join(dir, s.label+".img")
		res, err := b.Build(ctx, s.image, builder.Stick{ID: s.label, Batch: f.batch, SetupBin: sb, PIDs: pids})
		if err != nil {
			s.err = fmt.Errorf("%w (its %d entries stay allocated to stick %s; retire them with provstick pool void)", err, f.recordsPerStick, s.label)
			continue
		}
		s.hash = "sha256:" + res.SHA256
		if err := pool.MarkStick(ctx, s.label, store.StickMark{BuiltAt: time.Now(), ImageHash: s.hash}); err != nil {
			s.err = fmt.Errorf("recording stick %s as built: %w", s.label, err)
			continue
		}
		fmt.Fprintf(e.stderr, "%s: stick %s built, records 1-%d\n", t, s.label, f.recordsPerStick)
	}

	progress := progressPrinter(e)
	var wg sync.WaitGroup
	for _, s := range sticks {
		if s.err != nil {
			continue
		}
		wg.Go(func() {
			res, err := builder.Write(ctx, s.image, []string{s.target}, &builder.WriteOptions{
				Force: f.force, NoVerify: f.noVerify, BlockSize: f.blockSize, Depth: f.depth, Progress: progress, Logger: e.log,
			})
			switch {
			case err != nil:
				s.err = err
			case len(res) != 1:
				s.err = fmt.Errorf("writing %s: %d results", s.target, len(res))
			default:
				s.res, s.err = res[0], res[0].Err
			}
		})
	}
	wg.Wait()

	good := 0
	for _, s := range sticks {
		what := ""
		if s.label != "" {
			what = " (stick " + s.label + ")"
		}
		if s.err == nil && !f.noVerify {
			if err := pool.MarkStick(ctx, s.label, store.StickMark{WrittenAt: time.Now(), ImageHash: s.hash}); err != nil {
				s.err = fmt.Errorf("written and verified, but recording it in the store: %w", err)
			}
		}
		if s.err != nil {
			fmt.Fprintf(e.stdout, "FAILED %s%s: %v\n", s.target, what, s.err)
			continue
		}
		if printWriteResult(e, f, s.res, what) {
			good++
		}
	}
	fmt.Fprintf(e.stdout, "%d of %d sticks good\n", good, len(sticks))
	if good < len(sticks) {
		return &exitError{code: 1}
	}
	return nil
}

// nextFreeLabel returns the first label prefix-NNNN, from number n on,
// that the store does not know, and the number after it.
func nextFreeLabel(ctx context.Context, pool *store.Store, prefix string, n int) (string, int, error) {
	for ; n < 1_000_000; n++ {
		label := fmt.Sprintf("%s-%04d", prefix, n)
		_, err := pool.Stick(ctx, label)
		if errors.Is(err, store.ErrNotFound) {
			return label, n + 1, nil
		}
		if err != nil {
			return "", 0, fmt.Errorf("finding a free stick label: %w", err)
		}
	}
	return "", 0, fmt.Errorf("no free stick label with prefix %s", prefix)
}
