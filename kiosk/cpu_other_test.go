//go:build !unix

package kiosk

import "time"

func cpuTime() time.Duration { return 0 }

func ctxSwitches() int64 { return 0 }
