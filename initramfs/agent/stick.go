package agent

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/provstick/provstick/setupbin"
)

// Paths on the stick, relative to the FAT root (the builder writes them;
// the agent must not import builder, which would pull go-diskfs into the
// initramfs).
const (
	SetupBinName = "SETUP.BIN"
	ManifestPath = "provstick/manifest.json"
	// PIDsPath optionally lists the PIDs of setup.bin's records in order:
	// after the BIOS consumes a record it zeroes the body, so the agent
	// cannot read that record's PID any more (specs/setupbin.md §2.5).
	PIDsPath       = "provstick/pids.json"
	manifestFormat = "provstick-stick/1"
	pidsFormat     = "provstick-pids/1"
)

// ErrNotOurStick: the directory holds no provstick manifest.
var ErrNotOurStick = errors.New("agent: not a provstick stick")

// Manifest is the part of provstick/manifest.json the agent needs.
type Manifest struct {
	Format   string `json:"format"`
	Stick    string `json:"stick"`
	Batch    string `json:"batch,omitempty"`
	SetupBin struct {
		Records     int  `json:"records"`
		FirstRecord int  `json:"first_record"`
		NoConsume   bool `json:"no_consume,omitempty"`
	} `json:"setup_bin"`
}

// ReadManifest reads and checks root/provstick/manifest.json.
func ReadManifest(root string) (*Manifest, error) {
	b, err := readSmall(filepath.Join(root, ManifestPath), 1<<20)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("reading %s: %w", ManifestPath, ErrNotOurStick)
	}
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", ManifestPath, err)
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("reading %s: %w (%v)", ManifestPath, ErrNotOurStick, err)
	}
	if m.Format != manifestFormat || m.Stick == "" {
		return nil, fmt.Errorf("reading %s: format %q stick %q: %w", ManifestPath, m.Format, m.Stick, ErrNotOurStick)
	}
	if m.SetupBin.FirstRecord < 1 {
		m.SetupBin.FirstRecord = 1
	}
	return &m, nil
}

// pidList is provstick/pids.json.
type pidList struct {
	Format string   `json:"format"`
	PIDs   []string `json:"pids"` // index i: the record at index i of setup.bin
}

func readPIDs(root string) ([]string, error) {
	b, err := readSmall(filepath.Join(root, PIDsPath), 4<<20)
	if err != nil {
		return nil, err
	}
	var l pidList
	if err := json.Unmarshal(b, &l); err != nil {
		return nil, fmt.Errorf("reading %s: %w", PIDsPath, err)
	}
	if l.Format != pidsFormat {
		return nil, fmt.Errorf("reading %s: format %q, want %q", PIDsPath, l.Format, pidsFormat)
	}
	return l.PIDs, nil
}

// openSetupBin reads setup.bin from the FAT root (the name is upper case
// on the stick; a case-sensitive test directory may hold either).
func openSetupBin(root string) (*setupbin.Reader, error) {
	var firstErr error
	for _, n := range []string{SetupBinName, "setup.bin"} {
		b, err := readSmall(filepath.Join(root, n), 64<<20)
		if err == nil {
			r, err := setupbin.NewReader(bytes.NewReader(b), int64(len(b)))
			if err != nil {
				return nil, fmt.Errorf("reading %s: %w", n, err)
			}
			return r, nil
		}
		if firstErr == nil {
			firstErr = err
		}
	}
	return nil, fmt.Errorf("reading setup.bin: %w", firstErr)
}

func readSmall(name string, limit int64) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s: larger than %d bytes", name, limit)
	}
	return b, nil
}
