//go:build unix

package amtsim

import "syscall"

// openFileLimit is the soft limit on open files (Go raises it to the hard
// limit at start-up), or 0 when unknown.
func openFileLimit() uint64 {
	var r syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r) != nil {
		return 0
	}
	return r.Cur
}
