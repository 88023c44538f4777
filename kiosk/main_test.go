package kiosk

import (
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/provstick/provstick/kiosk/store/storetest"
)

// TestMain stops the throwaway PostgreSQL cluster the PostgreSQL benchmark
// starts (only when it runs). Started with PROVSTICK_HELLO_SENDER set, the
// test binary is instead a hello sender for the benchmarks that keep the
// clients out of the kiosk's process (see senderProcess).
func TestMain(m *testing.M) {
	if addr := os.Getenv("PROVSTICK_HELLO_SENDER"); addr != "" {
		os.Exit(sendHellos(addr))
	}
	if os.Getenv(envKillStore) != "" {
		os.Exit(killKioskRole())
	}
	if role := os.Getenv(envNSRole); role != "" {
		os.Exit(netnsRole(role))
	}
	os.Exit(storetest.Main(m))
}

// sendHellos sends PROVSTICK_HELLO_N copies of the hex message
// PROVSTICK_HELLO_MSG from PROVSTICK_HELLO_CONNS goroutines, one TCP
// connection per hello.
func sendHellos(addr string) int {
	n, _ := strconv.Atoi(os.Getenv("PROVSTICK_HELLO_N"))
	conns, _ := strconv.Atoi(os.Getenv("PROVSTICK_HELLO_CONNS"))
	msg, err := hex.DecodeString(os.Getenv("PROVSTICK_HELLO_MSG"))
	if err != nil || n <= 0 || conns <= 0 {
		fmt.Fprintln(os.Stderr, "hello sender: bad environment")
		return 2
	}
	var left atomic.Int64
	left.Store(int64(n))
	var failed atomic.Bool
	var wg sync.WaitGroup
	for range conns {
		wg.Go(func() {
			for left.Add(-1) >= 0 {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					fmt.Fprintln(os.Stderr, "hello sender:", err)
					failed.Store(true)
					return
				}
				c.Write(msg)
				c.Close()
			}
		})
	}
	wg.Wait()
	if failed.Load() {
		return 1
	}
	return 0
}
