//go:build !unix

package kiosk

import "time"

func cpuTime() time.Duration { return 0 }
