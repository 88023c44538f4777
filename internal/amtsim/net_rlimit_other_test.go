//go:build !unix

package amtsim

func openFileLimit() uint64 { return 0 }
