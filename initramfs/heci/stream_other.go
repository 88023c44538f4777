//go:build !linux

package heci

import "io"

// nonblockingRead is Linux-only; elsewhere streams use a reader goroutine.
func nonblockingRead(io.Reader) rawReader { return nil }
