package web

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"regexp"
	"time"
)

// Reconciler is what the discrepancies page needs from reconciliation
// (kiosk/reconcile, adapted by the caller).
type Reconciler interface {
	// Discrepancies lists the open findings, most serious first.
	Discrepancies(ctx context.Context) ([]Discrepancy, error)
	// ImportLedger reads one stick ledger (name is the uploaded file's
	// base name) and reconciles it. A malformed ledger is an error whose
	// message the console shows: it must not hold secrets.
	ImportLedger(ctx context.Context, name string, r io.Reader) (ImportResult, error)
}

// Discrepancy is one finding of reconciliation.
type Discrepancy struct {
	// ID names the finding in URLs (letters, digits, '.', '_', '-'; at
	// most 64). Empty or unusable: the console derives one from Kind,
	// PID, UUIDs and Stick.
	ID       string    `json:"id"`
	Kind     string    `json:"kind"`     // e.g. "no-hello", "unknown-pid", "copied-stick", "counter-backwards", "lost-stick"
	Severity string    `json:"severity"` // "alarm", "warning" or "info"
	Summary  string    `json:"summary"`  // one line
	Detail   string    `json:"detail,omitempty"`
	Advice   string    `json:"advice,omitempty"` // what the technician should do
	PID      string    `json:"pid,omitempty"`
	UUIDs    []string  `json:"uuids,omitempty"` // machines involved (links to their timelines)
	Stick    string    `json:"stick,omitempty"`
	At       time.Time `json:"at"`
}

// ImportResult is what a ledger import did.
type ImportResult struct {
	Source        string   `json:"source"`
	Stick         string   `json:"stick"`
	Records       int      `json:"records"`       // valid ledger lines read
	New           int      `json:"new"`           // records not seen before
	Damaged       int      `json:"damaged"`       // lines failing their checksum
	Discrepancies int      `json:"discrepancies"` // findings raised by this import
	Notes         []string `json:"notes,omitempty"`
}

var idRE = regexp.MustCompile(`^[A-Za-z0-9._-]+$`) // and at most 64 long: {1,64} would compile to a large program at start-up

// withIDs fills in missing or unusable IDs.
func withIDs(ds []Discrepancy) []Discrepancy {
	for i := range ds {
		if len(ds[i].ID) <= 64 && idRE.MatchString(ds[i].ID) {
			continue
		}
		h := sha256.New()
		for _, s := range append([]string{ds[i].Kind, ds[i].PID, ds[i].Stick, ds[i].Summary}, ds[i].UUIDs...) {
			io.WriteString(h, s)
			h.Write([]byte{0})
		}
		ds[i].ID = "d-" + hex.EncodeToString(h.Sum(nil)[:8])
	}
	return ds
}
