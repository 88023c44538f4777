//go:build !unix

package main

import "io/fs"

// fileUID is not known on this system.
func fileUID(fs.FileInfo) (uint32, bool) { return 0, false }
