//go:build !linux

package hello

import (
	"net"
	"testing"
	"time"
)

// waitDeferAccept: no TCP_DEFER_ACCEPT off Linux.
func waitDeferAccept(*testing.T, net.Listener) time.Duration { return 0 }
