package kiosk

import (
	"os"
	"testing"

	"github.com/provstick/provstick/kiosk/store/storetest"
)

// TestMain stops the throwaway PostgreSQL cluster the PostgreSQL benchmark
// starts (only when it runs).
func TestMain(m *testing.M) { os.Exit(storetest.Main(m)) }
