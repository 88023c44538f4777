package kiosk

import (
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"strconv"
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
// PROVSTICK_HELLO_MSG from PROVSTICK_HELLO_THREADS threads (pinned to CPUs
// when PROVSTICK_HELLO_PIN=1) and PROVSTICK_HELLO_SOURCES source
// addresses, one TCP connection per hello (rawSend).
func sendHellos(addr string) int {
	n, _ := strconv.Atoi(os.Getenv("PROVSTICK_HELLO_N"))
	threads, _ := strconv.Atoi(os.Getenv("PROVSTICK_HELLO_THREADS"))
	sources, _ := strconv.Atoi(os.Getenv("PROVSTICK_HELLO_SOURCES"))
	msg, err := hex.DecodeString(os.Getenv("PROVSTICK_HELLO_MSG"))
	ap, aerr := netip.ParseAddrPort(addr)
	if err != nil || aerr != nil || n <= 0 || threads <= 0 || len(msg) == 0 {
		fmt.Fprintln(os.Stderr, "hello sender: bad environment")
		return 2
	}
	if err := rawSend(ap, n, threads, sources, os.Getenv("PROVSTICK_HELLO_PIN") == "1", msg); err != nil {
		return 1
	}
	return 0
}
