package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// FindStick looks for the FAT partition labelled PROVSTICK whose manifest
// is a provstick manifest, mounts it read-write under mountDir and returns
// the mount point and the manifest. It reads /sys/class/block directly (no
// udev) and retries until ctx ends, because USB disks appear a few seconds
// after the kernel starts. Other disks, and FAT partitions with the label
// but no manifest, are left alone (unmounted again).
//
// It looks again every stickPoll: the partition is on the critical path of
// every boot, and a look costs one read of a small sysfs directory (names
// already tried are not opened again).
func FindStick(ctx context.Context, mountDir string, log *slog.Logger) (string, *Manifest, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	tried := map[string]string{}
	for {
		ents, _ := os.ReadDir("/sys/class/block")
		for _, e := range ents {
			name := e.Name()
			if _, seen := tried[name]; seen || strings.HasPrefix(name, "loop") || strings.HasPrefix(name, "ram") {
				continue
			}
			root, man, err := tryStick(name, mountDir)
			if err == nil {
				return root, man, nil
			}
			tried[name] = err.Error()
			log.Debug("not the stick", "dev", name, "why", err)
		}
		select {
		case <-ctx.Done():
			var why []string
			for n, e := range tried {
				why = append(why, n+": "+e)
			}
			return "", nil, fmt.Errorf("finding the stick (a FAT partition labelled %s with provstick/manifest.json): %w; tried %s", StickLabel, ErrNotOurStick, strings.Join(why, "; "))
		case <-time.After(stickPoll):
		}
	}
}

// stickPoll is how often FindStick looks for new block devices. Under
// QEMU (TCG) the stick was found 590 ms after the modules were in when it
// looked every 250 ms, and 480 ms after at 20 ms.
const stickPoll = 20 * time.Millisecond

var errNotFAT = errors.New("not a FAT filesystem")

func tryStick(name, mountDir string) (string, *Manifest, error) {
	dev := filepath.Join("/dev", name)
	f, err := os.Open(dev)
	if err != nil {
		return "", nil, err
	}
	b := make([]byte, 512)
	_, err = f.ReadAt(b, 0)
	f.Close()
	if err != nil {
		return "", nil, fmt.Errorf("reading the boot sector: %w", err)
	}
	label, ok := FATLabel(b)
	if !ok {
		return "", nil, errNotFAT
	}
	if !strings.EqualFold(label, StickLabel) {
		return "", nil, fmt.Errorf("label %q", label)
	}
	dir := filepath.Join(mountDir, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", nil, err
	}
	// The kernel's default iocharset may be one whose nls module the
	// initramfs lacks (Debian's is ascii); try the ones the recipe packs.
	var mountErr error
	for _, opts := range []string{"flush,iocharset=utf8", "flush,iocharset=iso8859-1", "flush"} {
		mountErr = unix.Mount(dev, dir, "vfat", unix.MS_NOATIME|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, opts)
		if mountErr == nil {
			break
		}
	}
	if mountErr != nil {
		return "", nil, fmt.Errorf("mounting %s read-write: %w", dev, mountErr)
	}
	man, err := ReadManifest(dir)
	if err != nil {
		unix.Unmount(dir, 0)
		return "", nil, err
	}
	return dir, man, nil
}

// Unmount syncs and unmounts the stick.
func Unmount(dir string) error {
	unix.Sync()
	if err := unix.Unmount(dir, 0); err != nil {
		return fmt.Errorf("unmounting the stick: %w", err)
	}
	return nil
}
