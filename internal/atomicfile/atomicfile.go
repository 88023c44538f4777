// Package atomicfile writes files so that a crash at any moment leaves
// either the old contents or the new, never a torn file: the data goes to a
// temporary file in the same directory, is fsynced, and is then renamed (or
// hard-linked, when an existing file must not be replaced) into place, and
// the directory is fsynced. It follows tailscale's atomicfile.
package atomicfile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// ErrExists: the target exists and the write was asked not to replace it.
var ErrExists = fs.ErrExist

// File is a file being written; nothing is visible at the target name
// until Commit succeeds. Abort (or a failed Commit) removes the temporary
// file. It is safe to call Abort after Commit.
type File struct {
	*os.File
	target    string
	noReplace bool
	done      bool
}

// Create starts writing name with the given permissions. With noReplace,
// Commit fails with an error wrapping ErrExists if name exists then; Create
// already checks once, so a user learns it before the work is done.
func Create(name string, perm os.FileMode, noReplace bool) (*File, error) {
	if noReplace {
		if _, err := os.Lstat(name); err == nil {
			return nil, fmt.Errorf("writing %s: %w (refusing to replace it)", name, ErrExists)
		}
	}
	dir, base := filepath.Split(name)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".tmp*")
	if err != nil {
		return nil, fmt.Errorf("writing %s: %w", name, err)
	}
	if err := f.Chmod(perm); err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, fmt.Errorf("writing %s: %w", name, err)
	}
	return &File{File: f, target: name, noReplace: noReplace}, nil
}

// Commit fsyncs the data, closes the file and moves it to its name, then
// fsyncs the directory.
func (f *File) Commit() error {
	if f.done {
		return fmt.Errorf("writing %s: already committed or aborted", f.target)
	}
	f.done = true
	tmp := f.File.Name()
	fail := func(err error) error {
		f.File.Close()
		os.Remove(tmp)
		return fmt.Errorf("writing %s: %w", f.target, err)
	}
	if err := f.File.Sync(); err != nil {
		return fail(err)
	}
	if err := f.File.Close(); err != nil {
		return fail(err)
	}
	if f.noReplace {
		// link(2) fails if the target exists: no window in which a file
		// that appeared meanwhile could be replaced.
		if err := os.Link(tmp, f.target); err != nil {
			os.Remove(tmp)
			if errors.Is(err, fs.ErrExist) {
				return fmt.Errorf("writing %s: %w (refusing to replace it)", f.target, ErrExists)
			}
			return fmt.Errorf("writing %s: %w", f.target, err)
		}
		os.Remove(tmp)
	} else if err := os.Rename(tmp, f.target); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("writing %s: %w", f.target, err)
	}
	return SyncDir(filepath.Dir(f.target))
}

// Abort discards the temporary file. It does nothing after Commit.
func (f *File) Abort() {
	if f.done {
		return
	}
	f.done = true
	f.File.Close()
	os.Remove(f.File.Name())
}

// SyncDir fsyncs a directory so that a rename or link in it is durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("syncing directory %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("syncing directory %s: %w", dir, err)
	}
	return nil
}

// WriteFile writes data to name atomically (see Create).
func WriteFile(name string, data []byte, perm os.FileMode, noReplace bool) error {
	f, err := Create(name, perm, noReplace)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Abort()
		return fmt.Errorf("writing %s: %w", name, err)
	}
	return f.Commit()
}
