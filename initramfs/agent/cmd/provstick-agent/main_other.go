//go:build !linux

package main

import (
	"fmt"
	"os"
)

func run() {
	fmt.Fprintln(os.Stderr, "provstick-agent: requires Linux")
	os.Exit(1)
}
