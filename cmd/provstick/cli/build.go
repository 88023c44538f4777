package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/provstick/provstick/builder"
	"github.com/provstick/provstick/kiosk/store"
	"github.com/provstick/provstick/setupbin"
	"github.com/spf13/cobra"
)

func init() { register(newBuildCmd) }

type buildFlags struct {
	recipe    string
	stick     string
	records   int
	profile   string
	setupbin  string
	output    string
	batch     string
	kernelDir string
	agent     string
	force     bool
	store     storeFlags
}

// newBuildCmd is "provstick build": a stick image from a recipe.
func newBuildCmd(e *env) *cobra.Command {
	var f buildFlags
	c := &cobra.Command{
		Use:   "build --recipe R (--stick LABEL --records N | --setupbin FILE) -o stick.img",
		Short: "Build a provisioning stick image from a recipe",
		Long: `build writes the image of one provisioning stick to a file: an MBR with one
FAT32 partition labelled PROVSTICK holding setup.bin (the first file in the
root, contiguous, as the strictest BIOS wants), the boot loaders the recipe
names (systemd-boot for UEFI, syslinux for legacy BIOS), the kernel, the
initramfs with the provstick agent, and provstick/manifest.json (stick,
batch, record range, recipe, file hashes; no secrets).

The recipe is a YAML file (see images/default.yaml) or the name of one in
./images. With --stick LABEL --records N the records are drawn from the
pool store (store.dsn) in one transaction and the store records the image
hash; with --setupbin FILE a setup.bin you made is used as it is.

Bootable recipes need Debian's kernel package and the static agent binary.
Without --kernel-dir (an unpacked linux-image package) the recipe's
kernel.package is fetched with apt-get download and unpacked with dpkg-deb
into ${XDG_CACHE_HOME:-~/.cache}/provstick/kernels/, and reused from there.
The agent (--agent, default provstick-agent next to this program) is built
with:
  CGO_ENABLED=0 go build -o provstick-agent ./initramfs/agent/cmd/provstick-agent

The same recipe, setup.bin and stick label give the same image bytes.
Write the image to sticks with provstick write.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runBuild(cmd.Context(), e, &f) },
	}
	fl := c.Flags()
	fl.StringVar(&f.recipe, "recipe", "default", "recipe `file` or name in ./images")
	fl.StringVar(&f.stick, "stick", "", "the stick's label (unique; with --records, drawn from the pool under this label)")
	fl.IntVar(&f.records, "records", 0, "draw N records from the pool for this stick")
	fl.StringVar(&f.profile, "profile", setupbin.ProfileAMT6to10.Name, "firmware profile of the drawn records: "+profileNames())
	fl.StringVar(&f.setupbin, "setupbin", "", "use this setup.bin `file` instead of drawing from the pool")
	fl.StringVarP(&f.output, "output", "o", "", "image file to write")
	fl.StringVar(&f.batch, "batch", "", "batch name for the manifest (e.g. a work order)")
	fl.StringVar(&f.kernelDir, "kernel-dir", "", "unpacked linux-image package (default: fetch the recipe's kernel.package into the cache)")
	fl.StringVar(&f.agent, "agent", "", "static agent binary (default provstick-agent next to provstick)")
	fl.BoolVar(&f.force, "force", false, "replace an existing image file")
	f.store.register(c)
	return c
}

// resolveRecipe finds a recipe by path or by name in ./images.
func resolveRecipe(name string) (string, error) {
	if strings.ContainsRune(name, filepath.Separator) || strings.HasSuffix(name, ".yaml") || strings.HasSuffix(name, ".yml") {
		return name, nil
	}
	p := filepath.Join("images", name+".yaml")
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("flag --recipe: no recipe %q (looked for %s; give a file path)", name, p)
	}
	return p, nil
}

func defaultAgent() string {
	exe, err := os.Executable()
	if err != nil {
		return ""
	}
	p := filepath.Join(filepath.Dir(exe), "provstick-agent")
	if _, err := os.Stat(p); err != nil {
		return ""
	}
	return p
}

func runBuild(ctx context.Context, e *env, f *buildFlags) (retErr error) {
	if f.output == "" {
		return errors.New("flag --output (-o) is required: the image file to write")
	}
	fromPool := f.records != 0
	switch {
	case fromPool && f.setupbin != "":
		return errors.New("give either --records N (draw from the pool) or --setupbin FILE, not both")
	case !fromPool && f.setupbin == "":
		return errors.New("give --stick LABEL --records N (draw from the pool) or --setupbin FILE")
	case fromPool && f.stick == "":
		return errors.New("--records needs --stick LABEL")
	case f.records < 0 || f.records > store.MaxRecords:
		return fmt.Errorf("flag --records: invalid value %d (want 1 to %d)", f.records, store.MaxRecords)
	}
	if f.stick != "" && !builder.ValidStickID(f.stick) {
		return fmt.Errorf("flag --stick: invalid label %q (want 1 to 64 of A-Z a-z 0-9 . _ -)", f.stick)
	}
	if !f.force {
		if _, err := os.Lstat(f.output); err == nil {
			return fmt.Errorf("%s exists (use --force to replace it)", f.output)
		}
	}
	recipe, b, err := prepareBuilder(ctx, e, f.recipe, f.kernelDir, f.agent)
	if err != nil {
		return err
	}

	label := f.stick
	var sb []byte
	var pids []string
	var pool *store.Store
	if fromPool {
		if pool, err = openStore(ctx, e, &f.store, true); err != nil {
			return err
		}
		defer pool.Close()
		if sb, pids, err = drawSetupBin(ctx, pool, f.stick, f.records, f.profile, recipe.Name); err != nil {
			return err
		}
		defer func() {
			if retErr != nil {
				retErr = fmt.Errorf("%w (the %d drawn entries stay allocated to stick %s in the store; retire them with provstick pool void)", retErr, f.records, label)
			}
		}()
	} else {
		if sb, err = os.ReadFile(f.setupbin); err != nil {
			return fmt.Errorf("reading setup.bin: %w", err)
		}
		if label == "" {
			label = strings.TrimSuffix(filepath.Base(f.output), filepath.Ext(f.output))
		}
	}
	res, err := b.Build(ctx, f.output, builder.Stick{ID: label, Batch: f.batch, SetupBin: sb, PIDs: pids})
	if err != nil {
		return err
	}
	if pool != nil {
		if err := pool.MarkStick(ctx, label, store.StickMark{BuiltAt: time.Now(), ImageHash: "sha256:" + res.SHA256}); err != nil {
			return fmt.Errorf("image written, but recording it in the store: %w", err)
		}
	}
	m := res.Manifest
	fmt.Fprintf(e.stdout, "wrote %s: %d MiB, recipe %s, stick %s, setup.bin %s with %d records\n",
		f.output, res.Size>>20, recipe.Name, label, m.SetupBin.Version, m.SetupBin.Records)
	fmt.Fprintf(e.stdout, "sha256 %s\n", res.SHA256)
	if pool != nil {
		fmt.Fprintf(e.stdout, "drew records 1-%d for stick %s from the pool\n", f.records, label)
	}
	return nil
}

// prepareBuilder loads the recipe and readies its boot files (fetching
// the kernel if no directory is given): nothing is drawn from the pool
// for a stick that cannot be built.
func prepareBuilder(ctx context.Context, e *env, recipeName, kernelDir, agent string) (*builder.Recipe, *builder.Builder, error) {
	rp, err := resolveRecipe(recipeName)
	if err != nil {
		return nil, nil, err
	}
	recipe, err := builder.LoadRecipe(rp)
	if err != nil {
		return nil, nil, err
	}
	opts := &builder.Options{KernelDir: kernelDir, Agent: agent, Logger: e.log, Packages: &builder.PackageCache{Logger: e.log}}
	if opts.Agent == "" {
		opts.Agent = defaultAgent()
	}
	b, err := builder.New(recipe, opts)
	if err != nil {
		return nil, nil, err
	}
	if _, err := b.Prepare(ctx); err != nil {
		return nil, nil, err
	}
	return recipe, b, nil
}

// drawSetupBin allocates the stick's entries in the store and writes
// their setup.bin in memory, the way "setupbin create --from-pool" does.
// It returns the records' PIDs in record order too (for pids.json).
func drawSetupBin(ctx context.Context, pool *store.Store, label string, records int, profile, recipe string) ([]byte, []string, error) {
	sf := &setupbinCreateFlags{profile: profile, currentPassword: string(setupbin.DefaultMEBxPassword), passwordLength: 16, scramble: "default"}
	plan, err := planCreate(sf, uint32(records))
	if err != nil {
		return nil, nil, err
	}
	_, drawn, err := pool.AllocateStick(ctx, store.StickSpec{Label: label, Recipe: recipe, Count: records, Profile: plan.prof.Name})
	if err != nil {
		return nil, nil, fmt.Errorf("drawing %d records for stick %s from the pool: %w", records, label, err)
	}
	var buf bytes.Buffer
	w, err := setupbin.NewWriter(&buf, plan.opts)
	if err != nil {
		return nil, nil, fmt.Errorf("writing setup.bin: %w", err)
	}
	pids := make([]string, 0, len(drawn))
	for i, d := range drawn {
		_, rec, err := plan.record(d.PID, d.PPS, d.NewPassword, d.CurrentPassword)
		if err != nil {
			return nil, nil, fmt.Errorf("stick %s record %d (PID %s): %w", label, i+1, d.PID.Display(), err)
		}
		if err := w.AddRecord(rec); err != nil {
			return nil, nil, fmt.Errorf("writing setup.bin: record %d: %w", i, err)
		}
		pids = append(pids, d.PID.String())
	}
	if err := w.Close(); err != nil {
		return nil, nil, fmt.Errorf("writing setup.bin: %w", err)
	}
	return buf.Bytes(), pids, nil
}
