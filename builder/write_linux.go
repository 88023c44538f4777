package builder

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

func uintptrOf(b []byte) uintptr { return uintptr(unsafe.Pointer(unsafe.SliceData(b))) }

// Inspect describes path from sysfs and /proc/self/mountinfo. A path
// that does not exist gives an error wrapping os.ErrNotExist (Write then
// creates a file).
func Inspect(path string) (*Target, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("inspecting %s: %w", path, err)
	}
	t := &Target{Path: path}
	if st.Mode().IsRegular() {
		return t, nil
	}
	if st.Mode()&os.ModeDevice == 0 || st.Mode()&os.ModeCharDevice != 0 {
		return nil, fmt.Errorf("inspecting %s: not a block device or a regular file", path)
	}
	t.Device = true
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return nil, fmt.Errorf("inspecting %s: no device number", path)
	}
	maj, mnr := unix.Major(uint64(sys.Rdev)), unix.Minor(uint64(sys.Rdev))
	sysDir, err := filepath.EvalSymlinks(fmt.Sprintf("/sys/dev/block/%d:%d", maj, mnr))
	if err != nil {
		return nil, fmt.Errorf("inspecting %s: %w", path, err)
	}
	if _, err := os.Stat(filepath.Join(sysDir, "partition")); err == nil {
		return nil, fmt.Errorf("%s is a partition: give the whole disk", path)
	}
	if n, err := readInt(filepath.Join(sysDir, "size")); err == nil {
		t.Size = n * 512
	}
	rem, _ := readInt(filepath.Join(sysDir, "removable"))
	// Many USB sticks and card readers say removable=0; their sysfs path
	// goes through the USB bus. A loop device is backed by a file, not a
	// machine's disk.
	t.Removable = rem == 1 || strings.Contains(sysDir, "/usb") || maj == 7
	vendor, _ := os.ReadFile(filepath.Join(sysDir, "device", "vendor"))
	model, _ := os.ReadFile(filepath.Join(sysDir, "device", "model"))
	t.Model = strings.TrimSpace(strings.TrimSpace(string(vendor)) + " " + strings.TrimSpace(string(model)))
	// The disk and its partitions, as major:minor strings.
	devs := map[string]bool{fmt.Sprintf("%d:%d", maj, mnr): true}
	ents, _ := os.ReadDir(sysDir)
	for _, e := range ents {
		if b, err := os.ReadFile(filepath.Join(sysDir, e.Name(), "dev")); err == nil {
			if _, err := os.Stat(filepath.Join(sysDir, e.Name(), "partition")); err == nil {
				devs[strings.TrimSpace(string(b))] = true
			}
		}
	}
	if t.Mounted, err = mountedFrom(devs); err != nil {
		return nil, fmt.Errorf("inspecting %s: %w", path, err)
	}
	// Device-mapper or md holders count as "in use" too.
	for d := range devs {
		if hs, _ := os.ReadDir(fmt.Sprintf("/sys/dev/block/%s/holders", d)); len(hs) > 0 {
			t.Mounted = append(t.Mounted, "held by "+hs[0].Name())
		}
	}
	return t, nil
}

func readInt(name string) (int64, error) {
	b, err := os.ReadFile(name)
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
}

// mountedFrom returns the mount points of any of the devices (field 3 of
// /proc/self/mountinfo is major:minor).
func mountedFrom(devs map[string]bool) ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) > 4 && devs[fs[2]] {
			out = append(out, fs[4])
		}
	}
	return out, sc.Err()
}

// openTarget opens a device, or creates a file, for writing with O_DIRECT
// when the target supports it (tmpfs, for one, does not).
func openTarget(path string, device bool) (*os.File, bool, error) {
	flags := os.O_WRONLY
	if device {
		flags |= unix.O_EXCL // fails if the kernel has it mounted
	} else {
		flags |= os.O_CREATE | os.O_TRUNC
	}
	f, err := os.OpenFile(path, flags|unix.O_DIRECT, 0o644)
	if errors.Is(err, unix.EINVAL) {
		f, err = os.OpenFile(path, flags, 0o644)
		return f, false, err
	}
	return f, err == nil, err
}

// openForVerify opens path to read what reached the medium: O_DIRECT, or
// else after dropping its cached pages.
func openForVerify(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_DIRECT, 0)
	if err == nil {
		return f, nil
	}
	if !errors.Is(err, unix.EINVAL) {
		return nil, err
	}
	if f, err = os.Open(path); err != nil {
		return nil, err
	}
	_ = unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
	return f, nil
}

// preallocate reserves size bytes for the file f (best effort: a
// filesystem without fallocate just allocates while writing).
func preallocate(f *os.File, size int64) {
	if os.Getenv("PROVSTICK_NO_FALLOCATE") != "" {
		return
	}
	_ = unix.Fallocate(int(f.Fd()), 0, 0, size)
}
