package amtsim

// TestVMAmtinfo boots a distribution kernel under QEMU (TCG; KVM is not
// needed) with a tiny initramfs built here, and checks that
// "provstick amtinfo --json" inside the guest reports the simulator's
// UUID, read over a virtio-serial port.
//
// Guest view: the simulator listens on a Unix socket in t.TempDir(); QEMU
// connects to it as the chardev of a virtserialport named
// org.provstick.mei, which the guest sees as /dev/vportNp1 with
// /sys/class/virtio-ports/vportNp1/name = org.provstick.mei. The kernel
// command line carries provstick.mei=virtio:org.provstick.mei, which
// amtinfo reads from /proc/cmdline. The initramfs (newc cpio, written by
// writeCpio) holds /init (testdata/vminit), /provstick (a static build of
// ./cmd/provstick), /dev/console, and /modules with the virtio modules in
// dependency order.
//
// Needs qemu-system-x86_64 and an unpacked Debian kernel package:
//
//	apt-get install qemu-system-x86
//	apt-get download linux-image-6.1.0-NN-amd64   # the version linux-image-amd64 depends on
//	dpkg-deb -x linux-image-6.1.0-NN-amd64_*.deb "${XDG_CACHE_HOME:-$HOME/.cache}/provstick/vm-kernel"
//
// VMTEST_KERNEL_DIR overrides that directory (it must hold boot/vmlinuz-*
// and lib/modules/*/). VMTEST_QEMU overrides the QEMU binary.

import (
	"bytes"
	"context"
	"debug/elf"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/provstick/provstick/initramfs/heci/amthi"
)

func vmKernel(t *testing.T) (kernel, modDir string) {
	t.Helper()
	dir := os.Getenv("VMTEST_KERNEL_DIR")
	if dir == "" {
		cache, err := os.UserCacheDir()
		if err != nil {
			t.Fatal(err)
		}
		dir = filepath.Join(cache, "provstick", "vm-kernel")
	}
	kernels, _ := filepath.Glob(filepath.Join(dir, "boot", "vmlinuz-*"))
	mods, _ := filepath.Glob(filepath.Join(dir, "lib", "modules", "*"))
	if len(kernels) == 0 || len(mods) == 0 {
		t.Fatalf("no unpacked kernel package in %s (see the comment at the top of vm_test.go for the two commands that make one)", dir)
	}
	slices.Sort(kernels)
	slices.Sort(mods)
	return kernels[len(kernels)-1], mods[len(mods)-1]
}

// The guest needs these modules (and what they depend on) to see a
// virtio-serial port; in Debian's kernel they are all modules.
var vmModules = []string{"virtio_pci", "virtio_console"}

// moduleOrder finds the named modules under modDir and returns their paths
// with every dependency (from the .modinfo "depends=" field) first.
func moduleOrder(modDir string, want []string) ([]string, error) {
	paths := map[string]string{}
	err := filepath.WalkDir(modDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if strings.HasSuffix(p, ".ko") {
			name := strings.ReplaceAll(strings.TrimSuffix(d.Name(), ".ko"), "-", "_")
			paths[name] = p
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	var order []string
	seen := map[string]bool{}
	var visit func(name string) error
	visit = func(name string) error {
		if seen[name] {
			return nil
		}
		seen[name] = true
		p, ok := paths[name]
		if !ok {
			return fmt.Errorf("module %s not found under %s", name, modDir)
		}
		deps, err := moduleDepends(p)
		if err != nil {
			return err
		}
		for _, d := range deps {
			if err := visit(d); err != nil {
				return err
			}
		}
		order = append(order, p)
		return nil
	}
	for _, w := range want {
		if err := visit(w); err != nil {
			return nil, err
		}
	}
	return order, nil
}

// moduleDepends reads "depends=a,b" from a module's .modinfo section.
func moduleDepends(path string) ([]string, error) {
	f, err := elf.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	s := f.Section(".modinfo")
	if s == nil {
		return nil, fmt.Errorf("%s: no .modinfo section", path)
	}
	b, err := s.Data()
	if err != nil {
		return nil, err
	}
	for _, kv := range bytes.Split(b, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte("depends=")); ok {
			if len(v) == 0 {
				return nil, nil
			}
			return strings.Split(string(v), ","), nil
		}
	}
	return nil, nil
}

// cpioEntry is one member of a newc archive.
type cpioEntry struct {
	name         string
	mode         uint32 // type and permission bits
	data         []byte
	major, minor uint32 // device numbers for character devices
}

// writeCpio writes a newc ("070701") archive, the initramfs format the
// kernel unpacks (Documentation/driver-api/early-userspace/buffer-format.rst).
func writeCpio(w io.Writer, entries []cpioEntry) error {
	pad := func(n int) []byte { return make([]byte, (4-n%4)%4) }
	var buf bytes.Buffer
	for i, e := range append(entries, cpioEntry{name: "TRAILER!!!"}) {
		nlink := 1
		if e.mode&0o170000 == 0o040000 {
			nlink = 2
		}
		fmt.Fprintf(&buf, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
			i+1, e.mode, 0, 0, nlink, 0, len(e.data), 0, 0, e.major, e.minor, len(e.name)+1, 0)
		buf.WriteString(e.name)
		buf.WriteByte(0)
		buf.Write(pad(110 + len(e.name) + 1))
		buf.Write(e.data)
		buf.Write(pad(len(e.data)))
	}
	_, err := w.Write(buf.Bytes())
	return err
}

func goBuild(t *testing.T, out, pkg string) []byte {
	t.Helper()
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestVMAmtinfo(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a VM (about a minute under TCG); skipped with -short")
	}
	qemu := os.Getenv("VMTEST_QEMU")
	if qemu == "" {
		qemu = "qemu-system-x86_64"
	}
	if _, err := exec.LookPath(qemu); err != nil {
		t.Fatalf("%s not found (apt-get install qemu-system-x86): %v", qemu, err)
	}
	kernel, modDir := vmKernel(t)
	tmp := t.TempDir()

	// The initramfs.
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	initBin := goBuild(t, filepath.Join(tmp, "init"), filepath.Join(root, "internal/amtsim/testdata/vminit"))
	provstick := goBuild(t, filepath.Join(tmp, "provstick"), filepath.Join(root, "cmd/provstick"))
	mods, err := moduleOrder(modDir, vmModules)
	if err != nil {
		t.Fatal(err)
	}
	entries := []cpioEntry{
		{name: "dev", mode: 0o040755}, {name: "dev/console", mode: 0o020600, major: 5, minor: 1},
		{name: "proc", mode: 0o040755}, {name: "sys", mode: 0o040755}, {name: "modules", mode: 0o040755},
		{name: "init", mode: 0o100755, data: initBin}, {name: "provstick", mode: 0o100755, data: provstick},
	}
	var order []string
	for i, p := range mods {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		name := fmt.Sprintf("%02d-%s", i, filepath.Base(p))
		order = append(order, name)
		entries = append(entries, cpioEntry{name: "modules/" + name, mode: 0o100644, data: b})
	}
	entries = append(entries, cpioEntry{name: "modules/order", mode: 0o100644, data: []byte(strings.Join(order, "\n") + "\n")})
	initrd := filepath.Join(tmp, "initrd.cpio")
	f, err := os.Create(initrd)
	if err != nil {
		t.Fatal(err)
	}
	if err := writeCpio(f, entries); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	// The simulator, with a UUID of its own.
	st := DefaultState()
	st.UUID = amthi.UUID{0x10, 0x32, 0x54, 0x76, 0x98, 0xba, 0xdc, 0xfe, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef}
	srv := NewMEServer(NewDevice(st), nil)
	defer srv.Close()
	sock := filepath.Join(tmp, "me.sock")
	ln, err := Listen("unix://" + sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 150*time.Second)
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, ln) }()

	console := filepath.Join(tmp, "console.log")
	cmd := exec.CommandContext(ctx, qemu,
		"-nodefaults", "-display", "none", "-no-reboot", "-accel", "tcg", "-m", "512", "-smp", "1",
		"-kernel", kernel, "-initrd", initrd,
		"-append", "console=ttyS0 panic=-1 loglevel=4 provstick.mei=virtio:org.provstick.mei",
		"-serial", "file:"+console,
		"-device", "virtio-serial-pci",
		"-chardev", "socket,id=me,path="+sock,
		"-device", "virtserialport,chardev=me,name=org.provstick.mei",
	)
	var qout bytes.Buffer
	cmd.Stdout, cmd.Stderr = &qout, &qout
	start := time.Now()
	err = cmd.Run()
	log, _ := os.ReadFile(console)
	t.Logf("QEMU ran %v", time.Since(start).Round(time.Millisecond))
	if err != nil {
		t.Fatalf("qemu: %v\n%s\nconsole:\n%s", err, qout.Bytes(), log)
	}
	cancel()
	if err := <-served; err != nil {
		t.Errorf("simulator: %v", err)
	}
	want := fmt.Sprintf("%q: %q", "uuid", st.UUID.String())
	if !bytes.Contains(log, []byte(want)) || !bytes.Contains(log, []byte("VMTEST-EXIT 0")) {
		t.Fatalf("the guest did not print %s and VMTEST-EXIT 0; console:\n%s", want, log)
	}
	if !bytes.Contains(log, []byte(`"provisioningState": "pre"`)) {
		t.Errorf("no provisioning state in the guest's output:\n%s", log)
	}
}
