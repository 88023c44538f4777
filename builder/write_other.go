//go:build !linux

package builder

import (
	"fmt"
	"os"
	"unsafe"
)

func uintptrOf(b []byte) uintptr { return uintptr(unsafe.Pointer(unsafe.SliceData(b))) }

// Inspect describes path. Outside Linux only regular files are known;
// anything else is refused unless forced.
func Inspect(path string) (*Target, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("inspecting %s: %w", path, err)
	}
	if st.Mode().IsRegular() {
		return &Target{Path: path}, nil
	}
	return &Target{Path: path, Device: true}, nil
}

func openTarget(path string, device bool) (*os.File, bool, error) {
	flags := os.O_WRONLY
	if !device {
		flags |= os.O_CREATE | os.O_TRUNC
	}
	f, err := os.OpenFile(path, flags, 0o644)
	return f, false, err
}

func openForVerify(path string) (*os.File, error) { return os.Open(path) }

func preallocate(*os.File, int64) {}
