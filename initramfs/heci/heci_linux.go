//go:build linux

package heci

import (
	"context"
	"fmt"
)

func openMEI(ctx context.Context, path string, opts *Options) (Device, error) {
	return nil, fmt.Errorf("opening %s: %w", path, ErrUnsupported)
}
