// Package soak lets the project's crash loops (store kill -9, agent power
// cut, kiosk kill -9) run longer and report what they did, for `make soak`
// (scripts/soak.sh). In a plain `go test` run nothing changes: Runs returns
// the test's own count and Report writes nothing.
//
// Environment:
//
//	PROVSTICK_SOAK_SCALE   multiply every loop's run count (default 1)
//	PROVSTICK_SOAK_REPORT  append one JSON line per loop to this file
package soak

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"sync"
)

// Result is what one crash loop did. Lost and Duplicates must be 0.
type Result struct {
	Loop        string `json:"loop"`
	Runs        int    `json:"runs"`
	Faults      int    `json:"faults"`
	Lost        int    `json:"lost"`
	Duplicates  int    `json:"duplicates"`
	Provisioned int    `json:"provisioned,omitempty"`
	Note        string `json:"note,omitempty"`
}

// Runs scales a loop's run count by PROVSTICK_SOAK_SCALE.
func Runs(n int) int {
	s, err := strconv.Atoi(os.Getenv("PROVSTICK_SOAK_SCALE"))
	if err != nil || s < 1 {
		return n
	}
	return n * min(s, 1000)
}

var mu sync.Mutex

// Report appends r to PROVSTICK_SOAK_REPORT when it is set.
func Report(r Result) error {
	name := os.Getenv("PROVSTICK_SOAK_REPORT")
	if name == "" {
		return nil
	}
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	mu.Lock()
	defer mu.Unlock()
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("soak: %w", err)
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		return fmt.Errorf("soak: %w", err)
	}
	return f.Close()
}
