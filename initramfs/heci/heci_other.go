//go:build !linux

package heci

import (
	"context"
	"fmt"
	"runtime"
)

func openMEI(ctx context.Context, path string, opts *Options) (Device, error) {
	return nil, fmt.Errorf("opening %s on %s: %w", path, runtime.GOOS, ErrUnsupported)
}
