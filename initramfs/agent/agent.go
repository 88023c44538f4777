// Package agent is what runs on the target machine after the BIOS has
// consumed a setup.bin record (issue 8): it works out which record went to
// this machine from setup.bin's consumed counter and the stick's ledger,
// asks the ME over HECI who the machine is, reads DMI, the NIC MACs and the
// TPM's endorsement key, appends one line to the ledger (internal/ledger)
// and tells the technician what happened and what to do. When the stick's
// provstick/agent.json asks for it (Conf, from the recipe's agent
// section), it first activates AMT in client control mode over HECI
// (initramfs/hostbased, specs/pki.md §6) and the same line records the
// outcome (see Activation for the order); with check_kiosk it checks that
// the kiosk's hello port is reachable the way AMT finds it (kiosk.go). A
// PKI stick's line has kind
// "pki" and no PID; every line lists the ME's trusted root hashes.
//
// The logic here is portable and tested against the ME simulator over a
// Unix socket with a temporary directory as the stick; the Linux-only parts
// (mounting, finding the stick, powering off) are in cmd/provstick-agent
// and stick_linux.go. Sources sit behind small interfaces (DMIReader,
// NICReader, TPMReader, heci.Device) so each can be faked or missing.
package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"time"

	"github.com/provstick/provstick/initramfs/heci"
	"github.com/provstick/provstick/initramfs/heci/amtinfo"
	"github.com/provstick/provstick/internal/ledger"
	"github.com/provstick/provstick/setupbin"
)

// Version is written into each ledger line.
const Version = "provstick-agent/1"

// Config is one run.
type Config struct {
	// Root is the stick's mounted FAT root (holding SETUP.BIN and provstick/).
	Root string
	// MEAddress is the heci address (heci.ParseAddress), usually from the
	// kernel command line; empty means heci.DefaultAddress.
	MEAddress string
	// OpenME opens the ME; nil means heci.OpenDevice.
	OpenME func(ctx context.Context, addr string, opts *heci.Options) (heci.Device, error)
	// METimeout bounds everything asked of the ME, including waiting for
	// it to be ready; zero means 30 s.
	METimeout time.Duration
	DMI       DMIReader
	NICs      NICReader
	TPM       TPMReader
	// Now is the clock; nil means time.Now. A time before ClockFloor is
	// written as it is, and named in Missing as source "clock".
	Now func() time.Time
	// BeforeWrite, if set, runs just before the ledger append (the binary
	// prints a marker there so power-cut tests can aim; an error aborts
	// the run with nothing written).
	BeforeWrite func(ctx context.Context) error
	// Machine, if set, is what CollectMachine already gathered; Run then
	// does not ask the sources itself.
	Machine *Machine
	// Activate, if set, asks for host-based activation (agent.json's
	// activate member, Conf.Activation).
	Activate *Activation
	// ConfErr is why agent.json could not be read; Run names it in the
	// line (source "agent-conf") and, since it cannot know whether
	// activation was asked for, does not activate.
	ConfErr error
	// KioskCheck, if set, is the kiosk reachability check agent.json's
	// check_kiosk asks for (NewKioskCheck); Run finishes it (the caller
	// may have started it earlier) and records it in the line.
	KioskCheck *KioskCheck
	Logger     *slog.Logger
}

// ClockFloor is the earliest plausible time on the target: a clock before
// it has a flat RTC battery or was never set.
var ClockFloor = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

// ClockPlausible reports whether t can be the real time.
func ClockPlausible(t time.Time) bool {
	return !t.Before(ClockFloor) && t.Year() < 2100
}

// Result is what happened.
type Result struct {
	Record *ledger.Record // the line appended
	// Sum is the appended line's checksum ("sha256:…"), as the kiosk will
	// see it.
	Sum string
	// OK is true when the technician has nothing to do but remove the
	// stick.
	OK bool
	// Message is the text for the screen: a headline, then details.
	Message string
	// Ledger is the ledger as read before the append.
	Ledger *ledger.Log
	// Timings: when Run started, start → ledger fsync, and the part of it
	// spent on the ME.
	Started            time.Time
	Elapsed, MEElapsed time.Duration
	// Phases is where Elapsed went, in order: manifest+ledger, setupbin,
	// me, dmi+nic, tpm, write (append with fsync of file and directory).
	Phases []Phase
}

// Phase is one step of Run and how long it took.
type Phase struct {
	Name    string
	Elapsed time.Duration
}

// PhasesString formats phases as "name 12ms, name 3ms".
func PhasesString(ps []Phase) string {
	var parts []string
	for _, p := range ps {
		parts = append(parts, fmt.Sprintf("%s %v", p.Name, p.Elapsed.Round(time.Millisecond)))
	}
	return strings.Join(parts, ", ")
}

// Run does the whole job once. An error means nothing was written to the
// ledger (no stick, unreadable ledger, write failure); every other problem
// ends up in the ledger line and the message.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	start := time.Now()
	var phases []Phase
	lap := start
	phase := func(name string) {
		now := time.Now()
		phases = append(phases, Phase{name, now.Sub(lap)})
		lap = now
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	man, err := ReadManifest(cfg.Root)
	if err != nil {
		return nil, err
	}
	ledgerPath := filepath.Join(cfg.Root, filepath.FromSlash(ledger.FileName))
	lg, err := ledger.ReadFile(ledgerPath)
	if err != nil {
		return nil, err
	}
	for _, f := range lg.Findings {
		log.Warn("ledger", "finding", f.String())
	}
	rec := &ledger.Record{Seq: lg.NextSeq(), Stick: man.Stick, Agent: Version}
	miss := func(src string, err error) {
		rec.Missing = append(rec.Missing, ledger.Missing{Source: src, Reason: err.Error()})
	}

	phase("ledger")
	sb, sbErr := openSetupBin(cfg.Root)
	if sbErr != nil {
		rec.Case = ledger.CaseUnknown
		miss("setupbin", sbErr)
	} else {
		attribute(rec, sb, lg.Last(), man, cfg.Root, miss)
	}

	phase("setupbin")
	m := cfg.Machine
	if m == nil {
		m = CollectMachine(ctx, cfg)
	}
	rec.AMT, rec.DMI, rec.MACs, rec.TPM = m.AMT, m.DMI, m.MACs, m.TPM
	rec.Missing = append(rec.Missing, m.Missing...)
	meElapsed := m.MEElapsed
	if cfg.Machine == nil {
		phases = append(phases, m.Phases...)
	} else {
		phases = append(phases, Phase{"machine (collected during the stick search)", 0})
	}
	lap = time.Now()
	if cfg.ConfErr != nil {
		miss("agent-conf", cfg.ConfErr)
	}
	// Activation before the one append (crash safety, see Activation):
	// the line records its outcome.
	if cfg.Activate != nil {
		rec.Activation = activate(ctx, cfg, rec.AMT, log)
		phase("activate")
	}
	if cfg.KioskCheck != nil {
		suffix := ""
		if rec.AMT != nil {
			suffix = rec.AMT.DNSSuffix
		}
		var static StaticSCS
		if sb != nil {
			static = staticSCS(sb, rec.Index, man.SetupBin.FirstRecord)
		}
		rec.KioskCheck = cfg.KioskCheck.Finish(ctx, suffix, static)
		phase("kiosk-check")
	}
	rec.Time = now().UTC()
	if !ClockPlausible(rec.Time) {
		miss("clock", fmt.Errorf("the machine's clock says %s (RTC battery flat or clock never set); this line's time is wrong", rec.Time.Format(time.RFC3339)))
	}
	if cfg.BeforeWrite != nil {
		if err := cfg.BeforeWrite(ctx); err != nil {
			return nil, fmt.Errorf("before writing the ledger: %w", err)
		}
	}
	lap = time.Now() // the hold is not the write's time
	if err := ledger.Append(ledgerPath, rec); err != nil {
		return nil, fmt.Errorf("writing the ledger on stick %s: %w", man.Stick, err)
	}
	phase("write")
	res := &Result{Record: rec, Ledger: lg, Started: start, Elapsed: time.Since(start), MEElapsed: meElapsed, Phases: phases}
	if line, err := ledger.Marshal(rec); err == nil { // the bytes Append wrote: Marshal is deterministic
		if r, err := ledger.Unmarshal(bytes.TrimSuffix(line, []byte("\n"))); err == nil {
			res.Sum = r.Sum
		}
	}
	if sb != nil {
		res.OK, res.Message = render(rec, lg, sb.Header)
	} else {
		res.OK, res.Message = render(rec, lg, setupbin.Header{})
	}
	log.Info("ledger written", "seq", rec.Seq, "case", rec.Case, "record", rec.Record, "elapsed", res.Elapsed)
	return res, nil
}

// Machine is what the target says about itself: ME, DMI, NICs, TPM, and
// which of them gave nothing. It does not depend on the stick, so the
// binary collects it while the USB stick is still being enumerated.
type Machine struct {
	AMT     *ledger.AMT
	DMI     *ledger.DMI
	MACs    []string
	TPM     *ledger.TPM
	Missing []ledger.Missing
	// MEElapsed is the time spent on the ME; Phases where the rest went.
	MEElapsed time.Duration
	Phases    []Phase
}

// CollectMachine asks cfg's sources (MEAddress/OpenME within METimeout,
// DMI, NICs, TPM). Every failure becomes a Missing entry.
func CollectMachine(ctx context.Context, cfg Config) *Machine {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m := &Machine{}
	miss := func(src string, err error) {
		m.Missing = append(m.Missing, ledger.Missing{Source: src, Reason: err.Error()})
	}
	lap := time.Now()
	phase := func(name string) {
		now := time.Now()
		m.Phases = append(m.Phases, Phase{name, now.Sub(lap)})
		lap = now
	}
	if info, err := queryME(ctx, cfg, log); err != nil {
		miss("amt", err)
	} else {
		m.AMT = amtFromInfo(info)
	}
	m.MEElapsed = time.Since(lap)
	phase("me")
	if cfg.DMI == nil {
		miss("dmi", errors.New("no DMI reader"))
	} else if d, err := cfg.DMI.ReadDMI(); err != nil {
		miss("dmi", err)
	} else {
		m.DMI = d
	}
	if cfg.NICs == nil {
		miss("nic", errors.New("no NIC reader"))
	} else if macs, err := cfg.NICs.MACs(); err != nil {
		miss("nic", err)
	} else {
		m.MACs = macs
	}
	phase("dmi+nic")
	if cfg.TPM == nil {
		miss("tpm", ErrNoTPM)
	} else if t, err := cfg.TPM.ReadEK(ctx); err != nil {
		miss("tpm", err)
	} else {
		m.TPM = t
		switch {
		case !t.EKCert:
			miss("tpm-ek-cert", errors.New("no EK certificate in the TPM's NV storage"))
		case t.EKCertError != "":
			miss("tpm-ek-cert", fmt.Errorf("an EK certificate is in NV but could not be read: %s", t.EKCertError))
		}
	}
	phase("tpm")
	return m
}

// attribute fills the case, counters, record, PID and next PID.
func attribute(rec *ledger.Record, sb *setupbin.Reader, last *ledger.Record, man *Manifest, root string, miss func(string, error)) {
	h := sb.Header
	cur := h.Consumed
	rec.Consumed = cur
	var prev uint32 // a fresh stick: nothing consumed when it was built
	if last != nil {
		p := last.Consumed
		rec.PrevConsumed = &p
		prev = p
	}
	first := man.SetupBin.FirstRecord
	idx := -1
	switch {
	case h.NoConsumeHonoured():
		rec.Case = ledger.CaseNoConsume
		idx = int(cur)
	case cur < prev:
		rec.Case = ledger.CaseRollback
	case cur == prev:
		rec.Case = ledger.CaseNone
	case cur == prev+1:
		rec.Case = ledger.CaseNormal
		idx = int(cur) - 1
	default:
		rec.Case = ledger.CaseMultiple
		idx = int(cur) - 1
		for i := int(prev); i < idx && len(rec.Skipped) < 10000; i++ {
			rec.Skipped = append(rec.Skipped, first+i)
		}
	}
	rec.Index = idx
	if idx < 0 || idx >= int(h.RecordCount) {
		rec.Index = -1
		if idx >= int(h.RecordCount) {
			miss("setupbin", fmt.Errorf("consumed counter %d is beyond the %d records", cur, h.RecordCount))
		}
	} else {
		rec.Record = first + idx
		rec.Kind = recordKind(sb, idx, root)
		pid, err := pidOf(sb, idx, last, root)
		switch {
		case err == nil:
			rec.PID = pid
		case rec.Kind != KindPKI: // a PKI record has no PID
			miss("pid", err)
		}
	}
	if next := int(h.NextIndex()); next < int(h.RecordCount) && !h.NoConsumeHonoured() {
		if p, ok := pidInFile(sb, next); ok {
			rec.NextPID = p
		}
	}
}

// staticSCS returns the static SCS address (2/17) and port (2/18) of the
// record at idx, the one this machine took: where its hello goes. If the
// BIOS zeroed that record's body, the other records say it, when every
// one holding an address holds the same (a stick's records are written
// with the same network settings). No record taken, or no address:
// the zero StaticSCS.
func staticSCS(sb *setupbin.Reader, idx, first int) StaticSCS {
	if idx < 0 {
		return StaticSCS{}
	}
	read := func(r *setupbin.Record) (StaticSCS, bool) {
		e, ok := r.Lookup(setupbin.VarServerAddr)
		if !ok {
			return StaticSCS{}, false
		}
		a, err := e.Addr()
		if err != nil || !a.IsValid() || a.IsUnspecified() {
			return StaticSCS{}, false
		}
		s := StaticSCS{Addr: a, Record: first + r.Index}
		if e, ok := r.Lookup(setupbin.VarServerPort); ok {
			if p, err := e.U16(); err == nil {
				s.Port = p
			}
		}
		return s, true
	}
	var others []StaticSCS
	for _, r := range sb.Records {
		if !r.Valid() {
			continue
		}
		if r.Index == idx {
			s, _ := read(r)
			return s
		}
		if s, ok := read(r); ok {
			others = append(others, s)
		}
	}
	for _, o := range others {
		if o.Addr != others[0].Addr || o.Port != others[0].Port {
			return StaticSCS{}
		}
	}
	if len(others) == 0 {
		return StaticSCS{}
	}
	return others[0]
}

// pidOf finds the PID of the record at idx: in setup.bin if its body is
// still there, else from provstick/pids.json, else from the previous
// ledger line's NextPID.
func pidOf(sb *setupbin.Reader, idx int, last *ledger.Record, root string) (string, error) {
	if p, ok := pidInFile(sb, idx); ok {
		return p, nil
	}
	pids, err := readPIDs(root)
	if err == nil && idx < len(pids) {
		if p, perr := setupbin.ParsePID(pids[idx]); perr == nil {
			return p.Display(), nil
		}
	}
	if last != nil && last.NextPID != "" && last.Consumed == uint32(idx) {
		return last.NextPID, nil
	}
	return "", fmt.Errorf("the BIOS zeroed record %d and neither %s nor the previous ledger line names its PID", idx+1, PIDsPath)
}

// Record kinds (ledger.Record.Kind).
const (
	KindPSK = "psk"
	KindPKI = "pki"
)

// recordKind tells a PSK record (PID/PPS) from a PKI one (an added root
// hash, no PID): from the record's body if the BIOS left it, else from
// the other records in the file (a stick's records are all of one kind),
// else pids.json (PSK only). "" when nothing says.
func recordKind(sb *setupbin.Reader, idx int, root string) string {
	kindOf := func(r *setupbin.Record) string {
		if _, ok := r.Lookup(setupbin.VarPID); ok {
			return KindPSK
		}
		if _, ok := r.Lookup(setupbin.VarAddUserHash); ok {
			return KindPKI
		}
		return ""
	}
	other := ""
	for _, r := range sb.Records {
		if !r.Valid() {
			continue
		}
		k := kindOf(r)
		if r.Index == idx && k != "" {
			return k
		}
		if other == "" {
			other = k
		}
	}
	if other != "" {
		return other
	}
	if _, err := readPIDs(root); err == nil {
		return KindPSK
	}
	return ""
}

func pidInFile(sb *setupbin.Reader, idx int) (string, bool) {
	for _, r := range sb.Records {
		if r.Index != idx || !r.Valid() {
			continue
		}
		e, ok := r.Lookup(setupbin.VarPID)
		if !ok {
			return "", false
		}
		p, err := e.PID()
		if err != nil {
			return "", false
		}
		return p.Display(), true
	}
	return "", false
}

func queryME(ctx context.Context, cfg Config, log *slog.Logger) (*amtinfo.Info, error) {
	addr := cfg.MEAddress
	if addr == "" {
		addr = heci.DefaultAddress
	}
	open := cfg.OpenME
	if open == nil {
		open = heci.OpenDevice
	}
	d := cfg.METimeout
	if d <= 0 {
		d = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	dev, err := open(ctx, addr, &heci.Options{Logger: log})
	if err != nil {
		return nil, fmt.Errorf("opening the ME at %s: %w", addr, err)
	}
	defer dev.Close()
	info, err := amtinfo.Collect(ctx, dev, &amtinfo.Options{Logger: log})
	if err != nil {
		return nil, fmt.Errorf("asking the ME at %s: %w", addr, err)
	}
	return info, nil
}

func amtFromInfo(i *amtinfo.Info) *ledger.AMT {
	a := &ledger.AMT{
		UUID: i.UUID, AMTVersion: i.AMTVersion, FirmwareVersion: i.FirmwareVersion, BIOSVersion: i.BIOSVersion,
		BuildNumber: i.BuildNumber, SKU: i.SKU, ProvisioningState: i.ProvisioningState, ProvisioningMode: i.ProvisioningMode,
		ControlMode: i.ControlMode, TLSMode: i.TLSMode, DNSSuffix: i.DNSSuffix,
	}
	if i.Wired != nil {
		a.WiredMAC = strings.ToLower(i.Wired.MAC)
	}
	for _, h := range i.Hashes {
		a.RootHashes = append(a.RootHashes, ledger.RootHash{Name: h.Name, Algorithm: h.Algorithm, Hash: strings.ToLower(h.Hash),
			Default: h.Default, UserAdded: h.UserAdded, Active: h.Active})
	}
	return a
}
