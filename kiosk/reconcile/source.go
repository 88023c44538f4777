package reconcile

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	diskfs "github.com/diskfs/go-diskfs"

	"github.com/provstick/provstick/internal/ledger"
)

// ReadSource returns the ledger bytes named by name and a name for
// messages. name is a ledger file (provstick/ledger.jsonl), a mounted
// stick's directory (its provstick/ledger.jsonl is read) or a stick image
// (the first partition's FAT is read; nothing is written). At most
// DefaultMaxSize+1 bytes are read, so Import can tell a ledger too long.
func ReadSource(name string) ([]byte, string, error) {
	fi, err := os.Stat(name)
	if err != nil {
		return nil, "", fmt.Errorf("opening ledger: %w", err)
	}
	if fi.IsDir() {
		p := filepath.Join(name, filepath.FromSlash(ledger.FileName))
		b, err := readLimited(p)
		if errors.Is(err, os.ErrNotExist) {
			return nil, "", fmt.Errorf("%s: no %s (the stick has not booted a machine yet, or this is not a stick): %w", name, ledger.FileName, err)
		}
		return b, p, err
	}
	fh, err := os.Open(name)
	if err != nil {
		return nil, "", fmt.Errorf("opening ledger: %w", err)
	}
	var head [512]byte
	n, _ := io.ReadFull(fh, head[:])
	fh.Close()
	// A disk image has the MBR signature at 510; a ledger starts with '{'.
	if n < 512 || head[510] != 0x55 || head[511] != 0xAA {
		b, err := readLimited(name)
		return b, name, err
	}
	d, err := diskfs.Open(name, diskfs.WithOpenMode(diskfs.ReadOnly))
	if err != nil {
		return nil, "", fmt.Errorf("opening stick image %s: %w", name, err)
	}
	defer d.Close()
	fsys, err := d.GetFilesystem(1)
	if err != nil {
		return nil, "", fmt.Errorf("reading the FAT of stick image %s: %w", name, err)
	}
	where := name + ":" + ledger.FileName
	lf, err := fsys.OpenFile("/"+ledger.FileName, os.O_RDONLY)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || strings.Contains(err.Error(), "not exist") || strings.Contains(err.Error(), "not found") {
			return nil, "", fmt.Errorf("%s: no ledger (the stick has not booted a machine yet): %w", where, os.ErrNotExist)
		}
		return nil, "", fmt.Errorf("opening %s: %w", where, err)
	}
	defer lf.Close()
	// go-diskfs v1.9.4 returns the rest of the last cluster when a read
	// starts inside a cluster (io.ReadAll's second call does): 1,940 bytes
	// of ledger came back as 2,048, the tail looking torn. So: the size
	// from the directory entry, and one read from offset 0.
	fi, err = lf.Stat()
	if err != nil {
		return nil, "", fmt.Errorf("reading %s: %w", where, err)
	}
	size := min(fi.Size(), DefaultMaxSize+1)
	if size < 0 {
		return nil, "", fmt.Errorf("reading %s: size %d in its directory entry", where, fi.Size())
	}
	b := make([]byte, size)
	if _, err := io.ReadFull(lf, b); err != nil {
		return nil, "", fmt.Errorf("reading %s: %w", where, err)
	}
	return b, where, nil
}

func readLimited(name string) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, fmt.Errorf("opening ledger: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, DefaultMaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("reading ledger %s: %w", name, err)
	}
	return b, nil
}
