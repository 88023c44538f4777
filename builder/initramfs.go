package builder

import (
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/u-root/mkuimage/cpio"
)

// ErrKernel: the kernel directory does not hold what the recipe needs (a
// vmlinuz, the modules, their dependencies).
var ErrKernel = errors.New("builder: kernel")

// Kernel is an unpacked distribution kernel package: dpkg-deb -x of
// Debian's linux-image-*-amd64 gives boot/vmlinuz-VERSION and
// lib/modules/VERSION/.
type KernelFiles struct {
	Version string // e.g. "6.1.0-56-amd64"
	Vmlinuz string // path of the EFI-stub bzImage
	Modules string // lib/modules/VERSION
}

// FindKernel finds the kernel in an unpacked package directory. With more
// than one version present it takes the highest.
func FindKernel(dir string) (*KernelFiles, error) {
	vms, err := filepath.Glob(filepath.Join(dir, "boot", "vmlinuz-*"))
	if err != nil {
		return nil, fmt.Errorf("finding the kernel in %s: %w", dir, err)
	}
	var found []*KernelFiles
	for _, vm := range vms {
		v := strings.TrimPrefix(filepath.Base(vm), "vmlinuz-")
		mods := filepath.Join(dir, "lib", "modules", v)
		if st, err := os.Stat(mods); err == nil && st.IsDir() {
			found = append(found, &KernelFiles{Version: v, Vmlinuz: vm, Modules: mods})
		}
	}
	if len(found) == 0 {
		return nil, fmt.Errorf("no boot/vmlinuz-VERSION with lib/modules/VERSION under %s (unpack a linux-image-*-amd64 package there with dpkg-deb -x): %w", dir, ErrKernel)
	}
	slices.SortFunc(found, func(a, b *KernelFiles) int { return naturalCompare(a.Version, b.Version) })
	return found[len(found)-1], nil
}

// naturalCompare orders strings with embedded numbers by value, so that
// 6.1.0-56 comes after 6.1.0-9.
func naturalCompare(a, b string) int {
	for a != "" && b != "" {
		if isDigit(a[0]) && isDigit(b[0]) {
			i, j := 0, 0
			for i < len(a) && isDigit(a[i]) {
				i++
			}
			for j < len(b) && isDigit(b[j]) {
				j++
			}
			na, nb := strings.TrimLeft(a[:i], "0"), strings.TrimLeft(b[:j], "0")
			if c := len(na) - len(nb); c != 0 {
				return c
			}
			if c := strings.Compare(na, nb); c != 0 {
				return c
			}
			a, b = a[i:], b[j:]
			continue
		}
		if a[0] != b[0] {
			return int(a[0]) - int(b[0])
		}
		a, b = a[1:], b[1:]
	}
	return len(a) - len(b)
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// Module is a kernel module file chosen for the initramfs.
type Module struct {
	Name    string   // canonical name, '-' folded to '_'
	Path    string   // file under lib/modules
	Depends []string // from .modinfo
	Size    int64
}

// ModuleOrder finds the named modules under modDir and returns them with
// every dependency before its users, each once. Debian's package ships no
// modules.dep, so dependencies come from each module's .modinfo
// "depends=" field. The order is deterministic: the wanted names in the
// order given, each preceded by its dependencies in .modinfo order.
func ModuleOrder(modDir string, want []string) ([]Module, error) {
	paths := map[string]string{}
	err := filepath.WalkDir(modDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		switch {
		case strings.HasSuffix(name, ".ko"):
			paths[canonModule(strings.TrimSuffix(name, ".ko"))] = p
		case strings.Contains(name, ".ko."):
			// Compressed modules (trixie and later): finit_module can
			// take them only with MODULE_INIT_COMPRESSED_FILE; not yet.
			base := name[:strings.Index(name, ".ko.")]
			if _, ok := paths[canonModule(base)]; !ok {
				paths[canonModule(base)] = p
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("listing kernel modules in %s: %w", modDir, err)
	}
	var order []Module
	state := map[string]int{} // 1 visiting, 2 done
	var visit func(name, by string) error
	visit = func(name, by string) error {
		switch state[name] {
		case 1:
			return fmt.Errorf("module %s: dependency cycle through %s: %w", name, by, ErrKernel)
		case 2:
			return nil
		}
		state[name] = 1
		p, ok := paths[name]
		if !ok {
			if by != "" {
				return fmt.Errorf("module %s (needed by %s) not found under %s: %w", name, by, modDir, ErrKernel)
			}
			return fmt.Errorf("module %s not found under %s (built into this kernel, or misspelt?): %w", name, modDir, ErrKernel)
		}
		if !strings.HasSuffix(p, ".ko") {
			return fmt.Errorf("module %s is compressed (%s); only uncompressed .ko files are supported: %w", name, filepath.Base(p), ErrKernel)
		}
		deps, err := moduleDepends(p)
		if err != nil {
			return err
		}
		for _, d := range deps {
			if err := visit(d, name); err != nil {
				return err
			}
		}
		st, err := os.Stat(p)
		if err != nil {
			return fmt.Errorf("reading module %s: %w", name, err)
		}
		order = append(order, Module{Name: name, Path: p, Depends: deps, Size: st.Size()})
		state[name] = 2
		return nil
	}
	for _, w := range want {
		if err := visit(canonModule(w), ""); err != nil {
			return nil, err
		}
	}
	return order, nil
}

// BuiltinModules reads modDir/modules.builtin (one path a line,
// kernel/drivers/…/NAME.ko) into canonical names; a kernel directory
// without the file gives none.
func BuiltinModules(modDir string) map[string]bool {
	b, err := os.ReadFile(filepath.Join(modDir, "modules.builtin"))
	if err != nil {
		return nil
	}
	out := map[string]bool{}
	for _, l := range strings.Split(string(b), "\n") {
		if n, ok := strings.CutSuffix(filepath.Base(strings.TrimSpace(l)), ".ko"); ok {
			out[canonModule(n)] = true
		}
	}
	return out
}

func canonModule(s string) string { return strings.ReplaceAll(s, "-", "_") }

// moduleDepends reads "depends=a,b" from a module's .modinfo section.
func moduleDepends(path string) ([]string, error) {
	f, err := elf.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading module %s: %w", path, err)
	}
	defer f.Close()
	s := f.Section(".modinfo")
	if s == nil {
		return nil, fmt.Errorf("module %s: no .modinfo section: %w", path, ErrKernel)
	}
	b, err := s.Data()
	if err != nil {
		return nil, fmt.Errorf("reading .modinfo of %s: %w", path, err)
	}
	return parseDepends(b), nil
}

// parseDepends returns the module names of the first "depends=" entry of
// a .modinfo section (NUL-separated key=value strings).
func parseDepends(modinfo []byte) []string {
	for _, kv := range bytes.Split(modinfo, []byte{0}) {
		v, ok := bytes.CutPrefix(kv, []byte("depends="))
		if !ok {
			continue
		}
		var deps []string
		for _, d := range strings.Split(string(v), ",") {
			if d = strings.TrimSpace(d); d != "" {
				deps = append(deps, canonModule(d))
			}
		}
		return deps
	}
	return nil
}

// Initramfs paths the agent relies on.
const (
	InitramfsModuleDir   = "modules"       // modules/NN-name.ko
	InitramfsModuleOrder = "modules/order" // one file name a line, load order
)

// InitramfsSpec is what goes into the initramfs.
type InitramfsSpec struct {
	Agent   []byte   // static agent binary, becomes /init
	Modules []Module // in load order
	// Files are extra regular files (path without leading slash → contents).
	Files map[string][]byte
}

// InitramfsInfo says what took the space.
type InitramfsInfo struct {
	AgentBytes      int64
	ModuleBytes     int64
	Modules         []string
	CpioBytes       int64
	CompressedBytes int64
}

// WriteInitramfs writes a zstd-compressed newc archive: /init (the agent),
// /dev/console (5,1, so PID 1 has output before devtmpfs is mounted),
// empty mount points, the modules and their load order. Records carry no
// times, owners or inode numbers, so the same inputs give the same bytes.
//
// zstd rather than gzip: the kernel decompresses it several times faster,
// which shows under TCG and on old machines, and it is smaller.
func WriteInitramfs(w io.Writer, spec InitramfsSpec) (*InitramfsInfo, error) {
	if len(spec.Agent) == 0 {
		return nil, errors.New("writing the initramfs: no agent binary")
	}
	info := &InitramfsInfo{AgentBytes: int64(len(spec.Agent))}
	recs := []cpio.Record{
		cpio.Directory("dev", 0o755),
		cpio.CharDev("dev/console", 0o600, 5, 1),
		cpio.Directory("etc", 0o755),
		cpio.StaticRecord(spec.Agent, cpio.Info{Name: "init", Mode: cpio.S_IFREG | 0o755}),
		cpio.Directory(InitramfsModuleDir, 0o755),
	}
	var order strings.Builder
	for i, m := range spec.Modules {
		b, err := os.ReadFile(m.Path)
		if err != nil {
			return nil, fmt.Errorf("writing the initramfs: %w", err)
		}
		name := fmt.Sprintf("%02d-%s.ko", i, m.Name)
		fmt.Fprintln(&order, name)
		recs = append(recs, cpio.StaticRecord(b, cpio.Info{Name: InitramfsModuleDir + "/" + name, Mode: cpio.S_IFREG | 0o644}))
		info.ModuleBytes += int64(len(b))
		info.Modules = append(info.Modules, m.Name)
	}
	recs = append(recs, cpio.StaticFile(InitramfsModuleOrder, order.String(), 0o644))
	for _, name := range sortedKeys(spec.Files) {
		recs = append(recs, cpio.StaticRecord(spec.Files[name], cpio.Info{Name: name, Mode: cpio.S_IFREG | 0o644}))
	}
	recs = append(recs,
		cpio.Directory("proc", 0o555), cpio.Directory("sys", 0o555),
		cpio.Directory("tmp", 0o1777), cpio.Directory("mnt", 0o755),
		cpio.TrailerRecord)

	var raw bytes.Buffer
	cw := cpio.Newc.Writer(&raw)
	for _, r := range recs {
		if err := cw.WriteRecord(cpio.MakeReproducible(r)); err != nil {
			return nil, fmt.Errorf("writing the initramfs: %s: %w", r.Name, err)
		}
	}
	info.CpioBytes = int64(raw.Len())
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedBetterCompression), zstd.WithEncoderConcurrency(1))
	if err != nil {
		return nil, fmt.Errorf("writing the initramfs: %w", err)
	}
	out := enc.EncodeAll(raw.Bytes(), make([]byte, 0, raw.Len()/2))
	enc.Close()
	info.CompressedBytes = int64(len(out))
	if _, err := w.Write(out); err != nil {
		return nil, fmt.Errorf("writing the initramfs: %w", err)
	}
	return info, nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
