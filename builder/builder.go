// Package builder turns a recipe (images/*.yaml), a setup.bin and a stick
// identity into the bytes of a bootable provisioning stick, and writes
// images to devices (DESIGN.md §2, §3 decisions 2–5; issue 7).
//
// The image is made in a plain file, without root, loop devices or
// mounts: go-diskfs writes the MBR and the FAT32 filesystem, setup.bin
// first and contiguous in the root (specs/setupbin.md §1), then the boot
// files. The builder then patches what go-diskfs v1.9.4 leaves wrong (see
// fixTree and fixBootSector) and, for legacy BIOS, runs syslinux's
// installer on the file. The same recipe, inputs, stick id and Options.Time
// give the same bytes.
//
// Boot: UEFI through systemd-boot (Debian's systemd-boot-efi) with a
// loader entry, so the kernel and initramfs on the stick are one copy
// shared with syslinux, which boots legacy BIOS machines. The kernel and
// its modules come from an unpacked Debian linux-image package; the
// initramfs (WriteInitramfs) holds the static agent as /init.
package builder

import (
	"bytes"
	"context"
	"crypto/sha256"
	"debug/pe"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/disk"
	"github.com/diskfs/go-diskfs/filesystem"
	"github.com/diskfs/go-diskfs/partition"
	"github.com/diskfs/go-diskfs/partition/gpt"
	"github.com/diskfs/go-diskfs/partition/mbr"

	"github.com/provstick/provstick/initramfs/hostbased"
	"github.com/provstick/provstick/internal/atomicfile"
	"github.com/provstick/provstick/setupbin"
)

// Default locations of Debian's boot loader files.
const (
	DefaultSystemdBoot = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi"      // systemd-boot-efi
	DefaultSyslinuxMBR = "/usr/lib/syslinux/mbr/mbr.bin"                      // syslinux-common
	DefaultSyslinux    = "syslinux"                                           // syslinux (mtools installer)
	DefaultShim        = "/usr/lib/shim/shimx64.efi.signed"                   // shim-signed
	DefaultGrub        = "/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed" // grub-efi-amd64-signed
)

// Debian packages the signed boot chain comes from when the files are
// not installed (fetched through Options.Packages).
const (
	ShimPackage = "shim-signed"
	GrubPackage = "grub-efi-amd64-signed"
)

// GrubConfigPath is where Debian's signed, monolithic grubx64.efi reads
// its configuration: its built-in prefix is /EFI/debian on the device it
// was loaded from (its embedded memdisk grub.cfg then sources
// $prefix/grub.cfg).
const GrubConfigPath = "EFI/debian/grub.cfg"

// DefaultTime is the time stamped on every file when Options.Time is zero.
var DefaultTime = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// Layout constants.
const (
	partitionStart = 2048 // sectors: 1 MiB, aligned for flash
	sectorSize     = 512
	SetupBinName   = "SETUP.BIN"               // first root entry, 8.3, no LFN slots before it
	ManifestPath   = "provstick/manifest.json" // on the stick
	AgentConfPath  = "provstick/agent.json"
	PIDsPath       = "provstick/pids.json" // read by the agent (initramfs/agent/stick.go)
	PIDsFormat     = "provstick-pids/1"
	KernelPath     = "provstick/vmlinuz"
	InitrdPath     = "provstick/initrd.img"
)

// Options are the paths and settings that are not part of a recipe
// because they depend on the machine doing the build.
type Options struct {
	// KernelDir is an unpacked linux-image package (see FindKernel).
	// Empty: the recipe's kernel.package is fetched through Packages.
	KernelDir string
	// Packages fetches and caches Debian packages (the kernel when
	// KernelDir is empty, the signed boot chain when Shim or Grub are
	// not installed); nil means a PackageCache in DefaultCacheDir.
	Packages *PackageCache
	// Agent is the static agent binary (CGO_ENABLED=0 go build
	// ./initramfs/agent/cmd/provstick-agent). Needed only for bootable
	// recipes.
	Agent string
	// SystemdBoot, SyslinuxMBR and Syslinux override the Default* paths.
	SystemdBoot string
	SyslinuxMBR string
	Syslinux    string
	// Shim and Grub are Debian's signed shimx64.efi and grubx64.efi for
	// the "shim-grub" UEFI loader; empty means DefaultShim and
	// DefaultGrub if installed, else the files from the packages
	// ShimPackage and GrubPackage fetched through Packages.
	Shim string
	Grub string
	// Time is stamped on every file; zero means DefaultTime.
	Time time.Time
	// NoHash leaves Result.SHA256 empty: hashing the whole image is about
	// half of a build's time, and Write hashes the image anyway.
	NoHash bool
	// NoSync skips the fsync of the image and its directory before the
	// rename (the image is still renamed into place only when complete).
	// For images that are written to sticks right away; a crash may
	// leave an empty or partial file under the name.
	NoSync bool
	Logger *slog.Logger
}

// Stick is what makes one stick different from the next.
type Stick struct {
	ID       string // unique label, e.g. "line3-0042" (the store's stick label)
	Batch    string // free text, e.g. a work order
	SetupBin []byte // the whole setup.bin
	// FirstRecord is the number (1-based) the stick's first record has in
	// its batch, for the manifest; zero means 1.
	FirstRecord int
	// PIDs, if not nil, are the PIDs of setup.bin's records in record
	// order (one per record; never a PPS), written to provstick/pids.json
	// so the agent can name a record whose body the BIOS already zeroed.
	PIDs []string
}

// Builder builds images from one recipe; the kernel and initramfs are
// prepared once and shared by every stick. Safe for concurrent use.
type Builder struct {
	recipe *Recipe
	opts   Options
	log    *slog.Logger

	once    sync.Once
	boot    *bootFiles
	bootErr error
}

type bootFiles struct {
	kernel    *KernelFiles
	vmlinuz   []byte
	initrd    []byte
	initramfs *InitramfsInfo
	sdboot    []byte
	shim      []byte
	grub      []byte
	mbr       []byte
	// sums caches the SHA-256 of the large shared files (kernel,
	// initramfs, loaders) for every stick's manifest.
	sums map[*byte]string
}

// sum returns the hex SHA-256 of d, from the cache for shared files.
func (bf *bootFiles) sum(d []byte) string {
	if bf != nil && len(d) > 0 {
		if s, ok := bf.sums[&d[0]]; ok {
			return s
		}
	}
	return sha256Hex(d)
}

// New returns a builder for recipe r.
func New(r *Recipe, opts *Options) (*Builder, error) {
	if r == nil {
		return nil, errors.New("builder: no recipe")
	}
	if err := r.Validate(); err != nil {
		return nil, fmt.Errorf("recipe %s: %w", r.Name, err)
	}
	b := &Builder{recipe: r}
	if opts != nil {
		b.opts = *opts
	}
	if b.opts.SystemdBoot == "" {
		b.opts.SystemdBoot = DefaultSystemdBoot
	}
	if b.opts.SyslinuxMBR == "" {
		b.opts.SyslinuxMBR = DefaultSyslinuxMBR
	}
	if b.opts.Syslinux == "" {
		b.opts.Syslinux = DefaultSyslinux
	}
	if b.opts.Time.IsZero() {
		b.opts.Time = DefaultTime
	}
	if b.opts.Packages == nil {
		b.opts.Packages = &PackageCache{Logger: b.opts.Logger}
	}
	b.log = b.opts.Logger
	if b.log == nil {
		b.log = slog.New(slog.DiscardHandler)
	}
	return b, nil
}

// Initramfs returns what went into the initramfs (nil for a recipe that
// does not boot), preparing the boot files if needed.
func (b *Builder) Initramfs() (*InitramfsInfo, error) {
	return b.Prepare(context.Background())
}

// Prepare fetches (if needed) and reads the kernel, the agent and the boot
// loaders and builds the initramfs, once; it returns what went into the
// initramfs (nil for a recipe that does not boot).
func (b *Builder) Prepare(ctx context.Context) (*InitramfsInfo, error) {
	bf, err := b.bootFiles(ctx)
	if err != nil || bf == nil {
		return nil, err
	}
	return bf.initramfs, nil
}

func (b *Builder) bootFiles(ctx context.Context) (*bootFiles, error) {
	if !b.recipe.Bootable() {
		return nil, nil
	}
	b.once.Do(func() { b.boot, b.bootErr = b.prepareBoot(ctx) })
	return b.boot, b.bootErr
}

func (b *Builder) prepareBoot(ctx context.Context) (*bootFiles, error) {
	r := b.recipe
	if b.opts.Agent == "" {
		return nil, fmt.Errorf("recipe %s boots, but no agent binary was given (CGO_ENABLED=0 go build ./initramfs/agent/cmd/provstick-agent)", r.Name)
	}
	kdir := b.opts.KernelDir
	if kdir == "" {
		pkg := r.Kernel.Package
		if pkg == "" {
			pkg = DefaultKernelPackage
		}
		var err error
		if kdir, err = b.opts.Packages.FetchKernel(ctx, pkg); err != nil {
			return nil, fmt.Errorf("recipe %s: no kernel directory given, and %w", r.Name, err)
		}
	}
	k, err := FindKernel(kdir)
	if err != nil {
		return nil, err
	}
	bf := &bootFiles{kernel: k}
	if bf.vmlinuz, err = os.ReadFile(k.Vmlinuz); err != nil {
		return nil, fmt.Errorf("reading the kernel: %w", err)
	}
	agent, err := os.ReadFile(b.opts.Agent)
	if err != nil {
		return nil, fmt.Errorf("reading the agent: %w", err)
	}
	if !isStaticELF(agent) {
		return nil, fmt.Errorf("the agent %s is not a static x86-64 ELF executable (build it with CGO_ENABLED=0)", b.opts.Agent)
	}
	want := r.Kernel.Modules
	if nics := r.Agent.NICModules(); len(nics) > 0 {
		// check_kiosk: the NIC drivers, less those built in.
		builtin := BuiltinModules(k.Modules)
		want = slices.Clone(want)
		for _, m := range nics {
			if !builtin[canonModule(m)] {
				want = append(want, m)
			}
		}
	}
	mods, err := ModuleOrder(k.Modules, want)
	if err != nil {
		return nil, err
	}
	var initrd bytes.Buffer
	if bf.initramfs, err = WriteInitramfs(&initrd, InitramfsSpec{Agent: agent, Modules: mods}); err != nil {
		return nil, err
	}
	bf.initrd = initrd.Bytes()
	if r.Boot.UEFI == LoaderSystemdBoot {
		if bf.sdboot, err = os.ReadFile(b.opts.SystemdBoot); err != nil {
			return nil, fmt.Errorf("reading systemd-boot (apt-get install systemd-boot-efi): %w", err)
		}
	}
	if r.Boot.UEFI == LoaderShimGrub {
		if err := signedKernel(bf.vmlinuz); err != nil {
			return nil, fmt.Errorf("recipe %s boots through shim, but the kernel %s: %w", r.Name, k.Vmlinuz, err)
		}
		if bf.shim, err = b.signedFile(ctx, b.opts.Shim, DefaultShim, ShimPackage); err != nil {
			return nil, err
		}
		if bf.grub, err = b.signedFile(ctx, b.opts.Grub, DefaultGrub, GrubPackage); err != nil {
			return nil, err
		}
	}
	if r.Boot.BIOS == LoaderSyslinux {
		if bf.mbr, err = os.ReadFile(b.opts.SyslinuxMBR); err != nil {
			return nil, fmt.Errorf("reading syslinux's MBR code (apt-get install syslinux-common): %w", err)
		}
		if len(bf.mbr) != 440 {
			return nil, fmt.Errorf("syslinux's MBR code %s is %d bytes, want 440", b.opts.SyslinuxMBR, len(bf.mbr))
		}
		if _, err := exec.LookPath(b.opts.Syslinux); err != nil {
			return nil, fmt.Errorf("finding the syslinux installer (apt-get install syslinux mtools): %w", err)
		}
	}
	bf.sums = map[*byte]string{}
	for _, d := range [][]byte{bf.vmlinuz, bf.initrd, bf.sdboot, bf.shim, bf.grub} {
		if len(d) > 0 {
			bf.sums[&d[0]] = sha256Hex(d)
		}
	}
	b.log.Debug("boot files ready", "kernel", k.Version, "modules", len(mods),
		"initramfs_bytes", bf.initramfs.CompressedBytes, "agent_bytes", bf.initramfs.AgentBytes, "module_bytes", bf.initramfs.ModuleBytes)
	return bf, nil
}

// signedFile reads one file of the signed boot chain: the path given,
// else the installed default, else the same file from the Debian package
// fetched into the cache.
func (b *Builder) signedFile(ctx context.Context, given, def, pkg string) ([]byte, error) {
	if given != "" {
		d, err := os.ReadFile(given)
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", given, err)
		}
		return d, nil
	}
	if d, err := os.ReadFile(def); err == nil {
		return d, nil
	}
	dir, err := b.opts.Packages.Fetch(ctx, pkg)
	if err != nil {
		return nil, fmt.Errorf("%s is not installed, and %w", def, err)
	}
	d, err := os.ReadFile(filepath.Join(dir, def))
	if err != nil {
		return nil, fmt.Errorf("reading %s from package %s: %w", def, pkg, err)
	}
	return d, nil
}

// signedKernel checks that the bzImage carries an Authenticode signature
// (a non-empty PE certificate table), as Debian's linux-image packages
// do; shim refuses an unsigned kernel only at boot time, so say it now.
func signedKernel(vmlinuz []byte) error {
	f, err := pe.NewFile(bytes.NewReader(vmlinuz))
	if err != nil {
		return fmt.Errorf("is not an EFI (PE) image: %w", err)
	}
	oh, ok := f.OptionalHeader.(*pe.OptionalHeader64)
	if !ok || len(oh.DataDirectory) <= pe.IMAGE_DIRECTORY_ENTRY_SECURITY || oh.DataDirectory[pe.IMAGE_DIRECTORY_ENTRY_SECURITY].Size == 0 {
		return fmt.Errorf("is not signed (take Debian's signed linux-image package): %w", ErrKernel)
	}
	return nil
}

func isStaticELF(b []byte) bool {
	if len(b) < 64 || !bytes.HasPrefix(b, []byte("\x7fELF\x02\x01")) || b[18] != 0x3E {
		return false
	}
	return !bytes.Contains(b[:min(len(b), 4096)], []byte("/lib64/ld-linux"))
}

// Result describes a built image.
type Result struct {
	Path     string
	Size     int64
	SHA256   string // of the whole image, hex
	Manifest Manifest
}

// Manifest is provstick/manifest.json on the stick: what the stick is,
// with no secret in it.
type Manifest struct {
	Format   string `json:"format"`
	Stick    string `json:"stick"`
	Batch    string `json:"batch,omitempty"`
	Recipe   string `json:"recipe"`
	SetupBin struct {
		Version     string `json:"version"`
		Records     int    `json:"records"`
		FirstRecord int    `json:"first_record"`
		LastRecord  int    `json:"last_record"`
		NoConsume   bool   `json:"no_consume,omitempty"`
		SHA256      string `json:"sha256"`
	} `json:"setup_bin"`
	Kernel  string   `json:"kernel,omitempty"`
	Modules []string `json:"modules,omitempty"`
	// Files maps each other file on the stick to its SHA-256.
	Files map[string]string `json:"files"`
	// ContentSHA256 hashes the sorted "path sha256\n" lines of Files: the
	// image hash itself cannot be inside the image.
	ContentSHA256 string `json:"content_sha256"`
}

// ManifestFormat is the Manifest.Format of this version.
const ManifestFormat = "provstick-stick/1"

// ValidStickID reports whether s can label a stick: 1 to 64 of A-Z a-z
// 0-9 . _ - (it names files and goes into the manifest).
func ValidStickID(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("._-", c)) {
			return false
		}
	}
	return true
}

// Build writes the image of stick s to name (through a temporary file
// renamed into place, so a failed build leaves nothing behind).
func (b *Builder) Build(ctx context.Context, name string, s Stick) (res *Result, err error) {
	if !ValidStickID(s.ID) {
		return nil, fmt.Errorf("building a stick: stick id %q: want 1 to 64 of A-Z a-z 0-9 . _ -", s.ID)
	}
	sb, err := setupbin.NewReader(bytes.NewReader(s.SetupBin), int64(len(s.SetupBin)))
	if err != nil {
		return nil, fmt.Errorf("building stick %s: setup.bin: %w", s.ID, err)
	}
	if sb.HasErrors() {
		return nil, fmt.Errorf("building stick %s: setup.bin has errors (check it with provstick setupbin verify): %w", s.ID, setupbin.ErrFormat)
	}
	bf, err := b.bootFiles(ctx)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	files, man, err := b.layout(s, sb, bf)
	if err != nil {
		return nil, err
	}
	out, err := createImage(name, !b.opts.NoSync)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			out.abort()
		}
	}()
	if err := b.writeImage(ctx, out.f, files, bf, s.ID); err != nil {
		return nil, fmt.Errorf("building stick %s: %w", s.ID, err)
	}
	size := int64(b.recipe.Size)
	var sum []byte
	if !b.opts.NoHash {
		if sum, err = hashSparse(out.f, size); err != nil {
			return nil, fmt.Errorf("hashing %s: %w", name, err)
		}
	}
	if err := out.commit(); err != nil {
		return nil, err
	}
	res = &Result{Path: name, Size: size, SHA256: hex.EncodeToString(sum), Manifest: *man}
	if sum == nil {
		res.SHA256 = ""
	}
	b.log.Info("image built", "stick", s.ID, "file", name, "sha256", res.SHA256)
	return res, nil
}

// imageOut is the image being written: through atomicfile (fsync, rename,
// fsync of the directory) or, with Options.NoSync, a temporary file
// renamed into place.
type imageOut struct {
	f      *os.File
	af     *atomicfile.File
	target string
}

func createImage(name string, sync bool) (*imageOut, error) {
	if sync {
		af, err := atomicfile.Create(name, 0o644, false)
		if err != nil {
			return nil, err
		}
		return &imageOut{f: af.File, af: af, target: name}, nil
	}
	dir, base := filepath.Split(name)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".tmp*")
	if err != nil {
		return nil, fmt.Errorf("writing %s: %w", name, err)
	}
	return &imageOut{f: f, target: name}, nil
}

func (o *imageOut) commit() error {
	if o.af != nil {
		return o.af.Commit()
	}
	tmp := o.f.Name()
	if err := o.f.Chmod(0o644); err != nil {
		o.abort()
		return fmt.Errorf("writing %s: %w", o.target, err)
	}
	if err := o.f.Close(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("writing %s: %w", o.target, err)
	}
	if err := os.Rename(tmp, o.target); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("writing %s: %w", o.target, err)
	}
	return nil
}

func (o *imageOut) abort() {
	if o.af != nil {
		o.af.Abort()
		return
	}
	o.f.Close()
	os.Remove(o.f.Name())
}

// layoutFor is layout for a setup.bin not yet parsed (benchmarks).
func (b *Builder) layoutFor(s Stick, bf *bootFiles) ([]imageFile, *Manifest, error) {
	sb, err := setupbin.NewReader(bytes.NewReader(s.SetupBin), int64(len(s.SetupBin)))
	if err != nil {
		return nil, nil, err
	}
	return b.layout(s, sb, bf)
}

type imageFile struct {
	path string
	data []byte
}

// layout lists the files of the stick, setup.bin first, and the manifest.
func (b *Builder) layout(s Stick, sb *setupbin.Reader, bf *bootFiles) ([]imageFile, *Manifest, error) {
	r := b.recipe
	var files []imageFile
	add := func(p string, d []byte) { files = append(files, imageFile{p, d}) }
	conf := map[string]any{
		"format": "provstick-agent/1", "stick": s.ID, "after": r.Agent.After, "countdown": r.Agent.Countdown,
	}
	if r.Agent.MEWait > 0 {
		conf["me_wait"] = r.Agent.MEWait
	}
	if r.Agent.QR {
		conf["qr"] = true
	}
	if r.Agent.Activate == ActivateClientControl {
		// Read at build time, never from the recipe (see Agent).
		secret, err := r.Agent.ActivationSecret()
		if err != nil {
			return nil, nil, fmt.Errorf("building stick %s: %w", s.ID, err)
		}
		conf["activate"] = map[string]any{"mode": r.Agent.Activate, "password": r.Agent.AMTPassword,
			"secret": secret, "key_id": hostbased.KeyID(secret)} // []byte: base64 in JSON
	}
	if ck := r.Agent.CheckKiosk; ck.Enabled {
		m := map[string]any{}
		if ck.Timeout > 0 {
			m["timeout"] = ck.Timeout
		}
		if ck.Port > 0 {
			m["port"] = ck.Port
		}
		if ck.Domain != "" {
			m["domain"] = ck.Domain
		}
		conf["check_kiosk"] = m
	}
	agentConf, err := json.MarshalIndent(conf, "", "  ")
	if err != nil {
		return nil, nil, err
	}
	add(AgentConfPath, append(agentConf, '\n'))
	if s.PIDs != nil {
		if len(s.PIDs) != int(sb.Header.RecordCount) {
			return nil, nil, fmt.Errorf("building stick %s: %d PIDs for %d setup.bin records", s.ID, len(s.PIDs), sb.Header.RecordCount)
		}
		pj, err := json.MarshalIndent(struct {
			Format string   `json:"format"`
			PIDs   []string `json:"pids"`
		}{PIDsFormat, s.PIDs}, "", "  ")
		if err != nil {
			return nil, nil, err
		}
		add(PIDsPath, append(pj, '\n'))
	}
	if bf != nil {
		cmdline := strings.TrimSpace(r.Boot.Cmdline + " provstick.after=" + r.Agent.After)
		add(KernelPath, bf.vmlinuz)
		add(InitrdPath, bf.initrd)
		if r.Boot.UEFI == LoaderSystemdBoot {
			add("EFI/BOOT/BOOTX64.EFI", bf.sdboot)
			add("loader/loader.conf", fmt.Appendf(nil, "default provstick.conf\ntimeout %d\neditor no\n", r.Boot.Timeout))
			add("loader/entries/provstick.conf", fmt.Appendf(nil, "title provstick (%s)\nlinux /%s\ninitrd /%s\noptions %s\n", r.Name, KernelPath, InitrdPath, cmdline))
		}
		if r.Boot.UEFI == LoaderShimGrub {
			// shim (signed by Microsoft's UEFI CA) verifies and starts
			// grubx64.efi from its own directory; grub verifies the
			// kernel through shim.
			add("EFI/BOOT/BOOTX64.EFI", bf.shim)
			add("EFI/BOOT/grubx64.efi", bf.grub)
			add(GrubConfigPath, fmt.Appendf(nil, "set default=0\nset timeout=%d\nmenuentry \"provstick (%s)\" {\n  linux /%s %s\n  initrd /%s\n}\n",
				r.Boot.Timeout, r.Name, KernelPath, cmdline, InitrdPath))
		}
		if r.Boot.BIOS == LoaderSyslinux {
			add(SyslinuxConfigPath, SyslinuxConfig(r))
		}
	}
	slices.SortFunc(files, func(a, b imageFile) int { return strings.Compare(a.path, b.path) })

	man := &Manifest{Format: ManifestFormat, Stick: s.ID, Batch: s.Batch, Recipe: r.Name, Files: map[string]string{}}
	first := max(s.FirstRecord, 1)
	hdr := sb.Header
	man.SetupBin.Version = hdr.Version.String()
	man.SetupBin.Records = int(hdr.RecordCount)
	man.SetupBin.FirstRecord = first
	man.SetupBin.LastRecord = first + int(hdr.RecordCount) - 1
	man.SetupBin.NoConsume = hdr.NoConsume()
	man.SetupBin.SHA256 = sha256Hex(s.SetupBin)
	if bf != nil {
		man.Kernel = r.Kernel.Package + " " + bf.kernel.Version
		man.Modules = bf.initramfs.Modules
	}
	var lines strings.Builder
	for _, f := range files {
		man.Files[f.path] = bf.sum(f.data)
		fmt.Fprintf(&lines, "%s %s\n", f.path, man.Files[f.path])
	}
	man.ContentSHA256 = sha256Hex([]byte(lines.String()))
	mj, err := json.MarshalIndent(man, "", "  ")
	if err != nil {
		return nil, nil, err
	}
	files = append(files, imageFile{ManifestPath, append(mj, '\n')})
	slices.SortFunc(files, func(a, b imageFile) int { return strings.Compare(a.path, b.path) })
	return append([]imageFile{{SetupBinName, s.SetupBin}}, files...), man, nil
}

// SyslinuxConfigPath is syslinux's configuration file on the stick.
const SyslinuxConfigPath = "syslinux/syslinux.cfg"

// SyslinuxConfig is the syslinux.cfg the builder writes for r (which
// must have been checked: ParseRecipe, LoadRecipe or Validate). Its
// kernel command line is the other loaders' with, when r.Boot.BIOSVideo
// asks for a VESA mode, vga= in front: the kernel's real-mode setup
// code, which only a legacy BIOS boot runs, sets that mode through the
// video BIOS, and vesafb (built into Debian's kernel; no module) gives
// fbcon its framebuffer.
func SyslinuxConfig(r *Recipe) []byte {
	cmdline := strings.TrimSpace(r.Boot.Cmdline + " provstick.after=" + r.Agent.After)
	video := r.Boot.BIOSVideo
	if video == "" && r.Agent.QR { // a recipe built in code (ParseRecipe sets it)
		video = BIOSVideo1024x768
	}
	if mode := biosVideoModes[video]; mode != "" {
		cmdline = "vga=" + mode + " " + cmdline
	}
	return fmt.Appendf(nil, "DEFAULT provstick\nPROMPT 0\nTIMEOUT %d\nLABEL provstick\n  KERNEL /%s\n  INITRD /%s\n  APPEND %s\n",
		r.Boot.Timeout*10, KernelPath, InitrdPath, cmdline)
}

func sha256Hex(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// stickSerial derives the 32-bit FAT volume serial and the MBR disk
// signature from the stick id, so that images are reproducible and two
// sticks differ.
func stickSerial(id string) (volume, disk uint32) {
	h := sha256.Sum256([]byte("provstick volume serial\x00" + id))
	return uint32(h[0]) | uint32(h[1])<<8 | uint32(h[2])<<16 | uint32(h[3])<<24,
		uint32(h[4]) | uint32(h[5])<<8 | uint32(h[6])<<16 | uint32(h[7])<<24
}

// stickGUID derives a GPT GUID (RFC 4122 version 4 layout, text form)
// from the stick id, so GPT images are reproducible too.
func stickGUID(id, what string) string {
	h := sha256.Sum256([]byte("provstick gpt guid\x00" + what + "\x00" + id))
	h[6] = h[6]&0x0F | 0x40
	h[8] = h[8]&0x3F | 0x80
	return fmt.Sprintf("%X-%X-%X-%X-%X", h[0:4], h[4:6], h[6:8], h[8:10], h[10:16])
}

func (b *Builder) writeImage(ctx context.Context, f *os.File, files []imageFile, bf *bootFiles, id string) error {
	size := int64(b.recipe.Size)
	if err := f.Truncate(size); err != nil {
		return fmt.Errorf("sizing the image: %w", err)
	}
	cf := newCoalescingFile(f)
	defer cf.release()
	d, err := diskfs.OpenBackend(file.New(cf, false), diskfs.WithOpenMode(diskfs.ReadWrite), diskfs.WithSectorSize(diskfs.SectorSize512))
	if err != nil {
		return fmt.Errorf("opening the image: %w", err)
	}
	volSerial, diskSig := stickSerial(id)
	var table partition.Table
	if b.recipe.Table == TableGPT {
		// The backup GPT takes the last 33 sectors.
		partSectors := fat32SafeSectors(uint32(size/sectorSize) - partitionStart - 34)
		table = &gpt.Table{
			LogicalSectorSize:  sectorSize,
			PhysicalSectorSize: sectorSize,
			ProtectiveMBR:      true,
			GUID:               stickGUID(id, "disk"),
			Partitions: []*gpt.Partition{{
				Index: 1, Start: partitionStart, End: partitionStart + uint64(partSectors) - 1,
				Size: uint64(partSectors) * sectorSize, Type: gpt.MicrosoftBasicData,
				Name: b.recipe.Filesystem.Label, GUID: stickGUID(id, "partition 1"),
			}},
		}
	} else {
		partSectors := fat32SafeSectors(uint32(size/sectorSize) - partitionStart)
		table = &mbr.Table{
			LogicalSectorSize:  sectorSize,
			PhysicalSectorSize: sectorSize,
			Partitions: []*mbr.Partition{{
				Index: 1, Bootable: true, Type: mbr.Fat32LBA, Start: partitionStart, Size: partSectors,
			}},
		}
	}
	if err := d.Partition(table); err != nil {
		return fmt.Errorf("writing the partition table: %w", err)
	}
	fsys, err := d.CreateFilesystem(disk.FilesystemSpec{
		Partition: 1, FSType: filesystem.TypeFat32, VolumeLabel: b.recipe.Filesystem.Label, Reproducible: true,
	})
	if err != nil {
		return fmt.Errorf("creating the FAT32 filesystem: %w", err)
	}
	made := map[string]bool{}
	for _, fl := range files {
		if err := ctx.Err(); err != nil {
			return err
		}
		if dir := path.Dir(fl.path); dir != "." && !made[dir] {
			if err := fsys.Mkdir(dir); err != nil {
				return fmt.Errorf("making directory %s: %w", dir, err)
			}
			made[dir] = true
		}
		w, err := fsys.OpenFile(fl.path, os.O_CREATE|os.O_RDWR)
		if err != nil {
			return fmt.Errorf("creating %s: %w", fl.path, err)
		}
		// One Write: go-diskfs allocates the clusters in one run, so a
		// file written to a fresh filesystem is contiguous.
		if _, err := w.Write(fl.data); err != nil {
			w.Close()
			return fmt.Errorf("writing %s: %w", fl.path, err)
		}
		if err := w.Close(); err != nil {
			return fmt.Errorf("writing %s: %w", fl.path, err)
		}
	}
	if err := cf.release(); err != nil {
		return fmt.Errorf("writing the image: %w", err)
	}
	partOff := int64(partitionStart) * sectorSize
	fix := func() error {
		fat, err := openFAT32(f, partOff)
		if err != nil {
			return err
		}
		if err := fat.fixBootSector(partitionStart, volSerial); err != nil {
			return err
		}
		if err := fat.fixFSInfo(); err != nil {
			return err
		}
		return fat.fixTree(b.opts.Time)
	}
	if err := fix(); err != nil {
		return fmt.Errorf("patching the filesystem: %w", err)
	}
	if bf != nil && b.recipe.Boot.BIOS == LoaderSyslinux {
		if err := f.Sync(); err != nil {
			return fmt.Errorf("flushing the image before syslinux: %w", err)
		}
		if err := b.installSyslinux(ctx, f.Name(), partOff); err != nil {
			return err
		}
		// syslinux's files carry the wall clock; stamp them again.
		if err := fix(); err != nil {
			return fmt.Errorf("patching the filesystem after syslinux: %w", err)
		}
	}
	// MBR: boot code (syslinux's mbr.bin boots the active partition's
	// boot sector) and the disk signature.
	var boot [446]byte
	if _, err := f.ReadAt(boot[:], 0); err != nil {
		return fmt.Errorf("reading the MBR: %w", err)
	}
	if bf != nil && bf.mbr != nil {
		copy(boot[:440], bf.mbr)
	}
	if b.recipe.Table == TableGPT {
		return nil // the protective MBR stays as go-diskfs wrote it
	}
	boot[440], boot[441], boot[442], boot[443] = byte(diskSig), byte(diskSig>>8), byte(diskSig>>16), byte(diskSig>>24)
	if _, err := f.WriteAt(boot[:], 0); err != nil {
		return fmt.Errorf("writing the MBR: %w", err)
	}
	return nil
}

// installSyslinux runs syslinux's installer on the image file: it writes
// its boot sector into the partition's boot sector (keeping the BPB) and
// adds ldlinux.sys and ldlinux.c32 in /syslinux, after every file of ours.
func (b *Builder) installSyslinux(ctx context.Context, img string, partOff int64) error {
	cmd := exec.CommandContext(ctx, b.opts.Syslinux, "--offset", fmt.Sprint(partOff), "--directory", "/syslinux", "--install", img)
	cmd.Env = append(os.Environ(), fmt.Sprintf("SOURCE_DATE_EPOCH=%d", b.opts.Time.Unix()))
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("installing syslinux: %w: %s", err, bytes.TrimSpace(out))
	}
	return nil
}

// fat32SafeSectors returns the largest partition size, at most sectors,
// for which go-diskfs v1.9.4's FAT32 layout is valid. Its closed-form FAT
// size, ceil(4·(total−reserved) / (clusterBytes+8)) sectors, forgets the
// two reserved FAT entries, so when the division is (nearly) exact the FAT
// has fewer entries than clusters+2 and mtools refuses the filesystem
// ("Too few sectors in FAT"); a 64 MiB partition hits it. Giving up a
// cluster's worth of sectors at the end avoids it.
func fat32SafeSectors(sectors uint32) uint32 {
	const reserved = 32
	for try := 0; try < 64; try++ {
		size := int64(sectors) * sectorSize
		clusterBytes := int64(512)
		if size > 260<<20 {
			clusterBytes = 4096 // go-diskfs's table up to 8 GiB
		}
		if size > 8<<30 {
			clusterBytes = 8192
		}
		if size > 16<<30 {
			clusterBytes = 16384
		}
		spc := uint32(clusterBytes / sectorSize)
		fatSectors := (4*(sectors-reserved) + uint32(clusterBytes) + 8 - 1) / uint32(clusterBytes+8)
		clusters := (sectors - reserved - 2*fatSectors) / spc
		if fatSectors*sectorSize/4 >= clusters+2 {
			return sectors
		}
		sectors -= spc
	}
	return sectors
}

// Whence values of lseek(2) that os.File.Seek passes through on Linux.
const (
	seekData = 3
	seekHole = 4
)

// hashSparse returns the SHA-256 of the first size bytes of f. The image
// is mostly holes: where lseek SEEK_DATA/SEEK_HOLE work, holes are hashed
// from a zero buffer instead of being read.
func hashSparse(f *os.File, size int64) ([]byte, error) {
	h := sha256.New()
	buf := make([]byte, 1<<20)
	zeros := make([]byte, 1<<20)
	var off int64
	for off < size {
		data, err := f.Seek(off, seekData)
		if err != nil || data > size {
			data = size // no more data (ENXIO), or no SEEK_DATA: hashed below
			if err != nil && off == 0 {
				data = 0
			}
		}
		for ; off < data; off += int64(min(len(zeros), int(data-off))) {
			h.Write(zeros[:min(len(zeros), int(data-off))])
		}
		if off >= size {
			break
		}
		hole, err := f.Seek(off, seekHole)
		if err != nil || hole > size {
			hole = size
		}
		for off < hole {
			n := min(int64(len(buf)), hole-off)
			if _, err := f.ReadAt(buf[:n], off); err != nil {
				return nil, err
			}
			h.Write(buf[:n])
			off += n
		}
	}
	return h.Sum(nil), nil
}
